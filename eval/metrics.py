"""Metrics as pure functions (no torch): they are the definitions the reports and the tests share.

Ranking metrics follow the CRS convention (UniCRS, FNSCRS): every (turn, gold item) pair is one test case, the
model ranks the whole catalog, and items already mentioned in the dialogue are removed from the ranking first
(`filter_mentioned`); the unfiltered variant ranks them too. A pair's rank is 0-based. Catalog-level metrics
(coverage, tail coverage, Gini) look at the union and the frequency of the top-k lists over all evaluated turns.
Which items are tail is decided by `augment.data.popularity.is_tail` on mentions in the real train dialogues.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Mapping, Sequence

from augment.data.popularity import TAIL_MAX_MENTIONS, bucket_of, is_tail

KS = (1, 10, 50)


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


def filter_mentioned(ranking: Sequence[str], mentioned: Iterable[str], depth: int | None = None) -> list[str]:
    """The ranking without the items already mentioned in the dialogue, cut to `depth` (None: all)."""
    seen = set(mentioned)
    kept = [item for item in ranking if item not in seen]
    return kept if depth is None else kept[:depth]


def gold_ranks(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> list[int | None]:
    """0-based rank of every (turn, gold item) pair in its turn's ranking; None when it is not in the list."""
    ranks: list[int | None] = []
    for ranking, gold in zip(rankings, golds, strict=True):
        position = {item: rank for rank, item in reversed(list(enumerate(ranking)))}
        ranks.extend(position.get(item) for item in gold)
    return ranks


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of pairs whose gold item is in the top k."""
    return sum(1 for r in ranks if r is not None and r < k) / len(ranks) if ranks else math.nan


def ndcg_at(ranks: Sequence[int | None], k: int) -> float:
    """Mean NDCG@k with one relevant item per pair: 1 / log2(rank + 2) inside the top k, else 0."""
    return sum(1 / math.log2(r + 2) for r in ranks if r is not None and r < k) / len(ranks) if ranks else math.nan


def mrr_at(ranks: Sequence[int | None], k: int) -> float:
    """Mean reciprocal rank, 0 for a gold item outside the top k."""
    return sum(1 / (r + 1) for r in ranks if r is not None and r < k) / len(ranks) if ranks else math.nan


def ranking_metrics(ranks: Sequence[int | None], ks: Sequence[int] = KS, prefix: str = "") -> dict[str, float]:
    """recall@k, ndcg@k and mrr@k for every k, keys like 'recall@10' (with `prefix` prepended)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"{prefix}recall@{k}"] = recall_at(ranks, k)
        out[f"{prefix}ndcg@{k}"] = ndcg_at(ranks, k)
        out[f"{prefix}mrr@{k}"] = mrr_at(ranks, k)
    return out


def coverage_at(rankings: Sequence[Sequence[str]], catalog: Sequence[str], k: int) -> float:
    """Share of the catalog that appears in at least one turn's top k."""
    shown = {item for ranking in rankings for item in ranking[:k]}
    return len(shown & set(catalog)) / len(catalog) if catalog else math.nan


def tail_items(catalog: Iterable[str], counts: Mapping[str, int], tail_max: int = TAIL_MAX_MENTIONS) -> set[str]:
    """Catalog items that are tail by the project's one rule, counting `counts` (train mentions; absent = 0)."""
    return {item for item in catalog if is_tail(counts.get(item, 0), tail_max)}


def tail_coverage_at(rankings: Sequence[Sequence[str]], tail: set[str], k: int) -> float:
    """Share of the tail items that appear in at least one turn's top k."""
    shown = {item for ranking in rankings for item in ranking[:k]}
    return len(shown & tail) / len(tail) if tail else math.nan


def subset_recall_at(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], keep: set[str], k: int) -> float:
    """Recall@k over the pairs whose gold item is in `keep` (e.g. the tail items)."""
    kept = [[item for item in gold if item in keep] for gold in golds]
    return recall_at(gold_ranks(rankings, kept), k)


def gini_at(rankings: Sequence[Sequence[str]], catalog: Sequence[str], k: int) -> float:
    """Gini coefficient of how often each catalog item is recommended in the top k (items never shown count 0):
    0 = every item shown equally often, towards 1 = a few items take every slot."""
    shown = Counter(item for ranking in rankings for item in ranking[:k])
    values = sorted(shown.get(item, 0) for item in catalog)
    n, total = len(values), sum(values)
    if n == 0 or total == 0:
        return math.nan
    return sum((2 * (i + 1) - n - 1) * value for i, value in enumerate(values)) / (n * total)


def recall_by_bucket(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], counts: Mapping[str, int],
                     k: int) -> dict[str, dict[str, float]]:
    """Recall@k and the number of pairs per popularity bucket of the gold item (buckets: augment.data.popularity)."""
    out = {}
    for bucket in sorted({bucket_of(counts.get(item, 0)) for gold in golds for item in gold}):
        kept = [[item for item in gold if bucket_of(counts.get(item, 0)) == bucket] for gold in golds]
        ranks = gold_ranks(rankings, kept)
        out[bucket] = {"recall": recall_at(ranks, k), "pairs": len(ranks)}
    return out


def evaluate(rankings: Sequence[Sequence[str]], golds: Sequence[Sequence[str]], mentioned: Sequence[Sequence[str]],
             catalog: Sequence[str], counts: Mapping[str, int], ks: Sequence[int] = KS,
             tail_max: int = TAIL_MAX_MENTIONS) -> dict[str, object]:
    """Every metric of the experiment table from full (or deep enough) rankings, one per turn.

    Filtered metrics (the headline ones) rank without mentioned items; `unfiltered_*` keep them. Catalog metrics
    use the filtered lists. `counts` are the train mentions that decide tail and buckets."""
    depth = max(ks)
    filtered = [filter_mentioned(r, m, depth) for r, m in zip(rankings, mentioned, strict=True)]
    unfiltered = [list(r[:depth]) for r in rankings]
    tail = tail_items(catalog, counts, tail_max)
    out: dict[str, object] = {"pairs": sum(len(g) for g in golds), "turns": len(golds), "items": len(catalog)}
    out.update(ranking_metrics(gold_ranks(filtered, golds), ks))
    out.update(ranking_metrics(gold_ranks(unfiltered, golds), ks, prefix="unfiltered_"))
    for k in ks:
        out[f"coverage@{k}"] = coverage_at(filtered, catalog, k)
        out[f"tail_recall@{k}"] = subset_recall_at(filtered, golds, tail, k)
        out[f"tail_coverage@{k}"] = tail_coverage_at(filtered, tail, k)
        out[f"gini@{k}"] = gini_at(filtered, catalog, k)
    out["tail_pairs"] = sum(1 for gold in golds for item in gold if item in tail)
    out[f"recall_by_bucket@{depth}"] = recall_by_bucket(filtered, golds, counts, depth)
    return out
