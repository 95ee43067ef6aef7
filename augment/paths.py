"""Where the engine keeps state that outlives a run: embedding and request caches, converted models, venvs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$CRS_AUGMENT_CACHE`, else `~/.cache/crs_augment`; created on first use."""
    path = Path(os.environ.get("CRS_AUGMENT_CACHE") or Path.home() / ".cache" / "crs_augment")
    path.mkdir(parents=True, exist_ok=True)
    return path
