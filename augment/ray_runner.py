"""The score stage past one machine: the same pairs and prompts, judged through a Ray Data LLM processor.

`python -m augment.score --runner ray` hands the pairs the request cache has not answered yet to `ray.data.llm`:

- `--backend openai`: one `HttpRequestProcessorConfig` processor per `--base-url` (comma-separated for several
  servers), each turn's candidates sent to one server so its prefix cache shares the dialogue. Ray's HTTP stage
  retries only some statuses, ignores Retry-After and raises on the last failure, which would end the whole Ray
  job; so its `session_factory` hook is given the project's OpenAI client: the retry policy of
  `augment.llm.openai_backend` (429/5xx/timeouts, Retry-After, backoff with jitter, same failure reasons) and
  failures returned as values. Replies are parsed by the same `parse_digit_reply` as the local runner's.
- `--backend vllm`: `vLLMEngineProcessorConfig`, one engine per `--ray-workers` (data parallel), each on
  `--tensor-parallel` GPUs, fed the very token ids the in-process vllm backend scores (same tokenizer call), top-20
  logprobs read back with the same digit normalisation. vLLM is imported by Ray's engine actors only.

Only the driver touches the sqlite request cache: results are committed block by block as Ray streams them back,
so a killed run resumes with the missing pairs only, and pairs judged before by any runner are never sent. Keys
are the local backends' keys (same backend name, model and parameters), so the two runners share one cache.
Ray is an optional extra (`pip install -e .[ray]`), imported only when this runner runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from tqdm import tqdm

from augment.cli import POSITIVE_INT
from augment.llm.base import Backend, DigitScore, Generation, normalise_digit_probs, prompt_token_ids
from augment.llm.cache import CachedBackend, request_key

RUNNERS = ("local", "ray")
RAY_BACKENDS = ("openai", "vllm")
TOP_LOGPROBS = 20  # what the vllm backend and the vLLM servers the project starts allow
MISSING_RAY = ("--runner ray needs Ray Data: `pip install -e .[ray]` (Ray Data and an HTTP client only; "
               "the vllm engine path also needs vLLM on the cluster's GPU nodes)")
PATHS = {"chat": "/chat/completions", "completions": "/completions"}
# CPUs Ray reserves per HTTP worker and per pre/post-processing task: they wait on the network or parse JSON, and
# with a whole CPU each, two HTTP workers on a 2-CPU node would hold back the post-processing until they finish.
LIGHT_CPUS = 0.25
Runner = Callable[[CachedBackend, Sequence[Any], Sequence[str], int], list[DigitScore]]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The runner options of `augment.score` and `augment run` (Ray is imported only when `--runner ray` runs)."""
    p.add_argument("--runner", choices=RUNNERS, default="local",
                   help="local: this process drives the backend (default); ray: a Ray Data LLM pipeline "
                        "(--backend openai: HTTP to --base-url, several servers comma-separated; --backend vllm: "
                        "one vLLM engine per worker on the cluster's GPUs)")
    p.add_argument("--ray-address", default=None,
                   help="runner ray: the cluster to join ('auto' = the one `ray start` runs here, or "
                        "ray://HOST:10001); default: start a Ray instance inside this process")
    p.add_argument("--ray-workers", type=POSITIVE_INT, default=1,
                   help="runner ray: HTTP workers per server (each with --concurrency requests in flight), or "
                        "vLLM engine replicas (data parallel); default 1")
    p.add_argument("--tensor-parallel", type=POSITIVE_INT, default=1,
                   help="runner ray, backend vllm: GPUs per vLLM engine (tensor_parallel_size); default 1")


@dataclass(frozen=True)
class RaySettings:
    """Everything the pipeline needs, picklable: it travels to the Ray workers."""

    backend: str
    model: str
    base_urls: tuple[str, ...] = ()
    client: Mapping[str, Any] = field(default_factory=dict)  # OpenAIBackend keyword arguments, base_url excepted
    chat: bool = True
    address: str | None = None
    workers: int = 1
    tensor_parallel: int = 1


class VLLMKeys(Backend):
    """What the in-process vllm backend is called in the cache (name, model, parameters), without loading vLLM
    here: the engines run on the Ray workers."""

    name = "vllm"

    def __init__(self, model: str, chat: bool, dtype: str = "auto") -> None:
        self.model, self.chat, self.dtype = model, chat, dtype

    def params(self) -> Mapping[str, Any]:
        return {"chat": self.chat, "dtype": self.dtype}

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        """The Backend contract (a failure is a value): this object only names cache keys; the Ray runner's vLLM
        engines do the scoring, so a direct call is answered with a failure per prompt."""
        return [DigitScore(None, error="score through the Ray runner (--runner ray): its vLLM engines score")] * len(prompts)

    def generate(self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0) -> list[Generation]:
        return [Generation(None, error="the Ray runner only scores; generate with --backend vllm")] * len(prompts)


def prepare(args: argparse.Namespace, client_options: Mapping[str, Any]) -> tuple[Backend, Runner]:
    """The backend that names the cache keys and the runner that replaces `score_prompts`, before any Ray work.

    Every server is checked up front (it answers and serves the model), as the local runner does for its one.
    """
    if args.backend not in RAY_BACKENDS:
        raise ValueError(f"--runner ray drives --backend {' or '.join(RAY_BACKENDS)}, not {args.backend} "
                         "(that backend runs in this process: use --runner local)")
    if not args.model:
        raise ValueError(f"--model is required with --backend {args.backend}")
    if importlib.util.find_spec("ray") is None:
        raise ValueError(MISSING_RAY)
    common = dict(backend=args.backend, model=args.model, chat=args.chat, address=args.ray_address,
                  workers=args.ray_workers, tensor_parallel=args.tensor_parallel)
    if args.backend == "vllm":
        return VLLMKeys(args.model, args.chat), functools.partial(score_with_ray, settings=RaySettings(**common))
    from augment.llm.openai_backend import OpenAIBackend

    urls = tuple(u.strip().rstrip("/") for u in (args.base_url or "").split(",") if u.strip())
    if not urls:
        raise ValueError("--runner ray --backend openai needs --base-url (several servers: comma-separated)")
    client = {k: v for k, v in client_options.items() if k != "base_url" and v is not None}
    backends = [OpenAIBackend(model=args.model, base_url=url, **client) for url in urls]
    for backend in backends:
        getattr(backend, "check", lambda: None)()
    settings = RaySettings(**common, base_urls=urls, client=client)
    return backends[0], functools.partial(score_with_ray, settings=settings)


def score_with_ray(
    cached: CachedBackend, pairs: Sequence[Any], prompts: Sequence[str], chunk_pairs: int, *, settings: RaySettings
) -> list[DigitScore]:
    """One result per prompt, in order: ok answers from the cache, the rest (each distinct prompt once) from Ray,
    committed to the cache block by block as they arrive."""
    keys = [request_key(cached.inner, "digits", p, {}) for p in prompts]
    found: dict[str, DigitScore] = cached._lookup(keys, "digits")
    todo: dict[str, tuple[str, str]] = {}
    for key, prompt, pair in zip(keys, prompts, pairs):
        if key not in found and key not in todo:
            todo[key] = (prompt, pair.turn["turn_uid"])
    cached.hits += len(keys) - len(todo)
    cached.misses += len(todo)
    if todo:
        with RaySession(settings) as ray:
            with tqdm(total=len(todo), unit="pair", desc="[score ray]", dynamic_ncols=True) as bar:
                for fresh in stream_results(ray, todo, settings, chunk_pairs):
                    cached._store("digits", fresh)
                    found |= fresh
                    bar.update(len(fresh))
    missing = DigitScore(None, error="no result from the Ray pipeline")
    return [found.get(key, missing) for key in keys]


class RaySession:
    """Join `settings.address` or start a local Ray instance; stop it afterwards only if this runner started it.
    OPENAI_API_KEY, when set here, travels to the workers in the job's runtime environment."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.started = False

    def __enter__(self) -> Any:
        import ray

        if not ray.is_initialized():
            secret = {k: os.environ[k] for k in ("OPENAI_API_KEY",) if k in os.environ}
            try:
                ray.init(address=self.settings.address, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": secret} if secret else None)
            except ConnectionError as exc:
                raise ValueError(f"--ray-address {self.settings.address}: {exc}") from None
            self.started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the runner draws one bar for the whole stage
        return ray

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def stream_results(ray: Any, todo: Mapping[str, tuple[str, str]], settings: RaySettings, batch: int) -> Iterator[dict[str, DigitScore]]:
    """{key: result} per block, in the order Ray finishes them."""
    dataset = http_pipeline(ray, todo, settings, batch) if settings.backend == "openai" else vllm_pipeline(ray, todo, settings, batch)
    for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield {row["key"]: result_of(row) for row in block.to_pylist()}


def result_of(row: Mapping[str, Any]) -> DigitScore:
    """A pipeline output row as a DigitScore (Ray's own error rows carry `__inference_error__` instead)."""
    if row.get("__inference_error__"):
        return DigitScore(None, error=f"engine error: {str(row['__inference_error__'])[:200]}")
    if row.get("error"):
        return DigitScore(None, error=row["error"])
    return DigitScore(tuple(float(p) for p in row["probs"]))


def output_row(key: str, score: DigitScore) -> dict[str, Any]:
    """Fixed column types (empty list / empty string for the missing half) so every block has one schema."""
    return {"key": key, "probs": list(score.probs or ()), "error": score.error or ""}


def source(ray: Any, rows: list[dict[str, str]], batch: int) -> Any:
    """About one block per batch, so results stream back (and reach the cache) batch by batch."""
    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch)))


# --- openai: Ray's HTTP processor, one per server -----------------------------------------------------------


def http_pipeline(ray: Any, todo: Mapping[str, tuple[str, str]], settings: RaySettings, batch: int) -> Any:
    """One HTTP processor per server, turns dealt round-robin (a turn's candidates stay on one server)."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    shares: list[list[dict[str, str]]] = [[] for _ in settings.base_urls]
    slot_of: dict[str, int] = {}
    for key, (prompt, turn) in todo.items():
        slot = slot_of.setdefault(turn, len(slot_of) % len(shares))
        shares[slot].append({"key": key, "prompt": prompt})
    endpoint = settings.client.get("endpoint", "chat")
    datasets = []
    for url, rows in zip(settings.base_urls, shares):
        if not rows:
            continue
        config = HttpRequestProcessorConfig(
            url=url + PATHS[endpoint], batch_size=batch, concurrency=settings.workers, max_retries=0,
            session_factory=ProjectSessions(settings.model, url, settings.client),
            http_request_stage={"num_cpus": LIGHT_CPUS},
        )
        processor = build_processor(config, preprocess=functools.partial(http_payload, settings),
                                    postprocess=functools.partial(http_result, endpoint),
                                    preprocess_map_kwargs={"num_cpus": LIGHT_CPUS},
                                    postprocess_map_kwargs={"num_cpus": LIGHT_CPUS})
        datasets.append(processor(source(ray, rows, batch)))
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def http_payload(settings: RaySettings, row: Mapping[str, Any]) -> dict[str, Any]:
    """The request the openai backend would send for this prompt (its SDK keyword arguments)."""
    from augment.llm.openai_backend import build_digit_request

    client = settings.client
    request = build_digit_request(client.get("endpoint", "chat"), settings.model, row["prompt"],
                                  client.get("top_logprobs", TOP_LOGPROBS), client.get("structured_choices", False))
    return {"payload": request}


def http_result(endpoint: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """Parse the reply with the openai backend's own parser; a transport failure keeps its reason."""
    from augment.llm.openai_backend import parse_digit_reply

    response = row["http_response"]
    if response["error"]:
        return output_row(row["key"], DigitScore(None, error=response["error"]))
    try:
        reply = json.loads(response["text"])
    except json.JSONDecodeError as exc:
        return output_row(row["key"], DigitScore(None, error=f"malformed reply: invalid JSON ({exc.msg} at char {exc.pos})"))
    return output_row(row["key"], parse_digit_reply(endpoint, reply))


class ProjectSessions:
    """`session_factory` for Ray's HTTP stage: sessions that send through the openai backend's retrying client.

    Built on the driver and pickled to each HTTP worker; the backend and the concurrency bound shared by all
    sessions of a worker are made there, on first use.
    """

    def __init__(self, model: str, base_url: str, client: Mapping[str, Any]) -> None:
        self.options = {"model": model, "base_url": base_url, **client}
        self._backend: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def __call__(self) -> _Session:
        if self._backend is None:
            from augment.llm.openai_backend import OpenAIBackend

            self._backend = OpenAIBackend(**self.options)
            self._semaphore = asyncio.Semaphore(self._backend.concurrency)
        return _Session(self._backend, self._semaphore)

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "_backend": None, "_semaphore": None}


class _Session:
    """What Ray's HTTP stage needs of an aiohttp session: `async with`, and `post()` whose awaited result is an
    `async with` reply with `status` and `json()`. Each post starts at once (bounded by the worker's semaphore),
    so a batch's requests are in flight together; its reply is `{"text": body, "error": None}` or
    `{"text": None, "error": reason}`, never an exception."""

    def __init__(self, backend: Any, semaphore: asyncio.Semaphore) -> None:
        self._backend, self._semaphore = backend, semaphore

    async def __aenter__(self) -> _Session:
        from openai import AsyncOpenAI

        b = self._backend
        self._client = AsyncOpenAI(base_url=b.base_url, api_key=b._api_key, timeout=b.timeout, max_retries=0)
        api = self._client.chat.completions if b.endpoint == "chat" else self._client.completions
        self._create = api.with_raw_response.create
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    def post(self, url: str, headers: Any = None, data: str | None = None, **_: Any) -> asyncio.Future:
        return asyncio.ensure_future(self._post(json.loads(data or "{}")))

    async def _post(self, request: dict[str, Any]) -> _Reply:
        from augment.llm.openai_backend import _RequestFailed

        try:
            async with self._semaphore:
                text = await self._backend._send(self._create, request)
        except _RequestFailed as exc:
            return _Reply({"text": None, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a value per prompt, whatever went wrong
            return _Reply({"text": None, "error": f"unexpected error: {type(exc).__name__} {str(exc)[:200]}"})
        return _Reply({"text": text, "error": None})


class _Reply:
    status, reason = 200, "OK"

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    async def __aenter__(self) -> _Reply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self) -> dict[str, Any]:
        return self._body


# --- vllm: one engine per GPU worker ------------------------------------------------------------------------


def vllm_pipeline(ray: Any, todo: Mapping[str, tuple[str, str]], settings: RaySettings, batch: int) -> Any:
    """`vLLMEngineProcessorConfig` with Ray's chat-template/tokenize stages off: the prompts arrive as the token
    ids the in-process vllm backend would feed its engine."""
    from ray.data.llm import build_processor

    from augment.llm.models import resolve_model

    path = resolve_model(settings.model)
    processor = build_processor(vllm_config(path, settings, batch),
                                preprocess=functools.partial(vllm_request, path, settings.chat), postprocess=vllm_result)
    return processor(source(ray, [{"key": k, "prompt": p} for k, (p, _) in todo.items()], batch))


def vllm_config(path: str, settings: RaySettings, batch: int) -> Any:
    """The engine settings of `augment.llm.vllm_backend` (prefix caching, top-20 logprobs, seed 0), plus the
    cluster's parallelism: `workers` engines (data parallel), `tensor_parallel` GPUs each."""
    from ray.data.llm import vLLMEngineProcessorConfig

    engine = dict(dtype="auto", max_model_len=2048, max_logprobs=TOP_LOGPROBS, enable_prefix_caching=True, seed=0,
                  tensor_parallel_size=settings.tensor_parallel)
    return vLLMEngineProcessorConfig(
        model_source=path, engine_kwargs=engine, concurrency=settings.workers, batch_size=batch,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False, should_continue_on_error=True,
    )


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def vllm_request(path: str, chat: bool, row: Mapping[str, Any]) -> dict[str, Any]:
    """One greedy token with its top-20 logprobs, for the prompt's token ids (tokenized as the vllm backend does)."""
    ids = prompt_token_ids(_tokenizer(path), [row["prompt"]], chat)[0]
    return {"tokenized_prompt": ids, "sampling_params": {"max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}}


def vllm_result(row: Mapping[str, Any]) -> dict[str, Any]:
    """P(0..4) from the first generated position's top logprobs ({token id: {logprob, decoded_token, ...}})."""
    from augment.llm.openai_backend import _merge_logprobs

    positions = row.get("logprobs")
    if positions is None or len(positions) == 0 or not positions[0]:
        return output_row(row["key"], DigitScore(None, error="no logprobs in engine output"))
    entries = [e for e in positions[0].values() if e]
    top = _merge_logprobs((e.get("decoded_token") or "", e.get("logprob")) for e in entries)
    probs = normalise_digit_probs(top)
    if probs is None:
        return output_row(row["key"], DigitScore(None, error=f"no digit among top tokens: {list(top)[:10]}"))
    return output_row(row["key"], DigitScore(probs))
