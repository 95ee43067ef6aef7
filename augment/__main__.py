"""`python -m augment run`: chain the stages on the embedded sample (default) or on a dataset.

Each stage reads the previous stage's folder in the run directory and writes its own, so a finished stage is
skipped on a re-run and a killed run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from augment.data.prepare import DATASETS, prepare
from augment.data.problems import ON_ERROR_CHOICES
from augment.data.sample import SAMPLE_DIR
from augment.embed import DEFAULT_EMBEDDER
from augment.retrieve import retrieve
from augment.runs import exit_code
from augment.score import add_judge_arguments, run_judge
from augment.simulate import MODES, run_simulate

# The embedded demo must finish in minutes on 2 CPU cores: judge a slice of the sample with a small local model.
DEMO_SLICE = {"max_turns": 20, "top_n": 10}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="prepare [-> simulate] -> retrieve -> score on the embedded sample or a dataset")
    run.add_argument("--dataset", choices=DATASETS, default="redial")
    run.add_argument("--data-dir", type=Path, default=None, help="default: the embedded ReDial sample")
    run.add_argument("--out", type=Path, default=None, help="run folder (default outputs/sample or outputs/<dataset>)")
    run.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise")
    run.add_argument("--top-k", type=int, default=50)
    run.add_argument("--embedder", default=DEFAULT_EMBEDDER)
    run.add_argument("--force", action="store_true", help="redo every stage")
    run.add_argument("--simulate", type=int, default=0, metavar="N", help="simulated dialogues per catalog item (0 = off)")
    run.add_argument("--simulate-mode", choices=MODES, default="template")
    run.add_argument("--simulate-seed", type=int, default=0)
    add_judge_arguments(run)
    return p


def run_pipeline(args: argparse.Namespace) -> None:
    if args.data_dir is None and args.dataset != "redial":
        raise ValueError(f"the embedded sample is ReDial; pass --data-dir with the {args.dataset} files")
    data_dir = args.data_dir or SAMPLE_DIR / args.dataset
    out = args.out or Path("outputs") / ("sample" if args.data_dir is None else args.dataset)
    started = time.perf_counter()
    prepare(args.dataset, data_dir, out, args.on_error, args.force)
    if args.simulate:
        run_simulate(out, args.simulate_mode, args.simulate, args.simulate_seed, args, force=args.force)
    retrieve(out, args.top_k, args.embedder, force=args.force)
    if args.data_dir is None:
        for key, value in DEMO_SLICE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    run_judge(out, args, args.force)
    print(f"[run] done in {time.perf_counter() - started:.0f} s; artifacts in {out}/")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return exit_code(lambda: run_pipeline(args))


if __name__ == "__main__":
    sys.exit(main())
