"""Where the engine keeps state that outlives a run: embedding and request caches, converted models, venvs."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """`$CRS_AUGMENT_CACHE`, else `~/.cache/crs_augment`; created on first use."""
    path = Path(os.environ.get("CRS_AUGMENT_CACHE") or Path.home() / ".cache" / "crs_augment")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes: one conversion or venv build at a time, the others wait."""
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
