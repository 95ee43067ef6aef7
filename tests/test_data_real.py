"""The data layer on the real ReDial and INSPIRED files: counts, turn construction checked by hand, items."""

from __future__ import annotations

from pathlib import Path

import pytest

from augment.data.prepare import prepare
from augment.runs import read_rows, read_summary


@pytest.fixture(scope="module")
def redial_run(shared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("redial")
    prepare("redial", shared_data / "redial", run)
    return run


@pytest.fixture(scope="module")
def inspired_run(shared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inspired")
    prepare("inspired", shared_data / "inspired", run)
    return run


def test_redial_counts(redial_run):
    summary = read_summary(redial_run, "turns")
    assert summary["splits"]["test"]["conversations"] == 1342
    assert summary["splits"]["train"]["conversations"] == 1401
    assert summary["missing_splits"] == ["valid (valid_data.jsonl)"]
    assert summary["items"] == 6924
    # 6,924 movies in the list, 6,583 with id2info metadata
    assert summary["items_without_metadata"] == 6924 - 6583
    assert summary["skipped_total"] == 0
    turns = read_rows(redial_run / "turns" / "turns.parquet")
    assert len(turns) == summary["recommendation_turns"]
    assert {t["split"] for t in turns} == {"train", "test"}


def test_redial_turns_by_hand(redial_run):
    """Conversation 20001 (first of test), read by hand: recommender turns 1, 3, 7, 9, 11 name movies."""
    turns = [t for t in read_rows(redial_run / "turns" / "turns.parquet") if t["dialog_id"] == "20001"]
    assert [t["turn_id"] for t in turns] == [1, 3, 7, 9, 11]
    first, second = turns[0], turns[1]
    assert first["context"] == [{"role": "seeker", "text": "Hi I am looking for a movie like Super Troopers (2001)"}]
    assert first["response"] == "You should watch Police Academy (1984)"
    assert first["mentioned"] == ["111776"] and first["rec"] == ["151656"]
    # turn 2: two consecutive seeker messages merged; the double space in 'Police Academy  (1984)' normalised
    assert second["context"][2] == {
        "role": "seeker",
        "text": "Is that a great one? I have never seen it. I have seen American Pie I mean American Pie (1999)",
    }
    # Police Academy was mentioned before: only the sequel is a new gold label
    assert second["mentioned"] == ["111776", "151656", "192131", "134643"]
    assert second["rec"] == ["94688"]
    # 'you are welcome' + 'and also @124771' are consecutive recommender messages: one turn
    assert turns[-1]["response"] == "you are welcome and also 48 Hrs. (1982)"
    assert turns[-1]["rec"] == ["124771"]
    assert all(t["turn_uid"] == f"redial/test/20001/{t['turn_id']}" for t in turns)


def test_redial_items(redial_run):
    items = {i["item_id"]: i for i in read_rows(redial_run / "items" / "items.parquet")}
    outfield = items["75815"]
    assert (outfield["title"], outfield["year"], outfield["n_mentions"]) == ("Angels in the Outfield", 1994, 6)
    assert outfield["attributes"]["directors"] == ["William Dear"] and outfield["has_metadata"]
    no_meta = [i for i in items.values() if not i["has_metadata"]]
    assert no_meta and all(i["attributes"]["plot"] == "" and i["title"] for i in no_meta)


def test_gold_never_previously_mentioned(redial_run):
    for turn in read_rows(redial_run / "turns" / "turns.parquet"):
        assert not set(turn["rec"]) & set(turn["mentioned"])
        assert turn["context"] == [] or turn["context"][-1]["role"] in ("seeker", "recommender")


def test_inspired_counts_and_linking(inspired_run):
    summary = read_summary(inspired_run, "turns")
    assert summary["splits"]["valid"]["conversations"] == 99
    assert summary["splits"]["test"]["conversations"] == 99
    assert summary["missing_splits"] == ["train (train.tsv)"]
    items = {i["item_id"]: i for i in read_rows(inspired_run / "items" / "items.parquet")}
    metadata_items = [i for i in items.values() if i["has_metadata"]]
    assert len(metadata_items) == 1096
    unmatched = [i for i in items.values() if not i["has_metadata"]]
    assert unmatched and all(i["item_id"].startswith("title:") and i["n_mentions"] > 0 for i in unmatched)
    assert summary["items_without_metadata"] == len(unmatched)


def test_inspired_turn_by_hand(inspired_run):
    """Dialog 20191128-213320_959_live (valid): the recommender's 'Like Men in Black...' is a recommendation turn."""
    turns = [t for t in read_rows(inspired_run / "turns" / "turns.parquet") if t["dialog_id"] == "20191128-213320_959_live.pkl"]
    turn = next(t for t in turns if "Men in Black" in t["response"])
    assert turn["split"] == "valid"
    assert turn["context"][3] == {"role": "seeker", "text": "Frozen 2"}
    assert turn["mentioned"] == ["title:frozen 2 2019"]
    assert turn["rec"] == ["title:men in black 1997"]
    # QUOTATION_MARK placeholders are turned back into quotes everywhere
    all_text = " ".join(u["text"] for t in read_rows(inspired_run / "turns" / "turns.parquet") for u in t["context"])
    assert "QUOTATION_MARK" not in all_text and '"' in all_text
