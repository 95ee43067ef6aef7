"""What the pair-student backends share (`bi-encoder`, `cross-encoder`): they rate (dialogue, item) pairs, not prompts.

`augment.score` renders the same `prompts/score.jinja` prompt for every backend, so its request cache and its
judgments artifact stay one format. A pair judge splits each prompt at the template's fixed section markers into
the dialogue and the candidate item text, and rates the pairs. The trainer (`train.judge`) splits with the same
function, so training and scoring see the same texts.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

from augment.llm.base import Backend, DigitScore, Generation

DIALOGUE_MARK = "\nConversation:\n"
ITEM_MARK = "\n\nCandidate movie:\n"
END_MARK = "\n\nReply with a single digit"


def split_score_prompt(prompt: str) -> tuple[str, str]:
    """(dialogue, item text) of a rendered score prompt; ValueError when the prompt lacks the template's markers."""
    start, middle, end = prompt.find(DIALOGUE_MARK), prompt.find(ITEM_MARK), prompt.rfind(END_MARK)
    if start < 0 or middle < start or end < middle:
        raise ValueError("not a prompts/score.jinja prompt (Conversation / Candidate movie / Reply markers missing)")
    return prompt[start + len(DIALOGUE_MARK) : middle].strip(), prompt[middle + len(ITEM_MARK) : end].strip()


class PairJudgeBackend(Backend):
    """A judge that reads (dialogue, item) pairs, not prompts: the score prompts are split at the template's markers
    and `probabilities(pairs)` rates them. It writes no text."""

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        results: list[DigitScore | None] = [None] * len(prompts)
        pairs, where = [], []
        for index, prompt in enumerate(prompts):
            try:
                pairs.append(split_score_prompt(prompt))
                where.append(index)
            except ValueError as exc:
                results[index] = DigitScore(None, error=f"bad prompt: {exc}")
        try:
            for index, probs in zip(where, self.probabilities(pairs)):
                results[index] = DigitScore(probs)
        except Exception as exc:  # the Backend contract: a failure is a value
            for index in where:
                results[index] = DigitScore(None, error=f"{type(exc).__name__}: {exc}")
        return results  # type: ignore[return-value]

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[Generation]:
        """A pair judge rates pairs; it writes no text."""
        return [Generation(None, error=f"the {self.name} backend cannot generate text")] * len(prompts)

    @abstractmethod
    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, ...]]:
        """P(0..4) for each (dialogue, item text) pair."""
