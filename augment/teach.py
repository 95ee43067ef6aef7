"""`python -m augment.teach`: teacher judgments of (dialogue, candidate) pairs, the training data of a student judge.

Two teachers write the same `teacher/` stage (turn, item, kind, rank, rationale, rating, probs, status, model,
prompt hash, tokens in/out):

- `--teacher llm`: a strong model (any backend, through the request cache; `--backend openai --model gpt-4o` is the
  production case) reads `prompts/teach.jinja` — the scorer's rubric, the dialogue and the candidate's full item
  text — and writes brief reasoning ending with `Rating: N`. The rating is read robustly: the five digit
  probabilities at the rating position when the backend returned logprobs there, else the parsed digit (a hard
  label). An answer without a parsable rating is recorded as failed with its raw text, never guessed. Pairs cover
  the score range: each sampled turn's gold items, retrieved candidates spread across ranks, and a
  popularity-matched random item.
- `--teacher gold`: an offline teacher with signal, for machines without a strong LLM. From TRAIN turns only:
  (dialogue, gold item) -> 4 and (dialogue, sampled catalog item) -> 0, label-smoothed. Negatives follow the gold
  items' popularity distribution (by train mentions), so a student cannot score well by learning popularity alone.
  Retrieved non-gold candidates are not negatives by default (many are the false negatives this engine exists to
  find); `--retrieved-negatives N` adds the top N as kind `retrieved` so their effect can be measured.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from augment import runs
from augment.cli import NON_NEGATIVE_INT, POSITIVE_INT, float_in
from augment.data.popularity import mention_counts
from augment.llm import make_backend
from augment.llm.base import DIGITS, Backend, Generation, normalise_digit_probs
from augment.llm.cache import CachedBackend, reason_head
from augment.score import add_backend_arguments, backend_options
from augment.templates import render, template_hash

STAGE = "teacher"
TEACH_TEMPLATE = "teach.jinja"
TEACHERS = ("llm", "gold")
RATING = re.compile(r"rating\s*[:=]\s*\**\s*([0-4])(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Rating:
    """A teacher's reading of one answer: P(0..4) and the argmax digit, or why there is none."""

    probs: tuple[float, ...] | None
    rating: int | None
    rationale: str | None
    source: str | None = None  # "logprobs" or "parsed"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.probs is not None


def one_hot(rating: int, smoothing: float = 0.0) -> tuple[float, ...]:
    """(1 - smoothing) on `rating`, `smoothing` spread evenly over all five digits."""
    return tuple((1.0 - smoothing) * (d == rating) + smoothing / len(DIGITS) for d in range(len(DIGITS)))


def parse_rating(text: str | None, token_logprobs: Sequence[tuple[str, Mapping[str, float]]] | None = None) -> Rating:
    """Read the final `Rating: N` of an answer; digit probabilities come from the logprobs at N when present."""
    if text is None:
        return Rating(None, None, None, error="no text in answer")
    matches = list(RATING.finditer(text))
    if not matches:
        return Rating(None, None, None, error="no rating in answer")
    match = matches[-1]
    digit = int(match.group(1))
    rationale = text[: match.start()].strip() or None
    probs = digit_probs_at(token_logprobs, match.start(1)) if token_logprobs else None
    if probs is not None:
        return Rating(probs, max(range(len(probs)), key=probs.__getitem__), rationale, "logprobs")
    return Rating(one_hot(digit), digit, rationale, "parsed")


def digit_probs_at(token_logprobs: Sequence[tuple[str, Mapping[str, float]]], char: int) -> tuple[float, ...] | None:
    """P(0..4) from the top logprobs of the generated token that spells the digit at character `char` of the text;
    None when that token is not a bare digit (e.g. the tokenizer merged it with its neighbours)."""
    offset = 0
    for token, top in token_logprobs:
        if offset <= char < offset + len(token):
            return normalise_digit_probs(top) if token.strip() in DIGITS else None
        offset += len(token)
    return None


def popularity_bin(n_mentions: int) -> int:
    """log2 bins of train mentions: 0 | 1 | 2-3 | 4-7 | ... (fine where items are many, wide where they are few)."""
    return int(n_mentions).bit_length()


class PopularitySampler:
    """Catalog items drawn so that their popularity (train mentions, in log2 bins) follows the gold items'.

    A bin is drawn as the bin of a uniformly chosen gold pair, then an item uniformly within that bin: the
    negatives' popularity histogram then matches the gold one, bin for bin.
    """

    def __init__(self, counts: Mapping[str, int], gold: Sequence[str], catalog: Sequence[str]) -> None:
        self.counts = counts
        self.by_bin: dict[int, list[str]] = defaultdict(list)
        for item in catalog:
            self.by_bin[self.bin(item)].append(item)
        self.gold_bins = [self.bin(item) for item in gold if self.by_bin[self.bin(item)]]
        if not self.gold_bins:
            raise ValueError("no gold items to match the popularity of")

    def bin(self, item: str) -> int:
        return popularity_bin(self.counts.get(item, 0))

    def sample(self, rng: random.Random, exclude: set[str], tries: int = 100) -> str:
        for _ in range(tries):
            pool = self.by_bin[rng.choice(self.gold_bins)]
            item = rng.choice(pool)
            if item not in exclude:
                return item
        raise ValueError("could not draw a negative outside the excluded items")


def sampler_for(turns: Sequence[dict], items: Sequence[dict], split: str) -> PopularitySampler:
    """Negatives matched to the popularity of `split`'s gold items, popularity counted on the train split."""
    gold = [item for t in turns if t["split"] == split for item in t["rec"]]
    return PopularitySampler(mention_counts(turns, "train"), gold, [i["item_id"] for i in items])


def split_turns(turns: Sequence[dict], split: str, seed: int) -> list[dict]:
    """The split's turns that have gold items, in a seeded random order (the budget takes a prefix)."""
    chosen = [t for t in turns if t["split"] == split and t["rec"]]
    random.Random(seed).shuffle(chosen)
    return chosen


def candidates_by_turn(run: Path) -> dict[str, list[dict]]:
    by_turn: dict[str, list[dict]] = defaultdict(list)
    for row in runs.read_rows(Path(run) / "candidates" / "candidates.parquet"):
        by_turn[row["turn_uid"]].append(row)
    return {uid: sorted(rows, key=lambda r: r["rank"]) for uid, rows in by_turn.items()}


def pair_row(turn: dict, item: str, kind: str, rank: int | None) -> dict[str, Any]:
    return {"turn_uid": turn["turn_uid"], "dialog_id": turn["dialog_id"], "split": turn["split"], "item_id": item,
            "kind": kind, "rank": rank}


def gold_pairs(run: Path, turns: Sequence[dict], items: Sequence[dict], params: Mapping[str, Any]) -> list[dict]:
    """Gold + popularity-matched negatives (+ optional marked retrieved ones) of train turns, within the budget."""
    rng = random.Random(params["seed"])
    sampler = sampler_for(turns, items, "train")
    candidates = candidates_by_turn(run) if params["retrieved_negatives"] else {}
    rows: list[dict] = []
    for turn in split_turns(turns, "train", params["seed"]):
        known = set(turn["rec"]) | set(turn["mentioned"])
        group = [pair_row(turn, item, "gold", None) for item in turn["rec"]]
        for _ in range(params["negatives"] * len(turn["rec"])):
            negative = sampler.sample(rng, known)
            known.add(negative)
            group.append(pair_row(turn, negative, "negative", None))
        retrieved = [c for c in candidates.get(turn["turn_uid"], []) if c["item_id"] not in known]
        group += [pair_row(turn, c["item_id"], "retrieved", c["rank"]) for c in retrieved[: params["retrieved_negatives"]]]
        if len(rows) + len(group) > params["max_pairs"]:
            break
        rows += group
    smoothing = params["smoothing"]
    for row in rows:
        probs = one_hot(4 if row["kind"] == "gold" else 0, smoothing)
        row |= {"rationale": None, "raw": None, "rating": 4 if row["kind"] == "gold" else 0, "probs": list(probs),
                "source": "gold", "status": "ok", "reason": None, "model": "gold", "prompt_hash": None,
                "tokens_in": None, "tokens_out": None}
    return rows


def llm_pairs(run: Path, turns: Sequence[dict], items: Sequence[dict], params: Mapping[str, Any]) -> list[dict]:
    """Per turn: its gold items, retrieved candidates spread across ranks (one per rank stratum) and one
    popularity-matched random item, so the teacher's ratings cover the whole scale."""
    rng = random.Random(params["seed"])
    sampler = sampler_for(turns, items, params["split"])
    candidates = candidates_by_turn(run)
    rows: list[dict] = []
    for turn in split_turns(turns, params["split"], params["seed"]):
        known = set(turn["rec"]) | set(turn["mentioned"])
        group = [pair_row(turn, item, "gold", None) for item in turn["rec"]]
        retrieved = [c for c in candidates.get(turn["turn_uid"], []) if c["item_id"] not in known]
        strata = max(params["per_turn"] - len(group) - 1, 1)
        for s in range(min(strata, len(retrieved))):
            stratum = retrieved[s * len(retrieved) // strata : (s + 1) * len(retrieved) // strata]
            if stratum:
                pick = rng.choice(stratum)
                group.append(pair_row(turn, pick["item_id"], "retrieved", pick["rank"]))
        group.append(pair_row(turn, sampler.sample(rng, known | {r["item_id"] for r in group}), "random", None))
        if len(rows) + len(group) > params["max_pairs"]:
            break
        rows += group
    return rows


def teach_prompt(turn: dict, item: dict, context_window: int) -> str:
    context = turn["context"][-context_window:] if context_window else turn["context"]
    return render(TEACH_TEMPLATE, context=context, item=render("item.jinja", **item))


def ask_teacher(backend: Backend, prompts: Sequence[str], max_tokens: int, chunk: int) -> list[Generation]:
    """Generate in cached chunks with a progress bar (a kill loses at most one chunk)."""
    answers: list[Generation] = []
    with tqdm(total=len(prompts), unit="pair", desc="[teach]", dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), chunk):
            answers += backend.generate(prompts[start : start + chunk], max_tokens=max_tokens, temperature=0.0)
            bar.update(len(prompts[start : start + chunk]))
    return answers


def judged_rows(rows: list[dict], answers: Sequence[Generation], backend: Backend, prompt_hash: str) -> list[dict]:
    for row, answer in zip(rows, answers):
        rating = parse_rating(answer.text, answer.token_logprobs) if answer.ok else Rating(None, None, None, error=answer.error)
        row |= {"rationale": rating.rationale, "raw": answer.text, "rating": rating.rating,
                "probs": list(rating.probs) if rating.ok else None, "source": rating.source,
                "status": "ok" if rating.ok else "failed", "reason": rating.error, "model": backend.model,
                "prompt_hash": prompt_hash, "tokens_in": answer.tokens_in, "tokens_out": answer.tokens_out}
    return rows


def teach_params(args: argparse.Namespace) -> dict[str, Any]:
    params = {"teacher": args.teacher, "max_pairs": args.max_pairs, "seed": args.seed, "split": args.split}
    if args.teacher == "gold":
        return params | {"negatives": args.negatives, "smoothing": args.smoothing,
                         "retrieved_negatives": args.retrieved_negatives}
    return params | {"backend": args.backend, "model": args.model, "endpoint": args.endpoint, "chat": args.chat,
                     "per_turn": args.per_turn, "max_tokens": args.max_tokens, "context_window": args.context_window,
                     "prompt_hash": template_hash(TEACH_TEMPLATE)}


def teach(run: Path, args: argparse.Namespace, force: bool = False, cache_path: Path | None = None) -> dict[str, Any]:
    """Build the teacher stage if needed; returns its summary."""
    if args.teacher == "gold" and args.split != "train":
        raise ValueError("the gold teacher reads train turns only (valid/test gold must stay unseen)")
    stage = runs.Stage(run, STAGE, teach_params(args), reads=("turns", "items", "candidates"))
    if not stage.needed(force):
        return stage.summary()
    started = time.perf_counter()
    turns = runs.read_rows(Path(run) / "turns" / "turns.parquet")
    items = runs.read_rows(Path(run) / "items" / "items.parquet")
    if args.teacher == "gold":
        rows = gold_pairs(run, turns, items, stage.params)
    else:
        rows = llm_rows(run, turns, items, stage.params, args, cache_path)
    runs.write_rows(runs.stage_dir(run, STAGE) / "teacher.parquet", rows)
    summary = stage.finish(teach_summary(rows, time.perf_counter() - started))
    print_summary(summary)
    if not summary["ok"]:
        raise ValueError(f"the teacher rated none of {summary['pairs']} pairs (see {Path(run) / STAGE})")
    return summary


def llm_rows(run: Path, turns: Sequence[dict], items: Sequence[dict], params: Mapping[str, Any],
             args: argparse.Namespace, cache_path: Path | None) -> list[dict]:
    rows = llm_pairs(run, turns, items, params)
    by_uid = {t["turn_uid"]: t for t in turns}
    catalog = {i["item_id"]: i for i in items}
    prompts = [teach_prompt(by_uid[r["turn_uid"]], catalog[r["item_id"]], params["context_window"]) for r in rows]
    backend = make_backend(args.backend, args.model, **backend_options(args))
    cached = CachedBackend(backend, cache_path)
    try:
        answers = ask_teacher(cached, prompts, params["max_tokens"], args.chunk_pairs)
    finally:
        cached.close()
    return judged_rows(rows, answers, backend, params["prompt_hash"])


def teach_summary(rows: Sequence[dict], seconds: float) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "pairs": len(rows),
        "turns": len({r["turn_uid"] for r in rows}),
        "dialogues": len({r["dialog_id"] for r in rows}),
        "splits": dict(Counter(r["split"] for r in rows)),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "failed_by_reason": dict(Counter(reason_head(r["reason"] or "unknown") for r in rows if r["status"] != "ok")),
        "by_kind": dict(Counter(r["kind"] for r in rows)),
        "ratings": {str(d): sum(1 for r in ok if r["rating"] == d) for d in range(len(DIGITS))},
        "rating_source": dict(Counter(r["source"] for r in ok)),
        "mean_rating_by_kind": {kind: sum(r["rating"] for r in ok if r["kind"] == kind) / n
                                for kind, n in Counter(r["kind"] for r in ok).items()},
        "seconds": round(seconds, 1),
    }


def print_summary(summary: Mapping[str, Any]) -> None:
    kinds = ", ".join(f"{n:,d} {k}" for k, n in summary["by_kind"].items())
    print(f"[teach] {summary['pairs']:,d} pairs ({kinds}) over {summary['turns']:,d} turns: {summary['ok']:,d} rated, "
          f"{summary['failed']:,d} failed; ratings {summary['ratings']} in {summary['seconds']:.1f}s")
    for reason, count in summary["failed_by_reason"].items():
        print(f"  failed: {count:,d} x {reason}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.teach", description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/, candidates/")
    p.add_argument("--teacher", choices=TEACHERS, required=True, help="llm (a model writes reasoning) or gold")
    p.add_argument("--max-pairs", type=POSITIVE_INT, default=20000, help="pair budget (default 20000)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="train",
                   help="turns to judge (default train; the gold teacher accepts train only)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="turn order and negative sampling (default 0)")
    p.add_argument("--force", action="store_true", help="rebuild even when done with these parameters")
    gold = p.add_argument_group("gold teacher")
    gold.add_argument("--negatives", type=POSITIVE_INT, default=3,
                      help="popularity-matched random negatives per gold item (default 3)")
    gold.add_argument("--smoothing", type=float_in(0.0, 0.5), default=0.1,
                      help="label smoothing spread over the five ratings (default 0.1)")
    gold.add_argument("--retrieved-negatives", type=NON_NEGATIVE_INT, default=0,
                      help="also rate a turn's top-N retrieved non-gold candidates 0, as kind 'retrieved' (default 0)")
    llm = p.add_argument_group("llm teacher")
    llm.add_argument("--per-turn", type=POSITIVE_INT, default=5,
                     help="pairs per turn: gold, retrieved across ranks, one random (default 5)")
    llm.add_argument("--max-tokens", type=POSITIVE_INT, default=256, help="answer length limit (default 256)")
    llm.add_argument("--context-window", type=NON_NEGATIVE_INT, default=10,
                     help="last N utterances shown (0 = all; default 10)")
    llm.add_argument("--chunk-pairs", type=POSITIVE_INT, default=64, help="pairs per cached batch (default 64)")
    add_backend_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.teacher == "llm" and args.backend != "local" and not args.model:
        parser().error("--model is required with --teacher llm and a non-local backend")
    return runs.exit_code(lambda: teach(args.run, args, args.force))


if __name__ == "__main__":
    sys.exit(main())
