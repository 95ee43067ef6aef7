"""`augment.data download` over real HTTP on 127.0.0.1, from a mirror folder holding the real files."""

from __future__ import annotations

import functools
import shutil
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from augment.data.__main__ import main as data_main
from augment.data.download import download


@pytest.fixture
def mirror(tmp_path):
    """A static file server on loopback over tmp_path/mirror; yields (folder, url)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def redial_zip(shared_data: Path, target: Path, test_bytes: bytes | None = None) -> None:
    with zipfile.ZipFile(target, "w") as zipped:
        for name in ("train_data.jsonl", "test_data.jsonl", "movies_with_mentions.csv"):
            data = (shared_data / "redial" / name).read_bytes()
            zipped.writestr(f"redial_dataset/{name}", test_bytes if name == "test_data.jsonl" and test_bytes else data)


def test_redial_download_verifies_pinned_files(shared_data, mirror, tmp_path):
    folder, url = mirror
    redial_zip(shared_data, folder / "redial_dataset.zip")
    shutil.copy(shared_data / "redial" / "id2info.json", folder)
    statuses = download("redial", tmp_path / "dest", mirror=url)
    assert statuses == {
        "train_data.jsonl": "not pinned",
        "test_data.jsonl": "verified",
        "movies_with_mentions.csv": "verified",
        "id2info.json": "not pinned",
    }
    assert (tmp_path / "dest" / "test_data.jsonl").read_bytes() == (shared_data / "redial" / "test_data.jsonl").read_bytes()


def test_changed_bytes_are_flagged(shared_data, mirror, tmp_path, capsys):
    folder, url = mirror
    redial_zip(shared_data, folder / "redial_dataset.zip", test_bytes=b'{"conversationId": "1"}\n')
    code = data_main(["download", "--dataset", "redial", "--dest", str(tmp_path / "dest"), "--mirror", url])
    assert code == 1
    assert "test_data.jsonl" in capsys.readouterr().out.split("failed or mismatched:")[1]


def test_failed_download_says_what_to_fetch(shared_data, mirror, tmp_path, capsys):
    folder, url = mirror
    shutil.copy(shared_data / "inspired" / "dev.tsv", folder)
    statuses = download("inspired", tmp_path / "dest", mirror=url)
    assert statuses["dev.tsv"] == "verified"
    assert statuses["test.tsv"].startswith("failed: HTTP Error 404")
    out = capsys.readouterr().out
    assert f"download it by hand and save it as {tmp_path / 'dest' / 'test.tsv'}" in out
    assert not (tmp_path / "dest" / "test.tsv").exists()
