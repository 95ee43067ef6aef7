"""`download`: fetch the official ReDial / INSPIRED releases for users with internet.

Each file's sha256 is printed, and checked where the official bytes are pinned below (the pins are the files
in this project's reference copy, byte-identical to the releases). A failed download says what to fetch by hand
and where to put it. Metadata files (id2info*.json) come from third-party repositories: fetched when reachable,
never required.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REDIAL_ZIP = "https://github.com/ReDialData/website/raw/data/redial_dataset.zip"
INSPIRED_BASE = "https://raw.githubusercontent.com/sweetpeach/Inspired/782d7c1845d11f75d2542809c7f2a51b63ef0304/data/dialog_data"
IEVALM_BASE = "https://raw.githubusercontent.com/RUCAIBox/iEvaLM-CRS/main/data"

PINNED_SHA256 = {
    "redial/test_data.jsonl": "d7781750787d104ac005e829cc7e6277d25b14644a223b0c2445aaaded6b19ac",
    "redial/movies_with_mentions.csv": "0d408daa474ac95b959a739a261dddd997dd800f5ea585da15a434a26187dbb0",
    "inspired/dev.tsv": "15a955be002222ba9e95f886802e06a91fb5e457f8a25deae3e7908d58faa947",
    "inspired/test.tsv": "a10f63ff26045158460730d4829ffba74bee86fb744d9f48c1c1c511ef609993",
}


@dataclass(frozen=True)
class Remote:
    """One file to fetch; a zip lists the members to extract into the destination."""

    url: str
    filename: str
    required: bool = True
    extract: tuple[str, ...] = ()


SOURCES: dict[str, list[Remote]] = {
    "redial": [
        Remote(REDIAL_ZIP, "redial_dataset.zip", extract=("train_data.jsonl", "test_data.jsonl", "movies_with_mentions.csv")),
        Remote(f"{IEVALM_BASE}/redial/id2info.json", "id2info.json", required=False),
    ],
    "inspired": [
        *(Remote(f"{INSPIRED_BASE}/{name}", name) for name in ("train.tsv", "dev.tsv", "test.tsv")),
        Remote(f"{IEVALM_BASE}/inspired/id2info.json", "id2info_inspired.json", required=False),
    ],
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
    tmp.replace(target)


def _extract(archive: Path, members: tuple[str, ...], dest: Path) -> list[Path]:
    """Pull the named files out of the zip, wherever they sit inside it."""
    found = []
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            name = Path(info.filename).name
            if name in members and not info.is_dir():
                (dest / name).write_bytes(zipped.read(info))
                found.append(dest / name)
    return found


def _check(dataset: str, path: Path) -> str:
    """'verified', 'MISMATCH (expected ...)' or 'not pinned', printed next to the file's sha256."""
    digest = sha256(path)
    expected = PINNED_SHA256.get(f"{dataset}/{path.name}")
    status = "not pinned" if expected is None else "verified" if digest == expected else f"MISMATCH (expected {expected})"
    print(f"  {path.name:28s} sha256 {digest}  {status}")
    return status


def download(dataset: str, dest: Path, mirror: str | None = None, timeout: float = 60.0) -> dict[str, str]:
    """Fetch `dataset` into `dest`; returns {file: status}. `mirror` replaces every source URL's folder."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    statuses: dict[str, str] = {}
    for remote in SOURCES[dataset]:
        url = f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url
        target = dest / remote.filename
        try:
            _fetch(url, target, timeout)
        except OSError as error:
            kind = "required" if remote.required else "optional"
            print(f"  could not fetch {url} ({error}); {kind}: download it by hand and save it as {target}")
            statuses[remote.filename] = f"failed: {error}"
            continue
        files = _extract(target, remote.extract, dest) if remote.extract else [target]
        missing = set(remote.extract) - {f.name for f in files}
        for name in sorted(missing):
            statuses[name] = f"failed: not in {remote.filename}"
            print(f"  {name} not found inside {remote.filename}")
        for path in files:
            statuses[path.name] = _check(dataset, path)
    return statuses
