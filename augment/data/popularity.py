"""Popularity buckets: the one definition of head / torso / tail items that simulation, release and evaluation share.

An item's popularity is how often it is mentioned in real dialogues. Long-tail follows LOT-CRS: an item is tail when
it has at most `TAIL_MAX_MENTIONS` (4) mentions. Whoever counts the mentions (the catalog's `n_mentions`, or the
train split only, as the evaluation does) passes the count in; the rule itself lives only here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

TAIL_MAX_MENTIONS = 4
HEAD_MIN_MENTIONS = 20
BUCKETS = (("tail", 0, TAIL_MAX_MENTIONS), ("torso", TAIL_MAX_MENTIONS + 1, HEAD_MIN_MENTIONS - 1), ("head", HEAD_MIN_MENTIONS, None))
BUCKET_RULE = (f"by mentions in the real dialogues: tail 0-{TAIL_MAX_MENTIONS} (LOT-CRS), "
               f"torso {TAIL_MAX_MENTIONS + 1}-{HEAD_MIN_MENTIONS - 1}, head >= {HEAD_MIN_MENTIONS}")


def bucket_of(n_mentions: int) -> str:
    """The bucket name of an item with `n_mentions` mentions."""
    return next(name for name, low, high in BUCKETS if n_mentions >= low and (high is None or n_mentions <= high))


def is_tail(n_mentions: int, tail_max: int = TAIL_MAX_MENTIONS) -> bool:
    return n_mentions <= tail_max


def mention_counts(turns: Iterable[Mapping[str, Any]], split: str | None = "train") -> Counter[str]:
    """Mentions per item in the real dialogues of `split` (None: every split): an item counts once per
    conversation in which it is mentioned or recommended, the way ReDial's `movies_with_mentions.csv` counts."""
    seen: dict[tuple[str, str], set[str]] = {}
    for turn in turns:
        if split is not None and turn["split"] != split:
            continue
        key = (turn["dataset"], turn["dialog_id"])
        seen.setdefault(key, set()).update(turn["mentioned"], turn["rec"])
    return Counter(item for items in seen.values() for item in items)
