"""`python -m augment run`: chain every stage, on the embedded ReDial sample (default) or on a dataset folder.

prepare (raw files -> turns/ + items/) [-> simulate (simulated/)] -> retrieve (candidates/) -> score (judgments/)
-> labels (labels/), all in one run folder. Each stage reads the previous stage's folder and writes its own, so a
finished stage is skipped on a re-run, a stage whose inputs changed is rebuilt, and a killed run picks up where it
stopped. On the embedded sample the judge scores a small slice (the first 12 turns x top-10 candidates) so that the
whole pipeline shows in about 3 minutes on 2 CPU cores; pass --max-turns/--top-n (`all` for everything) for more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from augment import cli, runs
from augment.data.prepare import DATASETS, default_data_dir, prepare
from augment.data.problems import ON_ERROR_CHOICES
from augment.embed import DEFAULT_EMBEDDER
from augment.retrieve import retrieve
from augment.score import add_judge_arguments, run_judge
from augment.simulate import MODES, run_simulate

# The embedded demo must show every stage within ~3 minutes on 2 CPU cores: 120 pairs at ~3 pairs/s with SmolLM2.
DEMO_SLICE = {"max_turns": 12, "top_n": 10}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="prepare [-> simulate] -> retrieve -> score -> labels, on the embedded sample or a dataset")
    run.add_argument("--dataset", choices=DATASETS, default="redial", help="dataset format of --data-dir (default redial)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="folder with the raw dataset files (default for redial: the embedded sample, 100 test conversations; "
                          "required for inspired)")
    run.add_argument("--out", type=Path, default=None, help="run folder (default outputs/sample, or outputs/<dataset>)")
    run.add_argument("--on-error", choices=ON_ERROR_CHOICES, default="raise",
                     help="bad input records: raise = stop at the first with its file and line, skip = skip and count "
                          "them by reason (default raise)")
    run.add_argument("--top-k", type=cli.POSITIVE_INT, default=50, help="retrieved candidates per turn (default 50)")
    run.add_argument("--embedder", default=DEFAULT_EMBEDDER, help=f"retrieval embedder (default {DEFAULT_EMBEDDER})")
    run.add_argument("--force", action="store_true", help="redo every stage (cached requests still cost nothing)")
    run.add_argument("--simulate", type=cli.NON_NEGATIVE_INT, default=0, metavar="N",
                     help="simulated dialogues per catalog item, 0 = off (default 0)")
    run.add_argument("--simulate-mode", choices=MODES, default="template",
                     help="template = Jinja slot templates, llm = written by the judge's model (default template)")
    run.add_argument("--simulate-seed", type=int, default=0, help="seed of the simulated dialogues (default 0)")
    add_judge_arguments(run)
    return p


def run_pipeline(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or default_data_dir(args.dataset)  # INSPIRED has no embedded sample: says what to do
    out = runs.check_output_dir(args.out or Path("outputs") / ("sample" if args.data_dir is None else args.dataset))
    started = time.perf_counter()
    prepared = prepare(args.dataset, data_dir, out, args.on_error, args.force)
    if args.simulate:
        run_simulate(out, args.simulate_mode, args.simulate, args.simulate_seed, args, force=args.force)
    retrieved = retrieve(out, args.top_k, args.embedder, force=args.force)
    if args.data_dir is None:
        for key, value in DEMO_SLICE.items():
            if getattr(args, key) is None and runs.read_summary(out, "judgments") is None:
                setattr(args, key, value)
    labelled = run_judge(out, args, args.force)
    judged = runs.read_summary(out, "judgments") or {}
    print(f"[run] done in {time.perf_counter() - started:.0f} s; artifacts in {out}/\n"
          f"  {prepared.get('recommendation_turns', 0):,d} recommendation turns, {prepared.get('items', 0):,d} items -> "
          f"{retrieved.get('candidates', 0):,d} candidates -> {judged.get('pairs', 0):,d} pairs judged "
          f"({judged.get('failed', 0):,d} failed) -> {labelled['synthetic_labels']:,d} synthetic labels at threshold "
          f"{args.threshold} on {labelled['turns']:,d} turns")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: run_pipeline(args))


if __name__ == "__main__":
    sys.exit(main())
