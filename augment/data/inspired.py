"""INSPIRED (Hayati et al., 2020): tab-separated utterance rows + id2info_inspired.json metadata.

INSPIRED names movies by title only ("Title (Year)" in the `movies` column, ';'-separated). Titles are linked to
the metadata by a normalised title; a title that does not match becomes an item without metadata (counted).
Utterance text is kept as written, with the dataset's QUOTATION_MARK placeholder turned back into a quote.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from augment.data.lines import tsv_records
from augment.data.problems import Problems
from augment.data.records import RECOMMENDER, SEEKER, dialogue_turns, make_item, merge_messages, split_title_year

SPLIT_FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}
METADATA_FILE = "id2info_inspired.json"
REQUIRED_COLUMNS = ("dialog_id", "utt_id", "speaker", "text", "movies")
ROLES = {"SEEKER": SEEKER, "RECOMMENDER": RECOMMENDER}


def title_key(name: str) -> str:
    """Case, punctuation and spacing folded, year kept: 'Frozen 2 (2019)' -> 'frozen 2 2019'."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


class TitleLinker:
    """Maps INSPIRED titles to item ids: metadata ids by normalised title (with year, else unique without), or a
    'title:' id for movies the metadata does not know."""

    def __init__(self, metadata: dict[str, dict[str, Any]]):
        self.metadata = metadata
        self.by_key = {title_key(meta["name"]): item_id for item_id, meta in metadata.items()}
        no_year = Counter(title_key(split_title_year(meta["name"])[0]) for meta in metadata.values())
        self.by_title = {
            title_key(split_title_year(meta["name"])[0]): item_id
            for item_id, meta in metadata.items()
            if no_year[title_key(split_title_year(meta["name"])[0])] == 1
        }
        self.unmatched: dict[str, str] = {}
        self.mentions: Counter = Counter()

    def link(self, name: str) -> str:
        key = title_key(name)
        item_id = self.by_key.get(key) or self.by_title.get(title_key(split_title_year(name)[0]))
        if item_id is None:
            item_id = f"title:{key}"
            self.unmatched.setdefault(item_id, name.strip())
        self.mentions[item_id] += 1
        return item_id

    def items(self) -> dict[str, dict[str, Any]]:
        """Every metadata movie plus every unmatched mentioned title, with mention counts."""
        items = {
            str(item_id): make_item(str(item_id), meta["name"], self.mentions[str(item_id)], meta)
            for item_id, meta in self.metadata.items()
        }
        for item_id, name in self.unmatched.items():
            items[item_id] = make_item(item_id, name, self.mentions[item_id], None)
        return items


def load_linker(data_dir: Path) -> TitleLinker:
    path = Path(data_dir) / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return TitleLinker({str(k): v for k, v in metadata.items()})


def _dialogs(path: Path, linker: TitleLinker, problems: Problems) -> dict[str, list[tuple[int, str, str, list[str]]]]:
    """Rows grouped by dialog id, as (line, role, text, item ids)."""
    dialogs: dict[str, list[tuple[int, str, str, list[str]]]] = {}
    for number, row in tsv_records(path, REQUIRED_COLUMNS, problems):
        role = ROLES.get(row["speaker"].strip().upper())
        if role is None:
            problems.report(f"{path}:{number}", "unknown speaker", row["speaker"][:40])
            continue
        names = [name for name in row["movies"].split(";") if name.strip()]
        text = row["text"].replace("QUOTATION_MARK", '"')
        dialogs.setdefault(row["dialog_id"], []).append((number, role, text, [linker.link(n) for n in names]))
    return dialogs


def load_split(path: Path, split: str, linker: TitleLinker, problems: Problems) -> tuple[list[dict], int, int]:
    """Recommendation turns of one split file, with its dialog and utterance counts."""
    turns, conversations, utterance_count = [], 0, 0
    for dialog_id, rows in _dialogs(path, linker, problems).items():
        utterances = merge_messages((role, text, items) for _, role, text, items in rows)
        if not any(u.text for u in utterances):
            problems.report(f"{path}:{rows[0][0]}", "empty dialogue", dialog_id)
            continue
        conversations += 1
        utterance_count += len(utterances)
        turns.extend(dialogue_turns("inspired", split, dialog_id, utterances))
    return turns, conversations, utterance_count
