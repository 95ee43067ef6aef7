"""Synthetic labels in the formats third-party CRS trainers read: `crslab`, `unicrs`, `cfcrs`, `jsonl`.

Every format is built from the same rows as the release's `labels` config (`augment.release.labelled_turns`):
synthetic labels on train turns only, gold labels never changed. `crslab`, `unicrs` and `cfcrs` also carry the
run's knowledge graph (`augment.kg`, built on the way when missing) and need a valid split: the run's own when it
has one, else the last `valid_fraction` of train dialogues (gold labels only, so validation stays honest); a split
the run lacks is written empty, because those readers open all three files.

An export is a stage of its own: OUT/summary.json records what it was built from (fingerprints of the run's turns,
items, labels and kg artifacts) and with what parameters. Exporting again into the same folder is a no-op when
nothing changed, rebuilds (removing the files it wrote before) when the run changed, and is refused when the
parameters differ, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from augment import kg, runs
from augment.data.records import SPLIT_NAMES
from augment.export import cfcrs, crslab, jsonl, unicrs
from augment.release import labelled_turns

GRAPH_FORMATS = ("crslab", "unicrs", "cfcrs")
DEFAULT_VALID_FRACTION = 0.1


@dataclass
class Bundle:
    """What every writer gets: labelled turns (valid assigned), items by id, the run's KG, how valid was made."""

    turns: list[dict[str, Any]]
    items: dict[str, dict[str, Any]]
    kg: kg.Loaded | None
    valid: dict[str, Any]

    def split(self, name: str) -> list[dict[str, Any]]:
        return [t for t in self.turns if t["split"] == name]

    def utterance_links(self, turn: dict[str, Any]) -> list[dict[str, Any]]:
        """The KG's utterance rows of the turn's dialogue (keyed by the run's split, which valid may differ from)."""
        return self.kg.utterances[(turn.get("run_split", turn["split"]), turn["dialog_id"])]


def with_valid(turns: list[dict[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run's valid split, or the last `fraction` of its train dialogues (at least one when there are two or
    more) moved to valid with their synthetic labels dropped; returns the turns and how valid was made."""
    if any(t["split"] == "valid" for t in turns):
        return turns, {"source": "the run's valid split"}
    dialogs = list(dict.fromkeys(t["dialog_id"] for t in turns if t["split"] == "train"))
    count = max(1, round(fraction * len(dialogs))) if len(dialogs) >= 2 else 0
    moved = set(dialogs[len(dialogs) - count:]) if count else set()
    out = [{**t, "split": "valid", "run_split": "train", "rec_synthetic": []}
           if t["split"] == "train" and t["dialog_id"] in moved else t for t in turns]
    dropped = sum(len(t["rec_synthetic"]) for t in turns if t["split"] == "train" and t["dialog_id"] in moved)
    return out, {"source": f"the last {count} of {len(dialogs)} train dialogues in run order (valid fraction "
                           f"{fraction:g}); their synthetic labels are dropped, gold kept",
                 "dialogues": count, "turns": sum(1 for t in out if t["split"] == "valid"),
                 "synthetic_labels_dropped": dropped}


def split_counts(bundle: Bundle) -> dict[str, dict[str, int]]:
    return {split: {"turns": len(rows), "gold_labels": sum(len(t["rec"]) for t in rows),
                    "synthetic_labels": sum(len(t["rec_synthetic"]) for t in rows)}
            for split in SPLIT_NAMES for rows in [bundle.split(split)]}


def load_bundle(run: Path, fmt: str, valid_fraction: float) -> Bundle:
    turns = labelled_turns(run)
    items = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    if fmt not in GRAPH_FORMATS:
        return Bundle(turns, items, None, {"source": "the run's splits, unchanged"})
    turns, valid = with_valid(turns, valid_fraction)
    return Bundle(turns, items, kg.load(run), valid)


def remove_previous(out: Path) -> None:
    previous = runs.read_summary(out.parent, out.name) or {}
    for name in previous.get("files", []):
        (out / name).unlink(missing_ok=True)


def export(run: Path, fmt: str, out: Path, valid_fraction: float = DEFAULT_VALID_FRACTION,
           force: bool = False) -> dict[str, Any]:
    """Write `fmt` files for the run into `out` (unless already current); returns the export's summary."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid fraction must be in (0, 1), got {valid_fraction}")
    run, out = Path(run), Path(out)
    runs.require(run, "turns", "items")
    if fmt in GRAPH_FORMATS:
        kg.build(run)
    params = {"format": fmt, "run": str(run.resolve()),
              "valid_fraction": valid_fraction if fmt in GRAPH_FORMATS else None}
    reads = ("turns", "items", *runs.finished(run, "labels"), *(("kg",) if fmt in GRAPH_FORMATS else ()))
    stage = runs.Stage(run, "export", params, reads=reads, folder=runs.check_output_dir(out))
    if not stage.needed(force):
        return stage.summary()
    out.mkdir(parents=True, exist_ok=True)
    remove_previous(out)
    bundle = load_bundle(run, fmt, valid_fraction)
    paths, details = FORMATS[fmt](bundle, out)
    return stage.finish({"format": fmt, "files": sorted(p.name for p in paths), "valid": bundle.valid,
                         "splits": split_counts(bundle), **details})


FORMATS: dict[str, Callable[[Bundle, Path], tuple[list[Path], dict[str, Any]]]] = {
    "crslab": crslab.write,
    "unicrs": unicrs.write,
    "cfcrs": cfcrs.write,
    "jsonl": jsonl.write,
}
