"""The `openai` backend: payloads and reply parsing as pure functions, then fault injection against a fake server."""

from __future__ import annotations

import math
import socket
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from augment.llm.base import DigitScore, expected_score, normalise_digit_probs
from augment.llm.cache import CachedBackend
from augment.llm.openai_backend import (
    OpenAIBackend,
    build_digit_request,
    build_generate_request,
    parse_digit_reply,
    parse_generate_reply,
)
from tests.fake_openai_server import FakeOpenAIServer, Fault, chat_reply, completion_reply, digit_probs, generated_text

ENDPOINTS = ["chat", "completions"]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def fast_backend(base_url: str, endpoint: str = "chat", **overrides: object) -> OpenAIBackend:
    """Small timeout and tiny backoff, so fault tests take fractions of a second."""
    settings: dict = dict(timeout=0.3, max_retries=2, backoff_base=0.005, backoff_cap=0.02, concurrency=8)
    return OpenAIBackend(model="fake-model", base_url=base_url, endpoint=endpoint, **(settings | overrides))


# --- payloads -------------------------------------------------------------------------------------------------


def test_chat_digit_request_asks_one_greedy_token_with_top_logprobs() -> None:
    assert build_digit_request("chat", "m", "judge this", 20, False) == {
        "model": "m",
        "messages": [{"role": "user", "content": "judge this"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
    }


def test_completions_digit_request_sends_raw_prompt_and_integer_logprobs() -> None:
    assert build_digit_request("completions", "m", "Score: ", 5, False) == {
        "model": "m",
        "prompt": "Score: ",
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 5,
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_structured_choices_travel_in_extra_body(endpoint: str) -> None:
    request = build_digit_request(endpoint, "m", "p", 20, True)
    assert request["extra_body"] == {"structured_outputs": {"choice": ["0", "1", "2", "3", "4"]}}
    assert "extra_body" not in build_digit_request(endpoint, "m", "p", 20, False)


def test_generate_requests_carry_sampling_settings() -> None:
    settings = {"max_tokens": 64, "temperature": 0.7, "seed": 3}
    assert build_generate_request("chat", "m", "hi", 64, 0.7, 3) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], **settings
    }
    assert build_generate_request("completions", "m", "hi", 64, 0.7, 3) == {"model": "m", "prompt": "hi", **settings}
    assert build_generate_request("chat", "m", "hi", 64, 0.7, 3, top_logprobs=5) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], **settings, "logprobs": True, "top_logprobs": 5
    }
    assert build_generate_request("completions", "m", "hi", 64, 0.7, 3, 5)["logprobs"] == 5


# --- reply parsing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint, reply", [("chat", chat_reply), ("completions", completion_reply)])
def test_digit_reply_is_renormalised_over_digits(endpoint: str, reply) -> None:
    parsed = parse_digit_reply(endpoint, reply({"logprobs": True}, "a prompt", None))
    assert parsed.ok and parsed.error is None
    assert parsed.probs == pytest.approx(digit_probs("a prompt"), abs=1e-12)


def chat_top(pairs: list[tuple[str, float]]) -> dict:
    entries = [{"token": t, "logprob": math.log(p)} for t, p in pairs]
    return {"choices": [{"logprobs": {"content": [{"token": pairs[0][0], "top_logprobs": entries}]}}]}


def completion_top(pairs: list[tuple[str, float]]) -> dict:
    return {"choices": [{"logprobs": {"top_logprobs": [{t: math.log(p) for t, p in pairs}]}}]}


def test_leading_space_tokens_count_as_their_digit_and_missing_digits_get_zero() -> None:
    pairs = [(" 3", 0.3), ("3", 0.1), ("1", 0.2), ("Yes", 0.4)]
    for parsed in (parse_digit_reply("chat", chat_top(pairs)), parse_digit_reply("completions", completion_top(pairs))):
        assert parsed.probs == pytest.approx((0.0, 1 / 3, 0.0, 2 / 3, 0.0))
        assert parsed.score == pytest.approx(1 / 3 + 2)


def test_chat_tokens_with_the_same_text_add_up() -> None:
    parsed = parse_digit_reply("chat", chat_top([("4", 0.2), ("4", 0.2), ("0", 0.4)]))
    assert parsed.probs == pytest.approx((0.5, 0.0, 0.0, 0.0, 0.5))


@pytest.mark.parametrize("to_reply", [chat_top, completion_top])
def test_no_digit_among_top_tokens_fails_and_names_them(to_reply) -> None:
    parsed = parse_digit_reply("chat" if to_reply is chat_top else "completions", to_reply([("The", 0.9), ("A", 0.1)]))
    assert not parsed.ok and parsed.error == "no digit among top tokens: ['The', 'A']"
    assert math.isnan(parsed.score)


@pytest.mark.parametrize(
    "endpoint, reply",
    [
        ("chat", {"choices": [{"logprobs": None}]}),
        ("chat", {"choices": [{"logprobs": {"content": []}}]}),
        ("chat", {"choices": [{"logprobs": {"content": None}}]}),
        ("completions", {"choices": [{"logprobs": None}]}),
        ("completions", {"choices": [{"logprobs": {"top_logprobs": []}}]}),
        ("completions", {"choices": [{"logprobs": {"top_logprobs": [None]}}]}),
    ],
)
def test_reply_without_logprobs_fails(endpoint: str, reply: dict) -> None:
    assert parse_digit_reply(endpoint, reply) == DigitScore(None, error="no logprobs in reply")


WRONG_SHAPES = [{"choices": []}, {}, "text", None, {"choices": [{"logprobs": "yes"}]}]


@pytest.mark.parametrize(
    "endpoint, reply",
    [(e, r) for e in ENDPOINTS for r in WRONG_SHAPES]
    + [
        ("chat", {"choices": [{"logprobs": {"content": [{}]}}]}),
        ("completions", {"choices": [{"logprobs": {"top_logprobs": ["3"]}}]}),
    ],
)
def test_reply_of_the_wrong_shape_is_malformed(endpoint: str, reply: object) -> None:
    parsed = parse_digit_reply(endpoint, reply)
    assert not parsed.ok and parsed.error.startswith("malformed reply: ")


def test_generate_reply_carries_per_token_logprobs_and_usage_from_either_endpoint() -> None:
    chat = {"choices": [{"message": {"content": "Fine. Rating: 3"}, "logprobs": {"content": [
        {"token": "Fine. Rating: ", "logprob": -0.1, "top_logprobs": [{"token": "Fine. Rating: ", "logprob": -0.1}]},
        {"token": "3", "logprob": -0.4, "top_logprobs": [{"token": "3", "logprob": -0.4}, {"token": "4", "logprob": -1.2},
                                                          {"token": " 3", "logprob": -2.0}]}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 2}}
    answer = parse_generate_reply("chat", chat)
    assert (answer.text, answer.tokens_in, answer.tokens_out) == ("Fine. Rating: 3", 120, 2)
    token, top = answer.token_logprobs[1]
    assert token == "3" and top["4"] == -1.2 and (top["3"], top[" 3"]) == (-0.4, -2.0)
    completion = {"choices": [{"text": "Rating: 4", "logprobs": {"tokens": ["Rating: ", "4"],
                                                                   "top_logprobs": [{"Rating: ": -0.01}, {"4": -0.2, "2": -1.9}]}}]}
    answer = parse_generate_reply("completions", completion)
    assert answer.token_logprobs == (("Rating: ", {"Rating: ": -0.01}), ("4", {"4": -0.2, "2": -1.9}))
    assert answer.tokens_in is None and parse_generate_reply("chat", {"choices": [{"message": {"content": "x"}}]}).token_logprobs is None


def test_generate_reply_parsing() -> None:
    assert parse_generate_reply("chat", {"choices": [{"message": {"content": "hi"}}]}).text == "hi"
    assert parse_generate_reply("completions", {"choices": [{"text": "hi"}]}).text == "hi"
    assert parse_generate_reply("chat", {"choices": [{"message": {"content": None}}]}).error == "no text in reply"
    assert parse_generate_reply("completions", {"choices": []}).error.startswith("malformed reply: ")


def test_digit_expectation_math() -> None:
    assert normalise_digit_probs({"2": math.log(0.25), " 2": math.log(0.25), "x": 0.0}) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert normalise_digit_probs({"0": math.log(0.1), "4": math.log(0.3)}) == pytest.approx((0.25, 0, 0, 0, 0.75))
    assert normalise_digit_probs({"yes": -0.1, "10": -1.0}) is None
    assert expected_score((0.25, 0.0, 0.0, 0.0, 0.75)) == pytest.approx(3.0)
    assert DigitScore((0.0, 0.5, 0.5, 0.0, 0.0)).score == pytest.approx(1.5)


# --- fault injection --------------------------------------------------------------------------------------------

FAULTS = {
    "rate limited twice": Fault("429", times=2, retry_after="0"),
    "server error once": Fault("500", times=1),
    "server error always": Fault("500"),
    "too slow always": Fault("slow", delay_s=0.8),
    "malformed body": Fault("malformed"),
    "no logprobs": Fault("no_logprobs"),
    "no digits": Fault("no_digits"),
    "spaced digits": Fault("leading_space"),
}
EXPECTED_ERRORS = {
    "server error always": "http 500 after 3 tries: boom",
    "too slow always": "timeout to {url} (model fake-model) after 3 tries",  # names the server it could not get
    "no logprobs": "no logprobs in reply",
    "no digits": "no digit among top tokens: ['The', 'A', '\\n']",
}


def faulty_prompts() -> list[str]:
    return ["fine 1", *FAULTS, "fine 2"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_prompt_ends_scored_or_failed_with_its_reason(server: FakeOpenAIServer, endpoint: str) -> None:
    server.faults = {prompt: replace(fault) for prompt, fault in FAULTS.items()}
    prompts = faulty_prompts()
    results = fast_backend(server.base_url, endpoint).score_digits(prompts)

    assert len(results) == len(prompts)
    errors = {p: r.error for p, r in zip(prompts, results) if not r.ok}
    assert errors.pop("malformed body").startswith("malformed reply: invalid JSON")
    assert errors == {prompt: reason.format(url=server.base_url) for prompt, reason in EXPECTED_ERRORS.items()}
    for prompt, result in zip(prompts, results):
        if result.ok:
            assert result.probs == pytest.approx(digit_probs(prompt), abs=1e-12)
    tries = Counter(server.prompts_requested())
    assert tries["rate limited twice"] == 3 and tries["server error once"] == 2 and tries["server error always"] == 3
    assert tries["malformed body"] == tries["no digits"] == tries["fine 1"] == 1  # a bad reply is not a retry case
    assert {path for path, _ in server.requests} == {f"/v1/{endpoint.replace('chat', 'chat/completions')}"}


def test_retry_after_is_the_wait(server: FakeOpenAIServer) -> None:
    server.faults = {"p": Fault("429", times=1, retry_after="0.4")}
    start = time.monotonic()
    [result] = fast_backend(server.base_url).score_digits(["p"])
    assert result.ok and time.monotonic() - start >= 0.4  # the backoff alone would wait at most 0.02 s
    assert server.prompts_requested() == ["p", "p"]


def test_retry_after_is_capped(server: FakeOpenAIServer) -> None:
    server.faults = {"p": Fault("429", times=2, retry_after="30")}
    start = time.monotonic()
    [result] = fast_backend(server.base_url, retry_after_cap=0.05).score_digits(["p"])
    assert result.ok and time.monotonic() - start < 5


def test_rate_limit_that_never_ends_fails_with_reason(server: FakeOpenAIServer) -> None:
    server.faults = {"p": Fault("429", retry_after="0")}
    [result] = fast_backend(server.base_url, max_retries=1).score_digits(["p"])
    assert result.error == "http 429 after 2 tries: rate limited"


def test_unreachable_server_fails_with_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    results = fast_backend(url, max_retries=1).score_digits(["a", "b"])
    assert [r.error for r in results] == [f"connection error to {url} (model fake-model) after 2 tries"] * 2


def test_concurrency_is_bounded(server: FakeOpenAIServer) -> None:
    prompts = [f"slow {i}" for i in range(6)]
    server.faults = {p: Fault("slow", delay_s=0.15) for p in prompts}
    results = fast_backend(server.base_url, concurrency=2, timeout=2.0).score_digits(prompts)
    assert all(r.ok for r in results)
    assert server.max_in_flight == 2


def test_structured_choices_and_params_reach_the_server(server: FakeOpenAIServer) -> None:
    backend = fast_backend(server.base_url, "completions", structured_choices=True, top_logprobs=7)
    assert backend.score_digits(["p"])[0].ok
    [(_, body)] = server.requests
    assert body["structured_outputs"] == {"choice": ["0", "1", "2", "3", "4"]} and body["logprobs"] == 7
    assert backend.params() == {"endpoint": "completions", "top_logprobs": 7, "generate_top_logprobs": 5,
                                "structured_choices": True}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_generate_retries_and_reports(server: FakeOpenAIServer, endpoint: str) -> None:
    server.faults = {"flaky": Fault("500", times=1), "broken": Fault("500"), "garbled": Fault("malformed")}
    prompts = ["ok", "flaky", "broken", "garbled"]
    results = fast_backend(server.base_url, endpoint).generate(prompts, max_tokens=32, temperature=0.5, seed=9)
    assert [r.text for r in results[:2]] == [generated_text("ok"), generated_text("flaky")]
    assert results[2].error == "http 500 after 3 tries: boom"
    assert results[3].error.startswith("malformed reply: invalid JSON")
    body = server.requests[0][1]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (32, 0.5, 9)


def test_api_key_defaults_to_env_then_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert fast_backend("http://x/v1")._api_key == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    backend = fast_backend("http://x/v1")
    assert backend._api_key == "sk-test"
    assert "sk-test" not in repr(backend) and "sk-test" not in str(backend.params())


# --- with the cache ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_rerun_through_cache_requests_only_the_failed_prompts(
    server: FakeOpenAIServer, endpoint: str, tmp_path: Path
) -> None:
    server.faults = {
        "broken": Fault("500"),
        "garbled": Fault("malformed", times=1),
        "no digits": Fault("no_digits", times=1),
        "rate limited": Fault("429", times=1, retry_after="0"),
    }
    prompts = ["a", "broken", "b", "garbled", "no digits", "rate limited", "c"]
    first_cache = CachedBackend(fast_backend(server.base_url, endpoint), tmp_path / "requests.sqlite")
    first = first_cache.score_digits(prompts)
    first_cache.close()
    assert [r.ok for r in first] == [True, False, True, False, False, True, True]
    assert first_cache.failures == Counter(
        {"http 500 after 3 tries": 1, "malformed reply": 1, "no digit among top tokens": 1}
    )

    server.requests.clear()
    second_cache = CachedBackend(fast_backend(server.base_url, endpoint), tmp_path / "requests.sqlite")
    second = second_cache.score_digits(prompts)
    assert sorted(server.prompts_requested()) == ["broken"] * 3 + ["garbled", "no digits"]
    for before, after in zip(first, second):
        if before.ok:
            assert after.probs == before.probs  # exactly: read back from disk, not recomputed
    assert [r.ok for r in second] == [True, False, True, True, True, True, True]
    assert (second_cache.hits, second_cache.misses) == (4, 3)
    assert second_cache.stored_failures() == Counter({"http 500 after 3 tries": 1})
