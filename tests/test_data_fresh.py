"""A prepared run stays true to its input files: fixed or added files rebuild it, unchanged files reuse it.

Before stage fingerprints, `prepare` was keyed on the data folder's path: fixing a bad line, or adding the missing
id2info.json, and re-running answered "already done" with the old turns and items.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from augment.data.prepare import prepare
from augment.runs import read_rows, read_summary


def redial_folder(shared_data: Path, tmp_path: Path, n: int = 12, metadata: bool = True) -> tuple[Path, list[str]]:
    folder = tmp_path / "redial"
    folder.mkdir()
    shutil.copy(shared_data / "redial" / "movies_with_mentions.csv", folder)
    if metadata:
        shutil.copy(shared_data / "redial" / "id2info.json", folder)
    lines = (shared_data / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return folder, lines


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def test_fixed_split_file_rebuilds_with_the_new_turns(shared_data, tmp_path, capsys):
    folder, lines = redial_folder(shared_data, tmp_path)
    broken = list(lines)
    broken[4] = broken[4][: len(broken[4]) // 2]  # a truncated line, skipped under --on-error skip
    write(folder / "test_data.jsonl", broken)
    run = tmp_path / "run"
    first = prepare("redial", folder, run, on_error="skip")
    assert first["skipped"] == {"malformed JSON": 1} and first["conversations"] == len(lines) - 1

    write(folder / "test_data.jsonl", lines)  # the user fixes the file and runs the same command again
    capsys.readouterr()
    second = prepare("redial", folder, run, on_error="skip")
    out = capsys.readouterr().out
    assert "[turns] rebuilding: file" in out and "test_data.jsonl changed" in out and "already done" not in out
    assert second["skipped_total"] == 0 and second["conversations"] == len(lines)
    dialogs = {t["dialog_id"] for t in read_rows(run / "turns" / "turns.parquet")}
    assert json.loads(lines[4])["conversationId"] in dialogs

    third = prepare("redial", folder, run, on_error="skip")  # nothing changed: reused, not rebuilt
    assert "already done" in capsys.readouterr().out
    assert third == read_summary(run, "turns")


def test_added_metadata_file_rebuilds_items_with_metadata(shared_data, tmp_path, capsys):
    folder, lines = redial_folder(shared_data, tmp_path, metadata=False)
    write(folder / "test_data.jsonl", lines)
    run = tmp_path / "run"
    first = prepare("redial", folder, run)
    assert first["items_without_metadata"] == first["items"] and first["metadata_file"] is None

    shutil.copy(shared_data / "redial" / "id2info.json", folder)  # the user adds the missing file
    capsys.readouterr()
    second = prepare("redial", folder, run)
    assert "id2info.json changed" in capsys.readouterr().out
    assert second["metadata_file"] == "id2info.json" and second["warnings"] == [
        w for w in second["warnings"] if "id2info.json not found" not in w
    ]
    items = read_rows(run / "items" / "items.parquet")
    assert sum(i["has_metadata"] for i in items) == second["items"] - second["items_without_metadata"] > 6000
    assert read_summary(run, "items")["built_from"] == read_summary(run, "turns")["built_from"]


def test_added_inspired_metadata_relinks_mentions(shared_data, tmp_path, capsys):
    folder = tmp_path / "inspired"
    folder.mkdir()
    shutil.copy(shared_data / "inspired" / "test.tsv", folder)
    run = tmp_path / "run"
    first = prepare("inspired", folder, run)
    assert first["mention_links"]["exact"] == 0
    shutil.copy(shared_data / "inspired" / "id2info_inspired.json", folder)
    second = prepare("inspired", folder, run)
    assert "rebuilding" in capsys.readouterr().out
    assert second["mention_links"]["exact"] > 0 and second["items_without_metadata"] < first["items_without_metadata"]
