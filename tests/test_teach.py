"""The teacher stage: the rating parser, the gold teacher on a real ReDial slice, the LLM teacher's failure path.

The slice (first train and test conversations of the real ReDial files, their movies, top-10 MiniLM candidates) is
built once per session; test_train_judge.py and test_judge_quality.py reuse it.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from augment.data.popularity import mention_counts
from augment.data.prepare import prepare
from augment.data.sample import write_redial_sample
from augment.retrieve import retrieve
from augment.runs import read_rows, read_summary
from augment.teach import main as teach_main, parse_rating, popularity_bin, teach_prompt
from augment.templates import environment
from tests.fake_openai_server import FakeOpenAIServer, generated_text

SLICE_CONVERSATIONS, SLICE_TOP_K = 100, 10


def build_judge_slice(shared_data: Path, embedding_cache: Path, root: Path) -> Path:
    run = root / "run"
    if not (run / "candidates" / "summary.json").exists():
        write_redial_sample(shared_data / "redial", root / "redial", SLICE_CONVERSATIONS,
                            ("train_data.jsonl", "test_data.jsonl"))
        prepare("redial", root / "redial", run)
        retrieve(run, top_k=SLICE_TOP_K, cache_path=embedding_cache)
    return run


@pytest.fixture(scope="session")
def judge_slice(shared_data, embedding_cache, tmp_path_factory) -> Path:
    """Prepared + retrieved real slice, in a fixed folder so every test file importing this fixture shares it."""
    return build_judge_slice(shared_data, embedding_cache, tmp_path_factory.getbasetemp() / "judge_slice")


@pytest.fixture
def run(judge_slice, tmp_path) -> Path:
    copy = tmp_path / "run"
    for stage in ("turns", "items", "candidates"):
        shutil.copytree(judge_slice / stage, copy / stage)
    return copy


def test_parser_reads_the_final_rating_and_the_reasoning_before_it():
    text = "The seeker wants a scary movie; rating: 1 would be too low since it is a horror classic.\nRating: 3"
    rating = parse_rating(text)
    assert rating.ok and rating.rating == 3 and rating.source == "parsed"
    assert rating.probs == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert rating.rationale.startswith("The seeker wants a scary movie") and rating.rationale.endswith("horror classic.")
    assert parse_rating("Fits well.\n**Rating:** 4").rating == 4


def test_parser_takes_digit_probabilities_from_logprobs_at_the_rating_position():
    pieces = [("Fits", {}), (" the", {}), (" ask", {}), (".\n", {}), ("Rating", {}), (":", {}),
              (" 3", {" 3": math.log(0.6), " 4": math.log(0.3), " 2": math.log(0.05), "The": math.log(0.05)})]
    text = "".join(token for token, _ in pieces)
    rating = parse_rating(text, pieces)
    assert rating.source == "logprobs" and rating.rating == 3
    assert rating.probs == pytest.approx((0.0, 0.0, 0.05 / 0.95, 0.6 / 0.95, 0.3 / 0.95))
    # a digit merged into a longer token has no per-digit distribution: fall back to the parsed digit
    merged = [("Rating: 3.", {"Rating: 3.": 0.0})]
    assert parse_rating("Rating: 3.", merged).source == "parsed"


@pytest.mark.parametrize("text", ["I think it fits well.", "Rating: five", "Rating: 7", None])
def test_answer_without_a_rating_is_failed_never_guessed(text):
    rating = parse_rating(text)
    assert not rating.ok and rating.rating is None and rating.error


def test_teach_prompt_uses_the_scorers_rubric(judge_slice):
    source = {name: environment().loader.get_source(environment(), name)[0] for name in ("teach.jinja", "score.jinja")}
    rubric = {name: re.search(r"You judge.*?here\n", text, re.S).group(0) for name, text in source.items()}
    assert rubric["teach.jinja"] == rubric["score.jinja"]
    turn = next(t for t in read_rows(judge_slice / "turns" / "turns.parquet") if t["split"] == "train" and t["rec"])
    item = next(i for i in read_rows(judge_slice / "items" / "items.parquet") if i["attributes"]["plot"])
    prompt = teach_prompt(turn, item, 10)
    assert prompt.index(turn["context"][-1]["text"]) < prompt.index(item["attributes"]["plot"])
    assert prompt.rstrip().endswith('"Rating: N", N being a single digit from 0 to 4.')


def test_gold_teacher_uses_train_turns_only_and_matches_gold_popularity(run):
    assert teach_main(["--run", str(run), "--teacher", "gold", "--max-pairs", "100000", "--negatives", "4"]) == 0
    rows = read_rows(run / "teacher" / "teacher.parquet")
    turns = {t["turn_uid"]: t for t in read_rows(run / "turns" / "turns.parquet")}
    assert {t["split"] for t in turns.values()} == {"train", "test"}
    assert {turns[r["turn_uid"]]["split"] for r in rows} == {"train"}
    assert all(r["split"] == "train" for r in rows)
    gold = [r for r in rows if r["kind"] == "gold"]
    negatives = [r for r in rows if r["kind"] == "negative"]
    assert len(negatives) == 4 * len(gold) > 1000
    assert all(r["item_id"] in turns[r["turn_uid"]]["rec"] for r in gold)
    assert not any(r["item_id"] in turns[r["turn_uid"]]["rec"] + turns[r["turn_uid"]]["mentioned"] for r in negatives)
    assert gold[0]["probs"] == pytest.approx([0.02, 0.02, 0.02, 0.02, 0.92])
    counts = mention_counts(turns.values(), "train")
    def bins(items) -> Counter:
        return Counter(popularity_bin(counts.get(i, 0)) for i in items)

    gold_bins, negative_bins = bins(r["item_id"] for r in gold), bins(r["item_id"] for r in negatives)
    total_variation = 0.5 * sum(abs(gold_bins[b] / len(gold) - negative_bins[b] / len(negatives))
                                for b in gold_bins | negative_bins)
    assert total_variation < 0.06
    catalog_bins = bins(i["item_id"] for i in read_rows(run / "items" / "items.parquet"))
    assert catalog_bins[0] > 0 and negative_bins[0] == 0  # the catalog has never-mentioned items; gold-matched draws not


def test_retrieved_negatives_are_an_opt_in_marked_kind(run):
    assert teach_main(["--run", str(run), "--teacher", "gold", "--max-pairs", "300"]) == 0
    assert "retrieved" not in Counter(r["kind"] for r in read_rows(run / "teacher" / "teacher.parquet"))
    assert teach_main(["--run", str(run), "--teacher", "gold", "--max-pairs", "300", "--retrieved-negatives", "2",
                       "--force"]) == 0
    rows = read_rows(run / "teacher" / "teacher.parquet")
    retrieved = [r for r in rows if r["kind"] == "retrieved"]
    assert retrieved and all(r["rating"] == 0 and r["rank"] is not None for r in retrieved)
    assert len(rows) <= 300 and read_summary(run, "teacher")["by_kind"]["retrieved"] == len(retrieved)


def test_gold_teacher_refuses_test_turns(run, capsys):
    assert teach_main(["--run", str(run), "--teacher", "gold", "--split", "test"]) == 2
    assert "train turns only" in capsys.readouterr().err


def test_llm_teacher_records_answers_without_rating_as_failed_with_raw_text(run, tmp_path, monkeypatch):
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    with FakeOpenAIServer() as server:
        code = teach_main(["--run", str(run), "--teacher", "llm", "--backend", "openai", "--model", "fake-model",
                           "--base-url", server.base_url, "--max-pairs", "12", "--max-retries", "1"])
        prompts = server.prompts_requested()
    assert code == 2  # nothing rated: the stage says so and exits non-zero
    rows = read_rows(run / "teacher" / "teacher.parquet")
    assert 0 < len(rows) <= 12 and len(prompts) == len(rows)
    assert all(r["status"] == "failed" and r["reason"] == "no rating in answer" and r["probs"] is None for r in rows)
    assert sorted(r["raw"] for r in rows) == sorted(generated_text(p) for p in prompts)
    assert {"gold", "retrieved", "random"} <= {r["kind"] for r in rows}
