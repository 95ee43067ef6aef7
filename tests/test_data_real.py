"""The data layer on the real ReDial and INSPIRED files: counts, turn construction checked by hand, items."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from augment.data.inspired import TitleLinker
from augment.data.prepare import prepare
from augment.data.records import display_title
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


# --------------------------------------------------------------------------- INSPIRED: title AND year


def raw_inspired_mentions(shared_data: Path) -> list[str]:
    """Every movie mention of the real INSPIRED files, as written (the `movies` column, ';'-separated)."""
    names = []
    for name in ("dev.tsv", "test.tsv"):
        with open(shared_data / "inspired" / name, encoding="utf-8", newline="") as handle:
            rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            names += [n for row in rows for n in row["movies"].split(";") if n.strip()]
    return names


def fold(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def test_inspired_links_need_the_same_year(inspired_run, shared_data):
    """Parasite (2019) is not Parasite (1982); The Lion King (1994) is not the 2019 film; Black Widow (2020) is
    not the 1987 one. Each such mention becomes its own item instead of adding mentions to the wrong film."""
    items = {i["item_id"]: i for i in read_rows(inspired_run / "items" / "items.parquet")}
    by_name = {display_title(i): i for i in items.values() if i["has_metadata"]}
    raw = Counter(fold(n) for n in raw_inspired_mentions(shared_data))
    for wrong_film, mentioned_as in [("Parasite (1982)", "Parasite (2019)"), ("The Lion King (2019)", "The Lion King (1994)"),
                                     ("Black Widow (1987)", "Black Widow (2020)")]:
        assert by_name[wrong_film]["n_mentions"] == raw[fold(wrong_film)]  # only its own-year mentions
        own = items[f"title:{fold(mentioned_as)}"]
        assert not own["has_metadata"] and own["n_mentions"] == raw[fold(mentioned_as)] > 0
    turns = read_rows(inspired_run / "turns" / "turns.parquet")
    parasite_1982 = by_name["Parasite (1982)"]["item_id"]
    assert not any(parasite_1982 in t["rec"] + t["mentioned"] for t in turns)


def test_inspired_every_metadata_link_is_same_year_or_yearless(inspired_run, shared_data):
    """A metadata item's mentions are the mentions with its title and year, plus year-less mentions of its title."""
    items = read_rows(inspired_run / "items" / "items.parquet")
    mentions = raw_inspired_mentions(shared_data)
    with_year = Counter(fold(n) for n in mentions if re.search(r"\(\d{4}\)\s*$", n))
    yearless = Counter(fold(n) for n in mentions if not re.search(r"\(\d{4}\)\s*$", n))
    for item in (i for i in items if i["has_metadata"] and i["year"]):
        assert item["n_mentions"] - yearless[fold(item["title"])] == with_year[fold(display_title(item))], item["title"]


def test_inspired_link_counts_in_summary(inspired_run, shared_data):
    summary = read_summary(inspired_run, "turns")
    links = summary["mention_links"]
    assert links["exact"] + links["title_only"] + links["unlinked"] == len(raw_inspired_mentions(shared_data))
    assert links["title_only"] >= 1  # 'Akira ()' has no year: the unique metadata Akira (1988)
    assert links["unlinked_titles"] == summary["items_without_metadata"]


def test_title_linker_rules(shared_data):
    metadata = json.loads((shared_data / "inspired" / "id2info_inspired.json").read_text(encoding="utf-8"))
    linker = TitleLinker({str(k): v for k, v in metadata.items()})
    parasite = next(k for k, v in metadata.items() if v["name"] == "Parasite (1982)")
    assert linker.link("Parasite (1982)") == parasite  # title and year
    assert linker.link("  parasite  ") == parasite  # year-less side, unique title
    assert linker.link("Parasite (2019)") == "title:parasite 2019"  # another year: not this film
    assert dict(linker.links) == {"exact": 1, "title_only": 1, "unlinked": 1}


# ------------------------------------------------------------------------------------- ReDial catalog titles


def test_redial_titles_decoded_nonempty_unique(redial_run, shared_data):
    items = {i["item_id"]: i for i in read_rows(redial_run / "items" / "items.parquet")}
    summary = read_summary(redial_run, "items")
    raw = {row[0]: row[1] for row in csv.reader(open(shared_data / "redial" / "movies_with_mentions.csv", encoding="utf-8"))}
    assert not [i for i in items.values() if re.search(r"%[0-9A-Fa-f]{2}", i["title"])]
    assert items["100493"]["title"] == "Why Him?" and raw["100493"] == "Why Him%3F (2016)"
    assert items["121381"]["title"] == '"Crocodile" Dundee'
    # the raw name kept where the source has no title at all, and said so
    assert raw["103034"] == " (2015)" and display_title(items["103034"]) == "(2015)"
    assert all(i["title"].strip() for i in items.values())
    assert summary["titles_empty_fallback"] == 2
    assert "103034: ' (2015)' -> '(2015)'" in summary["title_fix_examples"]
    # one display name per item; of a listed-twice film, the more mentioned id keeps the plain name
    names = Counter(display_title(i) for i in items.values())
    assert names.most_common(1)[0][1] == 1
    assert display_title(items["197111"]) == "Signs (2008)" and display_title(items["93706"]) == "Signs [id 93706] (2008)"
    assert (summary["titles_decoded"], summary["titles_disambiguated"]) == (20, 8)
    assert read_summary(redial_run, "turns")["titles_decoded"] == 20


def test_redial_dialogue_text_uses_the_fixed_titles(redial_run):
    turns = read_rows(redial_run / "turns" / "turns.parquet")
    text = " ".join(u["text"] for t in turns for u in t["context"]) + " ".join(t["response"] for t in turns)
    assert (text.count("%3F"), "Why Him? (2016)" in text) == (0, True)  # counts: a failing diff of MBs of text hangs
