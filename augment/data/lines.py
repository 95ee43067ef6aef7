"""Line-by-line reading that knows where it is, so every problem can name file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from augment.data.problems import Problems


def decoded_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line; a line that is not UTF-8 is reported, not guessed at."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.report(f"{path}:{number}", "non-UTF-8 bytes", f"byte {error.start}")
                continue
            if text.strip():
                yield number, text.rstrip("\r\n")


def json_records(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON line; a truncated or malformed line is reported."""
    for number, text in decoded_lines(path, problems):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            problems.report(f"{path}:{number}", "malformed JSON", str(error))
            continue
        if not isinstance(record, dict):
            problems.report(f"{path}:{number}", "malformed JSON", "not an object")
            continue
        yield number, record


def tsv_records(path: Path, required: Sequence[str], problems: Problems) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for a tab-separated file with a header; checks columns before reading rows.

    A header missing a required column makes the whole file unusable: it is reported once (line 1) and, when
    skipping, no row is read from it.
    """
    lines = decoded_lines(path, problems)
    first = next(lines, None)
    if first is None:
        problems.report(f"{path}:1", "empty file")
        return
    header = next(csv.reader([first[1]], delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = [name for name in required if name not in header]
    if missing:
        problems.report(f"{path}:{first[0]}", "tsv missing column", ", ".join(missing))
        return
    for number, text in lines:
        fields = next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(fields) != len(header):
            problems.report(f"{path}:{number}", "wrong number of columns", f"{len(fields)} instead of {len(header)}")
            continue
        yield number, dict(zip(header, fields))
