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

from augment import cli, plots, runs
from augment import ray_runner
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
    figure, axis = plots.figure(figsize=(6, 3.5))
    axis.hist(scores, bins=HISTOGRAM_BINS, color="#4c72b0", edgecolor="white")
    axis.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
    axis.set_xlabel("judge score (expected digit)")
    axis.set_ylabel("pairs")
    axis.set_title(f"Judge scores of {len(scores):,d} pairs")
    axis.legend()
    return plots.save(figure, path, dpi=120)


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
    explain_outcome(scores, threshold, judgments[0]["model"] if judgments else None)
    return summary


def explain_outcome(scores: Sequence[float], threshold: float, model: str | None) -> None:
    """Say where the scores fall against the threshold, and what to do when nothing passes: a run that ends with
    '0 synthetic labels' and no word on why looks broken."""
    if not scores:
        return
    passing = sum(1 for score in scores if score >= threshold)
    print(f"[label] {passing:,d} of {len(scores):,d} judged pairs score >= {threshold} (scores {min(scores):.2f} to "
          f"{max(scores):.2f}, mean {sum(scores) / len(scores):.2f}); histogram in labels/score_histogram.png")
    if passing == 0:
        print(f"[label] nothing passes: the judge ({model}) never reaches {threshold}. The embedded SmolLM2 judge is "
              "untrained for this task and at chance level (README, judge quality); for real labels use a distilled "
              "student (`--backend bi-encoder --model DIR` from `python -m train.judge --student bi-encoder`) or a "
              "strong judge (`--backend openai --base-url URL --model NAME`), or try a lower --threshold to see what "
              "it ranks first")


# What judges a pair when the command line does not say: these, or what the finished judgments used.
JUDGE_DEFAULTS = {"backend": "local", "model": None, "endpoint": "chat", "chat": True,
                  "max_turns": None, "top_n": None, "context_window": 10}
IDENTITY = ("backend", "model", "endpoint", "chat")
ALL = "all"


def resolve_judge_options(args: argparse.Namespace, done: dict[str, Any] | None) -> None:
    """Fill the judge options the user left out: from the finished judgments when there are some (so
    `--threshold 3.0` alone re-labels what was judged, with no model call), else from the defaults.

    The judge's identity (backend, model, endpoint, chat) is inherited only when `--backend` and `--model` are both
    left out; the pair selection (max turns, top n, context window) whenever its own flag is.
    """
    stored = (done or {}).get("params", {})
    inherit_identity = args.backend is None and args.model is None and bool(stored)
    for key, default in JUDGE_DEFAULTS.items():
        given = getattr(args, key)
        if given is not None:
            value = None if given == ALL else given
        elif key in stored and (key not in IDENTITY or inherit_identity) and stored[key] is not None:
            value = stored[key]
        elif key == "backend" and args.model is not None and stored.get("backend"):
            value = stored["backend"]  # --model alone: another model on the same backend
        else:
            value = default
        setattr(args, key, value)


def judge_params(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that changes a judgment, known before any model is loaded (so a re-label loads none)."""
    return {
        "backend": args.backend,
        "model": args.model or (DEFAULT_LOCAL_JUDGE if args.backend == "local" else None),
        "endpoint": args.endpoint if args.backend == "openai" else None,
        "chat": args.chat if args.backend not in ("openai",) else None,
        "max_turns": args.max_turns,
        "top_n": args.top_n,
        "context_window": args.context_window,
        "prompt_hash": template_hash(SCORE_TEMPLATE),
    }


def needs_scoring(stage: runs.Stage, force: bool) -> bool:
    """Score unless judgments with these parameters exist and none failed (failed pairs are retried). Other
    parameters re-judge at once: every pair already in the request cache costs nothing."""
    done = stage.summary()
    if done is not None and done.get("failed") and done.get("params") == stage.params:
        print(f"[judgments] retrying the {done['failed']:,d} pairs that failed last time")
        return True
    return stage.needed(force, on_change="rebuild")


def score(stage: runs.Stage, backend: Backend, chunk_pairs: int = 256, cache_path: Path | None = None,
          runner: ray_runner.Runner | None = None) -> dict[str, Any]:
    """Judge every selected pair and write judgments/; returns the stage summary."""
    run, params = stage.run, stage.params
    started = time.perf_counter()
    pairs = select_pairs(run, params["max_turns"], params["top_n"])
    items = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    completion = uses_raw_completion(backend)
    prompts = [render_prompt(p.turn, items[p.item_id], completion, params["context_window"]) for p in pairs]
    cached = CachedBackend(backend, cache_path)
    results = (runner or score_prompts)(cached, pairs, prompts, chunk_pairs)
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
    if pairs and not scores:
        raise runs.NothingSucceeded(f"none of the {len(pairs):,d} pairs was judged ({'; '.join(failed)}); "
                                    "labels were not written. Fix the cause and re-run: only failed pairs are sent")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    rate = summary["scored_now"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"[score] {summary['pairs']:,d} pairs over {summary['turns']:,d} turns: {summary['scored_now']:,d} scored now "
          f"({rate:.1f} pairs/s), {summary['from_cache']:,d} from cache, {summary['failed']:,d} failed")
    for reason, count in summary["failed_by_reason"].items():
        print(f"  failed: {count:,d} x {reason}")
    if summary["failed"]:
        print(f"  a re-run retries exactly these {summary['failed']:,d} pairs (the others come from the request cache)")
    peak = max(summary["histogram"].values(), default=0) or 1
    for bucket, count in summary["histogram"].items():
        print(f"  {bucket} {'#' * round(40 * count / peak):40s} {count:,d}")


def base_url(text: str) -> str:
    """An http(s) URL: `127.0.0.1:9` without a scheme would be read by the SDK as a relative path."""
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must start with http:// or https:// (e.g. http://{text}/v1), got {text!r}")
    return text.rstrip("/")


def add_backend_arguments(p: argparse.ArgumentParser, inherit: bool = False) -> None:
    """Model-access options shared by every stage that calls a model (score, simulate, run). With `inherit`, the
    judge's options default to None so that a stage can take them from its finished artifact."""
    def default(value: Any) -> Any:
        return None if inherit else value

    later = " or what the run's judgments used" if inherit else ""
    p.add_argument("--backend", choices=BACKENDS, default=default("local"),
                   help=f"model access (default: local{later}): local = transformers on this CPU, openai = any "
                        "OpenAI-compatible server, vllm = in-process vLLM engine")
    p.add_argument("--model", help=f"model name or path (default for local: {DEFAULT_LOCAL_JUDGE}; also gemma3-270m)")
    p.add_argument("--base-url", type=base_url, help="openai backend: the server, e.g. http://127.0.0.1:8000/v1 "
                                                      "(default: OPENAI_BASE_URL, else the OpenAI API)")
    p.add_argument("--endpoint", choices=("chat", "completions"), default=default("chat"),
                   help=f"openai backend: chat (server applies the chat template) or completions (default: chat{later})")
    p.add_argument("--concurrency", type=cli.POSITIVE_INT, default=16, help="openai backend: requests in flight (default 16)")
    p.add_argument("--timeout", type=cli.POSITIVE_FLOAT, default=120.0, help="openai backend: seconds per request (default 120)")
    p.add_argument("--max-retries", type=cli.NON_NEGATIVE_INT, default=5,
                   help="openai backend: retries on 429/5xx/timeouts/connection errors (default 5)")
    p.add_argument("--backoff", type=cli.NON_NEGATIVE_FLOAT, default=1.0,
                   help="openai backend: first retry wait in seconds, doubling, with jitter (default 1)")
    p.add_argument("--no-chat", dest="chat", action="store_const", const=False, default=default(True),
                   help="local/vllm: feed the raw prompt, no chat template (default: chat template)")


def pair_count(text: str) -> int | str:
    """A positive count, or `all`."""
    return ALL if text == ALL else cli.POSITIVE_INT(text)


def add_judge_arguments(p: argparse.ArgumentParser) -> None:
    """Judge options shared by `augment.score` and `augment run`; left out, they are what the run's finished
    judgments used, so re-labelling never re-judges."""
    add_backend_arguments(p, inherit=True)
    p.add_argument("--threshold", type=cli.float_in(0.0, 4.0), default=3.5,
                   help="keep candidates whose judge score (0-4, expected digit) is at least this (default 3.5); "
                        "changing it re-labels from stored judgments, without a model call")
    p.add_argument("--max-turns", type=pair_count, default=None,
                   help="judge only the first N recommendation turns, or `all` (default: all, or the run's judgments)")
    p.add_argument("--top-n", type=pair_count, default=None,
                   help="judge only each turn's first N candidates, or `all` (default: all, or the run's judgments)")
    p.add_argument("--context-window", type=cli.NON_NEGATIVE_INT, default=None,
                   help="last N utterances shown to the judge, 0 = all (default 10, or the run's judgments)")
    p.add_argument("--chunk-pairs", type=cli.POSITIVE_INT, default=256, help="pairs per cached batch (default 256)")
    ray_runner.add_arguments(p)


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
    resolve_judge_options(args, runs.read_summary(run, "judgments"))
    stage = runs.Stage(run, "judgments", judge_params(args), reads=("turns", "items", "candidates"))
    if needs_scoring(stage, force):
        if getattr(args, "runner", "local") == "ray":
            backend, runner = ray_runner.prepare(args, backend_options(args))
        else:
            backend, runner = make_backend(args.backend, args.model, **backend_options(args)), None
        try:
            score(stage, backend, args.chunk_pairs, runner=runner)
        finally:
            backend.close()
    return label(run, args.threshold)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.score", description=__doc__)
    p.add_argument("--run", type=Path, required=True,
                   help="run folder with turns/, items/, candidates/; writes RUN/judgments/ and RUN/labels/")
    p.add_argument("--force", action="store_true", help="re-judge every pair (pairs in the request cache cost nothing)")
    add_judge_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: run_judge(args.run, args, args.force))


if __name__ == "__main__":
    sys.exit(main())
