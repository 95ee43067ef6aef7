"""The `openai` backend: any OpenAI-compatible endpoint (the OpenAI API, a vLLM server) through the `openai` SDK.

Requests for a batch run concurrently on one event loop, bounded by a semaphore. Tenacity is the only retry layer
(the SDK's own retries are switched off): exponential backoff with full jitter on 429, 5xx, timeouts and
connection errors, or the server's Retry-After when it sends one. Payload building and reply parsing are pure
module-level functions, tested apart from the transport; the transport only moves JSON text. Every failure comes
back as a value carrying a short reason, one result per prompt, in order.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from functools import partial
from typing import Any, Awaitable, Callable, Iterable, Literal, Mapping, Sequence, TypeVar

from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI, OpenAI
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from augment.llm.base import DIGITS, Backend, DigitScore, Generation, normalise_digit_probs

Endpoint = Literal["chat", "completions"]
Result = TypeVar("Result", DigitScore, Generation)

MALFORMED = (KeyError, IndexError, TypeError, AttributeError, ValueError)  # what a reply of the wrong shape raises
SHOWN_TOKENS = 10  # top tokens quoted in a "no digit" reason


def build_digit_request(
    endpoint: Endpoint, model: str, prompt: str, top_logprobs: int, structured: bool
) -> dict[str, Any]:
    """SDK keyword arguments for one greedy token whose top logprobs are the judge's answer distribution.

    `structured` asks vLLM to constrain the sampled token to a digit (`structured_outputs` is not an OpenAI
    parameter, so it travels in `extra_body`).
    """
    request = _prompt_fields(endpoint, model, prompt) | {"max_tokens": 1, "temperature": 0.0}
    if endpoint == "chat":
        request |= {"logprobs": True, "top_logprobs": top_logprobs}
    else:
        request["logprobs"] = top_logprobs
    if structured:
        request["extra_body"] = {"structured_outputs": {"choice": list(DIGITS)}}
    return request


def build_generate_request(
    endpoint: Endpoint, model: str, prompt: str, max_tokens: int, temperature: float, seed: int,
    top_logprobs: int = 0,
) -> dict[str, Any]:
    """SDK keyword arguments for free text; with `top_logprobs` > 0 the reply carries that many alternatives per
    generated token (a teacher reads its rating's digit probabilities from them)."""
    settings = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    if top_logprobs and endpoint == "chat":
        settings |= {"logprobs": True, "top_logprobs": top_logprobs}
    elif top_logprobs:
        settings |= {"logprobs": top_logprobs}
    return _prompt_fields(endpoint, model, prompt) | settings


def _prompt_fields(endpoint: Endpoint, model: str, prompt: str) -> dict[str, Any]:
    """The rendered prompt as one user message (chat, the server applies its template) or as raw text."""
    if endpoint == "chat":
        return {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return {"model": model, "prompt": prompt}


def parse_digit_reply(endpoint: Endpoint, reply: Any) -> DigitScore:
    """Renormalised P(0..4) from a decoded reply, or a failure saying what the reply lacked."""
    try:
        top = _answer_top_logprobs(endpoint, reply)
    except MALFORMED as exc:
        return DigitScore(None, error=f"malformed reply: {type(exc).__name__} {exc}")
    if not top:
        return DigitScore(None, error="no logprobs in reply")
    probs = normalise_digit_probs(top)
    if probs is None:
        return DigitScore(None, error=f"no digit among top tokens: {list(top)[:SHOWN_TOKENS]}")
    return DigitScore(probs)


def _answer_top_logprobs(endpoint: Endpoint, reply: Any) -> dict[str, float] | None:
    """Token -> logprob at the first generated position; None when the reply carries no logprobs."""
    logprobs = reply["choices"][0].get("logprobs")
    if not logprobs:
        return None
    if endpoint == "chat":
        content = logprobs.get("content")
        return _merge_logprobs((e["token"], e["logprob"]) for e in content[0]["top_logprobs"]) if content else None
    positions = logprobs.get("top_logprobs")
    return _merge_logprobs(positions[0].items()) if positions and positions[0] else None


def _merge_logprobs(pairs: Iterable[tuple[str, float | None]]) -> dict[str, float]:
    """Token text -> logprob, adding up distinct token ids that decode to the same text; null logprobs dropped."""
    merged: dict[str, float] = {}
    for token, logprob in pairs:
        if logprob is None:
            continue
        if token in merged:
            high, low = max(merged[token], logprob), min(merged[token], logprob)
            logprob = high + math.log1p(math.exp(low - high))
        merged[token] = float(logprob)
    return merged


def parse_generate_reply(endpoint: Endpoint, reply: Any) -> Generation:
    """The generated text from a decoded reply, or a failure; per-token top logprobs and the token counts when
    the reply carries them (`usage`, `logprobs`), None otherwise."""
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        token_logprobs = _generated_logprobs(endpoint, choice.get("logprobs"))
    except MALFORMED as exc:
        return Generation(None, error=f"malformed reply: {type(exc).__name__} {exc}")
    if not isinstance(text, str):
        return Generation(None, error="no text in reply")
    usage = reply.get("usage") or {}
    return Generation(text, token_logprobs=token_logprobs, tokens_in=usage.get("prompt_tokens"),
                      tokens_out=usage.get("completion_tokens"))


def _generated_logprobs(endpoint: Endpoint, logprobs: Any) -> tuple[tuple[str, dict[str, float]], ...] | None:
    """(token, {alternative: logprob}) per generated token, from either endpoint's logprobs layout."""
    if not logprobs:
        return None
    if endpoint == "chat":
        content = logprobs.get("content") or []
        return tuple((e["token"], _merge_logprobs((t["token"], t["logprob"]) for t in e.get("top_logprobs") or []))
                     for e in content) or None
    tokens, tops = logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []
    return tuple((token, _merge_logprobs((top or {}).items())) for token, top in zip(tokens, tops)) or None


def is_retryable(exc: BaseException) -> bool:
    """Transient failures: rate limits, server errors, timeouts, dropped connections (timeouts are a subclass)."""
    if isinstance(exc, APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, APIConnectionError)


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's requested wait (`retry-after-ms`, or `Retry-After` in seconds); None when absent or a date."""
    if not isinstance(exc, APIStatusError):
        return None
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, ValueError):
            continue
    return None


def failure_reason(exc: BaseException, tries: int, where: str = "") -> str:
    """A short, stable reason for a request that failed for good (no prompt text, no credentials); `where` names
    the server and model, so a connection error says which URL was unreachable."""
    after = f"after {tries} {'try' if tries == 1 else 'tries'}"
    if isinstance(exc, APITimeoutError):
        return f"timeout {where}{after}"
    if isinstance(exc, APIConnectionError):
        return f"connection error {where}{after}"
    if isinstance(exc, APIStatusError):
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        return f"http {exc.status_code} {after}" + (f": {str(detail)[:200]}" if detail else "")
    return f"{type(exc).__name__} {after}: {str(exc)[:200]}"


class _WaitRetryAfterOrBackoff:
    """Tenacity wait: the server's Retry-After (capped) when given, else exponential backoff with full jitter."""

    def __init__(self, base: float, cap: float, retry_after_cap: float) -> None:
        self._backoff = wait_random_exponential(multiplier=base, max=cap)
        self._retry_after_cap = retry_after_cap

    def __call__(self, state: RetryCallState) -> float:
        delay = retry_after_seconds(state.outcome.exception() if state.outcome else None)
        return min(delay, self._retry_after_cap) if delay is not None else self._backoff(state)


class _RequestFailed(Exception):
    """A request that is out of tries or not worth retrying; its message is the reason recorded for the prompt."""


class OpenAIBackend(Backend):
    """Scores and generates through an OpenAI-compatible server, `endpoint` "chat" (the server applies the chat
    template) or "completions" (the prompt is sent as raw text)."""

    name = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        endpoint: Endpoint = "chat",
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 5,
        top_logprobs: int = 20,
        generate_top_logprobs: int = 5,
        structured_choices: bool = False,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        retry_after_cap: float = 120.0,
    ) -> None:
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', not {endpoint!r}")
        self.model = model
        self.base_url = base_url
        self.endpoint: Endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.top_logprobs = top_logprobs
        self.generate_top_logprobs = generate_top_logprobs
        self.structured_choices = structured_choices
        self._wait = _WaitRetryAfterOrBackoff(backoff_base, backoff_cap, retry_after_cap)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers accept any key

    def params(self) -> Mapping[str, Any]:
        return {
            "endpoint": self.endpoint,
            "top_logprobs": self.top_logprobs,
            "generate_top_logprobs": self.generate_top_logprobs,
            "structured_choices": self.structured_choices,
        }

    def check(self) -> None:
        """GET /models once: the server answers and serves this model. A wrong URL, a server that is down or a
        model name it does not know is a one-line error here, not thousands of failed requests later."""
        where = self.base_url or "the default OpenAI API"
        client = OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=min(self.timeout, 10.0), max_retries=1)
        try:
            served = [model.id for model in client.models.list()]
        except APIStatusError as exc:
            if exc.status_code == 404:
                return  # a server without the listing: the first request will tell
            raise ValueError(f"{where} answered GET /models with HTTP {exc.status_code}: check --base-url and OPENAI_API_KEY") from None
        except APIConnectionError as exc:
            raise ValueError(f"cannot reach {where} (model {self.model}): {exc.__cause__ or exc}; is the server running "
                             "and is --base-url right (e.g. http://127.0.0.1:8000/v1)?") from None
        finally:
            client.close()
        if served and self.model not in served:
            raise ValueError(f"{where} does not serve model {self.model!r}; it serves {served[:10]}: fix --model")

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        requests = [
            build_digit_request(self.endpoint, self.model, p, self.top_logprobs, self.structured_choices)
            for p in prompts
        ]
        return asyncio.run(self._run_batch(requests, partial(parse_digit_reply, self.endpoint), DigitScore))

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        requests = [
            build_generate_request(self.endpoint, self.model, p, max_tokens, temperature, seed,
                                   self.generate_top_logprobs)
            for p in prompts
        ]
        return asyncio.run(self._run_batch(requests, partial(parse_generate_reply, self.endpoint), Generation))

    async def _run_batch(
        self, requests: list[dict[str, Any]], parse: Callable[[Any], Result], failed: Callable[..., Result]
    ) -> list[Result]:
        """All requests of a batch on one client (made here: an async client belongs to the loop that made it)."""
        semaphore = asyncio.Semaphore(self.concurrency)
        client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0)
        async with client:
            send = client.chat.completions if self.endpoint == "chat" else client.completions
            jobs = (self._run_one(semaphore, send.with_raw_response.create, r, parse, failed) for r in requests)
            return list(await asyncio.gather(*jobs))

    async def _run_one(
        self,
        semaphore: asyncio.Semaphore,
        create: Callable[..., Awaitable[Any]],
        request: dict[str, Any],
        parse: Callable[[Any], Result],
        failed: Callable[..., Result],
    ) -> Result:
        """One prompt's result; never raises, so one bad prompt cannot sink its batch."""
        try:
            async with semaphore:
                text = await self._send(create, request)
            return parse(json.loads(text))
        except _RequestFailed as exc:
            return failed(None, error=str(exc))
        except json.JSONDecodeError as exc:
            return failed(None, error=f"malformed reply: invalid JSON ({exc.msg} at char {exc.pos})")
        except Exception as exc:  # noqa: BLE001 - the contract is a value per prompt, whatever went wrong
            return failed(None, error=f"unexpected error: {type(exc).__name__} {str(exc)[:200]}")

    async def _send(self, create: Callable[..., Awaitable[Any]], request: dict[str, Any]) -> str:
        """The raw reply body, after as many tries as transient errors need; `_RequestFailed` when out of luck."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        try:
            raw: Any = await retrying(create, **request)
        except Exception as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise _RequestFailed(failure_reason(exc, tries, f"to {self.base_url or 'the default API'} (model {self.model}) ")) from exc
        return raw.text
