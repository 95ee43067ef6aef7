"""What the simulation changed: items with >= 1 training label, real vs real + simulated, overall and per popularity
bucket (the buckets of `augment.data.popularity`), sample dialogues for the summary, and the one-screen report.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from augment.data.popularity import BUCKET_RULE, BUCKETS, bucket_of


def label_counts(turns: Iterable[Mapping[str, Any]], split: str | None) -> Counter[str]:
    """How many turns (of `split`, or of every split when None) have each item among their gold labels."""
    return Counter(item for turn in turns if split is None or turn["split"] == split for item in turn["rec"])


def coverage_report(items: Sequence[dict], real_turns: Sequence[dict], sim_rows: Sequence[dict]) -> dict[str, Any]:
    """Items with >= 1 training label, real (train split) vs real + simulated, overall and per popularity bucket."""
    real, any_split = label_counts(real_turns, "train"), label_counts(real_turns, None)
    sim = label_counts(sim_rows, None)
    total = len(items)
    report: dict[str, Any] = {
        "catalog": total,
        "real_split": "train",
        "real": sum(1 for item in items if real[item["item_id"]]),
        "real_plus_sim": sum(1 for item in items if real[item["item_id"]] + sim[item["item_id"]]),
        "real_all_splits": sum(1 for item in items if any_split[item["item_id"]]),
        "buckets": {},
        "bucket_rule": BUCKET_RULE,
    }
    report["real_fraction"] = report["real"] / total if total else 0.0
    report["real_plus_sim_fraction"] = report["real_plus_sim"] / total if total else 0.0
    for name, _, _ in BUCKETS:
        members = [item["item_id"] for item in items if bucket_of(item["n_mentions"]) == name]
        n = len(members) or 1
        report["buckets"][name] = {
            "items": len(members),
            "real_covered": sum(1 for i in members if real[i]),
            "real_plus_sim_covered": sum(1 for i in members if real[i] + sim[i]),
            "real_labels_per_item": round(sum(real[i] for i in members) / n, 3),
            "real_plus_sim_labels_per_item": round(sum(real[i] + sim[i] for i in members) / n, 3),
        }
    return report



def sample_dialogues(items: Sequence[dict], rows: Sequence[dict], count: int = 3) -> list[dict[str, Any]]:
    """One dialogue per popularity bucket (tail first), then more from the first items, up to `count`."""
    by_item = {}
    for row in rows:
        by_item.setdefault(row["rec"][0], row)
    bucket = {item["item_id"]: bucket_of(item["n_mentions"]) for item in items}
    picks = [next((i for i in by_item if bucket[i] == name), None) for name, _, _ in BUCKETS]
    ordered = list(dict.fromkeys([p for p in picks if p is not None] + list(by_item)))[:count]
    return [
        {
            "item_id": item_id,
            "bucket": bucket[item_id],
            "dialogue": [f"{u['role'].capitalize()}: {u['text']}" for u in by_item[item_id]["context"]]
            + [f"Recommender: {by_item[item_id]['response']}"],
            "mentioned": by_item[item_id]["mentioned"],
        }
        for item_id in ordered
    ]



def print_summary(summary: dict[str, Any]) -> None:
    coverage = summary["coverage"]
    print(f"[simulate] {summary['dialogues']:,d} dialogues for {summary['items_simulated']:,d} of {summary['items']:,d} "
          f"items ({summary['items_complete']:,d} complete) in {summary['seconds']} s; skipped {summary['skipped_total']:,d}: "
          f"{summary['skipped'] or 'none'}")
    print(f"  coverage (items with >= 1 training label): real {coverage['real']:,d} ({coverage['real_fraction']:.1%}) "
          f"-> real + simulated {coverage['real_plus_sim']:,d} ({coverage['real_plus_sim_fraction']:.1%})")
    for name, bucket in coverage["buckets"].items():
        print(f"  {name:5s} {bucket['items']:6,d} items: covered {bucket['real_covered']:,d} -> {bucket['real_plus_sim_covered']:,d}, "
              f"labels/item {bucket['real_labels_per_item']:.2f} -> {bucket['real_plus_sim_labels_per_item']:.2f}")
    if summary["llm"]:
        llm = summary["llm"]
        print(f"  llm: {llm['requests']:,d} outputs, {llm['valid']:,d} valid ({llm['valid_rate']}), "
              f"{llm['regenerations']:,d} regenerations, {llm['dropped']:,d} dropped; invalid: {llm['invalid_by_reason'] or 'none'}")
        print(f"  {llm['cache']}")

