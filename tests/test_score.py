"""The scoring stage: prompt rendering, chunking, faults, re-labelling, and resume after kill -9.

The model side is the fake OpenAI-compatible server (fault injection); the real-server agreement test lives in
test_vllm_real.py. Candidates are real: the embedded ReDial sample, retrieved once per session.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest

from augment.llm.cache import request_key
from augment.llm.openai_backend import OpenAIBackend
from augment.runs import read_rows, read_summary
from augment.score import chunks_by_turn, main as score_main, render_prompt, select_pairs
from augment.templates import render
from tests.fake_openai_server import Fault, FakeOpenAIServer, digit_probs

TURNS, TOP_N = 4, 10


@pytest.fixture
def run(sample_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the sample run (turns, items, candidates) and a private request cache."""
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "run"
    for stage in ("turns", "items", "candidates"):
        shutil.copytree(sample_run / stage, copy / stage)
    return copy


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def score_args(run: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return ["--run", str(run), "--backend", "openai", "--model", "fake-judge", "--base-url", server.base_url,
            "--max-turns", str(TURNS), "--top-n", str(TOP_N), "--chunk-pairs", "10", "--timeout", "5", "--max-retries", "2", "--backoff", "0.01", *extra]


def prompts_of(run: Path) -> list[str]:
    items = {i["item_id"]: i for i in read_rows(run / "items" / "items.parquet")}
    return [render_prompt(p.turn, items[p.item_id], False, 10) for p in select_pairs(run, TURNS, TOP_N)]


def test_prompt_puts_dialogue_first_and_candidate_last(sample_run):
    pair = select_pairs(sample_run, 1, 1)[0]
    items = {i["item_id"]: i for i in read_rows(sample_run / "items" / "items.parquet")}
    item_text = render("item.jinja", **items[pair.item_id])
    chat = render_prompt(pair.turn, items[pair.item_id], completion=False, context_window=10)
    raw = render_prompt(pair.turn, items[pair.item_id], completion=True, context_window=10)
    last_utterance = pair.turn["context"][-1]["text"]
    assert chat.index("4 = excellent") < chat.index(last_utterance) < chat.index(item_text.strip())
    assert chat.rstrip().endswith("Reply with a single digit from 0 to 4.")
    assert raw.endswith("Score: ") and raw.startswith(chat.rstrip())  # SmolLM2 digits carry no leading space
    with pytest.raises(jinja2.UndefinedError):
        render("score.jinja", context=[], item="x")  # StrictUndefined: a missing variable is an error


def test_chunks_never_split_a_turn(sample_run):
    pairs = select_pairs(sample_run, 6, 7)
    chunks = list(chunks_by_turn(pairs, 10))
    assert sorted(i for c in chunks for i in c) == list(range(len(pairs)))
    for chunk in chunks:
        uids = [pairs[i].turn["turn_uid"] for i in chunk]
        assert len(uids) % 7 == 0 and len(chunk) >= 10 or chunk is chunks[-1]


def test_score_and_relabel(run, server):
    assert score_main(score_args(run, server, "--threshold", "2.0")) == 0
    judgments = read_rows(run / "judgments" / "judgments.parquet")
    prompts = prompts_of(run)
    assert len(judgments) == len(prompts) == TURNS * TOP_N
    for row, prompt in zip(judgments, prompts):
        assert row["status"] == "ok" and row["model"] == "fake-judge" and row["backend"] == "openai"
        assert row["probs"] == pytest.approx(digit_probs(prompt), abs=1e-9)
        assert row["score"] == pytest.approx(sum(d * p for d, p in enumerate(digit_probs(prompt))))
    labels = read_rows(run / "labels" / "labels.parquet")
    turns = {t["turn_uid"]: t for t in read_rows(run / "turns" / "turns.parquet")}
    expected = {(r["turn_uid"], r["item_id"]) for r in judgments if r["score"] >= 2.0 and r["item_id"] not in turns[r["turn_uid"]]["rec"]}
    assert {(l["turn_uid"], s["item_id"]) for l in labels for s in l["rec_synthetic"]} == expected
    assert all(l["rec"] == turns[l["turn_uid"]]["rec"] for l in labels)
    requests = len(server.requests)
    assert score_main(score_args(run, server, "--threshold", "2.2")) == 0  # re-label only: no model call
    assert len(server.requests) == requests
    summary = read_summary(run, "labels")
    assert summary["params"]["threshold"] == 2.2
    assert summary["synthetic_labels"] == sum(1 for r in judgments if r["score"] >= 2.2 and r["item_id"] not in turns[r["turn_uid"]]["rec"])
    assert (run / "labels" / "score_histogram.png").stat().st_size > 1000


def test_failures_are_kept_and_retried(run, server):
    prompts = prompts_of(run)
    server.faults[prompts[3]] = Fault("500")
    server.faults[prompts[17]] = Fault("no_digits")
    server.faults[prompts[25]] = Fault("500", times=3)  # fails all 3 tries of the first run, then recovers
    assert score_main(score_args(run, server)) == 0
    summary = read_summary(run, "judgments")
    assert summary["failed"] == 3 and summary["pairs"] == len(prompts)
    assert summary["failed_by_reason"] == {"http 500 after 3 tries": 2, "no digit among top tokens": 1}
    rows = read_rows(run / "judgments" / "judgments.parquet")
    assert [i for i, r in enumerate(rows) if r["status"] == "failed"] == [3, 17, 25]
    assert rows[3]["reason"].startswith("http 500") and rows[3]["probs"] is None
    before = len(server.requests)
    assert score_main(score_args(run, server)) == 0
    retried = [p for p in server.prompts_requested()[before:]]
    assert set(retried) == {prompts[3], prompts[17], prompts[25]}
    assert read_summary(run, "judgments")["failed"] == 2  # prompt 25 recovered; the others fail again, counted


def test_resume_after_kill_matches_uninterrupted_run(run, server, tmp_path):
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    env = {**os.environ, "CRS_AUGMENT_CACHE": str(tmp_path / "killed-cache")}
    server.latency_s = 0.05
    command = [sys.executable, "-m", "augment.score", *score_args(run, server, "--concurrency", "1")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(server.requests) < 25 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_summary(run, "judgments") is None  # killed mid-way: the stage is not marked done
    before_kill = server.prompts_requested()
    with sqlite3.connect(tmp_path / "killed-cache" / "requests.sqlite") as db:
        finished_keys = {key for (key,) in db.execute("SELECT key FROM requests WHERE ok = 1")}
    backend = OpenAIBackend(model="fake-judge", base_url=server.base_url)
    finished = {p for p in before_kill if request_key(backend, "digits", p, {}) in finished_keys}
    assert 10 <= len(finished) < TURNS * TOP_N

    server.latency_s = 0.0
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    after = server.prompts_requested()[len(before_kill):]
    assert not finished & set(after)  # nothing finished before the kill was asked again
    assert set(after) == set(prompts_of(run)) - finished
    assert score_main(score_args(reference, server)) == 0
    fields = ("turn_uid", "item_id", "rank", "probs", "score", "status")
    strip = lambda rows: [{k: r[k] for k in fields} for r in rows]
    assert strip(read_rows(run / "judgments" / "judgments.parquet")) == strip(read_rows(reference / "judgments" / "judgments.parquet"))
