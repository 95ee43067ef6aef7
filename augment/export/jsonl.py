"""`jsonl`: one neutral line per turn with gold and synthetic labels and their judge scores.

For soft-label or score-weighted trainers: gold labels carry no score (they are the human's choice, weight them as
you like), synthetic labels carry the judge's expected score (0-4). One file per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment.data.records import SPLIT_NAMES, display_title
from augment.export.files import write_lines

if TYPE_CHECKING:
    from augment.export import Bundle


def line(turn: dict[str, Any], items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "turn_uid": turn["turn_uid"],
        "dataset": turn["dataset"],
        "split": turn["split"],
        "dialog_id": turn["dialog_id"],
        "turn_id": turn["turn_id"],
        "context": turn["context"],
        "response": turn["response"],
        "mentioned": turn["mentioned"],
        "rec": [{"item_id": i, "title": display_title(items[i])} for i in turn["rec"]],
        "rec_synthetic": [{"item_id": s["item_id"], "title": display_title(items[s["item_id"]]), "score": s["score"]}
                          for s in turn["rec_synthetic"]],
    }


def write(bundle: Bundle, out: Path) -> tuple[list[Path], dict[str, Any]]:
    splits = [s for s in SPLIT_NAMES if bundle.split(s)]
    paths = [write_lines(out / f"{s}.jsonl", [line(t, bundle.items) for t in bundle.split(s)]) for s in splits]
    return paths, {"lines": {s: len(bundle.split(s)) for s in splits}}
