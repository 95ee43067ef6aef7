"""The README's table of bad inputs and bad arguments stays true: every row is run here.

Each row of the README's "Bad input and bad arguments" table names a case; the case below with the same name runs
the real command on a damaged copy of the real data (or with the bad flag) and returns its exit code and output.
The row's first quoted fragment must be in that output, and its "exit N" must be the exit code.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest

from augment.data.__main__ import main as data_main
from augment.retrieve import main as retrieve_main
from augment.score import main as score_main, render_prompt, select_pairs
from augment.runs import read_rows
from tests.fake_openai_server import Fault, FakeOpenAIServer

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bad input and bad arguments"


def readme_rows() -> dict[str, str]:
    """Case name (first column) -> what the user gets (second column), from the README table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION):].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return {cells[0].lstrip("| ").strip(): cells[1].rstrip(" |").strip() for cells in rows[1:]}


def outcome(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    """Exit code and stdout + stderr of a command run in-process (argparse's exit included)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, out.getvalue()


class Cases:
    """One method per README row; each returns (exit code, output)."""

    def __init__(self, shared_data: Path, tmp_path: Path, sample_run: Path) -> None:
        self.shared, self.tmp, self.sample_run = shared_data, tmp_path, sample_run

    def redial(self, n: int = 15, metadata: bool = True) -> tuple[Path, list[str]]:
        folder = self.tmp / "redial"
        folder.mkdir(exist_ok=True)
        shutil.copy(self.shared / "redial" / "movies_with_mentions.csv", folder)
        if metadata:
            shutil.copy(self.shared / "redial" / "id2info.json", folder)
        lines = (self.shared / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        return folder, lines

    def prepare(self, folder: Path, *extra: str) -> tuple[int, str]:
        return outcome(data_main, ["prepare", "--data-dir", str(folder), "--out", str(self.tmp / "run"), *extra])

    def run_copy(self) -> Path:
        run = self.tmp / "scored"
        for stage in ("turns", "items", "candidates"):
            shutil.copytree(self.sample_run / stage, run / stage)
        return run

    def damaged_line(self, damage: Callable[[dict], None], at: int = 2) -> tuple[int, str]:
        folder, lines = self.redial()
        record = json.loads(lines[at])
        damage(record)
        lines[at] = json.dumps(record)
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.prepare(folder)

    def case_a_truncated_json_line_in_a_redial_split(self):
        folder, lines = self.redial()
        lines[2] = lines[2][: len(lines[2]) // 2]
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.prepare(folder)

    def case_a_message_text_that_is_null_or_a_number(self):
        return self.damaged_line(lambda record: record["messages"][1].update(text=None))

    def case_a_duplicated_conversationid(self):
        folder, lines = self.redial()
        (folder / "test_data.jsonl").write_text("\n".join(lines + [lines[0]]) + "\n", encoding="utf-8")
        return self.prepare(folder)

    def case_an_empty_split_file(self):
        folder, _ = self.redial()
        (folder / "test_data.jsonl").write_text("", encoding="utf-8")
        return self.prepare(folder)

    def case_a_tsv_missing_a_column_even_with_on_error_skip(self):
        folder = self.tmp / "inspired"
        folder.mkdir()
        lines = (self.shared / "inspired" / "test.tsv").read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        header[header.index("movies")] = "films"
        (folder / "test.tsv").write_text("\n".join(["\t".join(header), *lines[1:]]) + "\n", encoding="utf-8")
        shutil.copy(self.shared / "inspired" / "id2info_inspired.json", folder)
        return self.prepare(folder, "--dataset", "inspired", "--on-error", "skip")

    def case_a_truncated_id2info_json(self):
        folder, lines = self.redial()
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        data = (folder / "id2info.json").read_bytes()
        (folder / "id2info.json").write_bytes(data[: len(data) // 2])
        return self.prepare(folder)

    def case_a_missing_id2info_json(self):
        folder, lines = self.redial(metadata=False)
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.prepare(folder)

    def case_an_empty_data_dir(self):
        (self.tmp / "empty").mkdir()
        return self.prepare(self.tmp / "empty")

    def case_prepare_dataset_inspired_without_data_dir(self):
        return outcome(data_main, ["prepare", "--dataset", "inspired", "--out", str(self.tmp / "run")])

    def case_out_that_is_a_file(self):
        folder, lines = self.redial()
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.tmp / "taken").write_text("a file\n")
        return outcome(data_main, ["prepare", "--data-dir", str(folder), "--out", str(self.tmp / "taken")])

    def case_threshold_1_7_nan_inf(self):
        results = [outcome(score_main, ["--run", str(self.sample_run), "--threshold", v]) for v in ("-1", "7", "nan", "inf")]
        assert len({code for code, _ in results}) == 1
        return results[0][0], "".join(text for _, text in results)

    def case_top_k_0(self):
        return outcome(retrieve_main, ["--run", str(self.sample_run), "--top-k", "0"])

    def case_concurrency_0(self):
        return outcome(score_main, ["--run", str(self.sample_run), "--concurrency", "0"])

    def case_timeout_1(self):
        return outcome(score_main, ["--run", str(self.sample_run), "--timeout", "-1"])

    def case_base_url_127_0_0_1_9_no_scheme(self):
        return outcome(score_main, ["--run", str(self.sample_run), "--backend", "openai", "--model", "m",
                                    "--base-url", "127.0.0.1:9"])

    def case_a_server_that_is_not_there(self):
        return outcome(score_main, ["--run", str(self.run_copy()), "--backend", "openai", "--model", "m",
                                    "--base-url", "http://127.0.0.1:9/v1", "--force"])

    def case_a_model_the_server_does_not_serve(self):
        with FakeOpenAIServer() as server:
            return outcome(score_main, ["--run", str(self.run_copy()), "--backend", "openai", "--model", "gpt-x",
                                        "--base-url", server.base_url])

    def case_a_server_that_fails_every_request(self):
        run = self.run_copy()
        items = {i["item_id"]: i for i in read_rows(run / "items" / "items.parquet")}
        with FakeOpenAIServer() as server:
            for pair in select_pairs(run, 2, 3):
                server.faults[render_prompt(pair.turn, items[pair.item_id], False, 10)] = Fault("500")
            return outcome(score_main, ["--run", str(run), "--backend", "openai", "--model", "fake-judge",
                                        "--base-url", server.base_url, "--max-turns", "2", "--top-n", "3",
                                        "--max-retries", "0"])

    def case_a_finished_stage_asked_for_other_parameters(self):
        return outcome(retrieve_main, ["--run", str(self.run_copy()), "--top-k", "6"])

    def case_a_changed_input_file_or_upstream_stage(self):
        folder, lines = self.redial()
        (folder / "test_data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert self.prepare(folder)[0] == 0
        (folder / "test_data.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
        return self.prepare(folder)


def case_name(row: str) -> str:
    return "case_" + re.sub(r"[^a-z0-9]+", "_", row.replace("`", "").lower()).strip("_")


def test_every_readme_row_has_a_case_and_every_case_a_row():
    rows = {case_name(row) for row in readme_rows()}
    cases = {name for name in vars(Cases) if name.startswith("case_")}
    assert rows == cases, f"README rows without a case: {rows - cases}; cases without a row: {cases - rows}"


@pytest.mark.parametrize("row", list(readme_rows()))
def test_readme_row_is_what_the_command_prints(row, shared_data, tmp_path, sample_run, monkeypatch):
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    expected = readme_rows()[row]
    code, output = getattr(Cases(shared_data, tmp_path, sample_run), case_name(row))()
    quoted = re.findall(r"`([^`]+)`", expected)[0]
    assert quoted in output, f"{row}: README says `{quoted}`, the command printed:\n{output}"
    stated = re.search(r"exit (\d)", expected)
    assert stated is None or int(stated.group(1)) == code, f"{row}: README says exit {stated.group(1)}, got {code}"
