"""Shared fixtures: the real data in ../shared/data (never the network), and run folders built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CRS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "redial" / "test_data.jsonl").exists():
        pytest.fail(f"real data not found in {SHARED_DATA} (set CRS_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """One embedding cache for the session, so item vectors are encoded once across tests."""
    return tmp_path_factory.mktemp("cache") / "embeddings.sqlite"


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, embedding_cache) -> Path:
    """The embedded ReDial sample, prepared and retrieved (top-50) once for the session."""
    from augment.data.prepare import prepare
    from augment.data.sample import SAMPLE_DIR
    from augment.retrieve import retrieve

    run = tmp_path_factory.mktemp("sample_run")
    prepare("redial", SAMPLE_DIR / "redial", run)
    retrieve(run, top_k=50, cache_path=embedding_cache)
    return run
