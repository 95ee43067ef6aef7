"""A sqlite request cache in front of any backend: a killed run resumes where it stopped and never pays twice.

The key is a hash of everything that changes an answer (backend, model, request kind, prompt, the backend's
`params()`, the generation settings). An ok result is final and served from disk from then on. A failed result
is stored with its reason, so a run can report what failed, but it counts as a miss: the next call asks again.
Each batch's results are committed together once the inner backend returns them, so a kill loses at most the
batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar

from augment import paths
from augment.llm.base import Backend, DigitScore, Generation

Kind = Literal["digits", "generate"]
Result = TypeVar("Result", DigitScore, Generation)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    ok INTEGER NOT NULL,
    value TEXT,
    error TEXT,
    updated REAL NOT NULL
)
"""


def request_key(backend: Backend, kind: Kind, prompt: str, generation: Mapping[str, Any]) -> str:
    """sha256 of a canonical JSON of everything that changes the answer to this request."""
    fields = {
        "backend": backend.name,
        "model": backend.model,
        "kind": kind,
        "prompt": prompt,
        "params": dict(backend.params()),
        "generation": dict(generation),
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def reason_head(error: str) -> str:
    """A failure's reason without its per-prompt detail ("no digit among top tokens: [...]" -> before the colon),
    so failures can be counted by kind."""
    return error.split(":", 1)[0]


class CachedBackend(Backend):
    """`inner` behind a sqlite cache; looks like `inner` (same name, model, params) to the stages."""

    def __init__(self, inner: Backend, path: str | Path | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.path = Path(path) if path is not None else paths.cache_dir() / "requests.sqlite"
        self._db = _connect(self.path)
        self.hits = 0
        self.misses = 0
        self.failures: Counter[str] = Counter()

    def params(self) -> Mapping[str, Any]:
        return self.inner.params()

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        keys = [request_key(self.inner, "digits", p, {}) for p in prompts]
        return self._cached(keys, prompts, "digits", self.inner.score_digits)

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        settings = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
        keys = [request_key(self.inner, "generate", p, settings) for p in prompts]
        send = partial(self.inner.generate, max_tokens=max_tokens, temperature=temperature, seed=seed)
        return self._cached(keys, prompts, "generate", send)

    def summary(self) -> str:
        """One line for a stage's summary: hits, misses, and failures of this process by reason."""
        failed = ", ".join(f"{reason}: {n}" for reason, n in self.failures.most_common()) or "none"
        return f"cache {self.path}: {self.hits} hits, {self.misses} misses; failed requests: {failed}"

    def stored_failures(self) -> Counter[str]:
        """Requests whose latest try failed, by reason, across every run that used this cache file."""
        rows = self._db.execute("SELECT error FROM requests WHERE ok = 0")
        return Counter(reason_head(error) for (error,) in rows)

    def close(self) -> None:
        self._db.close()
        self.inner.close()

    def _cached(
        self, keys: list[str], prompts: Sequence[str], kind: Kind, send: Callable[[list[str]], list[Result]]
    ) -> list[Result]:
        """Answers from disk where ok; the rest (each distinct key once) sent in one call, stored, then merged.

        A hit is a result not paid for this time (a repeat of a prompt within the batch included).
        """
        found = self._lookup(keys, kind)
        todo = {key: prompt for key, prompt in zip(keys, prompts) if key not in found}
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = send(list(todo.values()))
            if len(fresh) != len(todo):
                raise RuntimeError(f"{self.inner.name} returned {len(fresh)} results for {len(todo)} prompts")
            self._store(kind, dict(zip(todo, fresh)))
            found |= dict(zip(todo, fresh))
        return [found[key] for key in keys]

    def _lookup(self, keys: list[str], kind: Kind) -> dict[str, Any]:
        """The ok results among `keys` (sqlite caps bound variables, so look up in chunks)."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM requests WHERE ok = 1 AND key IN ({marks})", chunk)
            found |= {key: _decode(kind, value) for key, value in rows}
        return found

    def _store(self, kind: Kind, results: Mapping[str, DigitScore | Generation]) -> None:
        """Write a batch's results in one transaction; failures are counted by reason as they are written."""
        now = time.time()
        rows = []
        for key, result in results.items():
            if not result.ok:
                self.failures[reason_head(result.error or "unknown")] += 1
            rows.append((key, kind, self.name, self.model, int(result.ok), _encode(result), result.error, now))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _connect(path: Path) -> sqlite3.Connection:
    """WAL so a reader never blocks the writer and a killed writer leaves a consistent file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(SCHEMA)
    db.commit()
    return db


def _encode(result: DigitScore | Generation) -> str | None:
    """JSON of the ok value (floats round-trip exactly through json), None for a failure. A generation keeps its
    per-token logprobs and token counts: a teacher's soft rating must come back from the cache as it was sent."""
    if isinstance(result, DigitScore):
        return json.dumps(list(result.probs)) if result.probs is not None else None
    if result.text is None:
        return None
    logprobs = [[token, dict(top)] for token, top in result.token_logprobs] if result.token_logprobs else None
    return json.dumps({"text": result.text, "token_logprobs": logprobs, "tokens_in": result.tokens_in,
                       "tokens_out": result.tokens_out})


def _decode(kind: Kind, value: str) -> DigitScore | Generation:
    if kind == "digits":
        return DigitScore(tuple(json.loads(value)))
    decoded = json.loads(value)
    if isinstance(decoded, str):  # written before generations kept their logprobs
        return Generation(decoded)
    logprobs = decoded["token_logprobs"]
    return Generation(decoded["text"], token_logprobs=tuple((t, top) for t, top in logprobs) if logprobs else None,
                      tokens_in=decoded["tokens_in"], tokens_out=decoded["tokens_out"])
