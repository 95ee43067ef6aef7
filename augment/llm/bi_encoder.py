"""The `bi-encoder` backend: a distilled dual-encoder student, the fastest judge that has signal on a CPU.

A sentence-transformers encoder (the offline all-MiniLM-L6-v2 by default) embeds the dialogue and the candidate
item apart; a five-way rating head turns their cosine into P(0..4): logit_k = slope_k * cos + bias_k. Why this
shape next to the cross-encoder: the two texts never meet inside the encoder, so a turn's dialogue is embedded once
for all its candidates and an item once for every turn, which makes scoring hundreds of pairs per second on two
cores; and the student starts from the retrieval cosine, which already ranks gold items above random ones, instead
of from chance, so distillation on a CPU budget moves it somewhere useful.

It reads the very prompts `augment.score` renders (split at the template's markers, as the cross-encoder does),
so the score stage, its request cache and its judgments artifact are the same for every backend. The module
(`DualEncoderJudge`) lives here and `train.judge` imports it: training and scoring see the same tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from augment.llm.pair_judge import PairJudgeBackend

DIALOGUE_TOKENS = 128  # default; the dialogue is cut from its start: the latest utterances matter most
ITEM_TOKENS = 64  # default; title, genres, director and stars fit; the plot is cut
HEAD_FILE = "rating_head.json"  # the head and the token budgets it was trained with: scoring reads the same tokens


class RatingHead(torch.nn.Module):
    """P(0..4) from a cosine: five slopes and five biases. The initial slopes rise with the rating, so the
    untrained judge already orders pairs by cosine."""

    def __init__(self, slope: Sequence[float] = (-8.0, -4.0, 0.0, 4.0, 8.0), bias: Sequence[float] = (0.0,) * 5):
        super().__init__()
        self.slope = torch.nn.Parameter(torch.tensor(list(slope), dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.tensor(list(bias), dtype=torch.float32))

    def forward(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine[:, None] * self.slope + self.bias


class DualEncoderJudge(torch.nn.Module):
    """Encoder + rating head; `logits(pairs)` embeds each distinct dialogue and item of the batch once."""

    def __init__(self, encoder: Any, head: RatingHead, dialogue_tokens: int = DIALOGUE_TOKENS,
                 item_tokens: int = ITEM_TOKENS) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.dialogue_tokens, self.item_tokens = dialogue_tokens, item_tokens

    @classmethod
    def load(cls, path: str, dialogue_tokens: int | None = None) -> "DualEncoderJudge":
        """A trained folder (with `rating_head.json`: head and token budgets) or any sentence-transformers model
        (fresh head, default budgets). `dialogue_tokens` overrides the folder's budget (a new training run)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(path, device="cpu")
        head_file = Path(path) / HEAD_FILE
        saved = json.loads(head_file.read_text()) if head_file.exists() else {}
        head = RatingHead(**{k: saved[k] for k in ("slope", "bias") if k in saved})
        judge = cls(encoder, head, dialogue_tokens or saved.get("dialogue_tokens", DIALOGUE_TOKENS),
                    saved.get("item_tokens", ITEM_TOKENS))
        return judge.float()

    def save(self, path: str) -> None:
        self.encoder.save(path)
        head = {"slope": self.head.slope.tolist(), "bias": self.head.bias.tolist(), **self.token_budgets()}
        (Path(path) / HEAD_FILE).write_text(json.dumps(head) + "\n")

    def token_budgets(self) -> dict[str, int]:
        return {"dialogue_tokens": self.dialogue_tokens, "item_tokens": self.item_tokens}

    def budget(self, kind: str) -> tuple[int, bool]:
        """(max tokens, keep the end) for a "dialogue" or an "item" text."""
        return (self.dialogue_tokens, True) if kind == "dialogue" else (self.item_tokens, False)

    def embed(self, texts: Sequence[str], max_length: int, from_end: bool) -> torch.Tensor:
        """Unit-length embeddings; `from_end` keeps the last `max_length` tokens (a dialogue's latest turns)."""
        tokenizer = self.encoder.tokenizer
        side = tokenizer.truncation_side
        tokenizer.truncation_side = "left" if from_end else "right"
        try:
            batch = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        finally:
            tokenizer.truncation_side = side
        device = next(self.parameters()).device
        features = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
        return torch.nn.functional.normalize(self.encoder(features)["sentence_embedding"], dim=-1)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dialogue vectors, item vectors, each pair's dialogue row, each pair's item row): distinct texts once."""
        dialogues, items = sorted({d for d, _ in pairs}), sorted({i for _, i in pairs})
        dialogue_vectors = self.embed(dialogues, *self.budget("dialogue"))
        item_vectors = self.embed(items, *self.budget("item"))
        d_row, i_row = {d: k for k, d in enumerate(dialogues)}, {i: k for k, i in enumerate(items)}
        d_index = torch.tensor([d_row[d] for d, _ in pairs], device=dialogue_vectors.device)
        i_index = torch.tensor([i_row[i] for _, i in pairs], device=item_vectors.device)
        return dialogue_vectors, item_vectors, d_index, i_index

    def rate(self, dialogue_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Five rating logits per row of aligned (dialogue, item) unit vectors."""
        return self.head((dialogue_vectors * item_vectors).sum(dim=-1))

    def logits(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        dialogue_vectors, item_vectors, d_index, i_index = self.encode_pairs(pairs)
        return self.rate(dialogue_vectors[d_index], item_vectors[i_index])


class BiEncoderBackend(PairJudgeBackend):
    """Scores rendered score prompts with a trained dual-encoder folder (`train.judge --student bi-encoder`).

    Embeddings are kept for the life of the backend: across the batches of a run, a turn's dialogue and a catalog
    item are each embedded once.
    """

    name = "bi-encoder"

    def __init__(self, model: str, *, batch_size: int = 64, threads: int | None = None, **_: Any) -> None:
        if threads:
            torch.set_num_threads(threads)
        if not (Path(model) / HEAD_FILE).exists():
            raise ValueError(f"{model} has no {HEAD_FILE}: train one with `python -m train.judge --student bi-encoder`")
        self.model, self.batch_size = model, batch_size
        self.judge = DualEncoderJudge.load(model).eval()
        self._vectors: dict[tuple[str, str], torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        return self.judge.token_budgets()

    def _embedded(self, texts: Sequence[str], kind: str) -> list[torch.Tensor]:
        todo = sorted({t for t in texts if (kind, t) not in self._vectors})
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            for text, vector in zip(chunk, self.judge.embed(chunk, *self.judge.budget(kind))):
                self._vectors[(kind, text)] = vector
        return [self._vectors[(kind, t)] for t in texts]

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, ...]]:
        if not pairs:
            return []
        with torch.inference_mode():
            dialogues = torch.stack(self._embedded([d for d, _ in pairs], "dialogue"))
            items = torch.stack(self._embedded([i for _, i in pairs], "item"))
            probs = torch.softmax(self.judge.rate(dialogues, items), dim=-1)
        return [tuple(row) for row in probs.tolist()]

    def close(self) -> None:
        self._vectors.clear()

