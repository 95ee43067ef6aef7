"""ReDial (Li et al., 2018): official jsonl conversations + movies_with_mentions.csv (+ id2info.json metadata).

Movies appear in message text as `@<movieId>`; the conversation initiator is the seeker. Every movie of
`movies_with_mentions.csv` is an item (its `nbMentions` is the popularity); `id2info.json` adds metadata where known.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from augment.data.lines import decoded_lines, json_records
from augment.data.problems import Problems, Rejection
from augment.data.records import RECOMMENDER, SEEKER, Utterance, dialogue_turns, display_title, make_item, merge_messages

SPLIT_FILES = {"train": "train_data.jsonl", "valid": "valid_data.jsonl", "test": "test_data.jsonl"}
CATALOG_FILE = "movies_with_mentions.csv"
METADATA_FILE = "id2info.json"
_MENTION = re.compile(r"@(\d+)")


def load_items(data_dir: Path, problems: Problems) -> dict[str, dict[str, Any]]:
    """The catalog: every movie of movies_with_mentions.csv, with id2info metadata where known."""
    catalog_path = Path(data_dir) / CATALOG_FILE
    if not catalog_path.exists():
        raise FileNotFoundError(f"{catalog_path} not found: ReDial needs its movie list to resolve @ids")
    metadata_path = Path(data_dir) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.exists() else {}
    items: dict[str, dict[str, Any]] = {}
    for number, text in decoded_lines(catalog_path, problems):
        fields = next(csv.reader([text]))
        if number == 1 and fields[:1] == ["movieId"]:
            continue
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit():
            problems.report(f"{catalog_path}:{number}", "malformed catalog row", text[:80])
            continue
        movie_id, name, mentions = fields
        items[movie_id] = make_item(movie_id, name, int(mentions), metadata.get(movie_id))
    return items


def _utterances(record: dict[str, Any], items: dict[str, dict[str, Any]]) -> list[Utterance] | Rejection:
    """Merged utterances with @ids rendered as titles, or why the conversation cannot be used."""
    for key in ("conversationId", "initiatorWorkerId", "messages"):
        if key not in record:
            return Rejection("missing field", key)
    if not record["messages"]:
        return Rejection("empty dialogue")
    messages = []
    for message in record["messages"]:
        for key in ("text", "senderWorkerId"):
            if key not in message:
                return Rejection("missing field", f"messages[].{key}")
        ids = _MENTION.findall(message["text"])
        unknown = [movie_id for movie_id in ids if movie_id not in items]
        if unknown:
            return Rejection("unknown movie id", f"@{unknown[0]} is not in {CATALOG_FILE}")
        text = _MENTION.sub(lambda m: display_title(items[m[1]]), message["text"])
        role = SEEKER if message["senderWorkerId"] == record["initiatorWorkerId"] else RECOMMENDER
        messages.append((role, text, ids))
    utterances = merge_messages(messages)
    if not any(u.text for u in utterances):
        return Rejection("empty dialogue")
    return utterances


def load_split(path: Path, split: str, items: dict[str, dict[str, Any]], problems: Problems) -> tuple[list[dict], int, int]:
    """Recommendation turns of one split file, with its conversation and utterance counts."""
    turns, conversations, utterance_count = [], 0, 0
    for number, record in json_records(path, problems):
        utterances = _utterances(record, items)
        if isinstance(utterances, Rejection):
            problems.report(f"{path}:{number}", *utterances)
            continue
        conversations += 1
        utterance_count += len(utterances)
        turns.extend(dialogue_turns("redial", split, str(record["conversationId"]), utterances))
    return turns, conversations, utterance_count
