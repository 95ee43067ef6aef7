"""`python -m augment.retrieve`: top-K semantic candidates per recommendation turn.

Items are embedded from `prompts/item.jinja`, the query is the last utterances of the dialogue rendered by
`prompts/query.jinja` with the instruction of `prompts/query_instruction.jinja`. faiss inner-product search over
normalised vectors; items already mentioned in the dialogue are removed, and each turn gets exactly K distinct
candidates (fewer only when the catalog is smaller). The gold labels' recall among the candidates is printed and
saved: it bounds what the judge can add.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from augment import cli, runs
from augment.embed import DEFAULT_EMBEDDER, INSTRUCTION_FORMATS, EmbeddingCache, InstructionEmbedder
from augment.templates import render, template_hash

RECALL_AT = (10, 50, 100)
TEMPLATES = ("item.jinja", "query.jinja", "query_instruction.jinja")


def query_text(turn: dict[str, Any], context_window: int) -> str:
    return render("query.jinja", context=turn["context"][-context_window:] if context_window else turn["context"])


def search(index: faiss.Index, queries: np.ndarray, exclude: Sequence[set[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows per query with excluded rows removed: search k + (largest exclusion) and filter."""
    depth = min(index.ntotal, k + max((len(e) for e in exclude), default=0))
    scores, rows = index.search(queries, depth)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.zeros((len(queries), k), dtype=np.float32)
    for q, (row_list, score_list) in enumerate(zip(rows, scores)):
        kept = [(r, s) for r, s in zip(row_list, score_list) if r >= 0 and r not in exclude[q]][:k]
        out_rows[q, : len(kept)] = [r for r, _ in kept]
        out_scores[q, : len(kept)] = [s for _, s in kept]
    return out_rows, out_scores


def gold_recall(turns: Sequence[dict], candidate_ids: Sequence[Sequence[str]], cutoffs: Sequence[int]) -> dict[str, float]:
    """Share of gold labels found among each turn's first k candidates."""
    total = sum(len(t["rec"]) for t in turns)
    recall = {}
    for k in cutoffs:
        hits = sum(len(set(t["rec"]) & set(c[:k])) for t, c in zip(turns, candidate_ids))
        recall[f"recall@{k}"] = hits / total if total else float("nan")
    return recall


def retrieve(
    run: Path,
    top_k: int = 50,
    embedder: str = DEFAULT_EMBEDDER,
    instruction_format: str = "auto",
    context_window: int = 6,
    cache_path: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write candidates/candidates.parquet; returns the stage summary."""
    params = {
        "top_k": top_k,
        "embedder": embedder,
        "instruction_format": instruction_format,
        "context_window": context_window,
        "templates": {name: template_hash(name) for name in TEMPLATES},
    }
    stage = runs.Stage(run, "candidates", params, reads=("turns", "items"))
    if not stage.needed(force):
        return stage.summary()
    started = time.perf_counter()
    turns = runs.read_rows(Path(run) / "turns" / "turns.parquet")
    items = runs.read_rows(Path(run) / "items" / "items.parquet")
    model = InstructionEmbedder(embedder, instruction_format, EmbeddingCache(cache_path))
    item_vectors = model.encode_documents([render("item.jinja", **item) for item in items])
    query_vectors = model.encode_queries([query_text(t, context_window) for t in turns], render("query_instruction.jinja"))
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(item_vectors)
    row_of = {item["item_id"]: row for row, item in enumerate(items)}
    exclude = [{row_of[i] for i in t["mentioned"]} for t in turns]
    k = min(top_k, len(items))
    rows, scores = search(index, query_vectors, exclude, k)
    candidate_ids = [[items[r]["item_id"] for r in turn_rows if r >= 0] for turn_rows in rows]
    records = [
        {"turn_uid": t["turn_uid"], "item_id": items[r]["item_id"], "rank": rank, "similarity": float(s)}
        for t, turn_rows, turn_scores in zip(turns, rows, scores)
        for rank, (r, s) in enumerate(zip(turn_rows, turn_scores))
        if r >= 0
    ]
    runs.write_rows(Path(runs.stage_dir(run, "candidates")) / "candidates.parquet", records)
    cutoffs = sorted({c for c in RECALL_AT if c < k} | {k})  # always the recall at the depth retrieved
    summary = {
        "turns": len(turns),
        "items": len(items),
        "candidates": len(records),
        "gold_labels": sum(len(t["rec"]) for t in turns),
        **gold_recall(turns, candidate_ids, cutoffs),
        "recall_by_split": {
            split: gold_recall(*zip(*[(t, c) for t, c in zip(turns, candidate_ids) if t["split"] == split]), cutoffs)
            for split in sorted({t["split"] for t in turns})
        },
        "texts_encoded": model.encoded,
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary = stage.finish(summary)
    recalls = "  ".join(f"{key} {value:.1%}" for key, value in summary.items() if key.startswith("recall@"))
    print(f"[retrieve] {len(turns):,d} turns x {k} candidates; gold {recalls}; {model.encoded:,d} texts embedded "
          f"({len(items) + len(turns) - model.encoded:,d} from cache or repeated) in {summary['seconds']} s")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.retrieve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/ and items/ (from `augment.data "
                                                            "prepare`); writes RUN/candidates/")
    p.add_argument("--top-k", type=cli.POSITIVE_INT, default=50, help="candidates per recommendation turn (default 50)")
    p.add_argument("--embedder", default=DEFAULT_EMBEDDER,
                   help=f"sentence-transformers name or path, e.g. GritLM/GritLM-7B (default: the offline {DEFAULT_EMBEDDER})")
    p.add_argument("--instruction-format", choices=INSTRUCTION_FORMATS, default="auto",
                   help="how the query instruction is given: auto = GritLM format for GritLM models, none for others; "
                        "gritlm, prefix (instruction prepended) or none (default auto)")
    p.add_argument("--context-window", type=cli.NON_NEGATIVE_INT, default=6,
                   help="last N utterances form the query, 0 = all (default 6)")
    p.add_argument("--force", action="store_true", help="rebuild even if finished with the same parameters")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(
        lambda: retrieve(args.run, args.top_k, args.embedder, args.instruction_format, args.context_window, force=args.force)
    )


if __name__ == "__main__":
    sys.exit(main())
