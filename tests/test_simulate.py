"""The simulation stage: uniform coverage of the real ReDial and INSPIRED catalogs, no label leakage on any dialogue,
determinism, the llm-mode parser and validator, regenerate-then-drop with a scripted backend (fault injection), and
llm mode end to end with the real offline SmolLM2 model on a handful of items.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow.parquet as pq
import pytest

from augment import runs
from augment.data.prepare import prepare
from augment.data.records import ITEM_SCHEMA, RECOMMENDER, SEEKER, TURN_SCHEMA, Utterance, display_title
from augment.llm.base import Backend, DigitScore, Generation
from augment.simulate import (
    LLM_MODE_FILES,
    TEMPLATE_MODE_FILES,
    leaks,
    main as simulate_main,
    parse_dialogue,
    simulate,
    skip_reason,
    validate_dialogue,
)

PER_ITEM = {"redial": 1, "inspired": 2}


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Both real catalogs prepared once (turns/ and items/)."""
    folders = {}
    for dataset in PER_ITEM:
        folders[dataset] = tmp_path_factory.mktemp(f"prepared-{dataset}")
        prepare(dataset, shared_data / dataset, folders[dataset])
    return folders


def copy_run(source: Path, target: Path) -> Path:
    for stage in ("turns", "items"):
        shutil.copytree(source / stage, target / stage)
    return target


@pytest.fixture(scope="module")
def simulated(prepared, tmp_path_factory) -> dict[str, Path]:
    """Template mode, seed 0, on each full catalog."""
    folders = {}
    for dataset, per_item in PER_ITEM.items():
        folders[dataset] = copy_run(prepared[dataset], tmp_path_factory.mktemp(f"sim-{dataset}"))
        simulate(folders[dataset], "template", per_item, seed=0)
    return folders


def as_dialogue(row: dict[str, Any]) -> list[dict[str, str]]:
    return row["context"] + [{"role": RECOMMENDER, "text": row["response"]}]


# ------------------------------------------------------------------------------------------------ template mode


@pytest.mark.parametrize("dataset", list(PER_ITEM))
def test_every_item_gets_exactly_n_dialogues_or_is_counted_as_skipped(simulated, dataset):
    run, n = simulated[dataset], PER_ITEM[dataset]
    items = runs.read_rows(run / "items" / "items.parquet")
    rows = runs.read_rows(run / "simulated" / "turns.parquet")
    summary = runs.read_summary(run, "simulated")
    per_item = Counter(row["rec"][0] for row in rows)
    expected_skips = Counter(reason for item in items if (reason := skip_reason(item)))

    assert set(per_item.values()) == {n}
    assert summary["skipped"] == dict(expected_skips)  # nothing skipped beyond too little metadata / no title
    assert {i["item_id"] for i in items if not skip_reason(i)} == set(per_item)
    assert summary["items_simulated"] == summary["items_complete"] == len(per_item)
    assert len(per_item) == len(items) - summary["skipped_total"]
    assert summary["dialogues"] == len(rows) == n * len(per_item)
    # the long tail: never-mentioned (or once-mentioned) items and items without a plot are covered too
    assert any(per_item[i["item_id"]] for i in items if i["n_mentions"] <= 1)
    no_plot = [i for i in items if not i["attributes"]["plot"] and not skip_reason(i)]
    assert all(per_item[i["item_id"]] == n for i in no_plot)
    if dataset == "redial":
        assert no_plot


@pytest.mark.parametrize("dataset", list(PER_ITEM))
def test_rows_follow_the_turn_contract(simulated, dataset):
    run = simulated[dataset]
    assert pq.read_schema(run / "simulated" / "turns.parquet").remove_metadata() == TURN_SCHEMA
    rows = runs.read_rows(run / "simulated" / "turns.parquet")
    counts: Counter[str] = Counter()
    for row in rows:
        item_id = row["rec"][0]
        assert row["rec"] == [item_id]
        assert (row["dataset"], row["split"]) == (f"{dataset}-sim", "train")
        assert row["dialog_id"] == f"sim-{item_id}-{counts[item_id]}"
        assert row["turn_uid"] == f"{row['dataset']}/train/{row['dialog_id']}/{row['turn_id']}"
        assert row["turn_id"] == len(row["context"]) and row["context"][-1]["role"] == SEEKER
        counts[item_id] += 1


@pytest.mark.parametrize("dataset", list(PER_ITEM))
def test_no_dialogue_leaks_its_label_and_mentions_are_real_other_items(simulated, dataset):
    run = simulated[dataset]
    items = {i["item_id"]: i for i in runs.read_rows(run / "items" / "items.parquet")}
    rows = runs.read_rows(run / "simulated" / "turns.parquet")
    for row in rows:
        target = items[row["rec"][0]]
        assert not leaks(as_dialogue(row), target), row
        assert re.search(re.escape(display_title(target)), row["response"], re.IGNORECASE)
        seeker_text = " ".join(u["text"] for u in row["context"] if u["role"] == SEEKER)
        for mentioned in row["mentioned"]:
            assert mentioned in items and mentioned != target["item_id"]
            assert display_title(items[mentioned]) in seeker_text
    assert sum(1 for row in rows if row["mentioned"]) > len(rows) / 5  # "a movie they enjoyed" is a common slot


def test_summary_reports_coverage_buckets_samples_and_template_hashes(simulated):
    run = simulated["redial"]
    summary = runs.read_summary(run, "simulated")
    coverage = summary["coverage"]
    assert set(summary["params"]["templates"]) == set(TEMPLATE_MODE_FILES)
    assert summary["llm"] is None
    assert 0 < coverage["real"] < coverage["real_plus_sim"] <= coverage["catalog"] == summary["items"]
    assert sum(b["items"] for b in coverage["buckets"].values()) == coverage["catalog"]
    tail = coverage["buckets"]["tail"]
    assert tail["real_plus_sim_covered"] > 5 * tail["real_covered"]
    assert len(summary["samples"]) == 3
    assert {s["bucket"] for s in summary["samples"]} == {"tail", "torso", "head"}
    assert all(s["dialogue"][-1].startswith("Recommender: ") for s in summary["samples"])
    assert (run / "simulated" / "labels_per_item.png").stat().st_size > 10_000


def test_same_seed_is_byte_identical_and_another_seed_differs(simulated, prepared, tmp_path):
    first = simulated["inspired"] / "simulated" / "turns.parquet"
    again = copy_run(prepared["inspired"], tmp_path / "again")
    other = copy_run(prepared["inspired"], tmp_path / "other")
    simulate_main(["--run", str(again), "--mode", "template", "--per-item", str(PER_ITEM["inspired"]), "--seed", "0"])
    simulate(other, "template", PER_ITEM["inspired"], seed=1)
    assert (again / "simulated" / "turns.parquet").read_bytes() == first.read_bytes()
    first_rows = runs.read_rows(first)
    other_rows = runs.read_rows(other / "simulated" / "turns.parquet")
    assert [r["turn_uid"][:-2] for r in other_rows] == [r["turn_uid"][:-2] for r in first_rows]  # same items, k
    differing = sum(a["context"] != b["context"] for a, b in zip(first_rows, other_rows))
    assert differing > 0.8 * len(first_rows)


def test_rerun_is_a_no_op_and_other_params_need_force(simulated, capsys):
    run = simulated["inspired"]
    artifact = run / "simulated" / "turns.parquet"
    before = artifact.stat().st_mtime_ns
    assert simulate(run, "template", PER_ITEM["inspired"], seed=0) == runs.read_summary(run, "simulated")
    assert artifact.stat().st_mtime_ns == before
    assert "already done" in capsys.readouterr().out
    with pytest.raises(runs.StageMismatch):
        simulate(run, "template", PER_ITEM["inspired"], seed=5)
    assert simulate_main(["--run", str(run), "--per-item", "3"]) == 2


# ------------------------------------------------------------------------------------------------ leakage rule


def test_leak_check_is_whole_title_case_insensitive_and_ignores_the_final_turn():
    it = {"title": "It", "year": 2017}
    m = {"title": "M", "year": 1931}
    final = Utterance(RECOMMENDER, "Watch It (2017).", ["1"])
    assert not leaks([Utterance(SEEKER, "Something italic and spooky, with sitcom iterations.", []), final], it)
    assert leaks([Utterance(SEEKER, "I loved IT!", []), final], it)
    assert leaks([{"role": RECOMMENDER, "text": "have you seen it (2017)?"}, {"role": RECOMMENDER, "text": "x"}], it)
    assert not leaks([Utterance(SEEKER, "I'm after a thriller.", []), final], m)
    assert not leaks([final], it)


# --------------------------------------------------------------------------------------- parser and validator

ITEM = {"item_id": "42", "title": "Heat", "year": 1995}
LIKED = {"item_id": "7", "title": "Ronin", "year": 1998}


def test_parser_keeps_role_lines_and_drops_preamble_markdown_and_trailing_commentary():
    text = ("Here is the dialogue:\n\n**Seeker:** Hi! I loved Ronin (1998).\n1. Recommender: Any actors?\n"
            "- Seeker: De Niro.\nSeeker: And crime movies.\nRecommender: Watch Heat (1995).\nI hope you like it!\n"
            "Seeker: ignored")
    assert parse_dialogue(text) == [
        ("seeker", "Hi! I loved Ronin (1998)."),
        ("recommender", "Any actors?"),
        ("seeker", "De Niro."),
        ("seeker", "And crime movies."),
        ("recommender", "Watch Heat (1995)."),
    ]


def test_validator_accepts_a_good_dialogue_and_links_the_liked_movie():
    text = "Seeker: Hi, I loved Ronin.\nRecommender: Any actors?\nSeeker: De Niro.\nSeeker: Crime, please.\n" \
           "Recommender: Watch Heat (1995), a crime film with De Niro.\nSeeker: Thanks, I'll watch Heat!"
    dialogue, reason = validate_dialogue(text, ITEM, LIKED)
    assert reason is None
    assert [u.role for u in dialogue] == [SEEKER, RECOMMENDER, SEEKER, RECOMMENDER]  # merged, cut after the rec
    assert dialogue[2].text == "De Niro. Crime, please."
    assert dialogue[0].items == ["7"] and dialogue[-1].items == ["42"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("Sure! Heat (1995) is a great movie about a heist.", "unparseable"),
        ("Seeker: I want a crime movie.\nSeeker: With De Niro.", "missing role"),
        ("Recommender: Hi!\nRecommender: Watch Heat (1995).", "missing role"),
        ("Seeker: I want a crime movie.\nRecommender: Try Ronin (1998).", "no final recommendation"),
        ("Seeker: Crime please.\nRecommender: Watch Heatwave (2020).", "no final recommendation"),
        ("Seeker: I loved heat, any movie like it?\nRecommender: Watch Heat (1995).", "title leaked early"),
        ("Recommender: Hi\nSeeker: Is HEAT any good?\nRecommender: Yes, watch Heat (1995).", "title leaked early"),
        ("Seeker: Crime, with De Niro.\nRecommender: Watch Heat (1995).", "too short"),
        ("Recommender: Hi!\nSeeker: Crime.\nSeeker: De Niro.\nRecommender: Watch Heat (1995).", "too short"),
    ],
)
def test_validator_rejects_bad_outputs_with_a_reason(text, reason):
    assert validate_dialogue(text, ITEM, LIKED) == (None, reason)


# ------------------------------------------------------------------------- llm mode: scripted backend (faults)


@pytest.fixture(scope="module")
def tiny_run(prepared, tmp_path_factory) -> Path:
    """Three real INSPIRED items with metadata (one never mentioned) as a run's whole catalog."""
    items = runs.read_rows(prepared["inspired"] / "items" / "items.parquet")
    chosen = [i for i in items if not skip_reason(i) and i["n_mentions"] == 0][:2]
    chosen += [i for i in items if not skip_reason(i) and i["n_mentions"] >= 3][:1]
    run = tmp_path_factory.mktemp("tiny")
    runs.write_rows(run / "items" / "items.parquet", chosen, schema=ITEM_SCHEMA)
    runs.write_summary(run, "items", {"params": {"dataset": "inspired"}})
    return run


class Scripted(Backend):
    """Answers each prompt with script(title, attempt) (attempt = how often that movie was asked for before)."""

    name = "scripted"
    model = "script-1"

    def __init__(self, script: Callable[[str, int], Generation]) -> None:
        self.script = script
        self.asked: Counter[str] = Counter()

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        raise NotImplementedError

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        out = []
        for prompt in prompts:
            title = re.findall(r"^Movie: (.*)$", prompt, re.MULTILINE)[-1]  # the first one is the worked example
            out.append(self.script(title, self.asked[title]))
            self.asked[title] += 1
        return out


def good(title: str) -> Generation:
    return Generation(f"Seeker: Hi! Something gripping, please.\nRecommender: Any actor?\nSeeker: Surprise me.\n"
                      f"Recommender: Watch {title}, you'll love it.")


def test_invalid_outputs_are_regenerated_then_dropped_and_counted(tiny_run, tmp_path):
    items = runs.read_rows(tiny_run / "items" / "items.parquet")
    a, b, c = (display_title(i) for i in items)

    def script(title: str, attempt: int) -> Generation:
        if title == a:  # leaks first, then fine
            return good(title) if attempt else Generation(f"Seeker: I want {title}.\nRecommender: Then watch {title}.")
        if title == b:  # never recommends the movie
            return Generation("Seeker: Hi.\nRecommender: Watch Liar Liar (1997).")
        return [Generation(None, "TimeoutError: read timed out"), Generation(""), good(title)][attempt]

    run = copy_run_items(tiny_run, tmp_path / "run")
    summary = simulate(run, "llm", 1, seed=3, backend=Scripted(script), max_attempts=3, cache_path=tmp_path / "c.sqlite")
    llm = summary["llm"]
    assert llm["requests"] == 8 and llm["valid"] == 2 and llm["first_try_valid"] == 0
    assert llm["invalid_by_reason"] == {"title leaked early": 1, "no final recommendation": 3,
                                        "backend: TimeoutError": 1, "empty": 1}
    assert llm["regenerations"] == 5
    assert llm["dropped"] == 1 and llm["dropped_by_reason"] == {"no final recommendation": 1}
    assert set(summary["params"]["templates"]) == set(LLM_MODE_FILES)
    assert summary["params"]["backend"] == {"name": "scripted", "model": "script-1"}
    rows = runs.read_rows(run / "simulated" / "turns.parquet")
    assert [row["rec"] for row in rows] == [[items[0]["item_id"]], [items[2]["item_id"]]]
    assert summary["items_simulated"] == 2 and summary["items_complete"] == 2 and summary["dialogues"] == 2


def test_llm_mode_replays_identically_from_the_cache(tiny_run, tmp_path):
    cache = tmp_path / "c.sqlite"
    run = copy_run_items(tiny_run, tmp_path / "run")
    simulate(run, "llm", 2, seed=1, backend=Scripted(lambda title, attempt: good(title)), cache_path=cache)
    first = (run / "simulated" / "turns.parquet").read_bytes()

    def unreachable(title: str, attempt: int) -> Generation:
        raise AssertionError("a cached request was sent again")

    summary = simulate(run, "llm", 2, seed=1, backend=Scripted(unreachable), cache_path=cache, force=True)
    assert (run / "simulated" / "turns.parquet").read_bytes() == first
    assert summary["dialogues"] == 6 and "0 misses" in summary["llm"]["cache"]


def copy_run_items(source: Path, target: Path) -> Path:
    shutil.copytree(source / "items", target / "items")
    return target


# ----------------------------------------------------------------------- llm mode: the real offline SmolLM2


@pytest.fixture
def one_torch_thread():
    """2 shared cores: one thread generates several times faster than two threads fighting other processes."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_llm_mode_with_smollm2_counts_every_output_as_valid_or_failed(tiny_run, tmp_path, one_torch_thread):
    from augment.llm import make_backend

    backend = make_backend("local", "smollm2-135m-instruct", threads=1)
    run = copy_run_items(tiny_run, tmp_path / "run")
    try:
        summary = simulate(run, "llm", 1, seed=0, backend=backend, max_attempts=1, max_tokens=96,
                           cache_path=tmp_path / "c.sqlite")
    finally:
        backend.close()
    llm = summary["llm"]
    assert llm["requests"] == 3 == llm["valid"] + sum(llm["invalid_by_reason"].values())
    assert summary["dialogues"] + llm["dropped"] == 3 and llm["dropped_by_reason"] == llm["invalid_by_reason"]
    assert summary["params"]["backend"]["model"] == "smollm2-135m-instruct"
    items = {i["item_id"]: i for i in runs.read_rows(run / "items" / "items.parquet")}
    for row in runs.read_rows(run / "simulated" / "turns.parquet"):
        assert not leaks(as_dialogue(row), items[row["rec"][0]]) and row["context"]
