"""`prepare`: raw ReDial/INSPIRED files -> `turns/turns.parquet` and `items/items.parquet` in a run folder.

Checked before any reading: the output folder can be written (so a failure never leaves a finished items/ stage
next to a missing turns/), and the data folder holds the files the dataset needs (else the error lists them and
how to get them). The stage records the fingerprints of every raw file it read: fix a file, or add a metadata
file, and the next `prepare` rebuilds instead of answering "already done".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from augment import runs
from augment.data import inspired, redial
from augment.data.metadata import get_hint
from augment.data.problems import BadInput, Problems
from augment.data.records import ITEM_SCHEMA, TURN_SCHEMA
from augment.data.sample import SAMPLE_DIR
from augment.data.titles import finalize_titles

DATASETS = ("redial", "inspired")
MODULES = {"redial": redial, "inspired": inspired}
STAGES = ("turns", "items")


def default_data_dir(dataset: str) -> Path:
    """The embedded sample for ReDial; INSPIRED ships none, so its files must be named (and where to get them)."""
    if dataset == "redial":
        return SAMPLE_DIR / "redial"
    raise FileNotFoundError(
        f"{dataset} has no embedded sample (only ReDial does): pass --data-dir with its files "
        f"({expected_files(dataset)}), e.g. after `python -m augment.data download --dataset {dataset} --dest data/{dataset}`"
    )


def expected_files(dataset: str) -> str:
    module = MODULES[dataset]
    splits = " and/or ".join(module.SPLIT_FILES.values())
    catalog = f", plus {module.CATALOG_FILE}" if hasattr(module, "CATALOG_FILE") else ""
    return f"{splits}{catalog}; {module.METADATA_FILE} optional, for genre/cast/plot"


def check_data_dir(dataset: str, data_dir: Path) -> None:
    """Fail before any work when the folder cannot be a dataset: say which files are expected and how to get them."""
    module = MODULES[dataset]
    hint = f"get them with {get_hint(dataset, data_dir)}"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} does not exist: expected {expected_files(dataset)}; {hint}")
    if not any((data_dir / name).is_file() for name in module.SPLIT_FILES.values()):
        raise FileNotFoundError(f"no split file of {dataset} in {data_dir}: expected {expected_files(dataset)}; {hint}")
    catalog = getattr(module, "CATALOG_FILE", None)
    if catalog and not (data_dir / catalog).is_file():
        raise FileNotFoundError(f"{data_dir / catalog} not found: {dataset} needs its movie list to resolve @ids; "
                                f"get it with {get_hint(dataset, data_dir)}")


def _splits(dataset: str, data_dir: Path, source: Any, problems: Problems) -> tuple[dict[str, list], dict[str, dict]]:
    """Turns and counts by split, for whichever split files exist."""
    module = MODULES[dataset]
    turns_by_split, counts, seen = {}, {}, {}
    for split, filename in module.SPLIT_FILES.items():
        path = data_dir / filename
        if not path.exists():
            continue
        turns, conversations, utterances = module.load_split(path, split, source, problems, seen)
        turns_by_split[split] = turns
        counts[split] = {
            "file": filename,
            "conversations": conversations,
            "utterances": utterances,
            "recommendation_turns": len(turns),
            "turns_with_gold": sum(1 for t in turns if t["rec"]),
            "gold_labels": sum(len(t["rec"]) for t in turns),
        }
    return turns_by_split, counts


def _load(dataset: str, data_dir: Path, problems: Problems) -> tuple[dict[str, list], dict, dict, dict, dict | None]:
    """Turns by split, items by id, per-split counts, title-fix counts and mention-link counts."""
    if dataset == "redial":
        items, title_fixes = redial.load_items(data_dir, problems)
        turns_by_split, counts = _splits(dataset, data_dir, items, problems)
        links = None  # ReDial names movies by id: nothing is linked by title
    else:
        linker = inspired.load_linker(data_dir, problems)
        turns_by_split, counts = _splits(dataset, data_dir, linker, problems)
        items = linker.items()
        title_fixes = finalize_titles(items)
        links = linker.link_summary()
    return turns_by_split, items, counts, title_fixes, links


def input_files(dataset: str, data_dir: Path) -> list[Path]:
    """Every raw file the dataset's loader may read that exists: their fingerprints decide whether a prepared run
    is still current (a fixed file, or a metadata file added later, rebuilds it)."""
    module = MODULES[dataset]
    names = [*module.SPLIT_FILES.values(), *getattr(module, "CATALOG_FILE", "").split(), module.METADATA_FILE]
    return [data_dir / name for name in names if (data_dir / name).is_file()]


def _nothing_read(dataset: str, data_dir: Path, problems: Problems) -> BadInput:
    summary = problems.summary()
    reasons = ", ".join(f"{count} {reason}" for reason, count in summary["skipped"].items())
    example = f"; first: {summary['examples'][0]}" if summary["examples"] else ""
    return BadInput(f"no {dataset} conversation could be read from {data_dir}: {summary['skipped_total']} skipped "
                    f"({reasons}){example}")


def prepare(dataset: str, data_dir: Path | None, run: Path, on_error: str = "raise", force: bool = False) -> dict[str, Any]:
    """Build turns and items; returns the stage summary (counts, skipped records, warnings, missing splits)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir(dataset)
    problems = Problems(on_error)
    check_data_dir(dataset, data_dir)
    runs.check_output_dir(run, STAGES)
    params = {"dataset": dataset, "data_dir": str(data_dir.resolve()), "on_error": on_error}
    inputs = input_files(dataset, data_dir)
    stage = runs.Stage(run, "turns", params, files=inputs)
    if not stage.needed(force):
        return stage.summary()
    turns_by_split, items, counts, title_fixes, links = _load(dataset, data_dir, problems)
    if not any(c["conversations"] for c in counts.values()):
        raise _nothing_read(dataset, data_dir, problems)
    item_summary = {
        "items": len(items),
        "items_without_metadata": sum(1 for item in items.values() if not item["has_metadata"]),
        "items_mentioned": sum(1 for item in items.values() if item["n_mentions"] > 0),
        "metadata_file": MODULES[dataset].METADATA_FILE if (data_dir / MODULES[dataset].METADATA_FILE).is_file() else None,
        **title_fixes,
        "warnings": problems.warnings,
    }
    runs.write_rows(runs.stage_dir(run, "items") / "items.parquet", items.values(), ITEM_SCHEMA)
    runs.Stage(run, "items", params, files=inputs).finish(item_summary)
    all_turns = [turn for turns in turns_by_split.values() for turn in turns]
    runs.write_rows(runs.stage_dir(run, "turns") / "turns.parquet", all_turns, TURN_SCHEMA)
    summary = _turns_summary(dataset, counts, item_summary, links, problems)
    summary = stage.finish(summary)
    print_summary(summary)
    return summary


def _turns_summary(dataset: str, counts: dict, item_summary: dict, links: dict | None, problems: Problems) -> dict[str, Any]:
    module = MODULES[dataset]
    return {
        "dataset": dataset,
        "splits": counts,
        "missing_splits": [f"{split} ({name})" for split, name in module.SPLIT_FILES.items() if split not in counts],
        **{key: sum(c[key] for c in counts.values()) for key in next(iter(counts.values())) if key != "file"},
        "mention_links": links,
        **{key: item_summary[key] for key in ("items", "items_without_metadata", "metadata_file", "titles_decoded",
                                               "titles_empty_fallback", "titles_disambiguated")},
        **problems.summary(),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"[prepare] {summary['dataset']}:")
    for split, c in summary["splits"].items():
        print(
            f"  {split:5s} {c['conversations']:6,d} conversations  {c['utterances']:7,d} utterances  "
            f"{c['recommendation_turns']:6,d} recommendation turns  {c['gold_labels']:6,d} gold labels"
        )
    if summary["missing_splits"]:
        sample = Path(summary["params"]["data_dir"]) == (SAMPLE_DIR / "redial").resolve()
        why = "expected: the embedded sample holds the test split only" if sample else "not in the data folder"
        print(f"  splits not present ({why}): {', '.join(summary['missing_splits'])}")
    print(f"  items: {summary['items']:,d} ({summary['items_without_metadata']:,d} without metadata); titles: "
          f"{summary['titles_decoded']} decoded, {summary['titles_empty_fallback']} empty (raw name kept), "
          f"{summary['titles_disambiguated']} disambiguated")
    if summary["mention_links"]:
        print(f"  title links of mentions: {', '.join(f'{k} {v:,d}' for k, v in summary['mention_links'].items())}")
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if summary["skipped_total"]:
        print(f"  skipped {summary['skipped_total']} records: {summary['skipped']}")
