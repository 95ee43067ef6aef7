"""The `simulated/` stage: load the catalog (and the real turns, for coverage), run one mode, write the turns,
the plot and the summary through `runs.Stage` (parameters and input fingerprints recorded, a finished stage reused).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from augment import runs
from augment.data.records import TURN_SCHEMA, Utterance, dialogue_turns
from augment.llm.base import Backend
from augment.llm.cache import CachedBackend
from augment.simulate.catalog import Catalog, Skips
from augment.simulate.coverage import coverage_report, print_summary, sample_dialogues
from augment.simulate.llm_mode import LLM_MODE_FILES, llm_dialogues, llm_summary
from augment.simulate.plots import plot_labels_per_item
from augment.simulate.template_mode import TEMPLATE_MODE_FILES, template_dialogues
from augment.templates import template_hash

STAGE = "simulated"
MODES = ("template", "llm")


def simulated_row(dataset: str, item_id: str, k: int, dialogue: Sequence[Utterance]) -> dict[str, Any]:
    """The dialogue's final recommendation turn, built by the same rule as real turns (`records.dialogue_turns`)."""
    turn = dialogue_turns(f"{dataset}-sim", "train", f"sim-{item_id}-{k}", dialogue)[-1]
    if turn["rec"] != [item_id] or turn["turn_id"] != len(dialogue) - 1:
        raise RuntimeError(f"simulated dialogue for {item_id} does not end with its recommendation")
    return turn



def simulation_params(
    mode: str, per_item: int, seed: int, max_attempts: int, backend: Backend | None, max_tokens: int, temperature: float
) -> dict[str, Any]:
    """Everything that changes the simulated dialogues, including the hash of every template used."""
    files = TEMPLATE_MODE_FILES if mode == "template" else LLM_MODE_FILES
    params: dict[str, Any] = {
        "mode": mode,
        "per_item": per_item,
        "seed": seed,
        "max_attempts": max_attempts,
        "templates": {name: template_hash(name) for name in files},
    }
    if mode == "llm":
        if backend is None:
            raise ValueError("--mode llm needs a backend")
        params |= {
            "backend": {"name": backend.name, "model": backend.model, **backend.params()},
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
    return params


def simulate(
    run: Path,
    mode: str,
    per_item: int,
    seed: int,
    backend: Backend | None = None,
    max_attempts: int = 3,
    *,
    max_tokens: int = 320,
    temperature: float = 0.7,
    cache_path: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write `simulated/` (turns.parquet, labels_per_item.png, summary.json last) and return its summary.

    A finished stage with the same parameters is a no-op returning its summary (`runs.Stage`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if per_item < 1 or max_attempts < 1:
        raise ValueError("--per-item and --max-attempts must be at least 1")
    run = Path(run)
    params = simulation_params(mode, per_item, seed, max_attempts, backend, max_tokens, temperature)
    stage = runs.Stage(run, STAGE, params, reads=("items", *runs.finished(run, "turns")))
    if not stage.needed(force):
        return stage.summary() or {}
    started = time.perf_counter()
    items = runs.read_rows(run / "items" / "items.parquet")
    turns_path = run / "turns" / "turns.parquet"
    real_turns = runs.read_rows(turns_path) if turns_path.exists() else []
    dataset = dataset_name(run, real_turns)
    catalog = Catalog.build(items)
    skips = Skips()
    usable = [item for item in items if not skips.check(item)]
    llm_report = None
    if mode == "template":
        dialogues = template_dialogues(usable, catalog, per_item, seed, max_attempts, skips)
    else:
        cached = CachedBackend(backend, cache_path)
        dialogues, stats = llm_dialogues(usable, catalog, cached, per_item, seed, max_attempts, max_tokens, temperature)
        llm_report = llm_summary(stats, cached)
    rows = [
        simulated_row(dataset, item["item_id"], k, dialogues[(item["item_id"], k)])
        for item in items
        for k in range(per_item)
        if (item["item_id"], k) in dialogues
    ]
    folder = runs.stage_dir(run, STAGE)
    runs.write_rows(folder / "turns.parquet", rows, schema=TURN_SCHEMA)
    plot_labels_per_item(items, real_turns, rows, folder / "labels_per_item.png")
    per_item_counts = Counter(row["rec"][0] for row in rows)
    summary = {
        "dataset": f"{dataset}-sim",
        "items": len(items),
        "items_simulated": len(per_item_counts),
        "items_complete": sum(1 for n in per_item_counts.values() if n == per_item),
        "skipped": dict(skips.counts),
        "skipped_total": sum(skips.counts.values()),
        "skipped_examples": skips.examples,
        "dialogues": len(rows),
        "llm": llm_report,
        "coverage": coverage_report(items, real_turns, rows),
        "samples": sample_dialogues(items, rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary = stage.finish(summary)
    print_summary(summary)
    return summary


def dataset_name(run: Path, real_turns: Sequence[dict]) -> str:
    """The catalog's dataset, as `augment.data prepare` recorded it (or as the real turns name it)."""
    prepared = (runs.read_summary(run, "items") or {}).get("params", {}).get("dataset")
    if prepared:
        return prepared
    if real_turns:
        return real_turns[0]["dataset"]
    raise ValueError(f"{run}: cannot tell the dataset (no items/summary.json and no turns)")

