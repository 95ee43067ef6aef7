"""The `local` backend: transformers on CPU, the embedded default that needs no server and no network.

Scoring is the hot path: every recommendation turn sends ~50 prompts that differ only in their last lines (the
candidate item), the rubric and the dialogue coming first. Instead of re-encoding that shared text 50 times, the
backend groups prompts by their common token prefix, encodes the prefix once, and scores the suffixes in
mini-batches on top of copies of its key/value cache. A naive path (one full forward per prompt) is kept as the
reference the prefix-reuse path is tested and benchmarked against.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from augment.llm.base import DIGITS, Backend, DigitScore, Generation, normalise_digit_probs, prompt_token_ids
from augment.llm.models import resolve_model


@dataclass
class PrefixGroup:
    """Prompts (by index) whose first `shared` tokens are identical; `shared` is 0 for a prompt scored alone.

    `anchor` is the prefix the group had when its second member joined, the yardstick for later members.
    """

    members: list[int]
    shared: int
    anchor: int = field(default=0, repr=False)


def group_by_prefix(seqs: Sequence[Sequence[int]], min_shared: int = 32, keep: float = 0.8) -> list[PrefixGroup]:
    """Group token sequences that share a long common prefix, so each prefix is encoded once.

    Sequences are sorted lexicographically, which puts those with the longest common prefixes next to each other (so
    prompts of interleaved turns still find their turn). A sequence joins the current group when the common prefix
    stays at least `min_shared` tokens and at least `keep` times the prefix the group started with: a turn's
    candidates keep the rubric-plus-dialogue prefix, while the next turn, which shares only the rubric, starts a new
    group instead of shrinking the shared part for everyone. A lone sequence takes in the next one unless that one
    shares clearly more with the sequence after it (it then starts its own group). Every member keeps at least one
    token after the prefix, because the answer logits come from the suffix forward.
    """
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
    groups: list[PrefixGroup] = []
    for pos, index in enumerate(order):
        if groups and _try_join(groups[-1], seqs, order, pos, min_shared, keep):
            continue
        groups.append(PrefixGroup([index], len(seqs[index])))
    for group in groups:
        shortest = min(len(seqs[i]) for i in group.members)
        group.shared = min(group.shared, shortest - 1) if len(group.members) > 1 else 0
    return groups


def _try_join(
    group: PrefixGroup, seqs: Sequence[Sequence[int]], order: list[int], pos: int, min_shared: int, keep: float
) -> bool:
    """Add `order[pos]` to `group` if that keeps enough of the group's shared prefix (see `group_by_prefix`)."""
    seq = seqs[order[pos]]
    common = min(group.shared, _common_prefix(seqs[order[pos - 1]], seq))
    if len(group.members) > 1:
        bar = group.anchor
    else:
        bar = _common_prefix(seq, seqs[order[pos + 1]]) if pos + 1 < len(order) else 0
    if common < min_shared or common < keep * bar:
        return False
    if len(group.members) == 1:
        group.anchor = common
    group.members.append(order[pos])
    group.shared = common
    return True


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def digit_token_ids(tokenizer: Any) -> dict[int, str]:
    """Token ids that spell a rubric digit on their own: "0".."4", plus " 0".." 4" where those are single tokens."""
    ids: dict[int, str] = {}
    for digit in DIGITS:
        for text in (digit, " " + digit):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) == 1:
                ids[encoded[0]] = text
    return ids


def supports_per_row_logits() -> bool:
    """Whether this transformers keeps one position per row for a (batch, 1) `logits_to_keep` (its helper
    `slice_logits_to_keep`, absent in 5.17); older 5.x releases index every row with the whole tensor."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


class PrefixScorer:
    """The scoring core, tokenizer-free: token ids in, log-probabilities of a few vocabulary ids out.

    For each prompt it returns the full-vocabulary log-softmax at the prompt's last position, read at `token_ids`
    (for the judge: the rubric digits). `score(seqs, prefix_reuse=True)` groups the prompts by shared prefix and
    scores each group over one key/value cache; `prefix_reuse=False` runs one full forward per prompt, the
    reference. Tensors go to the model's device, so the same code runs a CPU model or a GPU one (`eval.bench_gpu`
    drives it on a model built from a config). A failure is returned in place of the rows it hit, never raised.
    """

    def __init__(self, lm: Any, token_ids: Sequence[int], pad_id: int = 0, batch_size: int = 8) -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.device = next(lm.parameters()).device
        self.token_ids = torch.tensor(list(token_ids), device=self.device)
        self.per_row_logits = supports_per_row_logits()
        # transformers 5.2x names the key/value cache `cache` (`past_key_values` is deprecated there, removed in
        # 5.40); the 5.1x releases of the GPU images only know `past_key_values`. Use whichever the model takes.
        self.cache_name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def score(self, seqs: Sequence[Sequence[int]], prefix_reuse: bool = True) -> list[list[float] | Exception]:
        """One row (or the exception that hit it) per sequence, in order."""
        if not prefix_reuse:
            return [self._guard(lambda: [self.naive(seq)], 1)[0] for seq in seqs]
        results: list[list[float] | Exception | None] = [None] * len(seqs)
        for group in group_by_prefix(seqs):
            rows = self._guard(lambda: self.group([seqs[i] for i in group.members], group.shared), len(group.members))
            for index, row in zip(group.members, rows):
                results[index] = row
        return results

    @staticmethod
    def _guard(work: Any, n: int) -> list[Any]:
        try:
            return work()
        except Exception as exc:  # the Backend contract: a failure is a value
            return [exc] * n

    def naive(self, seq: Sequence[int]) -> list[float]:
        """The reference: one forward over the whole prompt, no cache, the model's own last-position logits."""
        with torch.inference_mode():
            ids = torch.tensor([list(seq)], device=self.device)
            logits = self.lm(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
            return torch.log_softmax(logits.float(), dim=-1)[0, self.token_ids].tolist()

    def group(self, seqs: Sequence[Sequence[int]], shared: int) -> list[list[float]]:
        """Encode the group's prefix once, then its suffixes in mini-batches of similar length over that cache.

        With `shared=0` this is a plain batched forward over the whole prompts (no reuse)."""
        with torch.inference_mode():
            cache = self._encode_prefix(list(seqs[0][:shared])) if shared else None
            rows: list[list[float] | None] = [None] * len(seqs)
            by_length = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
            for start in range(0, len(by_length), self.batch_size):
                chunk = by_length[start : start + self.batch_size]
                logprobs = self._score_suffixes(cache, shared, [list(seqs[i][shared:]) for i in chunk])
                for index, row in zip(chunk, logprobs[:, self.token_ids].tolist()):
                    rows[index] = row
        return rows

    def _encode_prefix(self, prefix: list[int]) -> Any:
        """One forward over the shared prefix; only its key/value cache is kept (the logits are not needed)."""
        ids = torch.tensor([prefix], device=self.device)
        return getattr(self.lm(input_ids=ids, use_cache=True, logits_to_keep=1), self.cache_name)

    def _score_suffixes(self, cache: Any, shared: int, suffixes: list[list[int]]) -> torch.Tensor:
        """Log-softmax at each suffix's last real token, suffixes right-padded after the cached prefix.

        Right padding keeps every real token at its true position (RoPE, and the sliding windows of Gemma-style
        layers, count cache positions). The cache is deep-copied before being widened to the batch, because a
        forward appends to it in place and the next mini-batch needs the bare prefix again. `logits_to_keep` as a
        (batch, 1) tensor makes the model project only each row's answer position onto the vocabulary; where
        transformers cannot keep a position per row, the distinct answer positions are kept for every row and
        each row's own is picked (a few more vocabulary projections, the same logits).
        """
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((len(suffixes), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(suffixes), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, : len(suffix)] = torch.tensor(suffix)
            mask[row, shared : shared + len(suffix)] = 1
        last = [len(s) - 1 for s in suffixes]
        positions = sorted(set(last))
        keep = torch.tensor([[p] for p in last]) if self.per_row_logits else torch.tensor(positions)
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(suffixes))
        output = self.lm(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            use_cache=past is not None,
            **{self.cache_name: past},
            logits_to_keep=keep.to(self.device),
        )
        column = [0] * len(last) if self.per_row_logits else [positions.index(p) for p in last]
        rows = torch.arange(len(last), device=output.logits.device)
        logits = output.logits[rows, torch.tensor(column, device=output.logits.device)]
        return torch.log_softmax(logits.float(), dim=-1)


class LocalBackend(Backend):
    """A causal LM loaded once with transformers, run on CPU under `torch.inference_mode()`.

    `chat=True` wraps each prompt as one user message in the tokenizer's chat template (instruct models);
    `chat=False` feeds the raw text (base models such as Gemma 3 270M). `prefix_reuse=False` selects the naive
    path; both paths give the same probabilities to float precision, so it is not part of `params()`.
    """

    name = "local"

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        *,
        chat: bool = True,
        batch_size: int = 8,
        dtype: str = "float32",
        threads: int | None = None,
        prefix_reuse: bool = True,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.chat = chat
        self.batch_size = batch_size
        self.dtype = dtype
        self.prefix_reuse = prefix_reuse
        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if chat and not self.tokenizer.chat_template:
            raise ValueError(f"{model} has no chat template (a base model?): use chat=False to feed raw text")
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        self._digits = digit_token_ids(self.tokenizer)
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.scorer = PrefixScorer(self.lm, list(self._digits), self._pad_id, batch_size)

    def params(self) -> Mapping[str, Any]:
        return {"chat": self.chat, "dtype": self.dtype}

    def close(self) -> None:
        self.lm = self.scorer = None

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt as the model sees it (chat-templated with the assistant turn opened, or raw)."""
        return prompt_token_ids(self.tokenizer, prompts, self.chat)

    def score_digits(self, prompts: Sequence[str]) -> list[DigitScore]:
        if not prompts:
            return []
        self.scorer.batch_size = self.batch_size
        rows = self.scorer.score(self.encode(prompts), prefix_reuse=self.prefix_reuse)
        return [self._digit_score(row) for row in rows]

    def _digit_score(self, row: list[float] | Exception) -> DigitScore:
        """Renormalised P(0..4) from the digits' full-vocabulary log-probabilities, with base.py's semantics."""
        if isinstance(row, Exception):
            return DigitScore(None, error=f"{type(row).__name__}: {row}")
        probs = normalise_digit_probs(dict(zip(self._digits.values(), row)))
        if probs is None:
            return DigitScore(None, error="no probability mass on the digit tokens 0-4")
        return DigitScore(probs)

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Generation]:
        """One `model.generate` per prompt, so a prompt's text never depends on what else shares its batch."""
        return [self._generate_one(seq, max_tokens, temperature, seed) for seq in self.encode(prompts)]

    def _generate_one(self, seq: list[int], max_tokens: int, temperature: float, seed: int) -> Generation:
        """Greedy at temperature 0; otherwise plain temperature sampling (no top-k/top-p), seeded per prompt."""
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        try:
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                output = self.lm.generate(
                    input_ids=torch.tensor([seq]),
                    attention_mask=torch.ones((1, len(seq)), dtype=torch.long),
                    max_new_tokens=max_tokens,
                    pad_token_id=self._pad_id,
                    **sampling,
                )
            return Generation(self.tokenizer.decode(output[0, len(seq) :], skip_special_tokens=True))
        except Exception as exc:  # the Backend contract: a failure is a value
            return Generation(None, error=f"{type(exc).__name__}: {exc}")
