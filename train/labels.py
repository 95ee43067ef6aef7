"""Training data for the thin recommender: which turns train, which validate, and where labels come from.

Only turns of the training split ever reach training (ReDial `train`; INSPIRED, whose train file is not here,
trains on `valid` = dev.tsv): `split_train_valid` takes them and holds out a stable slice of their dialogues for
model selection; test turns are never read into training data, and `check_training_turns` refuses any that are.

Synthetic label sources (stage 1), an explicit choice so an experiment compares them:
- `judge`: `rec_synthetic` of the run's `labels/` stage, whatever judge produced it (LLM, cross-encoder student);
- `similarity`: no judge at all: each turn's top-M retrieved candidates (`candidates/`, ranked by embedding
  similarity, mentioned items already excluded). The baseline any judge has to beat.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

from augment import runs

LABEL_SOURCES = ("judge", "similarity")
DEFAULT_SIMILARITY_TOP = 10


def train_split(turns: Iterable[dict[str, Any]]) -> str:
    """The split that trains: 'train' when the run has one, else 'valid' (INSPIRED: dev as train)."""
    splits = {turn["split"] for turn in turns}
    if "train" in splits:
        return "train"
    if "valid" in splits:
        return "valid"
    raise ValueError(f"no train or valid split in this run (splits: {sorted(splits)}): nothing to train on")


def in_valid_slice(dialog_id: str, valid_share: float) -> bool:
    """Stable per-dialogue choice (sha256 of the id): every turn of a dialogue is on the same side."""
    digest = int(hashlib.sha256(dialog_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < valid_share


def split_train_valid(turns: Sequence[dict[str, Any]], valid_share: float) -> tuple[list[dict], list[dict]]:
    """(training turns, validation turns), both from the training split's dialogues only."""
    name = train_split(turns)
    pool = [t for t in turns if t["split"] == name]
    valid = [t for t in pool if in_valid_slice(t["dialog_id"], valid_share)]
    train = [t for t in pool if not in_valid_slice(t["dialog_id"], valid_share)]
    return train, valid


def evaluation_turns(turns: Sequence[dict[str, Any]]) -> list[dict]:
    return [t for t in turns if t["split"] == "test"]


def check_training_turns(turns: Iterable[dict[str, Any]], allowed_split: str, held_out: set[str]) -> None:
    """Refuse a training turn from another split or from the validation slice (a leak would inflate results)."""
    for turn in turns:
        if turn["split"] != allowed_split or turn["turn_uid"] in held_out:
            raise ValueError(f"turn {turn['turn_uid']} (split {turn['split']}) must not reach training")


def resolve_source(run: Path, source: str) -> str:
    """'auto' = judge labels when the run has a finished labels/ stage, else similarity labels."""
    if source == "auto":
        return "judge" if runs.read_summary(run, "labels") is not None else "similarity"
    if source not in LABEL_SOURCES:
        raise ValueError(f"label source must be one of {LABEL_SOURCES} or auto, got {source!r}")
    if source == "judge":
        runs.require(run, "labels")
    return source


def judge_labels(run: Path, turns: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Synthetic item ids per training turn from `labels/labels.parquet` (highest score first)."""
    wanted = {t["turn_uid"] for t in turns}
    rows = runs.read_rows(Path(run) / "labels" / "labels.parquet")
    return {r["turn_uid"]: [s["item_id"] for s in r["rec_synthetic"]] for r in rows if r["turn_uid"] in wanted}


def similarity_labels(run: Path, turns: Sequence[dict[str, Any]], top: int) -> dict[str, list[str]]:
    """Each training turn's first `top` retrieved candidates that are not gold (nearest first)."""
    by_uid = {t["turn_uid"]: t for t in turns}
    labels: dict[str, list[tuple[int, str]]] = {}
    for row in runs.read_rows(Path(run) / "candidates" / "candidates.parquet"):
        turn = by_uid.get(row["turn_uid"])
        if turn is not None and row["rank"] < top and row["item_id"] not in turn["rec"]:
            labels.setdefault(row["turn_uid"], []).append((row["rank"], row["item_id"]))
    return {uid: [item for _, item in sorted(pairs)] for uid, pairs in labels.items()}


def synthetic_labels(run: Path, turns: Sequence[dict[str, Any]], source: str, top: int) -> dict[str, list[str]]:
    if source == "judge":
        return judge_labels(run, turns)
    return similarity_labels(run, turns, top)


def simulated_turns(run: Path) -> list[dict[str, Any]]:
    """Simulated dialogues' final recommendation turns (`simulated/turns.parquet`, split 'train')."""
    runs.require(run, "simulated")
    return runs.read_rows(Path(run) / "simulated" / "turns.parquet")


def pairs(turns: Sequence[dict[str, Any]], row_of: dict[str, int], extra: dict[str, list[str]] | None = None,
          offset: int = 0) -> list[tuple[int, int]]:
    """(turn index + offset, item row) samples: every gold label, then the extra (synthetic) ones, no repeats."""
    out = []
    for index, turn in enumerate(turns):
        items = list(dict.fromkeys([*turn["rec"], *((extra or {}).get(turn["turn_uid"], []))]))
        out.extend((index + offset, row_of[item]) for item in items if item in row_of)
    return out
