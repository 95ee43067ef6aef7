"""`unicrs`: the recommendation files of the original UniCRS (`dataset_rec.py`, `dataset_dbpedia.py`), KG included.

One line per recommendation turn: `context` (earlier utterances, oldest first), `resp` (the recommender's
utterance), `rec` and `entity` as integer ids of the exported KG (UniCRS's collator makes tensors of them): `rec` the
gold labels, `entity` the context's movies and linked genres/people in order of first mention. UniCRS tags speakers
by position (even = User), so `context` starts with '' when the recommender speaks first: tags then match the real
speakers (UniCRS's own data/redial/process.py always prepends '', which mislabels dialogues the seeker opens).
Files: `{train,valid,test}_data_processed.jsonl` (gold), `train_data_augmented.jsonl` (gold then synthetic labels,
highest judge score first: rename it to `train_data_processed.jsonl` to train on it), and the KG in UniCRS's layout
next to them: `dbpedia_subkg.json`, `entity2id.json`, `relation2id.json`, `item_ids.json` (plus `entity2item.json`,
entity name -> the run's item id, to map predictions back).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from augment.export.files import dump, write_lines
from augment.data.records import RECOMMENDER, SPLIT_NAMES
from augment.kg import RELATIONS

if TYPE_CHECKING:
    from augment.export import Bundle


def padded_context(turn: dict[str, Any]) -> list[str]:
    """Utterance texts with '' in front when the recommender speaks first (or nobody spoke yet), so that position
    parity gives the speaker: even = seeker (User), odd = recommender (System)."""
    texts = [u["text"] for u in turn["context"]]
    return [""] + texts if not turn["context"] or turn["context"][0]["role"] == RECOMMENDER else texts


def labels(turn: dict[str, Any], augmented: bool) -> list[str]:
    synthetic = sorted(turn["rec_synthetic"], key=lambda s: -s["score"]) if augmented else []
    return list(dict.fromkeys(turn["rec"] + [s["item_id"] for s in synthetic]))


def line(turn: dict[str, Any], bundle: Bundle, augmented: bool, name: Callable[[int], Any]) -> dict[str, Any]:
    """One reader line; `name` maps an entity id to what the format stores (the id itself, or its name)."""
    entity_of_item = bundle.kg.graph.entity_of_item
    return {
        "context": padded_context(turn),
        "resp": turn["response"],
        "rec": [name(entity_of_item[i]) for i in labels(turn, augmented)],
        "entity": [name(e) for e in bundle.kg.context[turn["turn_uid"]]],
    }




def write_splits(bundle: Bundle, out: Path, name: Callable[[int], Any]) -> tuple[list[Path], dict[str, Any]]:
    """The gold files per split and the augmented train file; counts of lines a reader skips and why."""
    paths, skipped = [], {}
    for split in SPLIT_NAMES:
        rows = [line(t, bundle, False, name) for t in bundle.split(split)]
        paths.append(write_lines(out / f"{split}_data_processed.jsonl", rows))
        skipped[split] = {"no_gold_label": sum(1 for r in rows if not r["rec"]),
                          "no_context": sum(1 for r in rows if r["context"] == [""])}
    augmented = [line(t, bundle, True, name) for t in bundle.split("train")]
    paths.append(write_lines(out / "train_data_augmented.jsonl", augmented))
    return paths, {"lines": {s: len(bundle.split(s)) for s in SPLIT_NAMES}, "skipped_by_reader": skipped,
                   "augmented_train_labels": sum(len(r["rec"]) for r in augmented)}


def write(bundle: Bundle, out: Path) -> tuple[list[Path], dict[str, Any]]:
    graph = bundle.kg.graph
    paths, details = write_splits(bundle, out, lambda entity: entity)
    paths += [
        dump(out / "dbpedia_subkg.json", graph.adjacency()),
        dump(out / "entity2id.json", graph.entity2id),
        dump(out / "relation2id.json", RELATIONS),
        dump(out / "item_ids.json", sorted(graph.item_of)),
        dump(out / "entity2item.json", {graph.names[e]: i for e, i in graph.item_of.items()}),
    ]
    return paths, details
