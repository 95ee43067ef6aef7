"""Argument types for every command line: a numeric flag out of its range is refused at parse time.

argparse turns the ValueError of a `type=` callable into `error: argument --top-k: ...` and exit code 2, so each
command names the flag and its valid range in one line instead of failing later (or, worse, succeeding with a
meaningless value such as 0 candidates or a threshold no judge score can reach).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= `low` (e.g. `int_at_least(1)` for a count that must be positive)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_in(low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (or (low, high] with `low_open`); NaN and infinities are refused."""
    left = "(" if low_open else "["
    span = f"{left}{low:g}, {high:g}]" if high is not None else f"{left}{low:g}, inf)"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a number in {span}, got {text}")
        return value

    parse.__name__ = f"number in {span}"
    return parse


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
POSITIVE_FLOAT = float_in(0.0, None, low_open=True)
NON_NEGATIVE_FLOAT = float_in(0.0)
