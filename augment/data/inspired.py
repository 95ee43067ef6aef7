"""INSPIRED (Hayati et al., 2020): tab-separated utterance rows + id2info_inspired.json metadata.

INSPIRED names movies by title only ("Title (Year)" in the `movies` column, ';'-separated). A mention is linked to
the metadata on title AND year: "Parasite (2019)" is not the Parasite of 1982. Only when one side has no year does
the title alone decide, and only if it names a single metadata movie. A mention that does not link becomes an item
without metadata (a 'title:' id); the summary counts mentions linked exactly, by title alone, or not at all.
Utterance text is kept as written, with the dataset's QUOTATION_MARK placeholder turned back into a quote.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from augment.data.lines import tsv_records
from augment.data.metadata import load_metadata
from augment.data.problems import Problems
from augment.data.records import RECOMMENDER, SEEKER, dialogue_turns, make_item, merge_messages, split_title_year
from augment.data.titles import decode_title

SPLIT_FILES = {"train": "train.tsv", "valid": "dev.tsv", "test": "test.tsv"}
METADATA_FILE = "id2info_inspired.json"
REQUIRED_COLUMNS = ("dialog_id", "utt_id", "speaker", "text", "movies")
ROLES = {"SEEKER": SEEKER, "RECOMMENDER": RECOMMENDER}
LINK_KINDS = ("exact", "title_only", "unlinked")


def title_key(name: str) -> str:
    """Case, punctuation and spacing folded, year kept: 'Frozen 2 (2019)' -> 'frozen 2 2019'."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def _title_year(name: str) -> tuple[str, int | None]:
    title, year = split_title_year(decode_title(name))
    return title_key(title), year


class TitleLinker:
    """Maps INSPIRED titles to item ids: a metadata id on (title, year), or on the title alone when a side has no
    year and the title is unique in the metadata; else a 'title:' id for a movie the metadata does not know."""

    def __init__(self, metadata: dict[str, dict[str, Any]]):
        self.metadata = metadata
        self.by_title: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        for item_id, meta in metadata.items():
            title, year = _title_year(meta["name"])
            self.by_title[title].append((item_id, year))
        self.unmatched: dict[str, str] = {}
        self.mentions: Counter = Counter()
        self.links: Counter = Counter({kind: 0 for kind in LINK_KINDS})

    def _find(self, name: str) -> tuple[str | None, str]:
        title, year = _title_year(name)
        entries = self.by_title.get(title, [])
        exact = [item_id for item_id, entry_year in entries if year is not None and entry_year == year]
        if exact:
            return exact[0], "exact"
        if len(entries) == 1 and (year is None or entries[0][1] is None):
            return entries[0][0], "title_only"
        return None, "unlinked"

    def link(self, name: str) -> str:
        item_id, kind = self._find(name)
        if item_id is None:
            item_id = f"title:{title_key(name)}"
            self.unmatched.setdefault(item_id, name.strip())
        self.links[kind] += 1
        self.mentions[item_id] += 1
        return item_id

    def link_summary(self) -> dict[str, int]:
        """Mentions linked on title and year, on the title alone, or not at all (and how many titles the latter)."""
        return {**{kind: self.links[kind] for kind in LINK_KINDS}, "unlinked_titles": len(self.unmatched)}

    def items(self) -> dict[str, dict[str, Any]]:
        """Every metadata movie plus every unmatched mentioned title, with mention counts."""
        items = {
            str(item_id): make_item(str(item_id), meta["name"], self.mentions[str(item_id)], meta)
            for item_id, meta in self.metadata.items()
        }
        for item_id, name in self.unmatched.items():
            items[item_id] = make_item(item_id, name, self.mentions[item_id], None)
        return items


def load_linker(data_dir: Path, problems: Problems) -> TitleLinker:
    metadata = load_metadata(Path(data_dir) / METADATA_FILE, "inspired", problems, needs_name=True)
    return TitleLinker(metadata)


class Row(NamedTuple):
    line: int
    role: str
    text: str
    names: list[str]


def _dialogs(path: Path, problems: Problems, seen: dict[str, str]) -> dict[str, list[Row]]:
    """Rows grouped by dialog id. A dialog's rows are contiguous: an id that comes back after another dialog (or
    was read in an earlier split) is a duplicate, reported with both locations."""
    dialogs: dict[str, list[Row]] = {}
    current, duplicate = None, False
    for number, row in tsv_records(path, REQUIRED_COLUMNS, problems):
        dialog_id = row["dialog_id"]
        if dialog_id != current:
            current, duplicate = dialog_id, dialog_id in seen
            if duplicate:
                problems.report(f"{path}:{number}", "duplicate dialog_id", f"{dialog_id}, first at {seen[dialog_id]}")
            else:
                seen[dialog_id] = f"{path}:{number}"
        if duplicate:
            continue
        role = ROLES.get(row["speaker"].strip().upper())
        if role is None:
            problems.report(f"{path}:{number}", "unknown speaker", row["speaker"][:40])
            continue
        names = [name for name in row["movies"].split(";") if name.strip()]
        text = row["text"].replace("QUOTATION_MARK", '"')
        dialogs.setdefault(dialog_id, []).append(Row(number, role, text, names))
    return dialogs


def load_split(path: Path, split: str, linker: TitleLinker, problems: Problems,
               seen: dict[str, str] | None = None) -> tuple[list[dict], int, int]:
    """Recommendation turns of one split file, with its dialog and utterance counts (`seen`: dialog ids read so
    far, with their first location)."""
    turns, conversations, utterance_count = [], 0, 0
    for dialog_id, rows in _dialogs(path, problems, {} if seen is None else seen).items():
        if not any(row.text.strip() for row in rows):
            problems.report(f"{path}:{rows[0].line}", "empty dialogue", dialog_id)
            continue
        utterances = merge_messages((row.role, row.text, [linker.link(n) for n in row.names]) for row in rows)
        conversations += 1
        utterance_count += len(utterances)
        turns.extend(dialogue_turns("inspired", split, dialog_id, utterances))
    return turns, conversations, utterance_count
