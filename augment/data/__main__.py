"""`python -m augment.data prepare|download|sample` — the data layer's command line.

prepare   reads a dataset folder (ReDial: *_data.jsonl + movies_with_mentions.csv [+ id2info.json]; INSPIRED:
          train/dev/test.tsv [+ id2info_inspired.json]) and writes RUN/turns/ and RUN/items/ (parquet + summary.json).
download  fetches the official release files into a folder (needs internet), printing and checking each sha256.
sample    writes a small ReDial slice (the first N conversations and their movies), like the embedded sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.cli import POSITIVE_INT
from augment.data.download import SOURCES, download
from augment.data.prepare import DATASETS, prepare
from augment.data.problems import ON_ERROR_CHOICES
from augment.data.sample import SAMPLE_DIR, write_redial_sample
from augment.runs import exit_code

FORMATTER = argparse.RawDescriptionHelpFormatter


def _prepare_parser(commands: argparse._SubParsersAction) -> None:
    prep = commands.add_parser(
        "prepare", help="raw dataset files -> turns/ and items/ in a run folder",
        description="Read a dataset folder and write RUN/turns/turns.parquet (recommendation turns) and "
                    "RUN/items/items.parquet (the catalog), each with a summary.json. Re-running with the same "
                    "files is a no-op; a changed input file rebuilds.")
    prep.add_argument("--dataset", choices=DATASETS, default="redial", help="which dataset's layout (default: redial)")
    prep.add_argument("--data-dir", type=Path, default=None,
                      help=f"folder with the dataset's files (default: the embedded ReDial sample, {SAMPLE_DIR / 'redial'}; "
                           "INSPIRED has no embedded sample and needs this flag)")
    prep.add_argument("--out", "--run", dest="run", type=Path, required=True,
                      help="run folder to write turns/ and items/ into, e.g. outputs/redial (required)")
    prep.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise",
                      help="a bad record: stop with its file and line (raise), or skip and count it (skip); "
                           "a file that cannot be read at all is an error either way (default: raise)")
    prep.add_argument("--force", action="store_true", help="rebuild even if the stage already finished (default: off)")


def _download_parser(commands: argparse._SubParsersAction) -> None:
    fetch = commands.add_parser(
        "download", help="fetch the official release (needs internet)",
        description="Fetch a dataset's official files into DEST (ReDial: the release zip, extracted; INSPIRED: the "
                    "tsv splits) plus optional metadata (id2info*.json), printing each file's sha256 and checking "
                    "the pinned ones. Exit 1 when a file failed or did not match.")
    fetch.add_argument("--dataset", choices=sorted(SOURCES), required=True, help="which dataset to fetch (required)")
    fetch.add_argument("--dest", type=Path, required=True, help="folder to write the files into (required; created)")
    fetch.add_argument("--mirror", default=None,
                       help="fetch every file from this URL folder instead of the official sources (default: none)")


def _sample_parser(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser(
        "sample", help="write a small ReDial slice (the embedded sample is one)",
        description="Read a full ReDial folder and write DEST/test_data.jsonl (its first N conversations, verbatim) "
                    "with the movies_with_mentions.csv and id2info.json rows of the movies they mention.")
    sample.add_argument("--data-dir", type=Path, required=True, help="full ReDial folder to slice (required)")
    sample.add_argument("--dest", type=Path, required=True, help="folder to write the slice into (required; created)")
    sample.add_argument("--n", type=POSITIVE_INT, default=100, help="conversations to keep, >= 1 (default: 100)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m augment.data", description=__doc__, formatter_class=FORMATTER)
    commands = root.add_subparsers(dest="command", required=True)
    _prepare_parser(commands)
    _download_parser(commands)
    _sample_parser(commands)
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
    return exit_code(lambda: print(write_redial_sample(args.data_dir, args.dest, args.n)))


if __name__ == "__main__":
    sys.exit(main())
