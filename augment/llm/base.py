"""The one small interface every model backend implements.

A backend turns a batch of rendered prompts into either digit probabilities (the judge's 0-4 rubric) or generated
text (teacher rationales, simulated dialogues). Everything model-specific (transport, batching, prefix reuse,
retries) lives behind it, so the stages never know which backend they talk to. Failures are values, not
exceptions: a batch always returns one result per prompt, each either ok or carrying the reason it failed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

DIGITS: tuple[str, ...] = ("0", "1", "2", "3", "4")


@dataclass(frozen=True)
class DigitScore:
    """Renormalised probabilities of the digit tokens 0..4 at the answer position, or why there are none."""

    probs: tuple[float, ...] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.probs is not None

    @property
    def score(self) -> float:
        """The judge score: the expectation of the digit under `probs` (NaN for a failed pair)."""
        return expected_score(self.probs) if self.probs is not None else math.nan


@dataclass(frozen=True)
class Generation:
    """Generated text, or why there is none.

    Optional extras a backend may fill when its transport reports them (None otherwise): `token_logprobs`, one
    (token, {top token: logprob}) entry per generated token, lets a teacher read the digit probabilities at its
    rating position; `tokens_in` / `tokens_out` are the prompt and completion token counts.
    """

    text: str | None
    error: str | None = None
    token_logprobs: tuple[tuple[str, Mapping[str, float]], ...] | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None


class Backend(ABC):
    """A model behind one of the transports (local transformers, an OpenAI-compatible server, in-process vLLM).

    `name` and `model` identify the backend in artifacts and in the request cache; `params()` returns every other
    setting that changes an answer (chat template or raw completion, sampling...), so the cache keys on it.
    """

    name: str
    model: str

    @abstractmethod
    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        """P(digit) for each prompt, the prompt's next token being the answer digit."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        """Free text for each prompt."""

    def params(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        """Release connections or engines; a no-op for backends that hold none."""

    def check(self) -> None:
        """Fail fast, before any work is queued, when the model cannot answer (a server that is not there, a model
        it does not serve); raises ValueError naming what to fix. A no-op for backends that load their model."""


def normalise_digit_probs(token_logprobs: Mapping[str, float]) -> tuple[float, ...] | None:
    """Map top-token logprobs at the answer position to renormalised P(0..4).

    A token counts as a digit when it equals the digit after stripping white space (so " 3" and "3" are both the
    digit 3; their probabilities add up). Digits absent from the mapping get probability 0. Returns None when no
    digit is present at all: the caller records that as a failure with its reason.
    """
    mass = [0.0] * len(DIGITS)
    for token, logprob in token_logprobs.items():
        stripped = token.strip()
        if stripped in DIGITS and logprob is not None and math.isfinite(logprob):
            mass[DIGITS.index(stripped)] += math.exp(logprob)
    total = sum(mass)
    if total <= 0.0:
        return None
    return tuple(m / total for m in mass)


def expected_score(probs: Sequence[float]) -> float:
    """Expectation of the 0-4 rubric digit: sum_d d * P(d)."""
    return float(sum(d * p for d, p in enumerate(probs)))


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of each prompt as the model sees it: one user message through the chat template with the
    assistant turn opened (`chat`), or the raw text with the tokenizer's special tokens. The local and vllm
    backends both tokenize here, so they score the very same tokens."""
    if not chat:
        return [tokenizer.encode(prompt) for prompt in prompts]
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]
