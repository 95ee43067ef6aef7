"""The thin recommender: a dialogue context against every catalog item, trainable in minutes on 2 CPU cores.

score(context, item) = exp(log_scale) * <W q + b, e_item> + bias_item, where q is the context's MiniLM vector
(the same text and embedder the retrieval stage uses, so vectors come from the sqlite embedding cache), W starts
as the identity, e_item is a trainable row initialised from the item-text embedding (`prompts/item.jinja`, as
retrieval does) and bias_item a per-item bias. Untrained, it ranks exactly as retrieval does; training moves the
item rows, the bias (popularity) and W. `--finetune-encoder` trains the MiniLM encoder too (inputs are then
context texts, not cached vectors; slower).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from augment import runs
from augment.embed import DEFAULT_EMBEDDER, EmbeddingCache, InstructionEmbedder, resolve_embedder
from augment.retrieve import query_text
from augment.templates import render

INIT_SCALE = 20.0  # cosine similarities live in [-1, 1]; softmax over 7k items needs a sharper scale to learn


def retrieval_settings(run: Path) -> dict[str, Any]:
    """Embedder and context window of the run's retrieval stage, so context vectors are the cached ones."""
    params = (runs.read_summary(run, "candidates") or {}).get("params", {})
    return {"embedder": params.get("embedder", DEFAULT_EMBEDDER),
            "instruction_format": params.get("instruction_format", "auto"),
            "context_window": params.get("context_window", 6)}


def context_texts(turns: Sequence[dict[str, Any]], context_window: int) -> list[str]:
    return [query_text(turn, context_window) for turn in turns]


def embed_texts(texts: Sequence[str], settings: dict[str, Any], documents: bool, cache_path: Path | None = None) -> torch.Tensor:
    """Vectors through the embedding cache (the model loads only for texts never embedded before)."""
    model = InstructionEmbedder(settings["embedder"], settings["instruction_format"], EmbeddingCache(cache_path))
    if documents:
        vectors = model.encode_documents(texts)
    else:
        vectors = model.encode_queries(texts, render("query_instruction.jinja"))
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def item_vectors(items: Sequence[dict[str, Any]], settings: dict[str, Any], cache_path: Path | None = None) -> torch.Tensor:
    return embed_texts([render("item.jinja", **item) for item in items], settings, documents=True, cache_path=cache_path)


class TextEncoder(nn.Module):
    """The sentence-transformers encoder as a trainable module: texts -> L2-normalised vectors."""

    def __init__(self, name: str = DEFAULT_EMBEDDER):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        path = resolve_embedder(name)
        if Path(path).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model = SentenceTransformer(path, device="cpu")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        features = self.model.tokenize(list(texts))
        return F.normalize(self.model(features)["sentence_embedding"], dim=-1)


class ThinRecommender(nn.Module):
    """Scores every catalog item for a batch of contexts (vectors, or texts when it owns an encoder)."""

    def __init__(self, item_init: torch.Tensor, dropout: float = 0.1, encoder: TextEncoder | None = None):
        super().__init__()
        dim = item_init.shape[1]
        self.encoder = encoder
        self.project = nn.Linear(dim, dim)
        with torch.no_grad():
            self.project.weight.copy_(torch.eye(dim))
            self.project.bias.zero_()
        self.items = nn.Parameter(item_init.clone().float())
        self.bias = nn.Parameter(torch.zeros(item_init.shape[0]))
        self.log_scale = nn.Parameter(torch.tensor(math.log(INIT_SCALE)))
        self.dropout = nn.Dropout(dropout)

    @property
    def n_items(self) -> int:
        return self.items.shape[0]

    def forward(self, contexts: torch.Tensor | Sequence[str]) -> torch.Tensor:
        vectors = self.encoder(contexts) if self.encoder is not None else contexts
        hidden = self.project(self.dropout(vectors))
        return self.log_scale.exp() * hidden @ self.items.T + self.bias


class Contexts:
    """Model inputs by turn index: cached vectors (frozen encoder) or texts (fine-tuned encoder)."""

    def __init__(self, texts: Sequence[str], vectors: torch.Tensor | None):
        self.texts, self.vectors = list(texts), vectors

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor | list[str]:
        if self.vectors is not None:
            return self.vectors[torch.as_tensor(indices, dtype=torch.long)]
        return [self.texts[int(i)] for i in indices]


def load_contexts(turns: Sequence[dict[str, Any]], settings: dict[str, Any], finetune: bool,
                  cache_path: Path | None = None) -> Contexts:
    texts = context_texts(turns, settings["context_window"])
    return Contexts(texts, None if finetune else embed_texts(texts, settings, documents=False, cache_path=cache_path))


@torch.no_grad()
def top_items(model: ThinRecommender, contexts: Contexts, indices: Sequence[int], depth: int,
              batch_size: int = 512) -> list[list[int]]:
    """The `depth` best item rows for each context (eval mode; the caller filters mentioned items)."""
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    for start in range(0, len(indices), batch_size):
        logits = model(contexts.batch(indices[start : start + batch_size]))
        out.extend(logits.topk(min(depth, model.n_items), dim=1).indices.tolist())
    model.train(was_training)
    return out
