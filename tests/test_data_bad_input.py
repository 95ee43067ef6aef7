"""Every bad-input case: a clear error naming file and line by default, a counted skip with --on-error skip.

Each case copies the real files and damages one line, so everything else about the input stays real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from augment.data.__main__ import main as data_main
from augment.data.prepare import prepare
from augment.data.problems import BadInput
from augment.runs import read_rows, read_summary


def redial_copy(shared_data: Path, tmp_path: Path, n: int = 20) -> tuple[Path, list[str]]:
    """A ReDial folder whose test split holds the first n real conversations."""
    folder = tmp_path / "redial"
    folder.mkdir()
    for name in ("movies_with_mentions.csv", "id2info.json"):
        shutil.copy(shared_data / "redial" / name, folder / name)
    lines = (shared_data / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return folder, lines


def write_lines(path: Path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))


def damage(line: str, how: str) -> str | bytes:
    record = json.loads(line)
    if how == "truncated JSON":
        return line[: len(line) // 2]
    if how == "missing field":
        del record["messages"]
    elif how == "unknown movie id":
        record["messages"][0]["text"] += " @99999999"
    elif how == "empty dialogue":
        record["messages"] = []
    elif how == "non-UTF-8":
        return json.dumps(record).encode()[:40] + b"\xff\xfe" + json.dumps(record).encode()[40:]
    elif how == "null text":
        record["messages"][1]["text"] = None
    elif how == "number text":
        record["messages"][1]["text"] = 42
    elif how == "messages not a list":
        record["messages"] = "hello"
    elif how == "unknown sender":
        record["messages"][1]["senderWorkerId"] = 424242
    return json.dumps(record)


CASES = {
    "truncated JSON": "malformed JSON",
    "missing field": "missing field",
    "unknown movie id": "unknown movie id",
    "empty dialogue": "empty dialogue",
    "non-UTF-8": "non-UTF-8 bytes",
    "null text": "bad field type",
    "number text": "bad field type",
    "messages not a list": "bad field type",
    "unknown sender": "unknown sender",
}


@pytest.mark.parametrize("how", list(CASES))
def test_redial_bad_line_raises_with_location(shared_data, tmp_path, how):
    folder, lines = redial_copy(shared_data, tmp_path)
    lines[6] = damage(lines[6], how)
    write_lines(folder / "test_data.jsonl", lines)
    with pytest.raises(BadInput) as error:
        prepare("redial", folder, tmp_path / "run")
    assert f"test_data.jsonl:7: {CASES[how]}" in str(error.value)
    assert read_summary(tmp_path / "run", "turns") is None  # nothing half-written marked as done


@pytest.mark.parametrize("how", list(CASES))
def test_redial_bad_line_skipped_and_counted(shared_data, tmp_path, how):
    folder, lines = redial_copy(shared_data, tmp_path)
    lines[6] = damage(lines[6], how)
    write_lines(folder / "test_data.jsonl", lines)
    summary = prepare("redial", folder, tmp_path / "run", on_error="skip")
    assert summary["skipped"] == {CASES[how]: 1}
    assert summary["splits"]["test"]["conversations"] == 19  # the other 19 real conversations are kept
    assert "test_data.jsonl:7" in summary["examples"][0]


def test_cli_reports_error_and_exit_code(shared_data, tmp_path, capsys):
    folder, lines = redial_copy(shared_data, tmp_path)
    lines[2] = damage(lines[2], "unknown movie id")
    write_lines(folder / "test_data.jsonl", lines)
    code = data_main(["prepare", "--dataset", "redial", "--data-dir", str(folder), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "test_data.jsonl:3: unknown movie id (@99999999" in capsys.readouterr().err


def inspired_copy(shared_data: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "inspired"
    folder.mkdir()
    shutil.copy(shared_data / "inspired" / "id2info_inspired.json", folder)
    shutil.copy(shared_data / "inspired" / "test.tsv", folder)
    return folder


def drop_column(path: Path, column: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    drop = lines[0].split("\t").index(column)
    path.write_text("\n".join("\t".join(l.split("\t")[:drop] + l.split("\t")[drop + 1 :]) for l in lines) + "\n")


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_inspired_missing_column_is_an_error_even_when_skipping(shared_data, tmp_path, on_error):
    """A file without a required column cannot be read at all: skipping it would drop its 3,437 rows as '1 skip'."""
    folder = inspired_copy(shared_data, tmp_path)
    drop_column(folder / "test.tsv", "movies")
    with pytest.raises(BadInput, match=r"test.tsv:1: tsv missing column \(movies\) — the header must name"):
        prepare("inspired", folder, tmp_path / "run", on_error=on_error)
    assert read_summary(tmp_path / "run", "turns") is None and read_summary(tmp_path / "run", "items") is None


def test_inspired_short_row_and_bad_bytes(shared_data, tmp_path):
    folder = inspired_copy(shared_data, tmp_path)
    raw = (folder / "test.tsv").read_bytes().split(b"\n")
    raw[10] = b"\t".join(raw[10].split(b"\t")[:5])
    raw[20] = raw[20].replace(b"\t", b"\xff\t", 1)
    (folder / "test.tsv").write_bytes(b"\n".join(raw))
    with pytest.raises(BadInput, match=r"test.tsv:11: wrong number of columns"):
        prepare("inspired", folder, tmp_path / "run")
    summary = prepare("inspired", folder, tmp_path / "run", on_error="skip")
    assert summary["skipped"] == {"wrong number of columns": 1, "non-UTF-8 bytes": 1}
    assert summary["splits"]["test"]["conversations"] == 99


# ------------------------------------------------------------------------- field types, ids, duplicates


@pytest.mark.parametrize("how, detail", [("null text", "messages[1].text is null, expected a string"),
                                         ("number text", "messages[1].text is a number (42), expected a string")])
def test_redial_text_of_wrong_type_is_located(shared_data, tmp_path, capsys, how, detail):
    """A located one-line error (exit 2), never a TypeError traceback."""
    folder, lines = redial_copy(shared_data, tmp_path)
    lines[6] = damage(lines[6], how)
    write_lines(folder / "test_data.jsonl", lines)
    code = data_main(["prepare", "--data-dir", str(folder), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"test_data.jsonl:7: bad field type ({detail}) — fix the file, or pass --on-error skip" in err


def stringify_senders(line: str) -> str:
    record = json.loads(line)
    for message in record["messages"]:
        message["senderWorkerId"] = str(message["senderWorkerId"])
    return json.dumps(record)


def test_redial_sender_ids_as_strings_compare_by_value(shared_data, tmp_path):
    """'"senderWorkerId": "123"' with an int initiatorWorkerId is the same worker: same roles, same turns."""
    folder, lines = redial_copy(shared_data, tmp_path)
    write_lines(folder / "test_data.jsonl", lines)
    prepare("redial", folder, tmp_path / "ints")
    write_lines(folder / "test_data.jsonl", [stringify_senders(line) for line in lines])
    prepare("redial", folder, tmp_path / "strings")
    as_ints = read_rows(tmp_path / "ints" / "turns" / "turns.parquet")
    as_strings = read_rows(tmp_path / "strings" / "turns" / "turns.parquet")
    assert as_strings == as_ints and len(as_ints) > 20
    assert {u["role"] for t in as_strings for u in t["context"]} == {"seeker", "recommender"}


def test_redial_duplicate_conversation_id(shared_data, tmp_path):
    folder, lines = redial_copy(shared_data, tmp_path)
    first_id = json.loads(lines[2])["conversationId"]
    lines[9] = lines[2]
    write_lines(folder / "test_data.jsonl", lines)
    with pytest.raises(BadInput, match=rf"test_data.jsonl:10: duplicate conversationId \({first_id}, first at \S*test_data.jsonl:3\)"):
        prepare("redial", folder, tmp_path / "run")
    summary = prepare("redial", folder, tmp_path / "run", on_error="skip")
    assert summary["skipped"] == {"duplicate conversationId": 1}
    assert summary["splits"]["test"]["conversations"] == 19
    uids = [t["turn_uid"] for t in read_rows(tmp_path / "run" / "turns" / "turns.parquet")]
    assert len(uids) == len(set(uids))


def test_redial_conversation_in_two_splits(shared_data, tmp_path):
    folder, lines = redial_copy(shared_data, tmp_path)
    write_lines(folder / "test_data.jsonl", lines)
    write_lines(folder / "train_data.jsonl", [lines[4]])
    with pytest.raises(BadInput, match=r"test_data.jsonl:5: duplicate conversationId \(\S+, first at \S*train_data.jsonl:1\)"):
        prepare("redial", folder, tmp_path / "run")


def test_inspired_duplicate_dialog_id(shared_data, tmp_path):
    """A dialog's rows are contiguous in INSPIRED: its id coming back later is a second copy, not more rows."""
    folder = inspired_copy(shared_data, tmp_path)
    lines = (folder / "test.tsv").read_text(encoding="utf-8").splitlines()
    first_dialog = [line for line in lines[1:] if line.split("\t")[0] == lines[1].split("\t")[0]]
    (folder / "test.tsv").write_text("\n".join(lines + first_dialog) + "\n", encoding="utf-8")
    with pytest.raises(BadInput, match=rf"test.tsv:{len(lines) + 1}: duplicate dialog_id \(\S+, first at \S*test.tsv:2\)"):
        prepare("inspired", folder, tmp_path / "run")
    summary = prepare("inspired", folder, tmp_path / "run", on_error="skip")
    assert summary["skipped"] == {"duplicate dialog_id": 1}
    assert summary["splits"]["test"]["conversations"] == 99


def test_nothing_readable_is_an_error_even_when_skipping(shared_data, tmp_path):
    folder, lines = redial_copy(shared_data, tmp_path, n=3)
    write_lines(folder / "test_data.jsonl", [damage(line, "truncated JSON") for line in lines])
    with pytest.raises(BadInput, match=r"no redial conversation could be read from .*: 3 skipped \(3 malformed JSON\); first: "):
        prepare("redial", folder, tmp_path / "run", on_error="skip")
    assert read_summary(tmp_path / "run", "items") is None
