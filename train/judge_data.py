"""Data and loss of judge distillation: teacher pairs as scoring prompts, a split by dialogue, KL over five ratings.

Every student reads the exact prompt `augment.score` renders (`prompts/score.jinja`), so a trained student scores
through the ordinary score stage with no prompt of its own. The validation split is by dialogue: a dialogue's
turns are all in train or all held out, so held-out numbers never reward memorising a conversation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from augment import runs
from augment.score import render_prompt


@dataclass(frozen=True)
class Example:
    """One teacher pair, rendered: the scoring prompt and the teacher's P(0..4)."""

    turn_uid: str
    dialog_id: str
    item_id: str
    kind: str
    prompt: str
    target: tuple[float, ...]


def teacher_run(teacher_dir: Path) -> Path:
    """The run a teacher stage belongs to (RUN/teacher -> RUN), checked to hold the turns and items it needs."""
    teacher_dir = Path(teacher_dir)
    if not (teacher_dir / "teacher.parquet").exists():
        raise FileNotFoundError(f"{teacher_dir}/teacher.parquet not found: run `python -m augment.teach` first")
    runs.require(teacher_dir.parent, "turns", "items")
    return teacher_dir.parent


def load_examples(teacher_dir: Path, completion: bool = False, context_window: int = 10) -> list[Example]:
    """The teacher's rated pairs (failed ones skipped) as scoring prompts, in the artifact's order."""
    run = teacher_run(teacher_dir)
    turns = {t["turn_uid"]: t for t in runs.read_rows(run / "turns" / "turns.parquet")}
    items = {i["item_id"]: i for i in runs.read_rows(run / "items" / "items.parquet")}
    examples = []
    for row in runs.read_rows(Path(teacher_dir) / "teacher.parquet"):
        if row["status"] != "ok":
            continue
        prompt = render_prompt(turns[row["turn_uid"]], items[row["item_id"]], completion, context_window)
        examples.append(Example(row["turn_uid"], row["dialog_id"], row["item_id"], row["kind"], prompt,
                                tuple(row["probs"])))
    if not examples:
        raise ValueError(f"{teacher_dir} holds no rated pair to learn from")
    return examples


def split_by_dialogue(examples: Sequence[Example], valid_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out): a seeded `valid_fraction` of the dialogues, whole, is held out."""
    dialogues = sorted({e.dialog_id for e in examples})
    random.Random(seed).shuffle(dialogues)
    n_valid = math.ceil(valid_fraction * len(dialogues)) if valid_fraction > 0 else 0
    if n_valid >= len(dialogues):
        raise ValueError(f"{len(dialogues)} dialogues are too few to hold out {valid_fraction:.0%} and train on the rest")
    held = set(dialogues[:n_valid])
    return [e for e in examples if e.dialog_id not in held], [e for e in examples if e.dialog_id in held]


def kl_loss(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(p_teacher || p_student) over the five ratings, p_student = softmax(logits).

    Terms with p_teacher = 0 contribute 0 (the limit of p log p), so a hard one-hot teacher gives cross-entropy.
    """
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    p = target.float()
    log_p = torch.where(p > 0, torch.log(p.clamp_min(1e-30)), torch.zeros_like(p))
    return (p * (log_p - log_q)).sum(dim=-1).mean()


def targets(examples: Sequence[Example]) -> torch.Tensor:
    return torch.tensor([e.target for e in examples], dtype=torch.float32)
