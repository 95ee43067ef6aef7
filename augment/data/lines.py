"""Line-by-line reading that knows where it is, so every problem can name file and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from augment.data.problems import Problems

BOM = "\ufeff"


def decoded_lines(path: Path, problems: Problems) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-blank line; a line that is not UTF-8 is reported, not guessed at.

    A UTF-8 byte-order mark opening the file (what spreadsheet tools write) is dropped: it is encoding, not data,
    and left in place it would rename the first column of a csv/tsv header.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.report(f"{path}:{number}", "non-UTF-8 bytes", f"byte {error.start}")
                continue
            if number == 1:
                text = text.removeprefix(BOM)
            if text.strip():
                yield number, text.rstrip("\r\n")


def _fail_if_blank(path: Path) -> None:
    """An empty file (or one of blank lines) is an error; a file whose every line was skipped is not empty."""
    if Path(path).read_bytes().decode("utf-8", "replace").removeprefix(BOM).strip():
        return
    Problems.fail(f"{path}:1", "empty file", "no record in it",
                  fix="restore the file (download it again), or remove it to leave that split out")


def json_records(path: Path, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each JSON line; a truncated or malformed line is reported, an empty file is an
    error (a split that loads 0 conversations is never a success)."""
    seen = False
    for number, text in decoded_lines(path, problems):
        seen = True
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            problems.report(f"{path}:{number}", "malformed JSON", str(error))
            continue
        if not isinstance(record, dict):
            problems.report(f"{path}:{number}", "malformed JSON", "not an object")
            continue
        yield number, record
    if not seen:
        _fail_if_blank(path)


def tsv_records(path: Path, required: Sequence[str], problems: Problems) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for a tab-separated file with a header; checks columns before reading rows.

    An empty file or a header missing a required column makes the whole file unusable: an error even when
    skipping, since skipping would drop every row of it behind a count of one.
    """
    lines = decoded_lines(path, problems)
    first = next(lines, None)
    if first is None:
        _fail_if_blank(path)
        return
    header = next(csv.reader([first[1]], delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = [name for name in required if name not in header]
    if missing:
        Problems.fail(f"{path}:{first[0]}", "tsv missing column", ", ".join(missing),
                      fix=f"the header must name the columns {', '.join(required)} (tab-separated)")
    for number, text in lines:
        fields = next(csv.reader([text], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(fields) != len(header):
            problems.report(f"{path}:{number}", "wrong number of columns", f"{len(fields)} instead of {len(header)}")
            continue
        yield number, dict(zip(header, fields))
