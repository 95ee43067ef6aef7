"""The Turn and Item contracts, and the dialogue-to-turns rule both datasets share.

Turn: dataset, split, dialog_id, turn_id, turn_uid, context [{role, text}], response, mentioned [item_id],
rec [item_id]. Item: item_id, title, year, attributes {genres, directors, writers, stars, plot}, n_mentions,
has_metadata. Item ids are strings in every dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

SEEKER, RECOMMENDER = "seeker", "recommender"
SPLIT_NAMES = ("train", "valid", "test")

_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
_SPACE = re.compile(r"\s+")

TURN_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("dialog_id", pa.string()),
        ("turn_id", pa.int32()),
        ("turn_uid", pa.string()),
        ("context", pa.list_(pa.struct([("role", pa.string()), ("text", pa.string())]))),
        ("response", pa.string()),
        ("mentioned", pa.list_(pa.string())),
        ("rec", pa.list_(pa.string())),
    ]
)

ATTRIBUTES_TYPE = pa.struct(
    [
        ("genres", pa.list_(pa.string())),
        ("directors", pa.list_(pa.string())),
        ("writers", pa.list_(pa.string())),
        ("stars", pa.list_(pa.string())),
        ("plot", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("year", pa.int32()),
        ("attributes", ATTRIBUTES_TYPE),
        ("n_mentions", pa.int32()),
        ("has_metadata", pa.bool_()),
    ]
)


@dataclass
class Utterance:
    """One speaker's consecutive messages merged; `items` are the movies it mentions, in order, no repeats."""

    role: str
    text: str
    items: list[str]


def clean_text(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def split_title_year(name: str) -> tuple[str, int | None]:
    """'Angels in the Outfield  (1994)' -> ('Angels in the Outfield', 1994)."""
    name = clean_text(name)
    match = _YEAR.match(name)
    if match:
        return match["title"], int(match["year"])
    return name, None


def display_title(item: Mapping[str, Any]) -> str:
    """How a movie is shown in dialogue text and prompts: 'Title (Year)'."""
    return f"{item['title']} ({item['year']})" if item.get("year") else item["title"]


def make_item(item_id: str, name: str, n_mentions: int, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """An Item from a catalog name ('Title (Year)') and optional metadata in the id2info layout."""
    title, year = split_title_year(name)
    meta = metadata or {}
    if year is None and meta.get("name"):
        title, year = split_title_year(meta["name"])
    return {
        "item_id": str(item_id),
        "title": title,
        "year": year,
        "attributes": {
            "genres": list(meta.get("genre") or []),
            "directors": list(meta.get("director") or []),
            "writers": list(meta.get("writer") or []),
            "stars": list(meta.get("star") or []),
            "plot": clean_text(meta.get("plot") or ""),
        },
        "n_mentions": int(n_mentions),
        "has_metadata": metadata is not None,
    }


def merge_messages(messages: Iterable[tuple[str, str, Sequence[str]]]) -> list[Utterance]:
    """Consecutive (role, text, items) messages from one speaker become one utterance."""
    utterances: list[Utterance] = []
    for role, text, items in messages:
        if utterances and utterances[-1].role == role:
            last = utterances[-1]
            last.text = clean_text(f"{last.text} {text}")
            last.items.extend(i for i in items if i not in last.items)
        else:
            utterances.append(Utterance(role, clean_text(text), list(dict.fromkeys(items))))
    return utterances


def dialogue_turns(dataset: str, split: str, dialog_id: str, utterances: Sequence[Utterance]) -> list[dict[str, Any]]:
    """Recommendation turns of one dialogue.

    A recommendation turn is a recommender utterance that mentions at least one movie; its `rec` holds the movies
    it mentions that were not mentioned before (possibly none: it then only re-mentions), `mentioned` all movies
    mentioned earlier in the dialogue, and `context` every earlier utterance.
    """
    turns = []
    mentioned: list[str] = []
    for turn_id, utterance in enumerate(utterances):
        if utterance.role == RECOMMENDER and utterance.items:
            turns.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "dialog_id": dialog_id,
                    "turn_id": turn_id,
                    "turn_uid": f"{dataset}/{split}/{dialog_id}/{turn_id}",
                    "context": [{"role": u.role, "text": u.text} for u in utterances[:turn_id]],
                    "response": utterance.text,
                    "mentioned": list(mentioned),
                    "rec": [i for i in utterance.items if i not in mentioned],
                }
            )
        mentioned.extend(i for i in utterance.items if i not in mentioned)
    return turns
