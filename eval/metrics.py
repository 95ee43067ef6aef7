"""Metrics as pure functions (no torch): they are the definitions the reports and the tests share."""

from __future__ import annotations

from typing import Sequence


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting one half.

    Computed by ranking (Mann-Whitney U), O(n log n)."""
    if not positives or not negatives:
        return float("nan")
    pooled = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, index = 0.0, 0
    while index < len(pooled):
        end = index
        while end < len(pooled) and pooled[end][0] == pooled[index][0]:
            end += 1
        mean_rank = (index + 1 + end) / 2  # average 1-based rank of a tie block
        rank_sum += mean_rank * sum(label for _, label in pooled[index:end])
        index = end
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
