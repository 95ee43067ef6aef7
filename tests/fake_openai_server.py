"""A fake OpenAI-compatible server for fault-injection tests of the `openai` backend (not a model).

It answers `/v1/chat/completions` and `/v1/completions` with a logprobs payload whose digit distribution is a
deterministic function of the prompt, records every request body, and can be scripted per prompt to misbehave:
rate limits with Retry-After, server errors, replies slower than the client's timeout, malformed bodies, no
logprobs, no digit among the top tokens, digits spelled with a leading space.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Literal

FaultKind = Literal["429", "500", "slow", "malformed", "no_logprobs", "no_digits", "leading_space"]

# Non-digit tokens that share the answer position with the digits, so the client must renormalise.
OTHER_TOKENS: dict[str, float] = {"The": math.log(0.05), "\n": math.log(0.02)}


@dataclass
class Fault:
    """How to misbehave for one prompt: `times` requests in a row (None = every request), then answer normally."""

    kind: FaultKind
    times: int | None = None
    retry_after: str | None = None
    delay_s: float = 1.0


def digit_probs(prompt: str) -> tuple[float, ...]:
    """The fake model's P(0..4) for a prompt: a normalised function of its hash, never uniform across prompts."""
    weights = [b + 1 for b in hashlib.sha256(prompt.encode()).digest()[:5]]
    return tuple(w / sum(weights) for w in weights)


def top_logprobs(prompt: str, fault: FaultKind | None) -> dict[str, float]:
    """The answer position's top tokens: the five digits (scaled to leave room for others) and two non-digits."""
    if fault == "no_digits":
        return {"The": math.log(0.6), "A": math.log(0.3), "\n": math.log(0.1)}
    digit_mass = 1.0 - sum(math.exp(v) for v in OTHER_TOKENS.values())
    space = " " if fault == "leading_space" else ""
    tokens = {f"{space}{d}": math.log(p * digit_mass) for d, p in enumerate(digit_probs(prompt))}
    return tokens | OTHER_TOKENS


def generated_text(prompt: str) -> str:
    """What the fake model 'writes' for a prompt: deterministic, so tests can compare."""
    return f"text for {hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def is_rating_request(body: dict[str, Any]) -> bool:
    """A one-token request is the judge's digit; longer ones are free text (a teacher's reasoning)."""
    return body.get("max_tokens", 1) == 1


def chat_reply(body: dict[str, Any], prompt: str, fault: FaultKind | None) -> dict[str, Any]:
    """A chat.completion object; with logprobs when the request asked for them and the fault allows it."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if body.get("logprobs") and not is_rating_request(body):
        text = generated_text(prompt)
        choice["message"] = {"role": "assistant", "content": text}
        choice["logprobs"] = {"content": [{"token": text, "logprob": 0.0, "top_logprobs": [{"token": text, "logprob": 0.0}]}]}
    elif body.get("logprobs") and fault != "no_logprobs":
        top = top_logprobs(prompt, fault)
        best = max(top, key=top.__getitem__)
        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()]
        position = {"token": best, "logprob": top[best], "bytes": None, "top_logprobs": entries}
        choice["logprobs"] = {"content": [position]}
        choice["message"] = {"role": "assistant", "content": best}
    else:
        choice["message"] = {"role": "assistant", "content": generated_text(prompt)}
    return {"id": "fake", "object": "chat.completion", "created": 0, "model": body.get("model"), "choices": [choice]}


def completion_reply(body: dict[str, Any], prompt: str, fault: FaultKind | None) -> dict[str, Any]:
    """A text_completion object; with logprobs when the request asked for them and the fault allows it."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if body.get("logprobs") and not is_rating_request(body):
        choice["text"] = generated_text(prompt)
        choice["logprobs"] = {"tokens": [choice["text"]], "top_logprobs": [{choice["text"]: 0.0}]}
    elif body.get("logprobs") and fault != "no_logprobs":
        top = top_logprobs(prompt, fault)
        best = max(top, key=top.__getitem__)
        choice["logprobs"] = {
            "tokens": [best], "token_logprobs": [top[best]], "top_logprobs": [top], "text_offset": [0]
        }
        choice["text"] = best
    else:
        choice["text"] = generated_text(prompt)
    return {"id": "fake", "object": "text_completion", "created": 0, "model": body.get("model"), "choices": [choice]}


def request_prompt(path: str, body: dict[str, Any]) -> str:
    """The prompt a request carries: the last chat message, or the completion prompt."""
    return body["messages"][-1]["content"] if path.endswith("/chat/completions") else body["prompt"]


class FakeOpenAIServer:
    """The server, its script of faults (by exact prompt) and its log of requests; use as a context manager."""

    def __init__(self, models: tuple[str, ...] = ("fake-judge", "fake-model")) -> None:
        self.models = models  # what GET /v1/models lists: the names a client may ask for
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.max_in_flight = 0
        self.latency_s = 0.0  # added to every answer, e.g. to give a kill test time to strike mid-run
        self._in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def prompts_requested(self) -> list[str]:
        """Prompts of every request received, in arrival order (a retried prompt appears once per try)."""
        with self._lock:
            return [request_prompt(path, body) for path, body in self.requests]

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Count requests being answered at once, so tests can check the client's concurrency bound."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def record(self, path: str, body: dict[str, Any]) -> FaultKind | None:
        """Log a request and return the fault to inject for it, consuming one of the fault's `times`."""
        with self._lock:
            self.requests.append((path, body))
            fault = self.faults.get(request_prompt(path, body))
            if fault is None or fault.times == 0:
                return None
            if fault.times is not None:
                fault.times -= 1
            return fault.kind


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `server` (http.server builds one handler object per request)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            with server.serving():
                self._answer()

        def do_GET(self) -> None:
            if not self.path.endswith("/models"):
                return self._send(404, b'{"error": {"message": "not found"}}')
            listing = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in server.models]}
            self._send(200, json.dumps(listing).encode())

        def _answer(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self.path.endswith(("/chat/completions", "/completions")):
                return self._send(404, b'{"error": {"message": "not found"}}')
            fault = server.record(self.path, body)
            time.sleep(server.latency_s)
            prompt = request_prompt(self.path, body)
            if fault == "429":
                retry_after = server.faults[prompt].retry_after
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                return self._send(429, b'{"error": {"message": "rate limited"}}', headers)
            if fault == "500":
                return self._send(500, b'{"error": {"message": "boom"}}')
            if fault == "malformed":
                return self._send(200, b'{"choices": [')
            if fault == "slow":
                time.sleep(server.faults[prompt].delay_s)
            build = chat_reply if self.path.endswith("/chat/completions") else completion_reply
            self._send(200, json.dumps(build(body, prompt, fault)).encode())

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer to

        def log_message(self, format: str, *args: object) -> None:
            """Silence the per-request access log."""

    return Handler
