import itertools
import random

import pytest

from eval.metrics import auc


def brute_auc(pos, neg):
    pairs = list(itertools.product(pos, neg))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_auc_matches_pairwise_definition():
    rng = random.Random(0)
    for _ in range(50):
        pos = [rng.choice([0.0, 1.0, 1.5, 2.0, 3.0]) for _ in range(rng.randint(1, 8))]
        neg = [rng.choice([0.0, 0.5, 1.5, 2.0, 2.5]) for _ in range(rng.randint(1, 8))]
        assert auc(pos, neg) == pytest.approx(brute_auc(pos, neg))
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [2]) == 0.0 and auc([2], [2]) == 0.5


# ---- ranking and catalog metrics on hand-computed examples --------------------------------------------------

import math
import subprocess
import sys

from eval.metrics import (
    coverage_at,
    evaluate,
    filter_mentioned,
    gini_at,
    gold_ranks,
    mrr_at,
    ndcg_at,
    recall_at,
    recall_by_bucket,
    subset_recall_at,
    tail_coverage_at,
    tail_items,
)

# two turns; turn 1 mentioned "a" earlier, so the filter moves its gold "c" from rank 2 to rank 1
RANKINGS = [["a", "b", "c", "d", "e"], ["e", "d", "c", "b", "a"]]
GOLDS = [["c"], ["a", "d"]]
MENTIONED = [["a"], []]
CATALOG = ["a", "b", "c", "d", "e", "f"]


def test_filter_removes_mentioned_items_and_cuts():
    assert filter_mentioned(RANKINGS[0], ["a"]) == ["b", "c", "d", "e"]
    assert filter_mentioned(RANKINGS[0], ["a", "c"], depth=2) == ["b", "d"]


def test_ranks_recall_ndcg_mrr_filtered_and_unfiltered():
    filtered = [filter_mentioned(r, m) for r, m in zip(RANKINGS, MENTIONED)]
    assert gold_ranks(filtered, GOLDS) == [1, 4, 1]
    assert gold_ranks(RANKINGS, GOLDS) == [2, 4, 1]
    ranks = gold_ranks(filtered, GOLDS)
    assert recall_at(ranks, 1) == 0.0
    assert recall_at(ranks, 2) == pytest.approx(2 / 3)
    assert ndcg_at(ranks, 2) == pytest.approx((1 / math.log2(3) * 2) / 3)
    assert mrr_at(ranks, 10) == pytest.approx((1 / 2 + 1 / 5 + 1 / 2) / 3)
    unfiltered = gold_ranks(RANKINGS, GOLDS)
    assert recall_at(unfiltered, 2) == pytest.approx(1 / 3)  # turn 1's gold falls out of the top 2 unfiltered
    assert gold_ranks([["x"]], [["y"]]) == [None] and recall_at([None], 50) == 0.0


def test_coverage_tail_and_gini():
    assert coverage_at(RANKINGS, CATALOG, 1) == pytest.approx(2 / 6)  # a, e
    assert coverage_at(RANKINGS, CATALOG, 5) == pytest.approx(5 / 6)  # f never shown
    counts = {"a": 30, "b": 5, "c": 4, "d": 0}  # e, f absent = 0 mentions
    tail = tail_items(CATALOG, counts)
    assert tail == {"c", "d", "e", "f"}
    assert tail_items(CATALOG, counts, tail_max=0) == {"d", "e", "f"}
    assert tail_coverage_at(RANKINGS, tail, 2) == pytest.approx(2 / 4)  # d, e
    # tail pairs: turn 0 "c" (rank 2), turn 1 "d" (rank 1); "a" is head
    assert subset_recall_at(RANKINGS, GOLDS, tail, 2) == pytest.approx(1 / 2)
    # top-1 counts over 6 items: a=1, e=1, others 0 -> sorted 0,0,0,0,1,1
    # gini = sum((2i - n - 1) x_i) / (n * total) with i = 1..6: (3*1 + 5*1) / (6*2) = 8/12
    assert gini_at(RANKINGS, CATALOG, 1) == pytest.approx(8 / 12)
    assert gini_at([["a"], ["b"]], ["a", "b"], 1) == 0.0


def test_recall_by_bucket_uses_shared_buckets():
    counts = {"a": 30, "c": 4, "d": 7}
    by_bucket = recall_by_bucket(RANKINGS, GOLDS, counts, 2)
    assert by_bucket == {"head": {"recall": 0.0, "pairs": 1}, "tail": {"recall": 0.0, "pairs": 1},
                         "torso": {"recall": 1.0, "pairs": 1}}


def test_evaluate_combines_filtered_unfiltered_and_catalog_metrics():
    counts = {"a": 30, "b": 5}
    out = evaluate(RANKINGS, GOLDS, MENTIONED, CATALOG, counts, ks=(1, 2))
    assert out["pairs"] == 3 and out["turns"] == 2
    assert out["recall@2"] == pytest.approx(2 / 3) and out["unfiltered_recall@2"] == pytest.approx(1 / 3)
    assert out["coverage@1"] == pytest.approx(2 / 6)  # filtered top-1: b, e
    assert out["tail_recall@2"] == pytest.approx(2 / 2)  # c (filtered rank 1) and d (rank 1) are tail
    assert out["tail_pairs"] == 2


def test_metrics_import_without_torch():
    code = "import sys; import eval.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
