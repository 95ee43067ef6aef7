"""The catalog as simulation sees it: which items can get a dialogue, which other movie a seeker may say they liked,
and the leakage rule (the target's title never appears before the final recommendation).

Shared by both modes: template mode discards phrasings that would name the item, llm mode rejects outputs that do.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping, Sequence

from augment.data.records import Utterance, display_title

LIKED_TRIES = 8


@lru_cache(maxsize=8192)
def title_pattern(title: str) -> re.Pattern[str]:
    """The title as a whole phrase, any case: 'Up' matches "Up (2009)" or "up!" but not "upset" or "pick-up's".

    Whole-phrase (not substring) search, because a substring test would flag every dialogue for titles such as
    "It", "Up" or "M"; apostrophes count as part of a word so "I'm" does not name the movie "M".
    """
    return re.compile(rf"(?<![\w']){re.escape(title)}(?![\w'])", re.IGNORECASE)


def names(text: str, item: Mapping[str, Any]) -> bool:
    """True when `text` names the item (its title as a whole phrase, case-insensitive)."""
    return bool(title_pattern(item["title"]).search(text))


def leaks(dialogue: Sequence[Utterance | Mapping[str, str]], item: Mapping[str, Any]) -> bool:
    """True when the item's title appears in any utterance before the last one (the final recommendation).

    A simulated dialogue whose seeker, or an earlier recommender line, already names the target would teach a
    recommender to copy the title from the context instead of inferring the item from preferences.
    """
    return any(names(u.text if isinstance(u, Utterance) else u["text"], item) for u in dialogue[:-1])


@dataclass
class Catalog:
    """The items by id, and for each (kind, value) — director, star or genre — the titled items that have it.

    The index lets a seeker name "a movie they enjoyed that shares attributes" in O(1) per dialogue.
    """

    by_id: dict[str, dict[str, Any]]
    sharing: dict[tuple[str, str], list[str]]

    @classmethod
    def build(cls, items: Sequence[dict[str, Any]]) -> Catalog:
        sharing: dict[tuple[str, str], list[str]] = {}
        for item in items:
            if item["title"]:
                for kind, value in attribute_values(item):
                    sharing.setdefault((kind, value), []).append(item["item_id"])
        return cls({item["item_id"]: item for item in items}, sharing)


def attribute_values(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    attributes = item["attributes"]
    return (
        [("director", d) for d in attributes["directors"]]
        + [("star", s) for s in attributes["stars"]]
        + [("genre", g.lower()) for g in attributes["genres"]]
    )


def skip_reason(item: Mapping[str, Any]) -> str | None:
    """Why an item cannot get a meaningful preference dialogue, or None.

    Without a title it cannot be recommended by name; with nothing but a title and year the seeker has no
    preference to state that would point to it.
    """
    if not item["title"]:
        return "no title"
    attributes = item["attributes"]
    if not (attributes["genres"] or attributes["directors"] or attributes["stars"] or attributes["plot"]):
        return "too little metadata"
    return None


def pick_liked(rng: random.Random, catalog: Catalog, item: Mapping[str, Any]) -> tuple[dict[str, Any], str, str] | None:
    """Another real catalog item sharing a director, star or genre with `item`: (liked item, kind, shared value).

    Never the target, and never a movie whose own title contains the target's (that would leak the label).
    """
    options = [key for key in attribute_values(item) if len(catalog.sharing.get(key, ())) > 1]
    for _ in range(LIKED_TRIES if options else 0):
        kind, value = rng.choice(options)
        liked = catalog.by_id[rng.choice(catalog.sharing[(kind, value)])]
        if liked["item_id"] != item["item_id"] and not names(display_title(liked), item):
            return liked, kind, value
    return None


@dataclass
class Skips:
    """Items skipped, counted by reason, with the first few of each reason named for the summary."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, item: Mapping[str, Any], reason: str) -> None:
        self.counts[reason] += 1
        named = self.examples.setdefault(reason, [])
        if len(named) < 5:
            named.append(f"{item['item_id']} {display_title(item)}".strip())

    def check(self, item: Mapping[str, Any]) -> str | None:
        """Record and return the item's `skip_reason`, if it has one."""
        reason = skip_reason(item)
        if reason is not None:
            self.add(item, reason)
        return reason

