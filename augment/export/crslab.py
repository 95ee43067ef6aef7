"""`crslab`: CRSLab's ReDial layout — `{train,valid,test}_data.json` conversations plus the maps its loader reads.

Conversations are rebuilt from the run's turns: a dialogue's utterances are its last recommendation turn's context
and response (utterances after the last recommendation are not in the run). A recommender utterance's `movies` are
its gold labels, followed on train by its synthetic labels; items first mentioned between two recommendation turns
are put on the utterance just before the later turn (the run keeps which turn, not which utterance, mentioned
them). Entities are the movies themselves, keyed by item id: the run links no DBpedia entities or ConceptNet words,
so `word2id.json`, `dbpedia_subkg.json` and `conceptnet_subkg.txt` are written empty for the loader to open.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from augment.data.records import RECOMMENDER, SPLIT_NAMES, display_title

ROLES = {"seeker": "Seeker", "recommender": "Recommender"}
_TOKEN = re.compile(r"\w+|[^\w\s]")


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
            {"utt_id": index, "role": ROLES[u["role"]], "text": _TOKEN.findall(u["text"]),
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
    paths = []
    tokens: dict[str, int] = {"__pad__": 0, "__start__": 1, "__end__": 2, "__unk__": 3}
    for split in [s for s in SPLIT_NAMES if any(t["split"] == s for t in turns)]:
        data = conversations(turns, split)
        for word in (w for c in data for u in c["dialog"] for w in u["text"]):
            tokens.setdefault(word, len(tokens))
        paths.append(dump(out / f"{split}_data.json", data))
    entity2id = {item_id: index for index, item_id in enumerate(items)}
    paths += [
        dump(out / "entity2id.json", entity2id),
        dump(out / "movie_ids.json", list(entity2id.values())),
        dump(out / "title2id.json", {display_title(item): item_id for item_id, item in items.items()}),
        dump(out / "token2id.json", tokens),
        dump(out / "word2id.json", {}),
        dump(out / "dbpedia_subkg.json", {}),
    ]
    (out / "conceptnet_subkg.txt").write_text("", encoding="utf-8")
    return paths + [out / "conceptnet_subkg.txt"]
