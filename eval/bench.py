"""`python -m eval.bench retrieve|score|judge|ray`: the numbers in the README, each printed with what produced it.

- retrieve: gold recall@K of the default retrieval on a real dataset (per split).
- score: pairs/s of the local judge, naive (one forward per pair) vs prefix reuse, side by side in one process,
  and the share of the CPU's measured bf16 matmul peak the reuse path reaches. With `--shape gemma-2-9b` (2b, 27b;
  tiny for CPU tests): the same scorer on a random-weight Gemma-2-shaped model, e.g. `--device cuda` in bf16, with
  MFU and the projected time of a full ReDial pass (`eval.bench_gpu`).
- ray: orchestration throughput of the score stage, local runner vs Ray runner, on loopback fake servers
  (`eval.bench_ray`).
- judge: the judge table of `eval.judge_quality` (AUCs on real test turns, agreement with held-out teacher pairs,
  pairs/s) for untrained SmolLM2, MiniLM cosine and each `--judge` (e.g. `cross-encoder:outputs/students/ce`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from augment import runs
from eval import bench_gpu, bench_ray

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "redial"


def prepared_run(data_dir: Path, run: Path) -> Path:
    """A run with turns, items and top-100 candidates (no-ops when already built)."""
    from augment.data.prepare import prepare
    from augment.retrieve import retrieve

    prepare("redial", data_dir, run)
    retrieve(run, top_k=100)
    return run


def bench_retrieve(args: argparse.Namespace) -> dict:
    return runs.read_summary(prepared_run(args.data_dir, args.run), "candidates")


def bench_judge(args: argparse.Namespace) -> list[dict]:
    """The README's judge table: untrained SmolLM2, MiniLM cosine, popularity, and every `--judge` given (e.g. students)."""
    from eval.judge_quality import heldout_of, judge_rows, markdown_table

    run = args.judge_run or prepared_run(args.data_dir, args.run)
    teacher = args.teacher or (run / "teacher" if (run / "teacher" / "teacher.parquet").exists() else None)
    specs = ["local:smollm2-135m-instruct", "cosine", "popularity", *(args.judge or [])]
    rows = judge_rows(run, specs, n_turns=args.turns, n_negatives=args.negatives, teacher_dir=teacher,
                      heldout=heldout_of(args.heldout_from))
    print(markdown_table(rows))
    return rows


def bench_score(args: argparse.Namespace) -> dict:
    if args.shape:
        return bench_gpu.bench_shape(args)
    from eval.bench_local import bench_score_local, cpu_bf16_matmul_peak, cpu_matmul_peak

    result = bench_score_local(args.model, args.turns_score or 2, args.candidates, threads=args.threads)
    result["fp32_peak_flops_per_s"] = cpu_matmul_peak("float32")
    result["bf16_peak_flops_per_s"] = cpu_bf16_matmul_peak()
    for path in ("naive", "reuse"):
        result[f"{path}_share_of_fp32_peak"] = result[f"{path}_flops_per_s"] / result["fp32_peak_flops_per_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__)
    p.add_argument("what", choices=("retrieve", "score", "judge", "ray"))
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="real ReDial files")
    p.add_argument("--run", type=Path, default=Path("outputs/bench-redial"))
    p.add_argument("--turns", type=int, default=200, help="judge: test turns with gold labels (default 200)")
    p.add_argument("--negatives", type=int, default=10, help="judge: negatives of each kind per turn (default 10)")
    p.add_argument("--judge", action="append", help="judge: another judge spec to add (repeatable)")
    p.add_argument("--judge-run", type=Path, help="judge: an existing run with candidates (default: prepare --run)")
    p.add_argument("--teacher", type=Path, help="judge: teacher stage for the agreement columns (default RUN/teacher)")
    p.add_argument("--heldout-from", type=Path, help="judge: student folder whose held-out dialogues to use")
    p.add_argument("--model", default="smollm2-135m-instruct", help="score: the local model")
    p.add_argument("--turns-score", type=int, default=None,
                   help="score: prompt groups (turns); default 2, or 8 with a Gemma-2 --shape")
    p.add_argument("--candidates", type=int, default=50, help="score: candidates per turn")
    p.add_argument("--threads", type=int, default=1, help="score: torch threads")
    bench_gpu.add_arguments(p)
    bench_ray.add_arguments(p)
    args = p.parse_args(argv)
    benches = {"retrieve": bench_retrieve, "score": bench_score, "judge": bench_judge, "ray": bench_ray.bench_ray}
    result = benches[args.what](args)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
