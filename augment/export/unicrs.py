"""`unicrs`: the recommendation jsonl UniCRS, CFCRS and FNSCRS read.

One line per recommendation turn: `context` (earlier utterances, oldest first), `resp` (the recommender's
utterance), `rec` (item names, 'Title (Year)'), `entity` (names of the items mentioned so far). Each split is
written unchanged as `<split>_data_processed.jsonl`; train also gets `train_data_augmented.jsonl`, whose `rec`
holds the original labels followed by the synthetic ones, highest judge score first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augment.data.records import SPLIT_NAMES, display_title


def line(turn: dict[str, Any], items: dict[str, dict[str, Any]], augmented: bool) -> dict[str, Any]:
    synthetic = sorted(turn["rec_synthetic"], key=lambda s: -s["score"]) if augmented else []
    return {
        "context": [u["text"] for u in turn["context"]],
        "resp": turn["response"],
        "rec": [display_title(items[i]) for i in turn["rec"] + [s["item_id"] for s in synthetic]],
        "entity": [display_title(items[i]) for i in turn["mentioned"]],
    }


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def write(turns: list[dict], items: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    paths = []
    for split in [s for s in SPLIT_NAMES if any(t["split"] == s for t in turns)]:
        rows = [t for t in turns if t["split"] == split]
        paths.append(write_lines(out / f"{split}_data_processed.jsonl", [line(t, items, False) for t in rows]))
        if split == "train":
            paths.append(write_lines(out / "train_data_augmented.jsonl", [line(t, items, True) for t in rows]))
    return paths
