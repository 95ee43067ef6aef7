"""The run-directory convention every stage follows.

A run (`--out outputs/<name>`) holds one folder per stage (`turns/`, `items/`, `candidates/`, ...). A stage writes
its artifact first and its `summary.json` last, so a summary's presence means the stage finished: re-running a
finished stage is a no-op unless forced, and a killed stage simply runs again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

SUMMARY = "summary.json"


class StageMismatch(RuntimeError):
    """A finished stage was asked to run again with different parameters."""


def exit_code(action: Callable[[], object]) -> int:
    """Run a stage for the command line: an error the user can fix (bad input, missing files, changed parameters)
    prints one line and exits 2 instead of a traceback."""
    try:
        action()
    except (StageMismatch, ValueError, FileNotFoundError) as error:  # BadInput is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def stage_dir(run: Path, stage: str) -> Path:
    path = Path(run) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_summary(run: Path, stage: str) -> dict[str, Any] | None:
    path = Path(run) / stage / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def require(run: Path, *stages: str) -> None:
    """Fail early, before any model is loaded, when a stage this one reads has not finished."""
    for stage in stages:
        if read_summary(run, stage) is None:
            raise FileNotFoundError(f"{Path(run) / stage} is missing or unfinished: run that stage first "
                                    "(`python -m augment run` chains them)")


def write_summary(run: Path, stage: str, summary: Mapping[str, Any]) -> Path:
    """Write atomically: a reader never sees a half summary, so 'summary exists' keeps meaning 'stage done'."""
    path = stage_dir(run, stage) / SUMMARY
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def should_run(run: Path, stage: str, params: Mapping[str, Any], force: bool) -> bool:
    """True when the stage must (re)run; False when it already finished with these same parameters.

    A finished stage asked for with other parameters is an error rather than a silent re-run or a silent reuse:
    downstream artifacts were built from the old ones, so the user chooses with --force.
    """
    done = read_summary(run, stage)
    if force or done is None:
        return True
    previous = done.get("params", {})
    wanted = json.loads(json.dumps(dict(params), default=str))
    if previous != wanted:
        changed = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
        raise StageMismatch(
            f"{Path(run) / stage} was built with other parameters ({', '.join(changed)}); "
            "re-run with --force to rebuild it and the stages after it"
        )
    print(f"[{stage}] already done in {Path(run) / stage} (use --force to redo)")
    return False


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema | None = None) -> Path:
    """Rows to parquet (atomic rename), the on-disk format of every stage artifact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=schema)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (`python -m augment run` chains them)")
    return pq.read_table(path).to_pylist()
