"""Retrieval on the embedded real sample: exclusions, K distinct candidates, the cache, recall bookkeeping."""

from __future__ import annotations

from collections import defaultdict

import faiss
import numpy as np

from augment.embed import EmbeddingCache, InstructionEmbedder, format_inputs
from augment.retrieve import gold_recall, retrieve, search
from augment.runs import read_rows, read_summary


def candidates_by_turn(run):
    grouped = defaultdict(list)
    for row in read_rows(run / "candidates" / "candidates.parquet"):
        grouped[row["turn_uid"]].append(row)
    return grouped


def test_candidates_exclude_mentioned_and_are_distinct(sample_run):
    turns = read_rows(sample_run / "turns" / "turns.parquet")
    grouped = candidates_by_turn(sample_run)
    assert set(grouped) == {t["turn_uid"] for t in turns}
    for turn in turns:
        rows = grouped[turn["turn_uid"]]
        ids = [r["item_id"] for r in rows]
        assert len(ids) == 50 and len(set(ids)) == 50
        assert not set(ids) & set(turn["mentioned"])
        assert [r["rank"] for r in rows] == list(range(50))
        similarities = [r["similarity"] for r in rows]
        assert similarities == sorted(similarities, reverse=True)


def test_rerun_embeds_nothing(sample_run, embedding_cache):
    summary = retrieve(sample_run, top_k=50, cache_path=embedding_cache, force=True)
    assert summary["texts_encoded"] == 0
    assert summary["recall@50"] == read_summary(sample_run, "candidates")["recall@50"]


def test_embedder_counts_encoder_calls(tmp_path):
    embedder = InstructionEmbedder(cache=EmbeddingCache(tmp_path / "e.sqlite"))
    first = embedder.encode_documents(["Heat (1995)\nGenres: crime", "Up (2009)\nGenres: animation"])
    assert embedder.encoded == 2
    again = embedder.encode_documents(["Up (2009)\nGenres: animation", "Heat (1995)\nGenres: crime"])
    assert embedder.encoded == 2
    np.testing.assert_array_equal(first[::-1], again)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    embedder.encode_queries(["Seeker: I love heist movies"], "Retrieve movies")
    assert embedder.encoded == 3


def test_gold_is_found_better_than_chance(sample_run):
    summary = read_summary(sample_run, "candidates")
    chance = 50 / summary["items"]
    assert summary["recall@50"] > 1.5 * chance


def test_instruction_formats():
    assert format_inputs(["x"], "Find movies", "gritlm") == ["<|user|>\nFind movies\n<|embed|>\nx"]
    assert format_inputs(["x"], None, "gritlm") == ["<|embed|>\nx"]
    assert format_inputs(["x"], "Find movies", "prefix") == ["Find movies: x"]
    assert format_inputs(["x"], "Find movies", "none") == ["x"]


def test_search_filters_and_recall():
    vectors = np.eye(4, dtype=np.float32)
    index = faiss.IndexFlatIP(4)
    index.add(vectors)
    query = np.array([[1.0, 0.5, 0.2, 0.1]], dtype=np.float32)
    rows, scores = search(index, query, [{0}], k=2)
    assert rows.tolist() == [[1, 2]]
    assert np.allclose(scores, [[0.5, 0.2]])
    turns = [{"rec": ["a", "b"]}, {"rec": ["c"]}]
    assert gold_recall(turns, [["x", "a"], ["c"]], [1, 2]) == {"recall@1": 1 / 3, "recall@2": 2 / 3}
