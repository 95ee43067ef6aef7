"""The run-directory convention every stage follows.

A run (`--out outputs/<name>`) holds one folder per stage (`turns/`, `items/`, `candidates/`, ...). A stage writes
its artifact first and its `summary.json` last, so a summary's presence means the stage finished: re-running a
finished stage is a no-op unless forced, and a killed stage simply runs again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

SUMMARY = "summary.json"


class StageMismatch(RuntimeError):
    """A finished stage was asked to run again with different parameters."""


class NothingSucceeded(RuntimeError):
    """A stage ran and every unit of its work failed: what failed is recorded, but the run is not a success."""


def exit_code(action: Callable[[], object]) -> int:
    """Run a stage for the command line: an error the user can fix (bad input, missing files, changed parameters,
    an output folder that cannot be written) prints one line and exits 2 instead of a traceback; a run in which
    nothing succeeded exits 1."""
    try:
        action()
    except (StageMismatch, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)  # BadInput is a ValueError
        return 2
    except NothingSucceeded as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def check_output_dir(run: Path, stages: tuple[str, ...] = ()) -> Path:
    """One-line error before any work when an output folder cannot be written: it (or a parent) is a file, it sits
    in a read-only place, or one of `stages` is a file. Creates the folder; writes and removes a probe file (the
    probe decides: permission bits do not stop root, a read-only mount does). Returns the folder."""
    run = Path(run)
    for path in (run, *run.parents):
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out {run}: {path} is a file, not a folder; choose another run folder")
    for stage in stages:
        if (run / stage).exists() and not (run / stage).is_dir():
            raise ValueError(f"--out {run}: {run / stage} is a file where the {stage}/ stage folder goes; "
                             "remove it or choose another run folder")
    try:
        run.mkdir(parents=True, exist_ok=True)
        for folder in [run, *(run / s for s in stages if (run / s).is_dir())]:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"--out {run} cannot be written ({reason}); choose a writable run folder") from None
    return run


def stage_dir(run: Path, stage: str) -> Path:
    path = Path(run) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_summary(run: Path, stage: str) -> dict[str, Any] | None:
    path = Path(run) / stage / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def finished(run: Path, *stages: str) -> tuple[str, ...]:
    """Those of `stages` that have finished in the run: the optional inputs a stage reads when they are there."""
    return tuple(stage for stage in stages if read_summary(run, stage) is not None)


def require(run: Path, *stages: str) -> None:
    """Fail early, before any model is loaded, when a stage this one reads has not finished."""
    for stage in stages:
        if read_summary(run, stage) is None:
            raise FileNotFoundError(f"{Path(run) / stage} is missing or unfinished: run that stage first "
                                    "(`python -m augment run` chains them)")


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: bare `NaN` is not JSON, and other tools reading a summary choke on it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_summary(run: Path, stage: str, summary: Mapping[str, Any]) -> Path:
    """Write atomically: a reader never sees a half summary, so 'summary exists' keeps meaning 'stage done'."""
    path = stage_dir(run, stage) / SUMMARY
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(summary), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size, mtime and content hash of an input file: a fixed file, an added metadata file or a re-encoded one
    all change it. The hash decides; size and mtime say what a user did when it changed."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    stat = path.stat()
    return {"size": stat.st_size, "mtime": round(stat.st_mtime, 3), "sha256": digest.hexdigest()[:16]}


def artifact_fingerprint(run: Path, stage: str) -> str:
    """Content hash of a finished stage's artifacts (its parquet files) and parameters: what a downstream stage was
    built from. The parameters count because downstream stages report them (a release card shows the threshold)."""
    folder = Path(run) / stage
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.parquet")):
        digest.update(path.name.encode())
        digest.update(file_fingerprint(path)["sha256"].encode())
    params = (read_summary(run, stage) or {}).get("params", {})
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class Stage:
    """One stage of a run: what it is built with (params) and from (upstream stages, input files).

    `needed()` says whether to build: not when it finished with the same params from the same inputs. An upstream
    artifact or input file that changed since makes it rebuild (saying what changed; cached requests still cost
    nothing); other params are an error unless forced, because downstream stages were built from the old ones.
    `finish()` writes the summary with the fingerprints taken when the stage started reading.
    """

    def __init__(self, run: Path, name: str, params: Mapping[str, Any], reads: Sequence[str] = (),
                 files: Sequence[Path] = (), folder: Path | None = None) -> None:
        """`folder` holds the stage's output and summary when it is not RUN/<name> (a release or export
        written elsewhere with --out)."""
        self.run, self.name = Path(run), name
        self.folder = Path(folder) if folder is not None else self.run / name
        self.params = json.loads(json.dumps(dict(params), default=str))
        require(self.run, *reads)
        self.built_from = {
            "stages": {stage: artifact_fingerprint(self.run, stage) for stage in reads},
            "files": {str(Path(f).resolve()): file_fingerprint(f) for f in sorted(files, key=str)},
        }

    def changed_inputs(self, done: Mapping[str, Any]) -> list[str]:
        """Upstream stages and input files that differ from the ones the finished stage was built from."""
        before = done.get("built_from") or {"stages": {}, "files": {}}
        stages = [f"stage {s}" for s in sorted(set(before["stages"]) | set(self.built_from["stages"]))
                  if before["stages"].get(s) != self.built_from["stages"].get(s)]
        files = [f"file {f}" for f in sorted(set(before["files"]) | set(self.built_from["files"]))
                 if (before["files"].get(f) or {}).get("sha256") != (self.built_from["files"].get(f) or {}).get("sha256")]
        return stages + files

    def needed(self, force: bool = False, quiet: bool = False, on_change: str = "error") -> bool:
        """True when the stage must be built. Changed params raise StageMismatch, or rebuild with
        `on_change="rebuild"` (for a stage whose inputs are cached requests, so a rebuild pays only what is new)."""
        done = self.summary()
        if force or done is None:
            return True
        changed_inputs = self.changed_inputs(done)
        if changed_inputs:
            print(f"[{self.name}] rebuilding: {', '.join(changed_inputs)} changed since it was built")
            return True
        previous = done.get("params", {})
        if previous != self.params:
            changed = sorted(k for k in set(previous) | set(self.params) if previous.get(k) != self.params.get(k))
            if on_change == "rebuild":
                print(f"[{self.name}] rebuilding with other parameters ({', '.join(changed)})")
                return True
            raise StageMismatch(
                f"{self.folder} was built with other parameters ({', '.join(changed)}); "
                "re-run with --force to rebuild it and the stages after it"
            )
        if not quiet:
            print(f"[{self.name}] already done in {self.folder} (use --force to redo)")
        return False

    def summary(self) -> dict[str, Any] | None:
        return read_summary(self.folder.parent, self.folder.name)

    def finish(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Write the summary (last, atomically) with params and fingerprints; returns it."""
        full = {**summary, "params": self.params, "built_from": self.built_from}
        write_summary(self.folder.parent, self.folder.name, full)
        return json.loads(json.dumps(full, default=str))


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
