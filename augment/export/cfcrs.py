"""`cfcrs`: the name-based recommendation files CFCRS and FNSCRS read, with CFCRS's knowledge-graph files.

The same lines as `unicrs` (`context`, `resp`, `rec`, `entity`), with entity names instead of ids: names are the
keys of the exported `entity2id.json` ('Title (Year)' for movies, genre and person names). These readers tag
speakers by position (the first context utterance is the user's), so `context` starts with '' when the recommender
speaks first, as their own preparation does; they drop a line whose `entity` list is empty, so `entity` holds the
context's linked genres and people as well as its movies (the summary counts the lines still dropped). Files:
`{train,valid,test}_data_processed.jsonl`, `train_data_augmented.jsonl` (gold then synthetic labels), and the KG
as CFCRS ships it for ReDial: `entity2id.json`, `kg.json` (`{item: [[relation, entity], ...]}`), `relation2id.json`,
`item_ids.json` (plus `entity2item.json`, entity name -> the run's item id).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment.export.files import dump
from augment.export.unicrs import write_splits
from augment.kg import RELATIONS

if TYPE_CHECKING:
    from augment.export import Bundle


def dropped_for_no_entity(bundle: Bundle, out: Path) -> dict[str, int]:
    """Lines (and their labels) a CFCRS/FNSCRS reader drops because their `entity` list is empty."""
    lines = [json.loads(line) for line in (out / "train_data_augmented.jsonl").read_text(encoding="utf-8").splitlines()]
    synthetic = {t["turn_uid"]: len(t["rec_synthetic"]) for t in bundle.split("train")}
    empty = [(row, uid) for row, uid in zip(lines, synthetic) if not row["entity"]]
    return {"train_lines": len(empty), "train_labels": sum(len(row["rec"]) for row, _ in empty),
            "train_synthetic_labels": sum(synthetic[uid] for _, uid in empty)}


def write(bundle: Bundle, out: Path) -> tuple[list[Path], dict[str, Any]]:
    graph = bundle.kg.graph
    paths, details = write_splits(bundle, out, lambda entity: graph.names[entity])
    paths += [
        dump(out / "entity2id.json", graph.entity2id),
        dump(out / "kg.json", graph.adjacency()),
        dump(out / "relation2id.json", RELATIONS),
        dump(out / "item_ids.json", sorted(graph.item_of)),
        dump(out / "entity2item.json", {graph.names[e]: i for e, i in graph.item_of.items()}),
    ]
    return paths, {**details, "dropped_for_empty_entity": dropped_for_no_entity(bundle, out)}
