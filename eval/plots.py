"""Plots shared by training and the experiment (matplotlib, Agg backend: no display on these machines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from augment import plots


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str) -> Path:
    """Training loss (left) and validation recall@10 (right) per epoch, one line per training phase."""
    figure, (loss_axis, recall_axis) = plots.figure(1, 2, figsize=(9, 3.5))
    start = 0
    for phase, history in curves.items():
        epochs = [start + row["epoch"] for row in history]
        losses = [(e, row["loss"]) for e, row in zip(epochs, history) if row["loss"] is not None]
        if losses:
            loss_axis.plot(*zip(*losses), marker="o", label=phase)
        recall_axis.plot(epochs, [row["recall@10"] for row in history], marker="o", label=phase)
        start = epochs[-1]
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    recall_axis.set_xlabel("epoch")
    recall_axis.set_ylabel("validation recall@10")
    loss_axis.legend()
    recall_axis.legend()
    figure.suptitle(title)
    return plots.save(figure, path, dpi=110)


def plot_bucket_recall(recall: Mapping[str, Mapping[str, float]], pairs: Mapping[str, int], path: Path,
                       title: str, k: int = 50) -> Path:
    """Grouped bars: recall@k per popularity bucket (x) for each method (colour); `recall[method][bucket]`."""
    buckets = [b for b in ("tail", "torso", "head") if b in pairs]
    methods = list(recall)
    width = 0.8 / max(len(methods), 1)
    figure, axis = plots.figure(figsize=(max(6, 1.2 * len(methods) + 3), 3.8))
    for m, method in enumerate(methods):
        xs = [b + (m - (len(methods) - 1) / 2) * width for b in range(len(buckets))]
        axis.bar(xs, [100 * recall[method].get(bucket, 0.0) for bucket in buckets], width, label=method)
    axis.set_xticks(range(len(buckets)), [f"{b}\n({pairs[b]:,d} pairs)" for b in buckets])
    axis.set_ylabel(f"recall@{k} (%)")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2)
    return plots.save(figure, path, dpi=110)
