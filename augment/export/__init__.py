"""Synthetic labels in the formats third-party CRS trainers read: `crslab`, `unicrs`, `jsonl`.

Every format is built from the same rows as the release's `labels` config (`augment.release.labelled_turns`), so
synthetic labels appear on train turns only and gold labels are never changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from augment import runs
from augment.export import crslab, jsonl, unicrs
from augment.release import labelled_turns

FORMATS: dict[str, Callable[[list[dict], dict[str, dict], Path], list[Path]]] = {
    "crslab": crslab.write,
    "unicrs": unicrs.write,
    "jsonl": jsonl.write,
}


def export(run: Path, fmt: str, out: Path) -> list[Path]:
    """Write `fmt` files for the run into `out`; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    items: dict[str, dict[str, Any]] = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    Path(out).mkdir(parents=True, exist_ok=True)
    return FORMATS[fmt](labelled_turns(run), items, Path(out))

