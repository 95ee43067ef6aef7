"""`python -m augment.export --run RUN --format crslab|unicrs|jsonl --out DIR`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augment.export import FORMATS, export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m augment.export", description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/ and (optionally) labels/")
    p.add_argument("--format", choices=sorted(FORMATS), required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        paths = export(args.run, args.format, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[export] {args.format}: {len(paths)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
