"""Bad input: a clear error naming the file and line, or a counted skip.

Real CRS dumps are messy (truncated lines, unknown ids, stray bytes). By default the first problem stops the run
with its location, so nothing is silently lost; with `--on-error skip` the offending record is skipped, counted by
reason and a few examples are kept for the stage summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

ON_ERROR_CHOICES = ("raise", "skip")


class Rejection(NamedTuple):
    """Why a record cannot be used: a reason (the counter key) and a detail (for the message)."""

    reason: str
    detail: str = ""


class BadInput(ValueError):
    """A record in an input file that cannot be used; the message names file and line."""


@dataclass
class Problems:
    on_error: str = "raise"
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {self.on_error!r}")

    def report(self, where: str, reason: str, detail: str = "") -> None:
        """Raise BadInput, or count the skip; `where` is 'file:line'."""
        message = f"{where}: {reason}" + (f" ({detail})" if detail else "")
        if self.on_error == "raise":
            raise BadInput(message + " — fix the file, or pass --on-error skip to skip and count such records")
        self.skipped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)

    def summary(self) -> dict:
        return {"skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()), "examples": self.examples}
