"""`python -m eval.experiment` end to end on a small real slice of ReDial: every row, the table, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augment.data.prepare import prepare
from augment.data.sample import write_redial_sample
from augment.retrieve import retrieve
from augment.simulate.cli import run_simulate
from eval import experiment as E


@pytest.fixture(scope="module")
def tiny_run(shared_data, embedding_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("experiment")
    write_redial_sample(shared_data / "redial", root / "redial", 60, ("train_data.jsonl", "test_data.jsonl"))
    run = root / "run"
    prepare("redial", root / "redial", run)
    retrieve(run, top_k=10, cache_path=embedding_cache)
    run_simulate(run, "template", 1, 0)
    return run


def test_experiment_writes_every_row_with_mean_and_std(tiny_run, embedding_cache, monkeypatch, capsys):
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(embedding_cache.parent))
    code = E.main(["--run", str(tiny_run), "--seeds", "2", "--alphas", "0", "1", "--epochs", "1", "--labels", "similarity"])
    assert code == 0
    folder = tiny_run / "experiment-similarity"
    rows = json.loads((folder / "results.json").read_text())
    assert list(rows) == ["popularity", "retrieval (untrained recommender)", "baseline",
                          "two-stage similarity α=0", "two-stage similarity α=1",
                          "two-stage similarity + simulated α=0", "two-stage similarity + simulated α=1"]
    assert rows["baseline"]["seeds"] == 2 and rows["popularity"]["seeds"] == 1
    # one list for every turn: popularity shows few items, and the same ones again and again
    assert rows["popularity"]["coverage@10"]["mean"] < rows["retrieval (untrained recommender)"]["coverage@10"]["mean"]
    assert rows["popularity"]["gini@50"]["mean"] > rows["retrieval (untrained recommender)"]["gini@50"]["mean"]
    for stats in rows.values():
        for key in ("recall@1", "recall@10", "recall@50", "ndcg@10", "mrr@10", "coverage@10", "coverage@50",
                    "tail_recall@50", "tail_coverage@50", "gini@50"):
            assert 0.0 <= stats[key]["mean"] <= 1.0 and stats[key]["std"] >= 0.0
    table = (folder / "table.md").read_text()
    assert "| baseline | 2 |" in table and " ± " in table and "tail R@50" in table
    assert (folder / "recall_by_bucket.png").stat().st_size > 0
    assert "two-stage similarity + simulated α=1" in capsys.readouterr().out
    # resumable: a second call reuses every trained stage and the finished experiment
    assert E.main(["--run", str(tiny_run), "--seeds", "2", "--alphas", "0", "1", "--epochs", "1", "--labels", "similarity"]) == 0


def test_aggregate_and_table_cells_on_hand_values():
    runs_ = [{"recall@10": 0.1, "recall_by_bucket@50": {"tail": {"recall": 0.2, "pairs": 5}}},
             {"recall@10": 0.3, "recall_by_bucket@50": {"tail": {"recall": 0.4, "pairs": 5}}}]
    out = E.aggregate(runs_)
    assert out["recall@10"]["mean"] == pytest.approx(0.2) and out["recall@10"]["std"] == pytest.approx(0.1414213, rel=1e-5)
    assert out["recall_by_bucket@50"] == {"tail": pytest.approx(0.3)} and out["bucket_pairs"] == {"tail": 5}
    assert E.cell(out["recall@10"], "recall@10", 2) == "20.00 ± 14.14"
    assert E.cell({"mean": 0.12345, "std": 0.0}, "gini@50", 1) == "0.1235"
