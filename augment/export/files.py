"""JSON and JSON-lines writers every export format shares (UTF-8, non-ASCII kept as is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable


def dump(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


def write_lines(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path
