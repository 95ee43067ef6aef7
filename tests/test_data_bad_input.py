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
from augment.runs import read_summary


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
    return json.dumps(record)


CASES = {
    "truncated JSON": "malformed JSON",
    "missing field": "missing field",
    "unknown movie id": "unknown movie id",
    "empty dialogue": "empty dialogue",
    "non-UTF-8": "non-UTF-8 bytes",
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


def test_inspired_missing_column(shared_data, tmp_path):
    folder = inspired_copy(shared_data, tmp_path)
    lines = (folder / "test.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    drop = header.index("movies")
    (folder / "test.tsv").write_text("\n".join("\t".join(l.split("\t")[:drop] + l.split("\t")[drop + 1 :]) for l in lines) + "\n")
    with pytest.raises(BadInput, match=r"test.tsv:1: tsv missing column \(movies\)"):
        prepare("inspired", folder, tmp_path / "run")
    summary = prepare("inspired", folder, tmp_path / "run2", on_error="skip")  # the unusable file is skipped whole
    assert summary["skipped"] == {"tsv missing column": 1}
    assert summary["splits"]["test"]["conversations"] == 0


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
