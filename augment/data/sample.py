"""The embedded sample: a small real slice of ReDial that ships inside the package.

It is the default input of `python -m augment run`, so the engine runs end to end right after install. The slice
keeps the first N conversations of a split file verbatim, and the catalog and metadata rows of the movies they
mention (ReDial is CC BY 4.0; attribution in the README).
"""

from __future__ import annotations

import csv
import json
import re
from importlib.resources import files
from pathlib import Path

from augment.data import redial
from augment.data.metadata import parse_metadata_file

SAMPLE_DIR = Path(str(files("augment.data").joinpath("sample")))


def write_redial_sample(
    data_dir: Path, dest: Path, n_conversations: int = 100, split_files: tuple[str, ...] = ("test_data.jsonl",)
) -> dict:
    """Copy the first `n_conversations` of each split file and the catalog/metadata of their movies into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    movie_ids: set[str] = set()
    for split_file in split_files:
        lines = Path(data_dir, split_file).read_text(encoding="utf-8").splitlines(keepends=True)[:n_conversations]
        movie_ids |= {m for line in lines for m in re.findall(r"@(\d+)", line)}
        (dest / split_file).write_text("".join(lines), encoding="utf-8")
    with open(Path(data_dir, redial.CATALOG_FILE), newline="", encoding="utf-8") as src:
        rows = list(csv.reader(src))
    with open(dest / redial.CATALOG_FILE, "w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\n").writerows([rows[0], *(r for r in rows[1:] if r[0] in movie_ids)])
    metadata = parse_metadata_file(Path(data_dir, redial.METADATA_FILE), "redial")
    kept = {k: v for k, v in metadata.items() if k in movie_ids}
    (dest / redial.METADATA_FILE).write_text(json.dumps(kept, ensure_ascii=False, indent=0), encoding="utf-8")
    return {"movies": len(movie_ids), "with_metadata": len(kept)}
