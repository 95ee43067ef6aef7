"""`python -m augment.score`: an LLM judge rates every (dialogue, candidate) pair; high scores become labels.

The judge reads `prompts/score.jinja` (rubric, dialogue first, candidate last) and we read its score as the
expectation over the probabilities of the digit tokens 0..4. Candidates scoring at least `--threshold` (and not
already gold or mentioned) become synthetic labels. Judgments are kept apart from labels: changing the threshold
re-labels from stored judgments without calling a model. Every request goes through the sqlite request cache, so a
killed run resumes where it stopped and a re-run retries only the pairs that failed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from augment import runs
from augment.llm import BACKENDS, DEFAULT_LOCAL_JUDGE, make_backend, uses_raw_completion
from augment.llm.base import Backend, DigitScore
from augment.llm.cache import CachedBackend, reason_head
from augment.templates import render, template_hash

SCORE_TEMPLATE = "score.jinja"
HISTOGRAM_BINS = [i / 2 for i in range(9)]  # 0, 0.5, ..., 4


@dataclass(frozen=True)
class Pair:
    turn: dict[str, Any]
    item_id: str
    rank: int


def select_pairs(run: Path, max_turns: int | None, top_n: int | None) -> list[Pair]:
    """Candidate pairs of the first `max_turns` recommendation turns, each turn's first `top_n` candidates."""
    turns = runs.read_rows(Path(run) / "turns" / "turns.parquet")[:max_turns]
    by_turn: dict[str, list[dict]] = defaultdict(list)
    for row in runs.read_rows(Path(run) / "candidates" / "candidates.parquet"):
        by_turn[row["turn_uid"]].append(row)
    return [
        Pair(turn, row["item_id"], row["rank"])
        for turn in turns
        for row in sorted(by_turn[turn["turn_uid"]], key=lambda r: r["rank"])
        if top_n is None or row["rank"] < top_n
    ]


def render_prompt(turn: dict[str, Any], item: dict[str, Any], completion: bool, context_window: int) -> str:
    context = turn["context"][-context_window:] if context_window else turn["context"]
    return render(SCORE_TEMPLATE, context=context, item=render("item.jinja", **item), completion=completion)


def chunks_by_turn(pairs: Sequence[Pair], size: int) -> Iterator[list[int]]:
    """Indices of pairs in chunks of about `size`, never splitting a turn (its candidates share a prefix)."""
    chunk: list[int] = []
    for index, pair in enumerate(pairs):
        if len(chunk) >= size and pair.turn["turn_uid"] != pairs[chunk[-1]].turn["turn_uid"]:
            yield chunk
            chunk = []
        chunk.append(index)
    if chunk:
        yield chunk


def score_prompts(backend: Backend, pairs: Sequence[Pair], prompts: Sequence[str], chunk_pairs: int) -> list[DigitScore]:
    """Score in turn-aligned chunks with a progress bar (pairs/s, ETA); a kill loses at most one chunk."""
    results: list[DigitScore | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), unit="pair", desc="[score]", dynamic_ncols=True) as bar:
        for chunk in chunks_by_turn(pairs, chunk_pairs):
            for index, result in zip(chunk, backend.score_digits([prompts[i] for i in chunk])):
                results[index] = result
            bar.update(len(chunk))
    return results  # type: ignore[return-value]


def judgment_rows(pairs: Sequence[Pair], results: Sequence[DigitScore], backend: Backend, prompt_hash: str) -> list[dict]:
    return [
        {
            "turn_uid": pair.turn["turn_uid"],
            "item_id": pair.item_id,
            "rank": pair.rank,
            "probs": list(result.probs) if result.ok else None,
            "score": result.score if result.ok else None,
            "status": "ok" if result.ok else "failed",
            "reason": result.error,
            "backend": backend.name,
            "model": backend.model,
            "prompt_hash": prompt_hash,
        }
        for pair, result in zip(pairs, results)
    ]


def histogram(scores: Sequence[float]) -> dict[str, int]:
    counts = Counter(min(int(score * 2), len(HISTOGRAM_BINS) - 2) for score in scores)
    return {f"{HISTOGRAM_BINS[b]:.1f}-{HISTOGRAM_BINS[b + 1]:.1f}": counts[b] for b in range(len(HISTOGRAM_BINS) - 1)}


def plot_histogram(scores: Sequence[float], threshold: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(scores, bins=HISTOGRAM_BINS, color="#4c72b0", edgecolor="white")
    axis.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
    axis.set_xlabel("judge score (expected digit)")
    axis.set_ylabel("pairs")
    axis.set_title(f"Judge scores of {len(scores):,d} pairs")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def label(run: Path, threshold: float) -> dict[str, Any]:
    """Synthetic labels from stored judgments: score >= threshold, not gold, not mentioned. Cheap, always redone."""
    stage = runs.Stage(run, "labels", {"threshold": threshold}, reads=("turns", "items", "judgments"))
    judgments = runs.read_rows(Path(run) / "judgments" / "judgments.parquet")
    turns = {t["turn_uid"]: t for t in runs.read_rows(Path(run) / "turns" / "turns.parquet")}
    titles = {i["item_id"]: i["title"] for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    synthetic: dict[str, list[dict]] = defaultdict(list)
    for row in judgments:
        turn = turns[row["turn_uid"]]
        if row["status"] == "ok" and row["score"] >= threshold and row["item_id"] not in turn["rec"] + turn["mentioned"]:
            synthetic[row["turn_uid"]].append({"item_id": row["item_id"], "title": titles[row["item_id"]], "score": row["score"]})
    scored = list(dict.fromkeys(row["turn_uid"] for row in judgments))
    rows = [
        {
            "turn_uid": uid,
            "split": turns[uid]["split"],
            "rec": turns[uid]["rec"],
            "rec_synthetic": sorted(synthetic[uid], key=lambda s: -s["score"]),
        }
        for uid in scored
    ]
    runs.write_rows(runs.stage_dir(run, "labels") / "labels.parquet", rows)
    scores = [row["score"] for row in judgments if row["status"] == "ok"]
    if scores:
        plot_histogram(scores, threshold, runs.stage_dir(run, "labels") / "score_histogram.png")
    gold = sum(len(r["rec"]) for r in rows)
    added = sum(len(r["rec_synthetic"]) for r in rows)
    summary = {
        "turns": len(rows),
        "gold_labels": gold,
        "synthetic_labels": added,
        "turns_with_synthetic": sum(1 for r in rows if r["rec_synthetic"]),
        "expansion_ratio": (gold + added) / gold if gold else None,
    }
    summary = stage.finish(summary)
    ratio = f"x{summary['expansion_ratio']:.1f}" if gold else "n/a"
    print(f"[label] threshold {threshold}: {gold:,d} gold labels -> {gold + added:,d} with {added:,d} synthetic ({ratio}) "
          f"over {len(rows):,d} turns")
    return summary


def judge_params(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a judgment, known before any model is loaded (so a re-label loads none)."""
    return {
        "backend": args.backend,
        "model": args.model or (DEFAULT_LOCAL_JUDGE if args.backend == "local" else None),
        "endpoint": args.endpoint if args.backend == "openai" else None,
        "chat": args.chat if args.backend != "openai" else None,
        "max_turns": args.max_turns,
        "top_n": args.top_n,
        "context_window": args.context_window,
        "prompt_hash": template_hash(SCORE_TEMPLATE),
    }


def needs_scoring(stage: runs.Stage, force: bool) -> bool:
    """Score unless judgments with these parameters exist and none failed (failed pairs are retried)."""
    done = stage.summary()
    if done is not None and done.get("failed") and done.get("params") == stage.params:
        return True
    return stage.needed(force)


def score(stage: runs.Stage, backend: Backend, chunk_pairs: int = 256, cache_path: Path | None = None) -> dict[str, Any]:
    """Judge every selected pair and write judgments/; returns the stage summary."""
    run, params = stage.run, stage.params
    started = time.perf_counter()
    pairs = select_pairs(run, params["max_turns"], params["top_n"])
    items = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    completion = uses_raw_completion(backend)
    prompts = [render_prompt(p.turn, items[p.item_id], completion, params["context_window"]) for p in pairs]
    cached = CachedBackend(backend, cache_path)
    results = score_prompts(cached, pairs, prompts, chunk_pairs)
    rows = judgment_rows(pairs, results, backend, params["prompt_hash"])
    runs.write_rows(runs.stage_dir(run, "judgments") / "judgments.parquet", rows)
    scores = [r.score for r in results if r.ok]
    failed = Counter(reason_head(r.error or "") for r in results if not r.ok)
    summary = {
        "pairs": len(pairs),
        "turns": len({p.turn["turn_uid"] for p in pairs}),
        "scored_now": cached.misses - sum(cached.failures.values()),
        "from_cache": cached.hits,
        "failed": sum(failed.values()),
        "failed_by_reason": dict(failed),
        "mean_score": sum(scores) / len(scores) if scores else math.nan,
        "histogram": histogram(scores),
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary = stage.finish(summary)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    rate = summary["scored_now"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"[score] {summary['pairs']:,d} pairs over {summary['turns']:,d} turns: {summary['scored_now']:,d} scored now "
          f"({rate:.1f} pairs/s), {summary['from_cache']:,d} from cache, {summary['failed']:,d} failed")
    for reason, count in summary["failed_by_reason"].items():
        print(f"  failed: {count:,d} x {reason}")
    peak = max(summary["histogram"].values(), default=0) or 1
    for bucket, count in summary["histogram"].items():
        print(f"  {bucket} {'#' * round(40 * count / peak):40s} {count:,d}")


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """Model-access options shared by every stage that calls a model (score, simulate, run)."""
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--model", help=f"model name or path (local default: {DEFAULT_LOCAL_JUDGE}; also gemma3-270m)")
    p.add_argument("--base-url", help="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat", help="openai backend")
    p.add_argument("--concurrency", type=int, default=16, help="openai backend: requests in flight")
    p.add_argument("--timeout", type=float, default=120.0, help="openai backend: seconds per request")
    p.add_argument("--max-retries", type=int, default=5, help="openai backend: retries on 429/5xx/timeouts")
    p.add_argument("--backoff", type=float, default=1.0, help="openai backend: first retry wait in seconds (doubles)")
    p.add_argument("--no-chat", dest="chat", action="store_false", help="local/vllm: raw prompt, no chat template")


def add_judge_arguments(p: argparse.ArgumentParser) -> None:
    """Judge options shared by `augment.score` and `augment run`."""
    add_backend_arguments(p)
    p.add_argument("--threshold", type=float, default=3.5)
    p.add_argument("--max-turns", type=int, default=None, help="score only the first N recommendation turns")
    p.add_argument("--top-n", type=int, default=None, help="score only each turn's first N candidates")
    p.add_argument("--context-window", type=int, default=10, help="last N utterances shown to the judge (0 = all)")
    p.add_argument("--chunk-pairs", type=int, default=256, help="pairs per cached batch")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "openai":
        return {
            "base_url": args.base_url,
            "endpoint": args.endpoint,
            "concurrency": args.concurrency,
            "timeout": args.timeout,
            "max_retries": args.max_retries,
            "backoff_base": args.backoff,
        }
    return {"chat": args.chat}


def run_judge(run: Path, args: argparse.Namespace, force: bool = False) -> dict[str, Any]:
    """Score if needed, then label: the one entry point of the CLI and of `augment run`."""
    stage = runs.Stage(run, "judgments", judge_params(args), reads=("turns", "items", "candidates"))
    if needs_scoring(stage, force):
        backend = make_backend(args.backend, args.model, **backend_options(args))
        try:
            score(stage, backend, args.chunk_pairs)
        finally:
            backend.close()
    return label(run, args.threshold)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m augment.score", description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/, candidates/")
    p.add_argument("--force", action="store_true", help="re-judge (cached pairs still cost nothing)")
    add_judge_arguments(p)
    args = p.parse_args(argv)
    return runs.exit_code(lambda: run_judge(args.run, args, args.force))


if __name__ == "__main__":
    sys.exit(main())
