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
