"""`python -m eval.judge_quality`: one report of how good a judge is, for any judge (a backend + model, or cosine).

Two views, one table row per judge:

- Held-out teacher pairs (dialogues the student never saw, taken from a student's `judge_summary.json`, else the
  trainer's default split): Spearman of judge vs teacher expected scores, MAE, and keep/drop F1 at the threshold
  (keep = expected score >= threshold). For an untrained base the same numbers say what training added.
- Real TEST turns with gold labels (never trained on): per turn the judge scores the gold items, the first K
  retrieved non-gold candidates (hard negatives, which include real false negatives, so this AUC is a lower
  bound), K random items matched to the gold items' popularity (a judge that only learnt popularity is at 0.5
  here), and K uniform random items. AUC of gold vs each, the share of retrieved candidates kept at the threshold,
  and pairs/s (timed without the request cache, on this machine).

Judges: `local:MODEL`, `cross-encoder:DIR`, `bi-encoder:DIR`, `openai:MODEL@BASE_URL`, `vllm:MODEL`, `cosine` (the retrieval
embedder's query/item cosine, MiniLM by default: the baseline a judge must beat), or `popularity` (the item's
mentions in the train dialogues, blind to the dialogue: it says how much of an AUC popularity alone explains).
The two references have no 0-4 scale, so MAE, F1 and the kept share do not apply to them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from augment import runs
from augment.cli import POSITIVE_INT, float_in
from augment.data.popularity import mention_counts
from augment.llm import make_backend, uses_raw_completion
from augment.llm.base import Backend, expected_score
from augment.score import render_prompt
from augment.teach import sampler_for
from eval.metrics import auc

KINDS = ("gold", "retrieved", "popular_random", "uniform_random")


def average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties get average ranks); NaN when either side is constant or empty."""
    if len(a) != len(b) or len(a) < 2:
        return math.nan
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else math.nan


def keep_f1(teacher: Sequence[float], judge: Sequence[float], threshold: float) -> float:
    """F1 of the judge's keep decisions (score >= threshold) against the teacher's."""
    tp = sum(1 for t, j in zip(teacher, judge) if t >= threshold and j >= threshold)
    predicted, actual = sum(1 for j in judge if j >= threshold), sum(1 for t in teacher if t >= threshold)
    return 2 * tp / (predicted + actual) if predicted + actual else math.nan


class BackendJudge:
    """A judge behind a backend: renders the score prompt, score = expectation of the digit probabilities."""

    scaled = True

    def __init__(self, backend: Backend, context_window: int = 10) -> None:
        self.backend, self.context_window = backend, context_window
        self.name = f"{backend.name}:{backend.model}"

    def scores(self, pairs: Sequence[tuple[dict, dict]]) -> list[float]:
        completion = uses_raw_completion(self.backend)
        prompts = [render_prompt(turn, item, completion, self.context_window) for turn, item in pairs]
        return [r.score for r in self.backend.score_digits(prompts)]

    def close(self) -> None:
        self.backend.close()


class CosineJudge:
    """The retrieval embedder's cosine between the query text and the item text (fresh cache, so it is timed)."""

    scaled = False

    def __init__(self, embedder: str | None = None, context_window: int = 6) -> None:
        from augment.embed import DEFAULT_EMBEDDER, EmbeddingCache, InstructionEmbedder

        self._folder = tempfile.TemporaryDirectory(prefix="cosine-judge-")
        cache = EmbeddingCache(Path(self._folder.name) / "vectors.sqlite")
        self.model = InstructionEmbedder(embedder or DEFAULT_EMBEDDER, "auto", cache)
        self.name, self.context_window = f"cosine:{embedder or DEFAULT_EMBEDDER}", context_window

    def scores(self, pairs: Sequence[tuple[dict, dict]]) -> list[float]:
        from augment.retrieve import query_text
        from augment.templates import render

        queries = self.model.encode_queries([query_text(t, self.context_window) for t, _ in pairs],
                                            render("query_instruction.jinja"))
        documents = self.model.encode_documents([render("item.jinja", **item) for _, item in pairs])
        return [float(q @ d) for q, d in zip(queries, documents)]

    def close(self) -> None:
        self._folder.cleanup()


class PopularityJudge:
    """Scores an item by its mentions in the run's train dialogues, whatever the dialogue: the reference that
    separates what a judge learnt about fit from what popularity alone buys (at 0.5 against popularity-matched
    items by construction; against retrieved neighbours, which are often obscure, it is not)."""

    scaled = False
    name = "popularity:train-mentions"

    def __init__(self, run: Path) -> None:
        self.counts = mention_counts(runs.read_rows(Path(run) / "turns" / "turns.parquet"), "train")

    def scores(self, pairs: Sequence[tuple[dict, dict]]) -> list[float]:
        return [float(self.counts.get(item["item_id"], 0)) for _, item in pairs]

    def close(self) -> None:
        pass


Judge = BackendJudge | CosineJudge | PopularityJudge


def make_judge(spec: str, run: Path) -> Judge:
    """`cosine[:EMBEDDER]`, `popularity`, `local:MODEL`, `cross-encoder:DIR`, `bi-encoder:DIR`, `vllm:MODEL`,
    `openai:MODEL@BASE_URL`; `run` is the run being evaluated (popularity counts its train dialogues)."""
    kind, _, model = spec.partition(":")
    if kind == "cosine":
        return CosineJudge(model or None)
    if kind == "popularity":
        return PopularityJudge(run)
    options: dict[str, Any] = {}
    if kind == "openai":
        model, _, options["base_url"] = model.partition("@")
    return BackendJudge(make_backend(kind, model or None, **options))


def quality_pairs(run: Path, n_turns: int, n_negatives: int, split: str, seed: int) -> list[tuple[dict, str, str]]:
    """(turn, item_id, kind) for the first `n_turns` turns of `split` with gold labels, kinds as in KINDS."""
    all_turns = runs.read_rows(Path(run) / "turns" / "turns.parquet")
    items = runs.read_rows(Path(run) / "items" / "items.parquet")
    turns = [t for t in all_turns if t["split"] == split and t["rec"]][:n_turns]
    candidates: dict[str, list[str]] = defaultdict(list)
    for row in sorted(runs.read_rows(Path(run) / "candidates" / "candidates.parquet"), key=lambda r: r["rank"]):
        candidates[row["turn_uid"]].append(row["item_id"])
    catalog = [i["item_id"] for i in items]
    sampler = sampler_for(all_turns, items, split)
    rng = random.Random(seed)
    pairs = []
    for turn in turns:
        known = set(turn["rec"]) | set(turn["mentioned"])
        retrieved = [i for i in candidates[turn["turn_uid"]] if i not in known][:n_negatives]
        popular: list[str] = []
        while len(popular) < n_negatives:
            popular.append(sampler.sample(rng, known | set(popular)))
        uniform = rng.sample([i for i in catalog if i not in known], n_negatives)
        pairs += [(turn, i, "gold") for i in turn["rec"]] + [(turn, i, "retrieved") for i in retrieved]
        pairs += [(turn, i, "popular_random") for i in popular] + [(turn, i, "uniform_random") for i in uniform]
    return pairs


def teacher_pairs(teacher_dir: Path, heldout: Sequence[str] | None, max_pairs: int) -> list[dict]:
    """Rated teacher rows of the held-out dialogues (default: the trainer's default split)."""
    rows = [r for r in runs.read_rows(Path(teacher_dir) / "teacher.parquet") if r["status"] == "ok"]
    if heldout is None:
        from train.judge_data import Example, split_by_dialogue

        stubs = [Example(r["turn_uid"], r["dialog_id"], r["item_id"], r["kind"], "", ()) for r in rows]
        heldout = sorted({e.dialog_id for e in split_by_dialogue(stubs, 0.1, 0)[1]})
    held = set(heldout)
    return [r for r in rows if r["dialog_id"] in held][:max_pairs]


def evaluate_judge(run: Path, judge: Judge, n_turns: int = 200, n_negatives: int = 10,
                   split: str = "test", seed: int = 0, threshold: float = 3.5, teacher_dir: Path | None = None,
                   heldout: Sequence[str] | None = None, max_teacher_pairs: int = 400) -> dict[str, Any]:
    """The table row of one judge (see the module docstring)."""
    turns = {t["turn_uid"]: t for t in runs.read_rows(Path(run) / "turns" / "turns.parquet")}
    items = {i["item_id"]: i for i in runs.read_rows(Path(run) / "items" / "items.parquet")}
    pairs = quality_pairs(run, n_turns, n_negatives, split, seed)
    started = time.perf_counter()
    scores = judge.scores([(turn, items[item_id]) for turn, item_id, _ in pairs])
    seconds = time.perf_counter() - started
    by_kind: dict[str, list[float]] = defaultdict(list)
    for (_, _, kind), score in zip(pairs, scores):
        if not math.isnan(score):
            by_kind[kind].append(score)
    row: dict[str, Any] = {
        "judge": judge.name, "turns": len({t["turn_uid"] for t, _, _ in pairs}), "pairs": len(pairs),
        "failed": sum(1 for s in scores if math.isnan(s)), "pairs_per_s": len(pairs) / seconds if seconds else None,
        **{f"auc_gold_vs_{kind}": auc(by_kind["gold"], by_kind[kind]) for kind in KINDS[1:]},
        **{f"mean_score_{kind}": sum(v) / len(v) for kind, v in by_kind.items() if v},
        "kept_share_retrieved": (sum(1 for s in by_kind["retrieved"] if s >= threshold) / len(by_kind["retrieved"])
                                 if judge.scaled and by_kind["retrieved"] else None),
    }
    if teacher_dir is not None:
        row |= teacher_agreement(judge, teacher_dir, heldout, turns, items, threshold, max_teacher_pairs)
    return row


def teacher_agreement(judge: Judge, teacher_dir: Path, heldout: Sequence[str] | None,
                      turns: dict, items: dict, threshold: float, max_pairs: int) -> dict[str, Any]:
    rows = teacher_pairs(teacher_dir, heldout, max_pairs)
    scores = judge.scores([(turns[r["turn_uid"]], items[r["item_id"]]) for r in rows])
    kept = [(expected_score(r["probs"]), s) for r, s in zip(rows, scores) if not math.isnan(s)]
    teacher, mine = [t for t, _ in kept], [s for _, s in kept]
    return {
        "teacher_pairs": len(rows),
        "teacher_spearman": spearman(teacher, mine),
        "teacher_mae": sum(abs(t - s) for t, s in kept) / len(kept) if judge.scaled and kept else None,
        "teacher_keep_f1": keep_f1(teacher, mine, threshold) if judge.scaled else None,
    }


COLUMNS = [("judge", "judge", "{}"), ("auc_gold_vs_retrieved", "AUC gold vs retrieved", "{:.3f}"),
           ("auc_gold_vs_popular_random", "AUC gold vs pop.-matched random", "{:.3f}"),
           ("auc_gold_vs_uniform_random", "AUC gold vs uniform random", "{:.3f}"),
           ("kept_share_retrieved", "retrieved kept at 3.5", "{:.1%}"), ("pairs_per_s", "pairs/s", "{:.1f}"),
           ("teacher_spearman", "Spearman vs teacher", "{:.3f}"), ("teacher_mae", "MAE vs teacher", "{:.2f}"),
           ("teacher_keep_f1", "keep F1", "{:.3f}")]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The README's judge table ("-" where a metric does not apply or was not measured)."""
    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)

    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, key, fmt) for key, _, fmt in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def heldout_of(student_dir: Path | None) -> list[str] | None:
    if student_dir is None:
        return None
    return json.loads((Path(student_dir) / "judge_summary.json").read_text())["heldout_dialogues"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.judge_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run with turns/, items/, candidates/ (test turns)")
    p.add_argument("--judge", action="append", required=True, help="a judge spec (repeatable), e.g. cosine, popularity, "
                   "local:smollm2-135m-instruct, bi-encoder:outputs/students/bi")
    p.add_argument("--teacher", type=Path, help="a teacher stage (RUN/teacher) for the held-out agreement columns")
    p.add_argument("--heldout-from", type=Path, help="a student folder whose held-out dialogues to use "
                   "(default: the trainer's default split)")
    p.add_argument("--turns", type=POSITIVE_INT, default=200, help="test turns with gold labels (default 200)")
    p.add_argument("--negatives", type=POSITIVE_INT, default=10, help="negatives of each kind per turn (default 10)")
    p.add_argument("--threshold", type=float_in(0.0, 4.0), default=3.5, help="keep threshold (default 3.5)")
    p.add_argument("--max-teacher-pairs", type=POSITIVE_INT, default=400, help="held-out teacher pairs (default 400)")
    p.add_argument("--split", default="test", help="split of the real turns (default test)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON and the table as markdown here (.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: report(args))


def judge_rows(run: Path, specs: Sequence[str], **evaluate: Any) -> list[dict[str, Any]]:
    """One table row per judge spec, each judge closed before the next is built; a row is printed as it is done."""
    rows = []
    for spec in specs:
        judge = make_judge(spec, run)
        try:
            rows.append(evaluate_judge(run, judge, **evaluate))
        finally:
            judge.close()
        print(json.dumps(runs.json_safe(rows[-1])), flush=True)
    return rows


def report(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = judge_rows(args.run, args.judge, n_turns=args.turns, n_negatives=args.negatives, split=args.split,
                      threshold=args.threshold, teacher_dir=args.teacher, heldout=heldout_of(args.heldout_from),
                      max_teacher_pairs=args.max_teacher_pairs)
    table = markdown_table(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs.json_safe(rows), indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(main())
