"""`python -m eval.bench retrieve|score|judge`: the numbers in the README, each printed with what produced it.

- retrieve: gold recall@K of the default retrieval on a real dataset (per split).
- score: pairs/s of the local judge, naive (one forward per pair) vs prefix reuse, side by side in one process,
  and the share of the CPU's measured bf16 matmul peak the reuse path reaches.
- judge: judge-quality proxies (AUC gold vs retrieved non-gold, gold vs random) for each offline model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augment import runs
from augment.data.prepare import prepare
from augment.retrieve import retrieve

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "redial"


def prepared_run(data_dir: Path, run: Path) -> Path:
    """A run with turns, items and top-100 candidates (no-ops when already built)."""
    prepare("redial", data_dir, run)
    retrieve(run, top_k=100)
    return run


def bench_retrieve(args: argparse.Namespace) -> dict:
    return runs.read_summary(prepared_run(args.data_dir, args.run), "candidates")


def bench_judge(args: argparse.Namespace) -> list[dict]:
    from augment.llm import make_backend
    from eval.judge_quality import judge_quality

    run = prepared_run(args.data_dir, args.run)
    rows = []
    for model, chat in (("smollm2-135m-instruct", True), ("gemma3-270m", False)):
        backend = make_backend("local", model, chat=chat)
        rows.append(judge_quality(run, backend, args.turns, args.negatives))
        backend.close()
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_score(args: argparse.Namespace) -> dict:
    from eval.bench_local import bench_score_local, cpu_bf16_matmul_peak, cpu_matmul_peak

    result = bench_score_local(args.model, args.turns_score, args.candidates, threads=args.threads)
    result["fp32_peak_flops_per_s"] = cpu_matmul_peak("float32")
    result["bf16_peak_flops_per_s"] = cpu_bf16_matmul_peak()
    for path in ("naive", "reuse"):
        result[f"{path}_share_of_fp32_peak"] = result[f"{path}_flops_per_s"] / result["fp32_peak_flops_per_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__)
    p.add_argument("what", choices=("retrieve", "score", "judge"))
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="real ReDial files")
    p.add_argument("--run", type=Path, default=Path("outputs/bench-redial"))
    p.add_argument("--turns", type=int, default=40, help="judge: test turns with gold labels")
    p.add_argument("--negatives", type=int, default=10, help="judge: retrieved and random negatives per turn")
    p.add_argument("--model", default="smollm2-135m-instruct", help="score: the local model")
    p.add_argument("--turns-score", type=int, default=2, help="score: prompt groups (turns)")
    p.add_argument("--candidates", type=int, default=50, help="score: candidates per turn")
    p.add_argument("--threads", type=int, default=1, help="score: torch threads")
    args = p.parse_args(argv)
    result = {"retrieve": bench_retrieve, "score": bench_score, "judge": bench_judge}[args.what](args)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
