"""`prepare`: raw ReDial/INSPIRED files -> `turns/turns.parquet` and `items/items.parquet` in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from augment import runs
from augment.data import inspired, redial
from augment.data.problems import Problems
from augment.data.records import ITEM_SCHEMA, TURN_SCHEMA

DATASETS = ("redial", "inspired")


def _load(dataset: str, data_dir: Path, problems: Problems) -> tuple[dict[str, list], dict[str, dict], dict[str, dict]]:
    """Turns by split, items by id, and per-split counts, for whichever split files exist."""
    module = {"redial": redial, "inspired": inspired}[dataset]
    source = redial.load_items(data_dir, problems) if dataset == "redial" else inspired.load_linker(data_dir)
    turns_by_split, counts = {}, {}
    for split, filename in module.SPLIT_FILES.items():
        path = Path(data_dir) / filename
        if not path.exists():
            continue
        turns, conversations, utterances = module.load_split(path, split, source, problems)
        turns_by_split[split] = turns
        counts[split] = {
            "file": filename,
            "conversations": conversations,
            "utterances": utterances,
            "recommendation_turns": len(turns),
            "turns_with_gold": sum(1 for t in turns if t["rec"]),
            "gold_labels": sum(len(t["rec"]) for t in turns),
        }
    items = source if dataset == "redial" else source.items()
    return turns_by_split, items, counts


def input_files(dataset: str, data_dir: Path) -> list[Path]:
    """Every raw file the dataset's loader may read that exists: their fingerprints decide whether a prepared run
    is still current (a fixed file, or a metadata file added later, rebuilds it)."""
    module = {"redial": redial, "inspired": inspired}[dataset]
    names = [*module.SPLIT_FILES.values(), *getattr(module, "CATALOG_FILE", "").split(), module.METADATA_FILE]
    return [data_dir / name for name in names if (data_dir / name).is_file()]


def prepare(dataset: str, data_dir: Path, run: Path, on_error: str = "raise", force: bool = False) -> dict[str, Any]:
    """Build turns and items; returns the stage summary (counts, skipped records, missing splits)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    params = {"dataset": dataset, "data_dir": str(Path(data_dir).resolve()), "on_error": on_error}
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist (try `python -m augment.data download`)")
    inputs = input_files(dataset, Path(data_dir))
    stage = runs.Stage(run, "turns", params, files=inputs)
    if not stage.needed(force):
        return stage.summary()
    problems = Problems(on_error)
    turns_by_split, items, counts = _load(dataset, Path(data_dir), problems)
    module = {"redial": redial, "inspired": inspired}[dataset]
    missing = [f"{split} ({name})" for split, name in module.SPLIT_FILES.items() if split not in turns_by_split]
    if not turns_by_split:
        raise FileNotFoundError(f"no split file of {dataset} in {data_dir}: expected any of {list(module.SPLIT_FILES.values())}")
    item_summary = {
        "items": len(items),
        "items_without_metadata": sum(1 for item in items.values() if not item["has_metadata"]),
        "items_mentioned": sum(1 for item in items.values() if item["n_mentions"] > 0),
    }
    runs.write_rows(runs.stage_dir(run, "items") / "items.parquet", items.values(), ITEM_SCHEMA)
    runs.Stage(run, "items", params, files=inputs).finish(item_summary)
    all_turns = [turn for turns in turns_by_split.values() for turn in turns]
    runs.write_rows(runs.stage_dir(run, "turns") / "turns.parquet", all_turns, TURN_SCHEMA)
    summary = {
        "dataset": dataset,
        "splits": counts,
        "missing_splits": missing,
        **{key: sum(c[key] for c in counts.values()) for key in next(iter(counts.values())) if key != "file"},
        "items": item_summary["items"],
        "items_without_metadata": item_summary["items_without_metadata"],
        **problems.summary(),
    }
    summary = stage.finish(summary)
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"[prepare] {summary['dataset']}:")
    for split, c in summary["splits"].items():
        print(
            f"  {split:5s} {c['conversations']:6,d} conversations  {c['utterances']:7,d} utterances  "
            f"{c['recommendation_turns']:6,d} recommendation turns  {c['gold_labels']:6,d} gold labels"
        )
    for split in summary["missing_splits"]:
        print(f"  missing split: {split}")
    print(f"  items: {summary['items']:,d} ({summary['items_without_metadata']:,d} without metadata)")
    if summary["skipped_total"]:
        print(f"  skipped {summary['skipped_total']} records: {summary['skipped']}")
