"""The knowledge graph of the real catalogs (ReDial, INSPIRED), its entity linking, and the kg/ stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from augment import kg
from augment.data.prepare import prepare
from augment.runs import read_rows, read_summary, write_rows
from tests.test_export import scored_run  # noqa: F401  (the session fixture: a real scored run)


@pytest.fixture(scope="module")
def redial_catalog_run(shared_data, tmp_path_factory) -> Path:
    """The whole real ReDial catalog and metadata with the first 20 test conversations, prepared, with its KG."""
    data = tmp_path_factory.mktemp("redial_catalog")
    for name in ("movies_with_mentions.csv", "id2info.json"):
        shutil.copy(shared_data / "redial" / name, data / name)
    lines = (shared_data / "redial" / "test_data.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "test_data.jsonl").write_text("".join(lines[:20]), encoding="utf-8")
    run = data / "run"
    prepare("redial", data, run)
    kg.build(run, cfcrs=shared_data.parent / "clients" / "cfcrs-kg")
    return run


@pytest.fixture(scope="module")
def inspired_run(shared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inspired") / "run"
    prepare("inspired", shared_data / "inspired", run)
    kg.build(run)
    return run


def test_redial_graph_agrees_with_cfcrs(redial_catalog_run):
    summary = read_summary(redial_catalog_run, "kg")
    overlap = summary["cfcrs_overlap"]
    assert overlap["relations"] == {"ours": 4, "cfcrs": 4, "shared": 4}
    assert overlap["items"]["shared"] == overlap["items"]["cfcrs"]  # every CFCRS movie name is one of our items
    assert summary["disambiguated_item_names"] == 0  # the catalog's display titles are unique already
    assert overlap["entities"]["shared"] >= 0.95 * overlap["entities"]["cfcrs"]
    assert overlap["triples"]["shared"] >= 0.95 * overlap["triples"]["cfcrs"]
    for relation, counts in overlap["triples_by_relation"].items():
        assert counts["shared"] >= 0.9 * counts["cfcrs"], relation
    items = read_rows(redial_catalog_run / "items" / "items.parquet")
    assert summary["entities_by_kind"]["item"] == len(items)


def test_entities_are_unique_items_first_then_attributes(redial_catalog_run):
    entities = read_rows(redial_catalog_run / "kg" / "entities.parquet")
    items = read_rows(redial_catalog_run / "items" / "items.parquet")
    names = [e["name"] for e in entities]
    assert len(set(names)) == len(names)
    assert [e["item_id"] for e in entities[:len(items)]] == [i["item_id"] for i in items]
    assert all(e["kind"] in ("genre", "person") and e["item_id"] is None for e in entities[len(items):])
    triples = read_rows(redial_catalog_run / "kg" / "triples.parquet")
    assert {t["relation"] for t in triples} == set(kg.RELATIONS.values())
    assert all(t["head"] < len(items) <= t["tail"] for t in triples)
    back = {i["item_id"]: i for i in items}["100043"]  # Back to the Future, with id2info metadata
    back_entity = next(e["entity_id"] for e in entities if e["item_id"] == "100043")
    tails = {names[t["tail"]] for t in triples if t["head"] == back_entity}
    assert set(back["attributes"]["stars"]) | {"Robert Zemeckis", "sci-fi"} <= tails


def test_inspired_graph_has_genres_directors_and_stars(inspired_run):
    summary = read_summary(inspired_run, "kg")
    by_relation = summary["triples_by_relation"]
    assert by_relation["genre"] > 1000 and by_relation["star"] > 1000 and by_relation["director"] > 500
    assert "cfcrs_overlap" not in summary  # CFCRS's graph is ReDial's
    assert summary["linking"]["turns_with_attribute_context"] > 0.5 * summary["linking"]["turns"]


def test_linker_finds_genres_and_full_names_but_not_bare_words(redial_catalog_run):
    graph = kg.load(redial_catalog_run).graph
    linker = kg.Linker(graph)
    names = lambda text, titles=(): [graph.names[e] for e in linker.link(text, titles)]
    assert names("I love sci fi and comedies, anything with Tom Hanks") == ["sci-fi", "comedy", "Tom Hanks"]
    assert names("Will you watch a short one? The history of it is news to me") == []
    assert names("Scary Movie (2000) was a horror spoof", ["Scary Movie (2000)"]) == ["horror"]
    assert names("romantic dramas") == ["romance", "drama"]


def test_titles_are_found_longest_first(redial_catalog_run):
    items = {i["item_id"]: i for i in read_rows(redial_catalog_run / "items" / "items.parquet")}
    titles = {i: kg.display_title(item) for i, item in items.items()}
    short = next(i for i, t in titles.items() if t == "Star Wars")
    long = next(i for i, t in titles.items() if t.startswith("Star Wars: Episode II"))
    text = f"I prefer {titles[long]} to the others"
    assert kg.find_titles(text, [short, long], titles) == [long]
    assert kg.find_titles(f"{titles[short]} and {titles[long]}", [short, long], titles) == [short, long]


def test_turn_context_entities_hold_every_mention_and_gold_sits_on_its_turn(scored_run):
    kg.build(scored_run)
    loaded = kg.load(scored_run)
    entity = loaded.graph.entity_of_item
    turns = read_rows(scored_run / "turns" / "turns.parquet")
    attributes = 0
    for turn in turns:
        context = loaded.context[turn["turn_uid"]]
        assert set(entity[i] for i in turn["mentioned"]) <= set(context)
        assert not set(entity[i] for i in turn["rec"]) & set(context)
        utterance = loaded.utterances[(turn["split"], turn["dialog_id"])][turn["turn_id"]]
        assert set(entity[i] for i in turn["rec"]) <= set(utterance["movies"])
        attributes += any(loaded.graph.kinds[e] != "item" for e in context)
    assert attributes > 0.3 * len(turns)


def test_stage_is_reused_rebuilt_on_change_and_has_a_cli(scored_run, tmp_path, capsys):
    run = tmp_path / "run"
    for stage in ("turns", "items"):
        shutil.copytree(scored_run / stage, run / stage)
    assert kg.main(["--run", str(run)]) == 0
    first = read_summary(run, "kg")
    assert kg.main(["--run", str(run)]) == 0 and read_summary(run, "kg") == first
    items = read_rows(run / "items" / "items.parquet")
    items[0] = {**items[0], "attributes": {**items[0]["attributes"], "genres": ["western"]}}
    write_rows(run / "items" / "items.parquet", items)
    capsys.readouterr()
    assert kg.main(["--run", str(run)]) == 0
    assert "rebuilding: stage items changed" in capsys.readouterr().out
    assert read_summary(run, "kg")["built_from"] != first["built_from"]
    summary = json.loads((run / "kg" / "summary.json").read_text())
    (run / "kg" / "summary.json").write_text(json.dumps({**summary, "params": {**summary["params"], "linker_version": 0}}))
    assert kg.main(["--run", str(run)]) == 0 and "linking rules changed" in capsys.readouterr().out
    assert read_summary(run, "kg")["params"]["linker_version"] == kg.LINKER_VERSION
    assert kg.main(["--run", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        kg.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in (("--run", "run folder"), ("--force", "rebuild"), ("--cfcrs", "default")):
        assert flag in text and words in text, flag
    assert json.loads((run / "kg" / "summary.json").read_text())["params"]["linker_version"] == kg.LINKER_VERSION
