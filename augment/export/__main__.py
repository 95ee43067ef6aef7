"""`python -m augment.export --run RUN --format crslab|unicrs|cfcrs|jsonl --out DIR`: trainer-ready files.

crslab: a CRSLab ReDial dataset folder (copy it to CRSLab's data/dataset/redial/nltk/); unicrs: UniCRS's
recommendation jsonl with KG ids and its KG folder; cfcrs: CFCRS/FNSCRS's name-based jsonl with CFCRS's KG files;
jsonl: one neutral line per turn with gold and scored synthetic labels. crslab, unicrs and cfcrs carry the run's
knowledge graph (built on the way when the run has none) and a valid split. Exporting into the same --out again does
nothing when the run has not changed, and rebuilds the export when it has (see OUT/summary.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment import cli, runs
from augment.export import DEFAULT_VALID_FRACTION, FORMATS, export


def print_summary(summary: dict, out: Path) -> None:
    splits = ", ".join(f"{s} {c['turns']:,d} turns / {c['gold_labels']:,d} gold / {c['synthetic_labels']:,d} synthetic"
                       for s, c in summary["splits"].items())
    print(f"[export] {summary['format']}: {len(summary['files'])} files in {out}; {splits}")
    print(f"  valid: {summary['valid']['source']}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/ and (optionally) labels/")
    p.add_argument("--format", choices=sorted(FORMATS), required=True, help="which trainer's files to write")
    p.add_argument("--out", type=Path, required=True, help="folder to write the export into (created if missing)")
    p.add_argument("--valid-fraction", type=cli.float_in(0.0, 0.5, low_open=True), default=DEFAULT_VALID_FRACTION,
                   help="crslab/unicrs/cfcrs, for a run without a valid split: share of train dialogues (the last "
                        f"ones) held out as valid, in (0, 0.5] (default {DEFAULT_VALID_FRACTION})")
    p.add_argument("--force", action="store_true", help="rewrite the export even if it is current or was made with "
                                                        "other parameters")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: print_summary(
        export(args.run, args.format, args.out, args.valid_fraction, args.force), args.out))


if __name__ == "__main__":
    sys.exit(main())
