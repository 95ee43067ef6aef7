"""How well a judge separates gold items from others, on real turns: the honest quality proxy for small judges.

For the first N turns of a split that have gold labels, the judge scores each gold item, the turn's first K
retrieved non-gold candidates (hard negatives: similar to the dialogue) and K random catalog items (easy
negatives). AUC(gold vs retrieved) and AUC(gold vs random) say how much of a signal the judge carries; 0.5 is
chance. Retrieved non-gold candidates include real false negatives (that is the point of the engine), so the
first AUC is a lower bound on the judge's quality.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from augment import runs
from augment.llm import uses_raw_completion
from augment.llm.base import Backend
from augment.llm.cache import CachedBackend
from augment.score import render_prompt
from eval.metrics import auc


def quality_pairs(run: Path, n_turns: int, n_negatives: int, split: str, seed: int) -> list[tuple[dict, str, str]]:
    """(turn, item_id, kind) with kind in gold / retrieved / random."""
    turns = [t for t in runs.read_rows(Path(run) / "turns" / "turns.parquet") if t["split"] == split and t["rec"]][:n_turns]
    candidates: dict[str, list[str]] = defaultdict(list)
    for row in sorted(runs.read_rows(Path(run) / "candidates" / "candidates.parquet"), key=lambda r: r["rank"]):
        candidates[row["turn_uid"]].append(row["item_id"])
    catalog = [i["item_id"] for i in runs.read_rows(Path(run) / "items" / "items.parquet")]
    rng = random.Random(seed)
    pairs = []
    for turn in turns:
        known = set(turn["rec"]) | set(turn["mentioned"])
        retrieved = [i for i in candidates[turn["turn_uid"]] if i not in known][:n_negatives]
        randoms = rng.sample([i for i in catalog if i not in known], n_negatives)
        pairs += [(turn, i, "gold") for i in turn["rec"]]
        pairs += [(turn, i, "retrieved") for i in retrieved] + [(turn, i, "random") for i in randoms]
    return pairs


def judge_quality(run: Path, backend: Backend, n_turns: int = 40, n_negatives: int = 10, split: str = "test",
                  seed: int = 0, context_window: int = 10) -> dict[str, Any]:
    """AUCs and mean scores by kind for one judge (scored through the request cache)."""
    items = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    pairs = quality_pairs(run, n_turns, n_negatives, split, seed)
    completion = uses_raw_completion(backend)
    prompts = [render_prompt(turn, items[item_id], completion, context_window) for turn, item_id, _ in pairs]
    results = CachedBackend(backend).score_digits(prompts)
    scores: dict[str, list[float]] = defaultdict(list)
    for (_, _, kind), result in zip(pairs, results):
        if result.ok:
            scores[kind].append(result.score)
    return {
        "model": backend.model,
        "turns": len({t["turn_uid"] for t, _, _ in pairs}),
        "pairs": len(pairs),
        "failed": sum(1 for r in results if not r.ok),
        "auc_gold_vs_retrieved": auc(scores["gold"], scores["retrieved"]),
        "auc_gold_vs_random": auc(scores["gold"], scores["random"]),
        **{f"mean_score_{kind}": sum(v) / len(v) for kind, v in scores.items() if v},
    }
