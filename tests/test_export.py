"""The trainer exports carry exactly the expected labels, and are rebuilt when the run changes.

The run (`scored_run`, shared with test_kg and test_export_consumers): the first conversations of the real ReDial
train and test files with the catalog and metadata rows of the movies they mention, retrieved with the real
embedder, judged through the real score stage (`python -m augment.score --backend openai`) by the deterministic
fake OpenAI server (tests/fake_openai_server.py; the point here is the export, not the judge), labelled at a
threshold at which about half the pairs become synthetic labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augment.data.prepare import prepare
from augment.data.sample import write_redial_sample
from augment.export import export, with_valid
from augment.export.__main__ import main as export_main
from augment.release import labelled_turns
from augment.retrieve import retrieve
from augment.runs import read_rows, read_summary
from augment.score import main as score_main
from tests.fake_openai_server import FakeOpenAIServer

CONVERSATIONS, TOP_K, SCORED_TURNS, THRESHOLD = 30, 5, 60, 2.1


def build_scored_run(shared_data: Path, embedding_cache: Path, root: Path) -> Path:
    run = root / "run"
    write_redial_sample(shared_data / "redial", root / "redial", CONVERSATIONS, ("train_data.jsonl", "test_data.jsonl"))
    prepare("redial", root / "redial", run)
    retrieve(run, top_k=TOP_K, cache_path=embedding_cache)
    with FakeOpenAIServer() as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRS_AUGMENT_CACHE", str(root / "cache"))
        assert score_main(["--run", str(run), "--backend", "openai", "--base-url", server.base_url,
                           "--model", "fake-judge", "--max-turns", str(SCORED_TURNS), "--top-n", str(TOP_K),
                           "--threshold", str(THRESHOLD)]) == 0
    return run


@pytest.fixture(scope="session")
def scored_run(shared_data, embedding_cache, tmp_path_factory) -> Path:
    """Built once per session in a fixed folder (test_kg and test_export_consumers import this fixture)."""
    root = tmp_path_factory.getbasetemp() / "scored_run"
    if read_summary(root / "run", "labels") is None:
        build_scored_run(shared_data, embedding_cache, root)
    return root / "run"


def exported(run: Path, fmt: str, out: Path, *extra: str) -> Path:
    assert export_main(["--run", str(run), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_run_has_synthetic_labels_on_train_only(scored_run):
    turns = labelled_turns(scored_run)
    assert sum(len(t["rec_synthetic"]) for t in turns if t["split"] == "train") >= 20
    assert not any(t["rec_synthetic"] for t in turns if t["split"] != "train")
    assert {t["split"] for t in turns} == {"train", "test"}


def test_jsonl_has_gold_and_synthetic_with_scores(scored_run, tmp_path):
    out = exported(scored_run, "jsonl", tmp_path)
    turns = labelled_turns(scored_run)
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "test.jsonl", "train.jsonl"]
    for split in ("train", "test"):
        rows = read_jsonl(out / f"{split}.jsonl")
        expected = [t for t in turns if t["split"] == split]
        assert [r["turn_uid"] for r in rows] == [t["turn_uid"] for t in expected]
        for row, turn in zip(rows, expected):
            assert [g["item_id"] for g in row["rec"]] == turn["rec"]
            pairs = lambda labels: [(s["item_id"], s["score"]) for s in labels]
            assert pairs(row["rec_synthetic"]) == pairs(turn["rec_synthetic"])


def test_valid_is_a_slice_of_train_dialogues_with_gold_only(scored_run):
    turns = labelled_turns(scored_run)
    out, note = with_valid(turns, 0.1)
    train_dialogs = list(dict.fromkeys(t["dialog_id"] for t in turns if t["split"] == "train"))
    moved = list(dict.fromkeys(t["dialog_id"] for t in out if t["split"] == "valid"))
    assert moved == train_dialogs[-round(0.1 * len(train_dialogs)):] and note["dialogues"] == len(moved)
    assert all(not t["rec_synthetic"] for t in out if t["split"] == "valid")
    assert [t["rec"] for t in out] == [t["rec"] for t in turns]
    assert note["synthetic_labels_dropped"] == sum(len(t["rec_synthetic"]) for t in turns if t["dialog_id"] in moved)


def test_unicrs_ids_and_cfcrs_names_describe_the_same_lines(scored_run, tmp_path):
    ids = exported(scored_run, "unicrs", tmp_path / "unicrs")
    names = exported(scored_run, "cfcrs", tmp_path / "cfcrs")
    entity2id = json.loads((ids / "entity2id.json").read_text())
    assert entity2id == json.loads((names / "entity2id.json").read_text())
    name_of = {v: k for k, v in entity2id.items()}
    items = {i["item_id"]: i for i in read_rows(scored_run / "items" / "items.parquet")}
    item_entity = {item: e for name, item in json.loads((ids / "entity2item.json").read_text()).items()
                   for e in [entity2id[name]]}
    assert set(item_entity) == set(items)
    assert sorted(json.loads((ids / "item_ids.json").read_text())) == sorted(item_entity.values())
    for file in ("train_data_processed.jsonl", "valid_data_processed.jsonl", "test_data_processed.jsonl",
                 "train_data_augmented.jsonl"):
        by_id, by_name = read_jsonl(ids / file), read_jsonl(names / file)
        assert len(by_id) == len(by_name) > 0 or file == "valid_data_processed.jsonl"
        for a, b in zip(by_id, by_name):
            assert [name_of[e] for e in a["rec"]] == b["rec"] and [name_of[e] for e in a["entity"]] == b["entity"]
            assert a["context"] == b["context"] and a["resp"] == b["resp"]


def test_context_padding_makes_position_parity_the_speaker(scored_run, tmp_path):
    out = exported(scored_run, "cfcrs", tmp_path)
    turns = [t for t in labelled_turns(scored_run) if t["split"] == "test"]
    lines = read_jsonl(out / "test_data_processed.jsonl")
    assert len(lines) == len(turns)
    padded_lines = 0
    for line, turn in zip(lines, turns):
        padded = not turn["context"] or turn["context"][0]["role"] == "recommender"
        padded_lines += padded
        assert line["context"] == [""] * padded + [u["text"] for u in turn["context"]]
        roles = ["seeker"] * padded + [u["role"] for u in turn["context"]]  # the pad stands in for the user
        assert roles == [("seeker", "recommender")[i % 2] for i in range(len(roles))]
    assert 0 < padded_lines < len(lines)  # the real slice has dialogues opened by either speaker


def test_entity_lists_hold_linked_attributes(scored_run, tmp_path):
    out = exported(scored_run, "cfcrs", tmp_path)
    entity2id = json.loads((out / "entity2id.json").read_text())
    items = set(json.loads((out / "entity2item.json").read_text()))
    lines = read_jsonl(out / "train_data_processed.jsonl") + read_jsonl(out / "test_data_processed.jsonl")
    attributes = [e for line in lines for e in line["entity"] if e not in items]
    assert attributes and all(e in entity2id for e in attributes)
    summary = read_summary(tmp_path.parent, tmp_path.name)
    assert summary["dropped_for_empty_entity"]["train_lines"] == sum(
        1 for line in read_jsonl(out / "train_data_augmented.jsonl") if not line["entity"])


def test_augmented_train_adds_synthetic_after_gold_by_score(scored_run, tmp_path):
    out = exported(scored_run, "unicrs", tmp_path)
    entity2id = json.loads((out / "entity2id.json").read_text())
    item_of = {entity2id[name]: item for name, item in json.loads((out / "entity2item.json").read_text()).items()}
    summary = read_summary(tmp_path.parent, tmp_path.name)
    turns = [t for t in labelled_turns(scored_run) if t["split"] == "train"]
    kept = turns[:summary["splits"]["train"]["turns"]]
    by_score = lambda t: [s["item_id"] for s in sorted(t["rec_synthetic"], key=lambda s: -s["score"])]
    augmented = read_jsonl(out / "train_data_augmented.jsonl")
    assert [[item_of[e] for e in line["rec"]] for line in augmented] == [t["rec"] + by_score(t) for t in kept]
    gold = read_jsonl(out / "train_data_processed.jsonl")
    assert [[item_of[e] for e in line["rec"]] for line in gold] == [t["rec"] for t in kept]


def test_export_is_rebuilt_when_the_run_changes_and_refused_with_other_params(scored_run, tmp_path, capsys):
    run = tmp_path / "run"
    for stage in ("turns", "items", "labels"):
        (run / stage).mkdir(parents=True)
        for path in (scored_run / stage).iterdir():
            (run / stage / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    first = export(run, "unicrs", out)
    assert export(run, "unicrs", out) == first and "already done" in capsys.readouterr().out
    labels = read_rows(run / "labels" / "labels.parquet")
    from augment.runs import write_rows

    write_rows(run / "labels" / "labels.parquet", [{**row, "rec_synthetic": []} for row in labels])
    second = export(run, "unicrs", out)
    assert "labels changed" in capsys.readouterr().out
    assert second["splits"]["train"]["synthetic_labels"] == 0 < first["splits"]["train"]["synthetic_labels"]
    assert export_main(["--run", str(run), "--format", "unicrs", "--out", str(out), "--valid-fraction", "0.2"]) == 2
    assert "other parameters (valid_fraction)" in capsys.readouterr().err
    assert export_main(["--run", str(run), "--format", "unicrs", "--out", str(out), "--valid-fraction", "0.2",
                        "--force"]) == 0


@pytest.mark.parametrize("value", ["0", "0.7", "nan", "x"])
def test_valid_fraction_is_checked_at_parse_time(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        export_main(["--run", str(tmp_path), "--format", "crslab", "--out", str(tmp_path / "o"), "--valid-fraction", value])
    assert error.value.code == 2 and "--valid-fraction" in capsys.readouterr().err


def test_every_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        export_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in (("--run", "run folder"), ("--format", "which trainer"), ("--out", "folder to write"),
                        ("--valid-fraction", "default 0.1"), ("--force", "rewrite the export")):
        assert flag in text and words in text, flag


def test_card_dataset_info_has_num_bytes_and_datasets_reads_it(scored_run, tmp_path, caplog):
    import datasets
    import yaml

    from augment.release import release

    out = release(scored_run, tmp_path / "release")
    header = yaml.safe_load((out / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    for info in header["dataset_info"]:
        assert all(s["num_bytes"] > 0 for s in info["splits"]), info["config_name"]
        assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"])
    with caplog.at_level("WARNING"):
        builder = datasets.load_dataset_builder(str(out), "labels")
    assert "malformed" not in caplog.text
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        s["name"]: s["num_examples"] for s in header["dataset_info"][0]["splits"]}
