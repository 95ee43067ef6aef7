"""The sqlite request cache, in front of a scripted in-process backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from augment.llm.base import Backend, DigitScore, Generation
from augment.llm.cache import CachedBackend, request_key


class ScriptedBackend(Backend):
    """Answers from the prompt's length, fails the prompts listed in `failing`, and logs every batch it is sent."""

    name = "scripted"

    def __init__(self, model: str = "m", failing: Mapping[str, str] | None = None, **params: Any) -> None:
        self.model = model
        self.failing = dict(failing or {})
        self.batches: list[list[str]] = []
        self._params = params

    def params(self) -> Mapping[str, Any]:
        return self._params

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        self.batches.append(list(prompts))
        return [DigitScore(None, self.failing[p]) if p in self.failing else DigitScore(self._probs(p)) for p in prompts]

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        self.batches.append(list(prompts))
        return [Generation(None, self.failing[p]) if p in self.failing else Generation(f"{p}|{seed}") for p in prompts]

    @staticmethod
    def _probs(prompt: str) -> tuple[float, ...]:
        weights = [len(prompt) % 7 + 1 / 3, 1.0, 0.1, 2.0 / 7, 0.0]
        return tuple(w / sum(weights) for w in weights)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "requests.sqlite"


def test_misses_go_to_the_inner_backend_once_in_order_and_hits_never(db: Path) -> None:
    inner = ScriptedBackend()
    cache = CachedBackend(inner, db)
    assert cache.score_digits(["a", "bb"]) == inner.score_digits(["a", "bb"])
    inner.batches.clear()

    results = cache.score_digits(["ccc", "a", "dddd", "ccc", "bb"])
    assert inner.batches == [["ccc", "dddd"]]  # one call, misses only, a repeated prompt sent once
    assert results == [DigitScore(ScriptedBackend._probs(p)) for p in ["ccc", "a", "dddd", "ccc", "bb"]]
    assert (cache.hits, cache.misses) == (3, 4)


def test_all_hits_make_no_call(db: Path) -> None:
    inner = ScriptedBackend()
    cache = CachedBackend(inner, db)
    cache.score_digits(["a"])
    assert cache.score_digits(["a", "a"]) == [DigitScore(ScriptedBackend._probs("a"))] * 2
    assert inner.batches == [["a"]]


def test_failures_are_stored_with_reason_and_retried(db: Path) -> None:
    inner = ScriptedBackend(failing={"x": "http 500 after 3 tries: boom", "y": "no digit among top tokens: ['a']"})
    cache = CachedBackend(inner, db)
    first = cache.score_digits(["ok", "x", "y"])
    assert [r.error for r in first] == [None, "http 500 after 3 tries: boom", "no digit among top tokens: ['a']"]
    assert cache.failures == Counter({"http 500 after 3 tries": 1, "no digit among top tokens": 1})
    assert cache.stored_failures() == cache.failures
    assert "0 hits, 3 misses" in cache.summary() and "http 500 after 3 tries: 1" in cache.summary()

    del inner.failing["x"]
    second = cache.score_digits(["ok", "x", "y"])
    assert inner.batches[-1] == ["x", "y"]
    assert second[1].ok and not second[2].ok
    assert cache.stored_failures() == Counter({"no digit among top tokens": 1})


def test_results_persist_across_instances(db: Path) -> None:
    CachedBackend(ScriptedBackend(), db).score_digits(["a", "b"])
    inner = ScriptedBackend()
    again = CachedBackend(inner, db)
    assert again.score_digits(["a", "b"]) == [DigitScore(ScriptedBackend._probs(p)) for p in "ab"]
    assert inner.batches == [] and again.hits == 2


@pytest.mark.parametrize(
    "model, endpoint, asked", [("m", "chat", False), ("other", "chat", True), ("m", "completions", True)]
)
def test_model_and_params_are_part_of_the_key(db: Path, model: str, endpoint: str, asked: bool) -> None:
    CachedBackend(ScriptedBackend(endpoint="chat"), db).score_digits(["a"])
    other = ScriptedBackend(model=model, endpoint=endpoint)
    CachedBackend(other, db).score_digits(["a"])
    assert other.batches == ([["a"]] if asked else [])


def test_key_separates_kind_and_generation_settings() -> None:
    backend = ScriptedBackend()
    keys = {
        request_key(backend, "digits", "p", {}),
        request_key(backend, "generate", "p", {}),
        request_key(backend, "generate", "p", {"max_tokens": 8, "temperature": 0.0, "seed": 0}),
        request_key(backend, "generate", "p", {"max_tokens": 8, "temperature": 0.0, "seed": 1}),
        request_key(backend, "digits", "q", {}),
    }
    assert len(keys) == 5
    assert request_key(backend, "digits", "p", {}) == request_key(ScriptedBackend(), "digits", "p", {})


def test_generate_is_cached_per_settings(db: Path) -> None:
    inner = ScriptedBackend(failing={"bad": "timeout after 3 tries"})
    cache = CachedBackend(inner, db)
    assert [g.text for g in cache.generate(["a", "bad"], max_tokens=8, seed=1)] == ["a|1", None]
    assert [g.text for g in cache.generate(["a", "bad"], max_tokens=8, seed=1)] == ["a|1", None]
    cache.generate(["a"], max_tokens=8, seed=2)
    assert inner.batches == [["a", "bad"], ["bad"], ["a"]]


def test_a_cached_generation_keeps_its_logprobs_and_token_counts(db: Path) -> None:
    answer = Generation("Rating: 4", token_logprobs=(("Rating: ", {"Rating: ": -0.01}), ("4", {"4": -0.2, "3": -1.7})),
                        tokens_in=90, tokens_out=2)

    class Teacher(ScriptedBackend):
        def generate(self, prompts, *, max_tokens, temperature=0.0, seed=0):
            self.batches.append(list(prompts))
            return [answer for _ in prompts]

    inner = Teacher()
    assert CachedBackend(inner, db).generate(["p"], max_tokens=8) == [answer]
    assert CachedBackend(inner, db).generate(["p"], max_tokens=8) == [answer] and inner.batches == [["p"]]


def test_cached_backend_looks_like_its_inner_backend(db: Path) -> None:
    cache = CachedBackend(ScriptedBackend(model="judge", endpoint="chat"), db)
    assert (cache.name, cache.model, dict(cache.params())) == ("scripted", "judge", {"endpoint": "chat"})
    assert db.exists()


def test_a_killed_run_keeps_every_batch_before_the_one_in_flight(db: Path) -> None:
    """kill -9 during the second batch: the first batch is on disk, and the next run asks only for the rest."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from test_llm_cache import ScriptedBackend
        from augment.llm.cache import CachedBackend

        class Killed(ScriptedBackend):
            def score_digits(self, prompts):
                if self.batches:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().score_digits(prompts)

        cache = CachedBackend(Killed(), {str(db)!r})
        cache.score_digits(["a", "b"])
        cache.score_digits(["c"])
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -9
    inner = ScriptedBackend()
    results = CachedBackend(inner, db).score_digits(["a", "b", "c"])
    assert inner.batches == [["c"]] and all(r.ok for r in results)
