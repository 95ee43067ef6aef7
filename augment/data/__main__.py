"""`python -m augment.data prepare|download|sample` — the data layer's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.data.download import SOURCES, download
from augment.data.prepare import DATASETS, prepare
from augment.data.problems import ON_ERROR_CHOICES
from augment.runs import exit_code
from augment.data.sample import SAMPLE_DIR, write_redial_sample


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m augment.data", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="raw dataset files -> turns/ and items/ in a run folder")
    prep.add_argument("--dataset", choices=DATASETS, default="redial")
    prep.add_argument("--data-dir", type=Path, default=SAMPLE_DIR / "redial", help="default: the embedded sample")
    prep.add_argument("--out", "--run", dest="run", type=Path, required=True, help="run folder, e.g. outputs/redial")
    prep.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise")
    prep.add_argument("--force", action="store_true", help="rebuild even if the stage already finished")
    fetch = commands.add_parser("download", help="fetch the official release (needs internet)")
    fetch.add_argument("--dataset", choices=sorted(SOURCES), required=True)
    fetch.add_argument("--dest", type=Path, required=True)
    fetch.add_argument("--mirror", help="fetch every file from this URL folder instead of the official sources")
    sample = commands.add_parser("sample", help="write a small ReDial slice (the embedded sample is one)")
    sample.add_argument("--data-dir", type=Path, required=True)
    sample.add_argument("--dest", type=Path, required=True)
    sample.add_argument("--n", type=int, default=100)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "prepare":
        return exit_code(lambda: prepare(args.dataset, args.data_dir, args.run, args.on_error, args.force))
    if args.command == "download":
        statuses = download(args.dataset, args.dest, args.mirror)
        failed = [name for name, status in statuses.items() if not status.startswith(("verified", "not pinned"))]
        print(f"[download] {len(statuses) - len(failed)} files ok, {len(failed)} failed or mismatched: {failed}")
        return 1 if failed else 0
    print(write_redial_sample(args.data_dir, args.dest, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
