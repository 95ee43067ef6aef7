"""Whole files that are bad, missing or oddly encoded, and the folders prepare reads and writes.

Every case starts from copies of the real files in ../shared/data and damages one of them.
"""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import pytest

from augment.data.__main__ import main as data_main
from augment.data.__main__ import parser as data_parser
from augment.data.prepare import prepare
from augment.data.problems import BadInput
from augment.runs import read_rows, read_summary


def redial_folder(shared_data: Path, tmp_path: Path, n: int = 15, metadata: bool = True) -> Path:
    folder = tmp_path / "redial"
    folder.mkdir()
    shutil.copy(shared_data / "redial" / "movies_with_mentions.csv", folder)
    if metadata:
        shutil.copy(shared_data / "redial" / "id2info.json", folder)
    lines = (shared_data / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    (folder / "test_data.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


def inspired_folder(shared_data: Path, tmp_path: Path, metadata: bool = True) -> Path:
    folder = tmp_path / "inspired"
    folder.mkdir()
    shutil.copy(shared_data / "inspired" / "test.tsv", folder)
    if metadata:
        shutil.copy(shared_data / "inspired" / "id2info_inspired.json", folder)
    return folder


def both_runs_fail(dataset: str, folder: Path, tmp_path: Path, pattern: str) -> None:
    """The same error with and without --on-error skip, and no stage left marked as done."""
    for on_error in ("raise", "skip"):
        with pytest.raises(BadInput, match=pattern):
            prepare(dataset, folder, tmp_path / on_error, on_error=on_error)
        assert read_summary(tmp_path / on_error, "items") is None and read_summary(tmp_path / on_error, "turns") is None


# ------------------------------------------------------------------------------------------- empty splits


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_jsonl_split_is_an_error(shared_data, tmp_path, content):
    folder = redial_folder(shared_data, tmp_path)
    (folder / "test_data.jsonl").write_bytes(content)
    both_runs_fail("redial", folder, tmp_path, r"test_data.jsonl:1: empty file \(no record in it\) — restore the file")


def test_empty_tsv_split_is_an_error(shared_data, tmp_path):
    folder = inspired_folder(shared_data, tmp_path)
    (folder / "test.tsv").write_bytes(b"")
    both_runs_fail("inspired", folder, tmp_path, r"test.tsv:1: empty file")


# ------------------------------------------------------------------------------------------ metadata files


def test_missing_redial_metadata_is_a_recorded_warning(shared_data, tmp_path, capsys):
    folder = redial_folder(shared_data, tmp_path, metadata=False)
    summary = prepare("redial", folder, tmp_path / "run")
    assert "warning:" in capsys.readouterr().err
    [warning] = [w for w in summary["warnings"] if "id2info.json not found" in w]
    assert "augment.data download --dataset redial" in warning
    assert summary["metadata_file"] is None and summary["items_without_metadata"] == summary["items"]
    assert read_summary(tmp_path / "run", "items")["warnings"] == summary["warnings"]


def test_missing_inspired_metadata_is_a_recorded_warning(shared_data, tmp_path, capsys):
    folder = inspired_folder(shared_data, tmp_path, metadata=False)
    summary = prepare("inspired", folder, tmp_path / "run")
    assert "warning:" in capsys.readouterr().err
    [warning] = summary["warnings"]
    assert "id2info_inspired.json not found" in warning and "augment.data download --dataset inspired" in warning
    assert summary["metadata_file"] is None and summary["items_without_metadata"] == summary["items"]
    assert summary["mention_links"]["exact"] == 0 and summary["mention_links"]["unlinked"] > 0


@pytest.mark.parametrize("dataset, name", [("redial", "id2info.json"), ("inspired", "id2info_inspired.json")])
def test_empty_metadata_file_is_an_error_naming_it(shared_data, tmp_path, dataset, name):
    folder = redial_folder(shared_data, tmp_path) if dataset == "redial" else inspired_folder(shared_data, tmp_path)
    (folder / name).write_bytes(b"")
    both_runs_fail(dataset, folder, tmp_path, rf"{name}: empty file .* download it again with `python -m augment.data "
                                              rf"download --dataset {dataset}")


@pytest.mark.parametrize("dataset, name", [("redial", "id2info.json"), ("inspired", "id2info_inspired.json")])
def test_truncated_metadata_file_is_an_error_with_position(shared_data, tmp_path, dataset, name):
    folder = redial_folder(shared_data, tmp_path) if dataset == "redial" else inspired_folder(shared_data, tmp_path)
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    both_runs_fail(dataset, folder, tmp_path, rf"{name}:1:\d+: malformed JSON \(.* at char \d+ of \d+ — the file ends "
                                              r"early: truncated\) — download it again")


def test_metadata_entry_of_wrong_shape_is_located(shared_data, tmp_path):
    folder = inspired_folder(shared_data, tmp_path)
    metadata = json.loads((folder / "id2info_inspired.json").read_text(encoding="utf-8"))
    del metadata["7"]["name"]
    (folder / "id2info_inspired.json").write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(BadInput, match=r"id2info_inspired.json: entry '7': malformed metadata entry \(no 'name' string\)"):
        prepare("inspired", folder, tmp_path / "run")
    summary = prepare("inspired", folder, tmp_path / "run", on_error="skip")
    assert summary["skipped"] == {"malformed metadata entry": 1}
    assert summary["items"] - summary["items_without_metadata"] == len(metadata) - 1


# ------------------------------------------------------------------------------------------------ BOM


def add_bom(path: Path) -> None:
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())


@pytest.mark.parametrize("dataset, name", [("redial", "movies_with_mentions.csv"), ("redial", "test_data.jsonl"),
                                           ("redial", "id2info.json"), ("inspired", "test.tsv"),
                                           ("inspired", "id2info_inspired.json")])
def test_file_with_bom_reads_like_without(shared_data, tmp_path, dataset, name):
    """A UTF-8 byte-order mark (spreadsheet tools write one) is encoding, not data: the same turns and items."""
    folder = redial_folder(shared_data, tmp_path) if dataset == "redial" else inspired_folder(shared_data, tmp_path)
    prepare(dataset, folder, tmp_path / "plain")
    add_bom(folder / name)
    prepare(dataset, folder, tmp_path / "bom")
    for stage, artifact in (("items", "items.parquet"), ("turns", "turns.parquet")):
        assert read_rows(tmp_path / "bom" / stage / artifact) == read_rows(tmp_path / "plain" / stage / artifact)


# ------------------------------------------------------------------------------------ data and run folders


def test_inspired_without_data_dir_names_the_download(tmp_path, capsys):
    code = data_main(["prepare", "--dataset", "inspired", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "inspired has no embedded sample" in err and "python -m augment.data download --dataset inspired" in err
    assert not (tmp_path / "run").exists()  # the ReDial sample was not read into an INSPIRED run


@pytest.mark.parametrize("dataset, files", [("redial", ["test_data.jsonl", "movies_with_mentions.csv", "id2info.json"]),
                                            ("inspired", ["train.tsv", "dev.tsv", "test.tsv", "id2info_inspired.json"])])
def test_empty_data_dir_lists_expected_files_and_the_fix(tmp_path, capsys, dataset, files):
    (tmp_path / "empty").mkdir()
    code = data_main(["prepare", "--dataset", dataset, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert all(name in err for name in files)
    assert f"python -m augment.data download --dataset {dataset} --dest {tmp_path / 'empty'}" in err


def test_redial_without_catalog_names_it(shared_data, tmp_path):
    folder = redial_folder(shared_data, tmp_path)
    (folder / "movies_with_mentions.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"movies_with_mentions.csv not found: .* download --dataset redial"):
        prepare("redial", folder, tmp_path / "run")


def test_out_that_is_a_file(shared_data, tmp_path, capsys):
    folder = redial_folder(shared_data, tmp_path)
    (tmp_path / "taken").write_text("a file\n")
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        code = data_main(["prepare", "--data-dir", str(folder), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"{tmp_path / 'taken'} is a file, not a folder" in err
    assert (tmp_path / "taken").read_text() == "a file\n"


def test_stage_folder_that_is_a_file_leaves_no_finished_stage(shared_data, tmp_path, capsys):
    folder = redial_folder(shared_data, tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "turns").write_text("not a folder\n")
    code = data_main(["prepare", "--data-dir", str(folder), "--out", str(run)])
    assert code == 2 and "turns is a file where the turns/ stage folder goes" in capsys.readouterr().err
    assert not (run / "items").exists()  # checked before any work: no complete items/ stage next to a broken turns/


def test_out_in_a_read_only_place(shared_data, tmp_path, capsys):
    """/sys is read-only even for root (chmod would not stop root): the write probe is what decides."""
    folder = redial_folder(shared_data, tmp_path)
    code = data_main(["prepare", "--data-dir", str(folder), "--out", "/sys/crs-augment-test-run"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--out /sys/crs-augment-test-run cannot be written" in err


# -------------------------------------------------------------------------------------------------- CLI


def test_numeric_flags_are_validated(capsys):
    for value in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as exit_info:
            data_parser().parse_args(["sample", "--data-dir", "a", "--dest", "b", "--n", value])
        assert exit_info.value.code == 2 and "argument --n: " in capsys.readouterr().err


def test_every_command_and_flag_has_help_with_its_default():
    root = data_parser()
    commands = next(a for a in root._actions if a.dest == "command").choices
    assert set(commands) == {"prepare", "download", "sample"}
    for name, command in commands.items():
        assert "write" in command.description or "into" in command.description, name  # what it reads and writes
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, (name, action.dest)
            assert "(default:" in action.help or "(required" in action.help, (name, action.dest, action.help)
