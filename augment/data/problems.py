"""Bad input: a clear error naming the file and line, a counted skip, or a recorded warning.

Real CRS dumps are messy (truncated lines, unknown ids, stray bytes). By default the first problem stops the run
with its location, so nothing is silently lost; with `--on-error skip` the offending record is skipped, counted by
reason and a few examples are kept for the stage summary. A problem with a whole file (empty, unreadable header,
damaged metadata) is an error in both modes: skipping it would silently drop everything the file holds. Something
the run can do without but the user must know about (a missing metadata file) is a warning: printed at once and
recorded in the summary and printed with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

ON_ERROR_CHOICES = ("raise", "skip")
SKIP_HINT = "fix the file, or pass --on-error skip to skip and count such records"


class Rejection(NamedTuple):
    """Why a record cannot be used: a reason (the counter key) and a detail (for the message)."""

    reason: str
    detail: str = ""


class BadInput(ValueError):
    """A record or file that cannot be used; the message names file and line."""


def located(where: str, reason: str, detail: str = "") -> str:
    """'file:line: reason (detail)', the one shape of every data-layer message."""
    return f"{where}: {reason}" + (f" ({detail})" if detail else "")


@dataclass
class Problems:
    on_error: str = "raise"
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_examples: int = 20

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {self.on_error!r}")

    def report(self, where: str, reason: str, detail: str = "") -> None:
        """Raise BadInput, or count the skip; `where` is 'file:line'."""
        message = located(where, reason, detail)
        if self.on_error == "raise":
            raise BadInput(f"{message} — {SKIP_HINT}")
        self.skipped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)

    @staticmethod
    def fail(where: str, reason: str, detail: str = "", fix: str = "fix the file") -> None:
        """A file that cannot be read at all: an error even under --on-error skip."""
        raise BadInput(f"{located(where, reason, detail)} — {fix} (a whole file is never skipped)")

    def warn(self, message: str) -> None:
        """Something missing that the run can do without: kept for the summary, which prints it on stderr."""
        self.warnings.append(message)

    def summary(self) -> dict:
        return {
            "skipped": dict(self.skipped),
            "skipped_total": sum(self.skipped.values()),
            "examples": self.examples,
            "warnings": self.warnings,
        }
