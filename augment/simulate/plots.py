"""The labels-per-item histogram of the simulation stage, one panel per popularity bucket (matplotlib, headless)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from augment import plots
from augment.data.popularity import BUCKETS, bucket_of
from augment.simulate.coverage import label_counts


def plot_labels_per_item(
    items: Sequence[dict], real_turns: Sequence[dict], sim_rows: Sequence[dict], path: Path
) -> Path:
    """Histogram of training labels per item, one panel per popularity bucket, real vs real + simulated."""
    real, sim = label_counts(real_turns, "train"), label_counts(sim_rows, None)
    cap = 10
    figure, axes = plots.figure(1, len(BUCKETS), figsize=(12, 3.5), sharey=False)
    for axis, (name, low, high) in zip(axes, BUCKETS):
        members = [item["item_id"] for item in items if bucket_of(item["n_mentions"]) == name]
        before = Counter(min(real[i], cap) for i in members)
        after = Counter(min(real[i] + sim[i], cap) for i in members)
        xs = list(range(cap + 1))
        axis.bar([x - 0.2 for x in xs], [before[x] for x in xs], width=0.4, label="real", color="#c44e52")
        axis.bar([x + 0.2 for x in xs], [after[x] for x in xs], width=0.4, label="real + simulated", color="#4c72b0")
        axis.set_xticks(xs, [str(x) if x < cap else f"{cap}+" for x in xs])
        mentions = f"{low}-{high}" if high is not None else f">= {low}"
        axis.set_title(f"{name} ({mentions} mentions, {len(members):,d} items)")
        axis.set_xlabel("training labels per item")
    axes[0].set_ylabel("items")
    axes[0].legend()
    return plots.save(figure, path, dpi=110)

