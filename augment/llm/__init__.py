"""Model access: one interface (`base.Backend`), a backend per file, a request cache in front of all of them.

Backends are imported lazily: the vLLM one needs the optional `vllm` extra, the local one loads torch models.
"""

from __future__ import annotations

from typing import Any

from augment.llm.base import Backend

BACKENDS = ("local", "openai", "vllm", "cross-encoder", "bi-encoder")
DEFAULT_LOCAL_JUDGE = "smollm2-135m-instruct"


def make_backend(kind: str, model: str | None = None, **options: Any) -> Backend:
    """Build a backend by name; `options` are its constructor's keyword arguments (None values dropped)."""
    options = {key: value for key, value in options.items() if value is not None}
    if kind == "local":
        from augment.llm.local import LocalBackend

        return LocalBackend(model or DEFAULT_LOCAL_JUDGE, **options)
    if not model:
        raise ValueError(f"--model is required with --backend {kind}")
    if kind == "openai":
        from augment.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(model=model, **options)
        backend.check()  # an unreachable server or unknown model stops here, before any work is queued
        return backend
    if kind == "vllm":
        from augment.llm.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    if kind == "cross-encoder":
        from augment.llm.cross_encoder import CrossEncoderBackend

        return CrossEncoderBackend(model, **options)
    if kind == "bi-encoder":
        from augment.llm.bi_encoder import BiEncoderBackend

        return BiEncoderBackend(model, **options)
    raise ValueError(f"unknown backend {kind!r}; choose one of {BACKENDS}")


def uses_raw_completion(backend: Backend) -> bool:
    """True when the backend feeds the prompt as raw text (no chat template): the prompt must cue the digit."""
    params = backend.params()
    return params.get("endpoint") == "completions" or params.get("chat") is False
