"""Never a stale stage, and re-labelling in seconds: end to end on a real slice of the shared ReDial data.

The judge is the fake OpenAI-compatible server (its request log counts model calls); turns, items and candidates
are real (30 ReDial train conversations, MiniLM retrieval).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from augment.data.prepare import prepare
from augment.data.sample import write_redial_sample
from augment.retrieve import retrieve
from augment.runs import Stage, StageMismatch, artifact_fingerprint, file_fingerprint, read_rows, read_summary
from augment.score import main as score_main
from tests.fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def slice_dir(shared_data, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("redial_slice")
    write_redial_sample(shared_data / "redial", dest, 30, split_files=("train_data.jsonl",))
    return dest


@pytest.fixture(scope="module")
def retrieved(slice_dir, tmp_path_factory, embedding_cache) -> Path:
    out = tmp_path_factory.mktemp("retrieved") / "run"
    prepare("redial", slice_dir, out)
    retrieve(out, top_k=5, cache_path=embedding_cache)
    return out


@pytest.fixture
def run(retrieved, tmp_path, monkeypatch) -> Path:
    """A private copy of the retrieved slice and a private request cache."""
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    shutil.copytree(retrieved, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def judge(run: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return ["--run", str(run), "--backend", "openai", "--model", "fake-judge", "--base-url", server.base_url,
            "--timeout", "5", "--max-retries", "1", "--backoff", "0.01", *extra]


def test_changed_candidates_rebuild_judgments_and_labels(run, server, capsys, embedding_cache):
    assert score_main(judge(run, server, "--max-turns", "6")) == 0
    before = {(r["turn_uid"], r["item_id"]) for r in read_rows(run / "judgments" / "judgments.parquet")}
    retrieve(run, top_k=5, context_window=1, cache_path=embedding_cache, force=True)
    capsys.readouterr()
    assert score_main(judge(run, server, "--max-turns", "6")) == 0
    out = capsys.readouterr().out
    assert "already done" not in out and "stage candidates changed" in out
    candidates = {(r["turn_uid"], r["item_id"]) for r in read_rows(run / "candidates" / "candidates.parquet")}
    after = {(r["turn_uid"], r["item_id"]) for r in read_rows(run / "judgments" / "judgments.parquet")}
    assert after <= candidates and after != before  # judgments of the candidates that exist now, none stale
    assert read_summary(run, "labels")["built_from"]["stages"]["judgments"] == artifact_fingerprint(run, "judgments")


def test_threshold_change_relabels_without_a_model_call(run, server, capsys):
    assert score_main(judge(run, server, "--max-turns", "6", "--top-n", "3")) == 0
    calls = len(server.requests)
    judgments = run / "judgments" / "judgments.parquet"
    fingerprint = file_fingerprint(judgments)
    # the README's promise: only --threshold, no judge options -> re-label what was judged
    assert score_main(["--run", str(run), "--threshold", "1.0"]) == 0
    assert len(server.requests) == calls  # not one model call (the local judge was not even loaded)
    assert file_fingerprint(judgments)["sha256"] == fingerprint["sha256"]
    labels = read_summary(run, "labels")
    assert labels["params"] == {"threshold": 1.0} and labels["turns"] == 6
    assert labels["synthetic_labels"] > 0
    # an option that changes which pairs are judged pays only for the pairs not yet in the request cache
    capsys.readouterr()
    assert score_main(judge(run, server, "--max-turns", "6", "--top-n", "5")) == 0
    assert "rebuilding with other parameters (top_n)" in capsys.readouterr().out
    pairs = read_summary(run, "judgments")["pairs"]
    assert len(server.requests) - calls == pairs - 6 * 3


def test_changed_input_file_rebuilds_prepare(slice_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(slice_dir, data)
    out = tmp_path / "run"
    first = prepare("redial", data, out)
    capsys.readouterr()
    prepare("redial", data, out)
    assert "already done" in capsys.readouterr().out
    lines = (data / "train_data.jsonl").read_text().splitlines(keepends=True)
    (data / "train_data.jsonl").write_text("".join(lines[:-5]))  # the user fixes / trims an input file
    second = prepare("redial", data, out)
    assert "train_data.jsonl changed" in capsys.readouterr().out
    assert second["splits"]["train"]["conversations"] == first["splits"]["train"]["conversations"] - 5


def test_stage_rebuilds_when_an_upstream_artifact_changes(tmp_path):
    from augment.runs import write_rows

    write_rows(tmp_path / "turns" / "turns.parquet", [{"a": 1}])
    Stage(tmp_path, "turns", {}).finish({})
    Stage(tmp_path, "candidates", {"top_k": 5}, reads=("turns",)).finish({})
    assert not Stage(tmp_path, "candidates", {"top_k": 5}, reads=("turns",)).needed()
    write_rows(tmp_path / "turns" / "turns.parquet", [{"a": 2}])
    assert Stage(tmp_path, "candidates", {"top_k": 5}, reads=("turns",)).needed()
    with pytest.raises(FileNotFoundError, match="items"):
        Stage(tmp_path, "candidates", {}, reads=("items",))  # an upstream stage that never finished


def test_changed_params_are_an_error_unless_rebuild_is_cheap(tmp_path):
    Stage(tmp_path, "candidates", {"top_k": 50}).finish({})
    with pytest.raises(StageMismatch, match="top_k"):
        Stage(tmp_path, "candidates", {"top_k": 20}).needed()
    assert Stage(tmp_path, "candidates", {"top_k": 20}).needed(on_change="rebuild")
