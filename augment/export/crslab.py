"""`crslab`: CRSLab's ReDial layout — `{train,valid,test}_data.json` conversations plus the maps its loader reads.

Checked against CRSLab's `crslab/data/dataset/redial/redial.py` (master): it reads `dialog[].{role, text (a
string it tokenizes itself, building token2id.json), movies, entity, word}`, `entity2id.json`,
`dbpedia_subkg.json`, `concept2id.json` (must be non-empty: it takes max(ids) + 1), `conceptnet_subkg.txt` and
`movie_ids.json`.

Conversations are rebuilt from the run's turns: a dialogue's utterances are its last recommendation turn's context
and response (utterances after the last recommendation are not in the run). A recommender utterance's `movies` are
its gold labels, followed on train by its synthetic labels; items first mentioned between two recommendation turns
are put on the utterance just before the later turn (the run keeps which turn, not which utterance, mentioned
them). Entities are the movies themselves, keyed by item id: the run links no DBpedia entities or ConceptNet words,
so `dbpedia_subkg.json` and `conceptnet_subkg.txt` are written empty and `concept2id.json` holds only a padding
concept, for the loader to open.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from augment.data.records import RECOMMENDER, SPLIT_NAMES, display_title

ROLES = {"seeker": "Seeker", "recommender": "Recommender"}


def utterance_movies(turns: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Movies per utterance index of one dialogue (its turns in order), synthetic labels appended on train."""
    movies: dict[int, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for turn in turns:
        earlier = [i for i in turn["mentioned"] if i not in seen]
        if earlier and turn["turn_id"] > 0:
            movies[turn["turn_id"] - 1].extend(earlier)
        movies[turn["turn_id"]].extend(turn["rec"] + [s["item_id"] for s in turn["rec_synthetic"]])
        seen.update(turn["mentioned"] + turn["rec"])
    return movies


def conversation(turns: list[dict[str, Any]]) -> dict[str, Any]:
    last = turns[-1]
    utterances = last["context"] + [{"role": RECOMMENDER, "text": last["response"]}]
    movies = utterance_movies(turns)
    return {
        "conv_id": last["dialog_id"],
        "dialog": [
            {"utt_id": index, "role": ROLES[u["role"]], "text": u["text"],
             "movies": movies.get(index, []), "entity": movies.get(index, []), "word": []}
            for index, u in enumerate(utterances)
        ],
    }


def conversations(turns: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    by_dialog: dict[str, list[dict]] = defaultdict(list)
    for turn in turns:
        if turn["split"] == split:
            by_dialog[turn["dialog_id"]].append(turn)
    return [conversation(sorted(rows, key=lambda t: t["turn_id"])) for rows in by_dialog.values()]


def dump(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def write(turns: list[dict], items: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    paths = [
        dump(out / f"{split}_data.json", conversations(turns, split))
        for split in SPLIT_NAMES
        if any(t["split"] == split for t in turns)
    ]
    entity2id = {item_id: index for index, item_id in enumerate(items)}
    paths += [
        dump(out / "entity2id.json", entity2id),
        dump(out / "movie_ids.json", list(entity2id.values())),
        dump(out / "title2id.json", {display_title(item): item_id for item_id, item in items.items()}),
        dump(out / "concept2id.json", {"__pad__": 0}),
        dump(out / "dbpedia_subkg.json", {}),
    ]
    (out / "conceptnet_subkg.txt").write_text("", encoding="utf-8")
    return paths + [out / "conceptnet_subkg.txt"]
