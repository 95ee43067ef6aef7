"""`python -m eval.bench ray`: orchestration throughput of the score stage's runners, local vs Ray, no model.

The model side is the project's fault-free loopback OpenAI-compatible server (`tests/fake_openai_server.py`, a
deterministic logprobs reply after `--latency` seconds), so what is measured is the runner: prompt rendering,
request fan-out, Ray's start-up and scheduling, parsing and the cache commits. Configurations, each from an
empty request cache on a private copy of the same prepared run: the local runner with one server; then, after
`ray.init`, the Ray runner with one server twice (the first includes Ray's worker start-up) and with two servers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from augment import runs
from augment.cli import NON_NEGATIVE_FLOAT, POSITIVE_INT

SAMPLE_RUN = Path("outputs/bench-sample")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `ray` options of `python -m eval.bench`."""
    p.add_argument("--ray-run", type=Path, default=None,
                   help=f"ray: a prepared + retrieved run to score (default: the embedded ReDial sample, prepared "
                        f"and retrieved top-50 into {SAMPLE_RUN})")
    p.add_argument("--ray-turns", type=POSITIVE_INT, default=40, help="ray: recommendation turns to score (default 40)")
    p.add_argument("--top-n", type=POSITIVE_INT, default=50, help="ray: candidates per turn (default 50)")
    p.add_argument("--latency", type=NON_NEGATIVE_FLOAT, default=0.05, help="ray: seconds each fake reply waits (default 0.05)")
    p.add_argument("--concurrency", type=POSITIVE_INT, default=16, help="ray: requests in flight per client (default 16)")
    p.add_argument("--ray-cpus", type=POSITIVE_INT, default=2, help="ray: num_cpus of the local Ray instance (default 2)")


def sample_run(run: Path = SAMPLE_RUN) -> Path:
    """The embedded ReDial sample, prepared and retrieved (top-50); a no-op when already built."""
    from augment.data.prepare import prepare
    from augment.data.sample import SAMPLE_DIR
    from augment.retrieve import retrieve

    prepare("redial", SAMPLE_DIR / "redial", run)
    retrieve(run, top_k=50)
    return run


def fake_server_class() -> Any:
    """The loopback server of the test suite; it lives in tests/, so the bench runs from the repo root."""
    try:
        from tests.fake_openai_server import FakeOpenAIServer
    except ModuleNotFoundError as exc:
        raise ValueError("python -m eval.bench ray needs tests/fake_openai_server.py: run it from the repo root") from exc
    return FakeOpenAIServer


def import_ray() -> Any:
    """Ray, or the runner's one-line install hint."""
    try:
        import ray
    except ModuleNotFoundError:
        from augment.ray_runner import MISSING_RAY

        raise ValueError(MISSING_RAY) from None
    return ray


def score_once(source: Path, runner: str, servers: Sequence[Any], args: argparse.Namespace) -> dict[str, Any]:
    """One `augment.score` run on a private copy of `source` with an empty request cache; its summary numbers."""
    from augment.score import main as score_main

    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        for stage in ("turns", "items", "candidates"):
            shutil.copytree(source / stage, run / stage)
        previous = os.environ.get("CRS_AUGMENT_CACHE")
        os.environ["CRS_AUGMENT_CACHE"] = str(Path(scratch) / "cache")
        try:
            start = time.perf_counter()
            rc = score_main(["--run", str(run), "--backend", "openai", "--model", "fake-judge",
                             "--max-turns", str(args.ray_turns), "--top-n", str(args.top_n),
                             "--base-url", ",".join(s.base_url for s in servers), "--runner", runner,
                             "--concurrency", str(args.concurrency)])
            wall = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop("CRS_AUGMENT_CACHE", None)
            else:
                os.environ["CRS_AUGMENT_CACHE"] = previous
        summary = runs.read_summary(run, "judgments")
    row = {"runner": runner, "servers": len(servers), "latency_s": args.latency, "pairs": summary["pairs"],
           "failed": summary["failed"], "stage_seconds": summary["seconds"], "wall_seconds": wall,
           "pairs_per_s": summary["pairs"] / summary["seconds"], "rc": rc}
    print("RESULT " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
          flush=True)
    return row


def bench_ray(args: argparse.Namespace) -> dict[str, Any]:
    """Local runner (1 server), then Ray (1 server, twice; 2 servers), on loopback fake servers."""
    source = args.ray_run or sample_run()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    server_class = fake_server_class()
    with ExitStack() as stack:
        a, b = (stack.enter_context(server_class()) for _ in range(2))
        a.latency_s = b.latency_s = args.latency
        rows = [score_once(source, "local", [a], args)]
        ray = import_ray()

        start = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        init_seconds = time.perf_counter() - start
        try:
            rows += [score_once(source, "ray", servers, args) for servers in ([a], [a], [a, b])]
        finally:
            ray.shutdown()
    return {"ray_init_seconds": init_seconds, "ray_cpus": args.ray_cpus, "runs": rows}
