"""ReDial (Li et al., 2018): official jsonl conversations + movies_with_mentions.csv (+ id2info.json metadata).

Movies appear in message text as `@<movieId>`; the conversation initiator is the seeker. Every movie of
`movies_with_mentions.csv` is an item (its `nbMentions` is the popularity); `id2info.json` adds metadata where known.
Worker ids are compared by value (`"123"` and `123` are one worker): some dumps write them as strings.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from augment.data.lines import decoded_lines, json_records
from augment.data.metadata import get_hint, load_metadata
from augment.data.problems import Problems, Rejection
from augment.data.records import RECOMMENDER, SEEKER, Utterance, dialogue_turns, display_title, make_item, merge_messages
from augment.data.titles import finalize_titles

SPLIT_FILES = {"train": "train_data.jsonl", "valid": "valid_data.jsonl", "test": "test_data.jsonl"}
CATALOG_FILE = "movies_with_mentions.csv"
METADATA_FILE = "id2info.json"
_MENTION = re.compile(r"@(\d+)")


def load_items(data_dir: Path, problems: Problems) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The catalog (every movie of movies_with_mentions.csv, with id2info metadata where known, titles fixed) and
    the title fixes' counts."""
    catalog_path = Path(data_dir) / CATALOG_FILE
    if not catalog_path.exists():
        raise FileNotFoundError(f"{catalog_path} not found: ReDial needs its movie list to resolve @ids; "
                                f"get it with {get_hint('redial', Path(data_dir))}")
    metadata = load_metadata(Path(data_dir) / METADATA_FILE, "redial", problems)
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
    if not items:
        problems.fail(f"{catalog_path}:1", "empty catalog", "no movie row", fix=f"get it with {get_hint('redial', Path(data_dir))}")
    return items, finalize_titles(items)


def worker_id(value: Any) -> str | None:
    """A worker id as a canonical string ('123' for 123 and "123"), or None when it is no id at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return str(int(text)) if text.isdigit() else text
    return None


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def _type_name(value: Any) -> str:
    """How a JSON value is named in a message: 'null', 'a number (42)', 'a string ('hi')'."""
    if value is None:
        return "null"
    return f"{_JSON_TYPES.get(type(value), type(value).__name__)} ({json.dumps(value)[:30]})"


def _missing(record: dict[str, Any], keys: tuple[str, ...], prefix: str = "") -> Rejection | None:
    missing = [key for key in keys if key not in record]
    return Rejection("missing field", f"{prefix}{missing[0]}") if missing else None


def _header(record: dict[str, Any]) -> Rejection | tuple[str, str, str | None]:
    """(conversation id, initiator, respondent) or why the record cannot be used."""
    if missing := _missing(record, ("conversationId", "initiatorWorkerId", "messages")):
        return missing
    if not isinstance(record["conversationId"], (str, int)) or isinstance(record["conversationId"], bool):
        return Rejection("bad field type", f"conversationId is {_type_name(record['conversationId'])}")
    if not isinstance(record["messages"], list):
        return Rejection("bad field type", f"messages is {_type_name(record['messages'])}, expected a list")
    initiator = worker_id(record["initiatorWorkerId"])
    if initiator is None:
        return Rejection("bad field type", f"initiatorWorkerId is {_type_name(record['initiatorWorkerId'])}")
    respondent = worker_id(record["respondentWorkerId"]) if "respondentWorkerId" in record else None
    return str(record["conversationId"]), initiator, respondent


def _message(index: int, message: Any, initiator: str, respondent: str | None) -> Rejection | tuple[str, str]:
    """(role, text) of one message, or why it cannot be used."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return Rejection("bad field type", f"{where} is {_type_name(message)}, expected an object")
    if missing := _missing(message, ("text", "senderWorkerId"), "messages[]."):
        return missing
    if not isinstance(message["text"], str):
        return Rejection("bad field type", f"{where}.text is {_type_name(message['text'])}, expected a string")
    sender = worker_id(message["senderWorkerId"])
    if sender is None:
        return Rejection("bad field type", f"{where}.senderWorkerId is {_type_name(message['senderWorkerId'])}")
    if respondent is not None and sender not in (initiator, respondent):
        return Rejection("unknown sender", f"{where}.senderWorkerId {sender} is neither the initiator {initiator} "
                                           f"nor the respondent {respondent}")
    return (SEEKER if sender == initiator else RECOMMENDER), message["text"]


def _utterances(record: dict[str, Any], items: dict[str, dict[str, Any]]) -> tuple[str, list[Utterance]] | Rejection:
    """(conversation id, merged utterances with @ids rendered as titles), or why the conversation cannot be used."""
    header = _header(record)
    if isinstance(header, Rejection):
        return header
    conversation_id, initiator, respondent = header
    if not record["messages"]:
        return Rejection("empty dialogue")
    messages = []
    for index, message in enumerate(record["messages"]):
        parsed = _message(index, message, initiator, respondent)
        if isinstance(parsed, Rejection):
            return parsed
        role, text = parsed
        ids = _MENTION.findall(text)
        unknown = [movie_id for movie_id in ids if movie_id not in items]
        if unknown:
            return Rejection("unknown movie id", f"@{unknown[0]} is not in {CATALOG_FILE}")
        messages.append((role, _MENTION.sub(lambda m: display_title(items[m[1]]), text), ids))
    utterances = merge_messages(messages)
    if not any(u.text for u in utterances):
        return Rejection("empty dialogue")
    return conversation_id, utterances


def load_split(path: Path, split: str, items: dict[str, dict[str, Any]], problems: Problems,
               seen: dict[str, str] | None = None) -> tuple[list[dict], int, int]:
    """Recommendation turns of one split file, with its conversation and utterance counts.

    `seen` maps conversation ids already read (in this or an earlier split) to 'file:line': a repeated id would
    give duplicate turn_uids (or leak a conversation across splits), so it is reported with both locations.
    """
    seen = {} if seen is None else seen
    turns, conversations, utterance_count = [], 0, 0
    for number, record in json_records(path, problems):
        parsed = _utterances(record, items)
        if isinstance(parsed, Rejection):
            problems.report(f"{path}:{number}", *parsed)
            continue
        conversation_id, utterances = parsed
        if conversation_id in seen:
            problems.report(f"{path}:{number}", "duplicate conversationId", f"{conversation_id}, first at {seen[conversation_id]}")
            continue
        seen[conversation_id] = f"{path}:{number}"
        conversations += 1
        utterance_count += len(utterances)
        turns.extend(dialogue_turns("redial", split, conversation_id, utterances))
    return turns, conversations, utterance_count
