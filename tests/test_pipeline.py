"""`python -m augment run` end to end on the bundled sample, as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from augment.runs import Stage, StageMismatch, read_summary


def test_run_on_embedded_sample(tmp_path):
    """Uses the user's cache folder, as a user's run does (converted models, vectors, requests are reused)."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "augment", "run", "--out", str(out), "--simulate", "1"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    for stage in ("[prepare] redial", "[simulate]", "[retrieve]", "[score]", "[label]"):
        assert stage in first.stdout
    assert read_summary(out, "turns")["splits"]["test"]["conversations"] == 100
    assert read_summary(out, "candidates")["candidates"] == 50 * read_summary(out, "turns")["recommendation_turns"]
    judged = read_summary(out, "judgments")
    assert judged["pairs"] == 12 * 10 and judged["failed"] == 0 and judged["params"]["model"] == "smollm2-135m-instruct"
    assert read_summary(out, "labels")["turns"] == 12
    assert "[run] done in" in first.stdout and "120 pairs judged (0 failed)" in first.stdout  # the closing summary
    assert "nothing passes" in first.stdout  # the embedded judge never reaches 3.5: the run says why
    # the sample's absent train/valid splits are said to be expected, and no weight-loading bar clutters the output
    assert "splits not present (expected: the embedded sample holds the test split only)" in first.stdout
    assert "Loading weights" not in first.stdout + first.stderr and "deprecated" not in first.stderr
    simulated = read_summary(out, "simulated")
    assert simulated["dialogues"] == simulated["items"] - simulated["skipped_total"] == 279  # one item has no metadata
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0
    assert second.stdout.count("already done") == 4 and "[label]" in second.stdout


def test_changed_parameters_need_force(tmp_path):
    Stage(tmp_path, "candidates", {"top_k": 50}).finish({})
    assert not Stage(tmp_path, "candidates", {"top_k": 50}).needed()
    with pytest.raises(StageMismatch, match="top_k"):
        Stage(tmp_path, "candidates", {"top_k": 20}).needed()
    assert Stage(tmp_path, "candidates", {"top_k": 20}).needed(force=True)
