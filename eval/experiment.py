"""`python -m eval.experiment`: what a run's synthetic labels do for a recommender, in one table.

Trains and evaluates on the run's test split (ReDial test; INSPIRED test with dev as train): popularity (train
mentions), the untrained recommender (= embedding retrieval), the baseline (gold labels only), two-stage training
with the run's synthetic labels for each alpha, and the same with the simulated dialogues added to stage 1 (the
template simulation is built first when the run has none). Every trained row is the mean ± std over seeds; model
selection uses a validation slice of the train dialogues only. Training stages are reused when finished, so a
killed experiment resumes. Writes RUN/experiment-<label source>/ (table.md, results.json, recall_by_bucket.png,
summary.json last) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from augment import runs
from augment.cli import NON_NEGATIVE_FLOAT, POSITIVE_INT
from augment.data.popularity import BUCKET_RULE
from eval import metrics

COLUMNS = (("R@1", "recall@1"), ("R@10", "recall@10"), ("R@50", "recall@50"), ("NDCG@10", "ndcg@10"),
           ("MRR@10", "mrr@10"), ("Cov@10", "coverage@10"), ("Cov@50", "coverage@50"),
           ("tail R@50", "tail_recall@50"), ("TailCov@50", "tail_coverage@50"), ("Gini@50", "gini@50"))
PERCENT = {"recall@1", "recall@10", "recall@50", "coverage@10", "coverage@50", "tail_recall@50", "tail_coverage@50"}
DEFAULT_ALPHAS = (0.0, 0.5, 1.0)


def popularity_rankings(data: Any) -> list[list[str]]:
    """Most-mentioned train items first (ties in catalog order), the same list for every test turn."""
    order = sorted(range(len(data.catalog)), key=lambda r: -data.counts.get(data.catalog[r], 0))
    depth = max(metrics.KS) + max((len(t["mentioned"]) for t in data.test), default=0)
    top = [data.catalog[r] for r in order[:depth]]
    return [top for _ in data.test]


def score_test(data: Any, rankings: Sequence[Sequence[str]]) -> dict[str, Any]:
    keep = [i for i, t in enumerate(data.test) if t["rec"]]
    return metrics.evaluate([rankings[i] for i in keep], [data.test[i]["rec"] for i in keep],
                            [data.test[i]["mentioned"] for i in keep], data.catalog, data.counts)


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (0 for one seed) of every scalar metric, and mean bucket recall."""
    out: dict[str, Any] = {"seeds": len(results)}
    for key in results[0]:
        values = [r[key] for r in results]
        if all(isinstance(v, (int, float)) and v is not None for v in values):
            out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    buckets = results[0]["recall_by_bucket@50"]
    out["recall_by_bucket@50"] = {b: statistics.fmean(r["recall_by_bucket@50"][b]["recall"] for r in results) for b in buckets}
    out["bucket_pairs"] = {b: buckets[b]["pairs"] for b in buckets}
    return out


def cell(stats: dict[str, float], key: str, seeds: int) -> str:
    scale, digits = (100, 2) if key in PERCENT else (1, 4)
    text = f"{scale * stats['mean']:.{digits}f}"
    return text + (f" ± {scale * stats['std']:.{digits}f}" if seeds > 1 else "")


def markdown_table(rows: dict[str, dict[str, Any]], baseline: str = "baseline") -> str:
    head = "| method | seeds | " + " | ".join(name for name, _ in COLUMNS) + " | ΔR@10 vs baseline | tail R@50 × baseline |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 4)]
    base = rows.get(baseline)
    for method, stats in rows.items():
        rel = tail = ""
        if base and method != baseline:
            rel = f"{100 * (stats['recall@10']['mean'] / base['recall@10']['mean'] - 1):+.1f}%"
            tail_base = base["tail_recall@50"]["mean"]
            tail = f"{stats['tail_recall@50']['mean'] / tail_base:.2f}×" if tail_base else "n/a"
        cells = [cell(stats[key], key, stats["seeds"]) for _, key in COLUMNS]
        lines.append(f"| {method} | {stats['seeds']} | " + " | ".join(cells) + f" | {rel} | {tail} |")
    return "\n".join(lines)


def ensure_simulated(run: Path) -> None:
    if runs.read_summary(run, "simulated") is None:
        from augment.simulate.cli import run_simulate

        print("[experiment] no simulated/ stage: building it (template mode, 2 per item, seed 0)")
        run_simulate(run, "template", 2, 0)


def run_configs(data: Any, base: Any, seeds: Sequence[int], alphas: Sequence[float], simulated: bool,
                source: str) -> dict[str, list[dict[str, Any]]]:
    """Every trained configuration for every seed: {row name: [test metrics per seed]}."""
    from dataclasses import replace

    from train.two_stage import train_two_stage

    plan = [("baseline", replace(base, baseline=True))]
    plan += [(f"two-stage {source} α={a:g}", replace(base, alpha=a)) for a in alphas]
    if simulated:
        plan += [(f"two-stage {source} + simulated α={a:g}", replace(base, alpha=a, with_simulated=True)) for a in alphas]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
    for seed in seeds:
        for name, config in plan:
            summary = train_two_stage(data, replace(config, seed=seed, labels=source))
            results[name].append(summary["test"])
            print(f"[experiment] seed {seed} {name}: R@10 {summary['test']['recall@10']:.2%}  "
                  f"tail R@50 {summary['test']['tail_recall@50']:.2%}")
    return results


def experiment(run: Path, seeds: int, alphas: Sequence[float], labels: str, epochs: int, simulated: bool,
               force: bool = False) -> dict[str, Any]:
    import torch

    from train import labels as L
    from train.recommender import ThinRecommender
    from train.two_stage import Config, Data, rank_turns

    run = Path(run)
    source = L.resolve_source(run, labels)
    if simulated:
        ensure_simulated(run)
    params = {"seeds": seeds, "alphas": list(alphas), "label_source": source, "epochs": epochs, "simulated": simulated}
    reads = ("turns", "items", "candidates") + (("labels",) if source == "judge" else ()) + (("simulated",) if simulated else ())
    stage = runs.Stage(run, f"experiment-{source}", params, reads=reads)
    if not stage.needed(force):
        print((run / stage.name / "table.md").read_text())
        return stage.summary()
    started = time.perf_counter()
    base = Config(epochs=epochs)
    data = Data(run, base.valid_share, with_simulated=simulated)
    rows = {"popularity": aggregate([score_test(data, popularity_rankings(data))])}
    torch.manual_seed(0)
    untrained = ThinRecommender(data.item_init).eval()
    rows["retrieval (untrained recommender)"] = aggregate([score_test(data, rank_turns(untrained, data, "test"))])
    for name, per_seed in run_configs(data, base, list(range(seeds)), alphas, simulated, source).items():
        rows[name] = aggregate(per_seed)
    return write_experiment(stage, data, rows, source, started)


def write_experiment(stage: runs.Stage, data: Any, rows: dict[str, dict[str, Any]], source: str,
                     started: float) -> dict[str, Any]:
    from eval.plots import plot_bucket_recall

    folder = runs.stage_dir(stage.run, stage.name)
    test_pairs = rows["popularity"]["pairs"]["mean"]
    note = (f"{data.run}: test split, {int(test_pairs):,d} (turn, gold) pairs, mentioned items removed; trained on "
            f"{len(data.train):,d} turns of the `{data.split}` split ({len(data.valid):,d} held out for model "
            f"selection); stage-1 labels: {source}; tail = <= 4 train mentions; buckets {BUCKET_RULE}; mean ± std "
            "over seeds; percentages except NDCG, MRR, Gini.")
    table = markdown_table(rows)
    (folder / "table.md").write_text(f"{note}\n\n{table}\n")
    (folder / "results.json").write_text(json.dumps(runs.json_safe(rows), indent=2) + "\n")
    plot_bucket_recall({m: r["recall_by_bucket@50"] for m, r in rows.items()}, rows["popularity"]["bucket_pairs"],
                       folder / "recall_by_bucket.png", f"Recall@50 by popularity bucket ({source} labels)")
    summary = stage.finish({"rows": rows, "note": note, "seconds": round(time.perf_counter() - started, 1)})
    print(f"{note}\n\n{table}\n\n[experiment] {len(rows)} rows in {summary['seconds']} s; written to {folder}")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/, candidates/ (and labels/)")
    p.add_argument("--seeds", type=POSITIVE_INT, default=3, help="seeds per trained row (default 3)")
    p.add_argument("--alphas", type=NON_NEGATIVE_FLOAT, nargs="+", default=list(DEFAULT_ALPHAS),
                   help="stage-2 KL weights (default 0 0.5 1)")
    p.add_argument("--labels", choices=("auto", "judge", "similarity"), default="auto",
                   help="stage-1 synthetic labels: judge (labels/), similarity (top-M candidates), auto = judge if "
                        "the run has labels/ else similarity (default auto)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=8, help="epochs per stage (baseline: twice; default 8)")
    p.add_argument("--no-simulated", dest="simulated", action="store_false",
                   help="skip the rows with simulated dialogues (default: include them)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="torch threads (default 1: on a shared CPU more threads spin and run slower)")
    p.add_argument("--force", action="store_true", help="re-aggregate even when finished (trained stages are reused)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def action() -> None:
        import torch

        torch.set_num_threads(args.threads)
        experiment(args.run, args.seeds, args.alphas, args.labels, args.epochs, args.simulated, args.force)

    return runs.exit_code(action)


if __name__ == "__main__":
    sys.exit(main())
