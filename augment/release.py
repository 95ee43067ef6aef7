"""`python -m augment.release`: a run folder -> a Hugging Face dataset (parquet + save_to_disk + dataset card).

Configs: `labels` (every turn, `rec` untouched, `rec_synthetic` = [{item_id, title, score}] on train turns only so
valid/test stay honest), `judgments` (every scored pair with its digit probabilities), `items`, and `simulated`
when the run has one. Parquet files sit under `<config>/<split>.parquet` and the card's YAML lists them, so
`datasets.load_dataset(path, config)` works without any code of ours; `disk/<config>` holds `save_to_disk` copies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets
import pyarrow as pa
import yaml

from augment import plots, runs
from augment.data.records import ITEM_SCHEMA, SPLIT_NAMES, TURN_SCHEMA
from augment.score import histogram, plot_histogram
from augment.data.popularity import BUCKET_RULE, BUCKETS, bucket_of

SYNTHETIC_TYPE = pa.list_(pa.struct([("item_id", pa.string()), ("title", pa.string()), ("score", pa.float64())]))
LABEL_SCHEMA = TURN_SCHEMA.append(pa.field("rec_synthetic", SYNTHETIC_TYPE))
JUDGMENT_SCHEMA = pa.schema(
    [
        ("turn_uid", pa.string()),
        ("split", pa.string()),
        ("item_id", pa.string()),
        ("rank", pa.int64()),
        ("probs", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("prompt_hash", pa.string()),
    ]
)
CONFIGS = ("labels", "judgments", "items", "simulated")
LICENSES = {"redial": "cc-by-4.0", "inspired": "other"}
SOURCES = {
    "redial": "ReDial (Li et al., 2018), https://redialdata.github.io/website/, released under CC BY 4.0.",
    "inspired": "INSPIRED (Hayati et al., 2020), https://github.com/sweetpeach/Inspired; redistributed with "
    "attribution to its authors: check the source repository's terms before reuse.",
}
CITATIONS = """\
```bibtex
@inproceedings{li2018redial,
  title = {Towards Deep Conversational Recommendations},
  author = {Li, Raymond and Kahou, Samira Ebrahimi and Schulz, Hannes and Michalski, Vincent and Charlin, Laurent and Pal, Chris},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2018}
}
@inproceedings{hayati2020inspired,
  title = {INSPIRED: Toward Sociable Recommendation Dialog Systems},
  author = {Hayati, Shirley Anugrah and Kang, Dongyeop and Zhu, Qingxiaoyang and Shi, Weiyan and Yu, Zhou},
  booktitle = {Proceedings of EMNLP},
  year = {2020}
}
```
Also cite the works whose ideas this engine follows: FNSCRS (false-negative label expansion for conversational
recommendation with an LLM judge) and LOT-CRS (Zhao et al., RecSys 2023, "Alleviating the Long-Tail Problem in
Conversational Recommender Systems", simulated dialogues for long-tail items).
"""


class PushFailed(RuntimeError):
    """The release was written locally but could not be uploaded."""


def labelled_turns(run: Path) -> list[dict[str, Any]]:
    """Every turn with `rec_synthetic`; synthetic labels only on train turns, so valid/test evaluation stays honest."""
    labels_path = Path(run) / "labels" / "labels.parquet"
    labels = {row["turn_uid"]: row["rec_synthetic"] for row in runs.read_rows(labels_path)} if labels_path.exists() else {}
    return [
        {**turn, "rec_synthetic": labels.get(turn["turn_uid"], []) if turn["split"] == "train" else []}
        for turn in runs.read_rows(Path(run) / "turns" / "turns.parquet")
    ]


def judgment_rows(run: Path, split_of: Mapping[str, str]) -> list[dict[str, Any]]:
    path = Path(run) / "judgments" / "judgments.parquet"
    rows = runs.read_rows(path) if path.exists() else []
    return [{**row, "split": split_of[row["turn_uid"]]} for row in rows]


def by_split(rows: Sequence[dict], schema: pa.Schema, default: str = "train") -> datasets.DatasetDict:
    """A DatasetDict with the splits present, in train/valid/test order; features from the arrow schema."""
    names = [s for s in SPLIT_NAMES if any(r.get("split", default) == s for r in rows)]
    features = datasets.Features.from_arrow_schema(schema)
    return datasets.DatasetDict(
        {s: datasets.Dataset.from_list([r for r in rows if r.get("split", default) == s], features=features) for s in names}
    )


def build_configs(run: Path) -> dict[str, datasets.DatasetDict]:
    turns = labelled_turns(run)
    configs = {
        "labels": by_split(turns, LABEL_SCHEMA),
        "judgments": by_split(judgment_rows(run, {t["turn_uid"]: t["split"] for t in turns}), JUDGMENT_SCHEMA),
        "items": by_split(runs.read_rows(Path(run) / "items" / "items.parquet"), ITEM_SCHEMA),
    }
    simulated = Path(run) / "simulated" / "turns.parquet"
    if simulated.exists():
        configs["simulated"] = by_split(runs.read_rows(simulated), TURN_SCHEMA)
    return {name: config for name, config in configs.items() if config}


def write_configs(configs: Mapping[str, datasets.DatasetDict], out: Path) -> None:
    """Parquet in the Hub layout (`<config>/<split>.parquet`) and a `save_to_disk` copy under `disk/<config>`.

    Folders of an earlier release into the same place are removed first, so no stale split or config survives.
    """
    for folder in [out / name for name in CONFIGS] + [out / "disk"]:
        shutil.rmtree(folder, ignore_errors=True)
    for name, config in configs.items():
        for split, dataset in config.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(out / name / f"{split}.parquet"))
        config.save_to_disk(str(out / "disk" / name))


def label_stats(turns: Sequence[dict], items: Sequence[dict]) -> dict[str, Any]:
    """Counts per split and label gain per popularity bucket (train, where synthetic labels live)."""
    splits = {}
    for split in [s for s in SPLIT_NAMES if any(t["split"] == s for t in turns)]:
        rows = [t for t in turns if t["split"] == split]
        gold = sum(len(t["rec"]) for t in rows)
        synthetic = sum(len(t["rec_synthetic"]) for t in rows)
        splits[split] = {
            "turns": len(rows),
            "gold_labels": gold,
            "synthetic_labels": synthetic,
            "expansion_ratio": round((gold + synthetic) / gold, 3) if gold else None,
        }
    bucket = {item["item_id"]: bucket_of(item["n_mentions"]) for item in items}
    train = [t for t in turns if t["split"] == "train"]
    gold = Counter(bucket[i] for t in train for i in t["rec"])
    synthetic = Counter(bucket[s["item_id"]] for t in train for s in t["rec_synthetic"])
    buckets = {
        name: {"gold_labels": gold[name], "synthetic_labels": synthetic[name],
               "gain": round((gold[name] + synthetic[name]) / gold[name], 3) if gold[name] else None}
        for name, _, _ in BUCKETS
    }
    return {"splits": splits, "buckets": buckets, "bucket_rule": BUCKET_RULE}


def coverage(turns: Sequence[dict], items: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Items with >= 1 train label per popularity bucket: gold only vs gold + synthetic."""
    train = [t for t in turns if t["split"] == "train"]
    gold = {i for t in train for i in t["rec"]}
    both = gold | {s["item_id"] for t in train for s in t["rec_synthetic"]}
    result = {}
    for name, _, _ in BUCKETS:
        members = {item["item_id"] for item in items if bucket_of(item["n_mentions"]) == name}
        result[name] = {"items": len(members), "gold": len(members & gold), "gold_plus_synthetic": len(members & both)}
    return result


def plot_coverage(cover: Mapping[str, Mapping[str, int]], path: Path) -> Path:
    names = list(cover)
    share = lambda key: [cover[n][key] / cover[n]["items"] if cover[n]["items"] else 0.0 for n in names]
    figure, axis = plots.figure(figsize=(6, 3.5))
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], share("gold"), width=0.4, label="gold (train)", color="#4c72b0")
    axis.bar([i + 0.2 for i in x], share("gold_plus_synthetic"), width=0.4, label="gold + synthetic", color="#55a868")
    axis.set_xticks(list(x), [f"{n}\n({cover[n]['items']:,d} items)" for n in names])
    axis.set_ylabel("items with >= 1 train label")
    axis.set_title("Catalog coverage by popularity bucket")
    axis.legend()
    return plots.save(figure, path, dpi=120)


def provenance(run: Path, judgments: Sequence[dict]) -> dict[str, Any]:
    """How the labels were made, from the stage summaries (the same values the stages checked on re-runs)."""
    candidates = (runs.read_summary(run, "candidates") or {}).get("params", {})
    judge = (runs.read_summary(run, "judgments") or {}).get("params", {})
    labels = (runs.read_summary(run, "labels") or {}).get("params", {})
    return {
        "embedder": candidates.get("embedder"),
        "top_k": candidates.get("top_k"),
        "judge_backend": judge.get("backend"),
        "judge_model": judge.get("model"),
        "prompt_hashes": sorted({r["prompt_hash"] for r in judgments}) or [judge.get("prompt_hash")],
        "threshold": labels.get("threshold"),
        "scored_turns": len({r["turn_uid"] for r in judgments}),
        "scored_pairs": len(judgments),
    }


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def dataset_info(configs: Mapping[str, datasets.DatasetDict]) -> list[dict[str, Any]]:
    """The card's `dataset_info`: per config its splits with `name`, `num_bytes` (the split's Arrow size) and
    `num_examples`, and `dataset_size`. `datasets` ignores a `splits` entry without `num_bytes`, with a warning
    that the YAML is malformed."""
    infos = []
    for name, config in configs.items():
        splits = [{"name": s, "num_bytes": int(d.data.nbytes), "num_examples": d.num_rows} for s, d in config.items()]
        infos.append({"config_name": name, "splits": splits, "dataset_size": sum(s["num_bytes"] for s in splits)})
    return infos


def card_header(dataset: str, configs: Mapping[str, datasets.DatasetDict]) -> dict[str, Any]:
    """The YAML header: license, configs with data_files per split (what load_dataset reads), sizes."""
    return {
        "license": LICENSES[dataset],
        "pretty_name": f"{dataset}-augmented",
        "task_categories": ["text-retrieval", "text-generation"],
        "language": ["en"],
        "tags": ["conversational-recommendation", "synthetic-labels", dataset],
        "size_categories": [size_category(sum(configs["labels"].num_rows.values()))],
        "configs": [
            {"config_name": name, "data_files": [{"split": s, "path": f"{name}/{s}.parquet"} for s in config],
             **({"default": True} if name == "labels" else {})}
            for name, config in configs.items()
        ],
        "dataset_info": dataset_info(configs),
    }


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows])


def card_body(dataset: str, stats: Mapping[str, Any], how: Mapping[str, Any], hist: Mapping[str, int], cover: Mapping) -> str:
    name = f"{dataset}-augmented"
    split_rows = [[s, c["turns"], c["gold_labels"], c["synthetic_labels"], c["expansion_ratio"]]
                  for s, c in stats["splits"].items()]
    bucket_rows = [[b, c["gold_labels"], c["synthetic_labels"], c["gain"]] for b, c in stats["buckets"].items()]
    cover_rows = [[b, c["items"], c["gold"], c["gold_plus_synthetic"]] for b, c in cover.items()]
    return f"""# {name}

{dataset} recommendation turns with **synthetic labels**: movies that fit the seeker's request but that the human
recommender did not name (false negatives). Gold labels (`rec`) are untouched; synthetic labels (`rec_synthetic`)
are added to the **train split only**, so valid/test evaluation stays on the original labels.

Source: {SOURCES[dataset]}

## How it was made
Candidates were retrieved with the embedder `{how['embedder']}` (top-{how['top_k']} per turn, items already mentioned
excluded). Each (dialogue, candidate) pair was rated 0-4 by the judge `{how['judge_model']}` (backend
`{how['judge_backend']}`, prompt hash {', '.join(f'`{h}`' for h in how['prompt_hashes'])}); the score is the expectation
over the digit-token probabilities. Candidates scoring at least **{how['threshold']}** (and not gold or mentioned)
became synthetic labels. Scored: {how['scored_pairs']:,d} pairs over {how['scored_turns']:,d} turns.

## Counts
{table(split_rows, ['split', 'turns', 'gold labels', 'synthetic labels', 'expansion ratio'])}

## Label gain by item popularity (train)
Buckets {stats['bucket_rule']}.

{table(bucket_rows, ['bucket', 'gold labels', 'synthetic labels', 'gain'])}

## Judge scores
{table([[k, v] for k, v in hist.items()], ['score', 'pairs'])}

![score histogram](score_histogram.png)

## Coverage
{table(cover_rows, ['bucket', 'items', 'with gold train label', 'with gold or synthetic train label'])}

![coverage](coverage.png)

## Loading
```python
from datasets import load_dataset
labels = load_dataset("PATH_OR_REPO", "labels")      # also: "judgments", "items", "simulated" when present
```

## Citation
{CITATIONS}"""


def write_card(run: Path, out: Path, configs: Mapping[str, datasets.DatasetDict]) -> dict[str, Any]:
    """README.md (YAML header + body), score histogram and coverage PNGs next to it; returns the stats shown."""
    turns = [row for split in configs["labels"].values() for row in split]
    dataset = turns[0]["dataset"]
    items = list(configs["items"]["train"])
    judgments = [row for split in configs.get("judgments", {}).values() for row in split]
    how = provenance(run, judgments)
    scores = [r["score"] for r in judgments if r["status"] == "ok"]
    stats, cover = label_stats(turns, items), coverage(turns, items)
    plot_histogram(scores, how["threshold"] or 0.0, out / "score_histogram.png")
    plot_coverage(cover, out / "coverage.png")
    header = yaml.safe_dump(card_header(dataset, configs), sort_keys=False)
    body = card_body(dataset, stats, how, histogram(scores), cover)
    (out / "README.md").write_text(f"---\n{header}---\n\n{body}", encoding="utf-8")
    return {**stats, "coverage": cover, "provenance": how}


def release(run: Path, out: Path | None = None, force: bool = False) -> Path:
    """Write the whole release locally (data, disk copy, card, plots); returns its folder. A release already
    built from the run's current stages is kept; one built from older stages is rebuilt."""
    out = runs.check_output_dir(Path(out or Path(run) / "release"))
    optional = runs.finished(run, "judgments", "labels", "simulated")
    stage = runs.Stage(run, "release", {}, reads=("turns", "items", *optional), folder=out)
    if not stage.needed(force):
        return out
    out.mkdir(parents=True, exist_ok=True)
    configs = build_configs(run)
    write_configs(configs, out)
    stats = write_card(run, out, configs)
    stage.finish({"configs": {name: dict(config.num_rows) for name, config in configs.items()},
                  "train_synthetic_labels": stats["splits"].get("train", {}).get("synthetic_labels", 0)})
    print(f"[release] {out}: configs {', '.join(f'{n} {dict(c.num_rows)}' for n, c in configs.items())}; "
          f"train synthetic labels {stats['splits'].get('train', {}).get('synthetic_labels', 0):,d}")
    return out


def push(out: Path, repo_id: str) -> str:
    """Upload the release folder; the token comes from the environment (HF_TOKEN) and is never written."""
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN"))
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset")
    except Exception as error:  # any transport or auth failure: the local release stays complete
        raise PushFailed(
            f"push to {repo_id} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            f"the release is complete in {out}: re-run with --push-to-hub when online, or upload that folder"
        ) from error
    return str(commit)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.release", description=__doc__)
    p.add_argument("--run", type=Path, required=True,
                   help="run folder with turns/, items/ and (optionally) judgments/, labels/, simulated/")
    p.add_argument("--out", type=Path, default=None, help="release folder (default RUN/release)")
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="also upload to this Hub dataset repo, token from HF_TOKEN (default: no upload)")
    p.add_argument("--force", action="store_true", help="rebuild even if the release is current")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    datasets.disable_progress_bars()

    out = Path(args.out or args.run / "release")
    code = runs.exit_code(lambda: release(args.run, out, args.force))
    if code or not args.push_to_hub:
        return code
    try:
        print(f"[release] pushed to {args.push_to_hub}: {push(out, args.push_to_hub)}")
    except PushFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
