"""Item metadata files (ReDial's id2info.json, INSPIRED's id2info_inspired.json): read whole, checked as a whole.

Metadata is optional — the catalog exists without it — but its absence changes every item (no genre, cast, plot),
so a missing file is a warning the summary records, the same for both datasets. A file that is there but empty,
truncated or not a JSON object is an error naming the file, where it breaks and how to get a good copy: reading
half of it, or none of it, would look like success.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augment.data.lines import BOM
from augment.data.problems import BadInput, Problems

LIST_FIELDS = ("genre", "director", "writer", "star")


def get_hint(dataset: str, folder: Path) -> str:
    return f"`python -m augment.data download --dataset {dataset} --dest {folder}`"


def _fix(dataset: str, path: Path) -> str:
    return (f"download it again with {get_hint(dataset, path.parent)}, or remove it to prepare without metadata"
            " (items then have no genre, cast or plot)")


def parse_metadata_file(path: Path, dataset: str) -> dict[str, Any]:
    """The file's JSON object, or BadInput naming file, line, column and char offset."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as error:
        cut = ", the file ends inside a character: truncated" if error.end >= len(raw) else ""
        raise BadInput(f"{path}: non-UTF-8 bytes (byte {error.start}{cut}) — {_fix(dataset, path)}") from None
    if not text.strip():
        raise BadInput(f"{path}: empty file (0 metadata entries) — {_fix(dataset, path)}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        at_end = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
        cut = " — the file ends early: truncated" if at_end else ""
        raise BadInput(f"{path}:{error.lineno}:{error.colno}: malformed JSON ({error.msg.removesuffix(' at')} at char "
                       f"{error.pos} of {len(text)}{cut}) — {_fix(dataset, path)}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: malformed JSON (a {type(data).__name__}, expected an object keyed by item id) — "
                       f"{_fix(dataset, path)}")
    return data


def _entry_problem(entry: Any, needs_name: bool) -> str | None:
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, expected an object"
    if needs_name and not isinstance(entry.get("name"), str):
        return "no 'name' string"
    for key in LIST_FIELDS:
        value = entry.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"'{key}' is not a list of strings"
    if entry.get("plot") is not None and not isinstance(entry["plot"], str):
        return "'plot' is not a string"
    return None


def load_metadata(path: Path, dataset: str, problems: Problems, needs_name: bool = False) -> dict[str, dict[str, Any]]:
    """Entries by item id (string); {} with a recorded warning when the file is absent.

    `needs_name`: INSPIRED links mentions by the entry's name, so an entry without one cannot be used.
    """
    path = Path(path)
    if not path.exists():
        problems.warn(f"{path} not found: every item is prepared without metadata (genre, cast, plot); "
                      f"get it with {get_hint(dataset, path.parent)}")
        return {}
    entries = {}
    for key, entry in parse_metadata_file(path, dataset).items():
        problem = _entry_problem(entry, needs_name)
        if problem:
            problems.report(f"{path}: entry {key!r}", "malformed metadata entry", problem)
            continue
        entries[str(key)] = entry
    return entries
