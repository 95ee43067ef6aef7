"""A clear answer to every bad argument: one line naming the flag or URL and the fix, exit 2, before any work.

Endpoint cases run against a port on 127.0.0.1 where nothing listens, and against the fake server (which lists
its models on GET /v1/models and can fail every request).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from augment.__main__ import main as run_main
from augment.retrieve import main as retrieve_main
from augment.runs import read_summary
from augment.score import main as score_main
from tests.fake_openai_server import Fault, FakeOpenAIServer


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def run(sample_run, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    for stage in ("turns", "items", "candidates"):
        shutil.copytree(sample_run / stage, tmp_path / "run" / stage)
    return tmp_path / "run"


def refused(main, argv: list[str], capsys) -> str:
    """The one-line error of a command that must refuse its arguments with exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["-1", "7", "nan", "inf", "4.01"])
def test_threshold_outside_the_judge_scale_is_refused(run, value, capsys):
    line = refused(score_main, ["--run", str(run), "--threshold", value], capsys)
    assert "--threshold" in line and "[0, 4]" in line


@pytest.mark.parametrize("flag,value", [("--concurrency", "0"), ("--concurrency", "-3"), ("--timeout", "-1"),
                                        ("--max-turns", "0"), ("--top-n", "-1"), ("--context-window", "-2"),
                                        ("--max-retries", "-1"), ("--chunk-pairs", "0")])
def test_numeric_score_flags_are_validated_at_parse_time(run, flag, value, capsys):
    line = refused(score_main, ["--run", str(run), "--backend", "openai", "--model", "m", flag, value], capsys)
    assert flag in line and value in line


@pytest.mark.parametrize("value", ["0", "-5", "ten"])
def test_retrieve_top_k_must_be_positive(run, value, capsys):
    line = refused(retrieve_main, ["--run", str(run), "--top-k", value], capsys)
    assert "--top-k" in line and ">= 1" in line


def test_base_url_without_scheme_is_refused(run, capsys):
    line = refused(score_main, ["--run", str(run), "--backend", "openai", "--model", "m", "--base-url", "127.0.0.1:9"], capsys)
    assert "--base-url" in line and "http://127.0.0.1:9/v1" in line


def test_unreachable_server_stops_before_any_work_naming_the_url(run, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert score_main(["--run", str(run), "--backend", "openai", "--base-url", url, "--model", "m", "--force"]) == 2
    line = capsys.readouterr().err.strip()
    assert url in line and "model m" in line and "is the server running" in line
    assert read_summary(run, "judgments") is None and read_summary(run, "labels") is None


def test_a_model_the_server_does_not_serve_is_named(run, capsys):
    with FakeOpenAIServer() as server:
        code = score_main(["--run", str(run), "--backend", "openai", "--base-url", server.base_url, "--model", "gpt-x"])
        assert code == 2 and not server.requests
    err = capsys.readouterr().err
    assert "'gpt-x'" in err and "fake-judge" in err and "--model" in err


def test_a_run_where_every_pair_fails_exits_non_zero_and_writes_no_labels(run, capsys):
    with FakeOpenAIServer() as server:
        from augment.score import render_prompt, select_pairs
        from augment.runs import read_rows

        items = {i["item_id"]: i for i in read_rows(run / "items" / "items.parquet")}
        for pair in select_pairs(run, 2, 3):
            server.faults[render_prompt(pair.turn, items[pair.item_id], False, 10)] = Fault("500")
        argv = ["--run", str(run), "--backend", "openai", "--base-url", server.base_url, "--model", "fake-judge",
                "--max-turns", "2", "--top-n", "3", "--max-retries", "1", "--backoff", "0.01"]
        assert score_main(argv) == 1
    captured = capsys.readouterr()
    assert "none of the 6 pairs was judged" in captured.err and "http 500" in captured.err
    assert "a re-run retries exactly these 6 pairs" in captured.out
    assert read_summary(run, "labels") is None
    summary_text = (run / "judgments" / "summary.json").read_text()
    assert "NaN" not in summary_text and json.loads(summary_text)["mean_score"] is None  # valid JSON for other tools


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert run_main(["run", "--out", str(target)]) == 2
    assert f"{target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "not a folder"


def test_retrieve_below_ten_reports_recall_at_its_depth(run, capsys, embedding_cache):
    from augment.retrieve import retrieve

    summary = retrieve(run, top_k=5, cache_path=embedding_cache, force=True)
    assert "recall@5" in summary and "gold recall@5" in capsys.readouterr().out


def test_nothing_passing_the_threshold_is_explained(run, capsys):
    with FakeOpenAIServer() as server:
        argv = ["--run", str(run), "--backend", "openai", "--base-url", server.base_url, "--model", "fake-judge",
                "--max-turns", "2", "--top-n", "3", "--threshold", "4.0"]
        assert score_main(argv) == 0
    out = capsys.readouterr().out
    assert "0 of 6 judged pairs score >= 4.0" in out and "nothing passes" in out and "--backend bi-encoder" in out
    assert read_summary(run, "labels")["synthetic_labels"] == 0


def command_parsers():
    """Every command line of the project, by its `python -m` name (each module exposes `parser()`)."""
    import importlib

    modules = ["augment.__main__", "augment.score", "augment.retrieve", "augment.data.__main__", "augment.simulate.cli",
               "augment.release", "augment.export.__main__", "augment.kg", "augment.teach", "train.judge",
               "train.two_stage", "eval.experiment", "eval.judge_quality"]
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            pytest.fail(f"{name}: {error}")
        yield name, module.parser()


def subparsers_of(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from subparsers_of(sub)


def test_every_command_says_what_it_does_and_every_flag_has_help():
    import argparse

    for name, parser in command_parsers():
        for command in subparsers_of(parser):
            assert command.description and len(command.description) > 40, f"{command.prog}: no description"
            for action in command._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                assert action.help, f"{command.prog} {'/'.join(action.option_strings) or action.dest}: no help text"
