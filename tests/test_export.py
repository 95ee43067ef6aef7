"""The trainer exports carry exactly the expected labels: synthetic only on train, originals untouched."""

from __future__ import annotations

import json
from pathlib import Path

from augment.data.records import display_title
from augment.export.__main__ import main as export_main
from augment.release import labelled_turns
from augment.runs import read_rows
from tests.test_release import release_run  # noqa: F401  (the session fixture: a real scored run)


def exported(run: Path, fmt: str, out: Path) -> Path:
    assert export_main(["--run", str(run), "--format", fmt, "--out", str(out)]) == 0
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_has_gold_and_synthetic_with_scores(release_run, tmp_path):
    out = exported(release_run, "jsonl", tmp_path)
    turns = labelled_turns(release_run)
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl"]
    for split in ("train", "test"):
        rows = read_jsonl(out / f"{split}.jsonl")
        expected = [t for t in turns if t["split"] == split]
        assert [r["turn_uid"] for r in rows] == [t["turn_uid"] for t in expected]
        for row, turn in zip(rows, expected):
            assert [g["item_id"] for g in row["rec"]] == turn["rec"]
            pairs = lambda labels: [(s["item_id"], s["score"]) for s in labels]
            assert pairs(row["rec_synthetic"]) == pairs(turn["rec_synthetic"])
            assert split == "train" or not row["rec_synthetic"]
    assert any(r["rec_synthetic"] for r in read_jsonl(out / "train.jsonl"))


def test_unicrs_augmented_train_and_untouched_originals(release_run, tmp_path):
    out = exported(release_run, "unicrs", tmp_path)
    items = {i["item_id"]: i for i in read_rows(release_run / "items" / "items.parquet")}
    name = lambda ids: [display_title(items[i]) for i in ids]
    turns = labelled_turns(release_run)
    assert sorted(p.name for p in out.iterdir()) == [
        "test_data_processed.jsonl", "train_data_augmented.jsonl", "train_data_processed.jsonl"]
    for split in ("train", "test"):
        expected = [t for t in turns if t["split"] == split]
        rows = read_jsonl(out / f"{split}_data_processed.jsonl")
        assert [r["rec"] for r in rows] == [name(t["rec"]) for t in expected]
        assert [r["context"] for r in rows] == [[u["text"] for u in t["context"]] for t in expected]
        assert [r["entity"] for r in rows] == [name(t["mentioned"]) for t in expected]
        assert [r["resp"] for r in rows] == [t["response"] for t in expected]
    train = [t for t in turns if t["split"] == "train"]
    by_score = lambda t: [s["item_id"] for s in sorted(t["rec_synthetic"], key=lambda s: -s["score"])]
    augmented = read_jsonl(out / "train_data_augmented.jsonl")
    assert [r["rec"] for r in augmented] == [name(t["rec"] + by_score(t)) for t in train]
    assert sum(len(a["rec"]) for a in augmented) > sum(len(t["rec"]) for t in train)


def test_crslab_conversations_and_maps(release_run, tmp_path):
    out = exported(release_run, "crslab", tmp_path)
    turns = labelled_turns(release_run)
    entity2id = json.loads((out / "entity2id.json").read_text())
    items = read_rows(release_run / "items" / "items.parquet")
    assert set(entity2id) == {i["item_id"] for i in items}
    assert sorted(json.loads((out / "movie_ids.json").read_text())) == sorted(entity2id.values())
    assert json.loads((out / "title2id.json").read_text()) == {display_title(i): i["item_id"] for i in items}
    assert json.loads((out / "concept2id.json").read_text())  # CRSLab takes max(concept ids) + 1: never empty
    for split in ("train", "test"):
        conversations = {c["conv_id"]: c["dialog"] for c in json.loads((out / f"{split}_data.json").read_text())}
        expected = [t for t in turns if t["split"] == split]
        assert set(conversations) == {t["dialog_id"] for t in expected}
        for turn in expected:
            utterance = conversations[turn["dialog_id"]][turn["turn_id"]]
            assert utterance["role"] == "Recommender" and utterance["movies"] == utterance["entity"]
            assert utterance["movies"] == turn["rec"] + [s["item_id"] for s in turn["rec_synthetic"]]
            assert split == "train" or not turn["rec_synthetic"]
        dialogs = list(conversations.values())
        assert all(m in entity2id for d in dialogs for u in d for m in u["movies"])
        assert all(isinstance(u["text"], str) and u["text"] for d in dialogs for u in d)  # CRSLab tokenizes itself
