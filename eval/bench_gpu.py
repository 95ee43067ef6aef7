"""`python -m eval.bench score --shape gemma-2-9b --device cuda`: the prefix-reuse scorer on a Gemma-2-shaped model.

Throughput does not depend on the weights, so the model is built from a `Gemma2Config` with the real model's sizes
and random weights: nothing is downloaded, and only the project's code has to reach a GPU machine. The workload is
random token ids shaped like judge traffic (per turn one shared context of ~300 tokens, then 50 candidates of
~40 tokens each). Three paths of the project's own `augment.llm.local.PrefixScorer` run turn by turn, in rotating
order, in one process:

- naive: one full forward per pair (the local backend's reference path);
- batched: the same full prompts, right-padded in mini-batches, no cache reuse (what batching alone buys);
- reuse: the turn's context encoded once, the candidates scored in mini-batches over copies of its cache.

FLOP rates count the matmuls each path really runs for its real tokens (padding excluded), so MFU is the share of
the device's dense bf16 peak spent on useful work. The full-ReDial projection divides pair counts by the measured
rate of one device and assumes N devices split the turns evenly (one engine per GPU under the Ray runner).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

from augment.cli import POSITIVE_INT
from augment.llm.local import PrefixScorer, group_by_prefix, supports_per_row_logits

PATHS = ("naive", "batched", "reuse")
DIGIT_IDS = (15, 16, 17, 18, 19)  # five vocabulary ids read as the answer digits (any ids: weights are random)
# The projection's pair counts: a ReDial with all its splits (~40k recommendation turns x top-50), and the run
# built here from ../shared/data/redial (outputs/redial/candidates/summary.json: 7,819 turns x top-50).
REDIAL_PAIRS = {"redial_full": 2_000_000, "redial_shared_data_run": 390_950}


@dataclass(frozen=True)
class Shape:
    """The sizes of a Gemma-2 model (from its published config.json); `tiny` is for CPU tests only."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int = 256_000
    sliding_window: int = 4096
    query_pre_attn_scalar: int = 256


SHAPES = {
    "gemma-2-2b": Shape(2304, 9216, 26, 8, 4, 256),
    "gemma-2-9b": Shape(3584, 14336, 42, 16, 8, 256),
    "gemma-2-27b": Shape(4608, 36864, 46, 32, 16, 128, query_pre_attn_scalar=144),
    # Window shorter than the contexts, so the windowed layers' cache handling is exercised on CPU.
    "tiny": Shape(64, 128, 2, 4, 2, 16, vocab_size=1024, sliding_window=128, query_pre_attn_scalar=16),
}

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, matched in order against
# torch.cuda.get_device_name(): the more specific names (NVL, PCIe, L40S) come before the names they contain.
BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


def bf16_peak(device_name: str) -> float | None:
    """The data-sheet dense bf16 FLOP/s of a GPU by its name, or None for a GPU not in the table."""
    name = device_name.lower()
    for key, peak in BF16_PEAKS:
        if key.lower() in name:
            return peak
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `score --shape` options of `python -m eval.bench` (the SmolLM2 CPU bench ignores them)."""
    p.add_argument("--shape", choices=tuple(SHAPES), help="score: a Gemma-2-shaped model with random weights "
                   "instead of the offline SmolLM2 (e.g. gemma-2-9b on --device cuda; tiny for CPU tests)")
    p.add_argument("--device", default=None, help="score --shape: torch device (default cuda if available, else cpu)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="score --shape: weights and activations (default bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=None,
                   help="score --shape: sequences per forward in the batched and reuse paths (default --candidates)")
    p.add_argument("--context-tokens", type=POSITIVE_INT, default=300, help="score --shape: shared tokens per turn (default 300)")
    p.add_argument("--candidate-tokens", type=POSITIVE_INT, default=40,
                   help="score --shape: mean tokens per candidate, drawn from +-25%% around it (default 40)")
    p.add_argument("--gpus", type=device_counts, default=[1, 8, 64],
                   help="score --shape: device counts for the projection, comma-separated (default 1,8,64)")


def device_counts(text: str) -> list[int]:
    """`--gpus 1,8,64`: positive whole numbers, checked at parse time."""
    counts = [POSITIVE_INT(part) for part in text.split(",") if part.strip()]
    if not counts:
        raise argparse.ArgumentTypeError("give at least one device count, e.g. 1,8")
    return counts


@dataclass(frozen=True)
class ForwardFlops:
    """Matmul FLOPs of a decoder forward (2 per multiply-add): the layers' linear maps, the attention scores and
    weighted sums (each new token attends to every earlier position, up to the window on windowed layers), and
    the vocabulary projection at the kept positions. Norms, RoPE, softmax and activations are elementwise and not
    counted, as in the usual MFU convention."""

    linear_per_token: int
    attention_width: int
    windows: tuple[int | None, ...]
    head_per_position: int

    @classmethod
    def of(cls, config: Any) -> ForwardFlops:
        h, q = config.hidden_size, config.num_attention_heads * config.head_dim
        kv = config.num_key_value_heads * config.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size
        windows = tuple(config.sliding_window if t == "sliding_attention" else None for t in config.layer_types)
        return cls(2 * per_layer * config.num_hidden_layers, q, windows, 2 * h * config.vocab_size)

    def __call__(self, new: int, past: int = 0, logits: int = 1) -> int:
        attended = sum(_attended(past, new, window) for window in self.windows)
        return new * self.linear_per_token + 4 * self.attention_width * attended + logits * self.head_per_position


def _attended(past: int, new: int, window: int | None) -> int:
    """Sum over the new tokens at positions past+1..past+new of the positions each attends to (itself included)."""
    first, last = past + 1, past + new
    if window is None or last <= window:
        return (first + last) * new // 2
    if first > window:
        return window * new
    return (first + window) * (window - first + 1) // 2 + window * (last - window)


def gemma2_config(shape: Shape) -> Any:
    """The Gemma2Config of a shape, eager attention (Gemma 2's logit soft-capping rules out sdpa)."""
    from transformers import Gemma2Config

    return Gemma2Config(**asdict(shape), attn_implementation="eager")


def build_model(shape: Shape, device: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A Gemma-2-shaped causal LM with random weights, created directly on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(gemma2_config(shape), dtype=dtype)
    return model.eval()


def synthetic_turns(n_turns: int, n_candidates: int, context: int, candidate: int, vocab: int,
                    seed: int = 0) -> list[list[list[int]]]:
    """Per turn, `n_candidates` token sequences: one random shared context, then a random candidate each."""
    rng = random.Random(seed)
    low, high = max(1, round(candidate * 0.75)), max(1, round(candidate * 1.25))
    turns = []
    for _ in range(n_turns):
        head = [rng.randrange(1, vocab) for _ in range(context)]
        turns.append([head + [rng.randrange(1, vocab) for _ in range(rng.randint(low, high))]
                      for _ in range(n_candidates)])
    return turns


def path_flops(flops: ForwardFlops, seqs: Sequence[Sequence[int]], path: str) -> int:
    """The matmul FLOPs a path runs for these sequences' real tokens."""
    if path != "reuse":
        return sum(flops(len(s)) for s in seqs)
    total = 0
    for group in group_by_prefix(seqs):
        total += flops(group.shared) if group.shared else 0
        total += sum(flops(len(seqs[i]) - group.shared, past=group.shared) for i in group.members)
    return total


def run_path(scorer: PrefixScorer, seqs: Sequence[Sequence[int]], path: str) -> list[list[float]]:
    """The rows of one path; a failure raises (a benchmark has no partial answer)."""
    if path == "batched":
        rows: list[Any] = scorer.group(seqs, 0)
    else:
        rows = scorer.score(seqs, prefix_reuse=path == "reuse")
    for row in rows:
        if isinstance(row, Exception):
            raise row
    return rows


def digit_probs(row: Sequence[float]) -> list[float]:
    """P over the five answer ids, renormalised (what the judge reads)."""
    top = max(row)
    weights = [math.exp(v - top) for v in row]
    return [w / sum(weights) for w in weights]


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float]:
    """Wall seconds of `work`, the device's queue drained before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = work()
    sync()
    return result, time.perf_counter() - start


def measure(scorer: PrefixScorer, warmup: list[list[int]], turns: list[list[list[int]]],
            paths: Sequence[str] = PATHS) -> dict[str, dict[str, float]]:
    """Seconds per path over `turns`, each turn run through every path in an order rotated turn by turn, after
    the `warmup` turn through each path (untimed: allocations, kernel selection); and the largest |delta p| of
    each path against the first one (naive)."""
    for path in paths:
        run_path(scorer, warmup, path)
    seconds = dict.fromkeys(paths, 0.0)
    difference = dict.fromkeys(paths, 0.0)
    for t, seqs in enumerate(turns):
        rows = {}
        for k in range(len(paths)):
            path = paths[(t + k) % len(paths)]
            rows[path], spent = timed(scorer.device, lambda: run_path(scorer, seqs, path))
            seconds[path] += spent
        for path in paths:
            pairs = zip(rows[paths[0]], rows[path])
            gap = max(abs(x - y) for a, b in pairs for x, y in zip(digit_probs(a), digit_probs(b)))
            difference[path] = max(difference[path], gap)
    return {"seconds": seconds, "difference": difference}


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of the best square matmul: 8192^2 on a GPU (3 warm-ups, best of 10), bench_local's on CPU."""
    if device.type != "cuda":
        from eval.bench_local import cpu_matmul_peak

        return cpu_matmul_peak(str(dtype).removeprefix("torch."))
    size = 8192
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        torch.mm(a, b)
    best = min(timed(device, lambda: torch.mm(a, b))[1] for _ in range(10))
    return 2 * size**3 / best


def projection(rate: float, gpus: Sequence[int]) -> dict[str, dict[str, float]]:
    """Hours for each pair count at `rate` pairs/s per device, for each device count (turns split evenly)."""
    return {name: {f"{n}_devices": pairs / (rate * n) / 3600 for n in gpus} for name, pairs in REDIAL_PAIRS.items()}


def bench_shape(args: argparse.Namespace) -> dict[str, Any]:
    """The numbers of `score --shape`: pairs/s of the three paths, ratios, FLOP/s, MFU, and the projection."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    shape = SHAPES[args.shape]
    n_turns = args.turns_score or (2 if args.shape == "tiny" else 8)
    model = build_model(shape, str(device), dtype)
    scorer = PrefixScorer(model, DIGIT_IDS, pad_id=0, batch_size=args.batch_size or args.candidates)
    warmup, *turns = synthetic_turns(n_turns + 1, args.candidates, args.context_tokens, args.candidate_tokens,
                                     shape.vocab_size)
    return report(args, shape, device, dtype, model, turns, measure(scorer, warmup, turns))


def report(args: argparse.Namespace, shape: Shape, device: torch.device, dtype: torch.dtype, model: Any,
           turns: list[list[list[int]]], measured: dict[str, Any]) -> dict[str, Any]:
    """The result dict, also printed as a short table."""
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    flops = ForwardFlops.of(model.config)
    seqs = [s for turn in turns for s in turn]
    pairs = len(seqs)
    peak = bf16_peak(name) if device.type == "cuda" and dtype == torch.bfloat16 else None
    measured_peak = matmul_peak(device, dtype)
    result: dict[str, Any] = {
        "shape": args.shape, **asdict(shape), "device": name, "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "per_row_logits": supports_per_row_logits(),  # False: the scorer's fallback for older transformers
        "parameters": sum(p.numel() for p in model.parameters()), "turns": len(turns), "pairs": pairs,
        "candidates_per_turn": args.candidates, "context_tokens": args.context_tokens,
        "mean_prompt_tokens": sum(map(len, seqs)) / pairs, "batch_size": args.batch_size or args.candidates,
        "datasheet_bf16_peak_flops_per_s": peak, "measured_matmul_peak_flops_per_s": measured_peak,
    }
    for path in PATHS:
        seconds = measured["seconds"][path]
        rate = path_flops(flops, seqs, path) / seconds
        result[f"{path}_pairs_per_s"] = pairs / seconds
        result[f"{path}_flops_per_s"] = rate
        result[f"{path}_mfu"] = rate / peak if peak else None
        result[f"{path}_share_of_measured_matmul_peak"] = rate / measured_peak
    result["reuse_over_naive"] = measured["seconds"]["naive"] / measured["seconds"]["reuse"]
    result["reuse_over_batched"] = measured["seconds"]["batched"] / measured["seconds"]["reuse"]
    result["max_prob_difference_vs_naive"] = measured["difference"]
    gpus = args.gpus
    result["projected_hours"] = {path: projection(result[f"{path}_pairs_per_s"], gpus) for path in PATHS}
    print_table(result, gpus)
    return result


def print_table(result: dict[str, Any], gpus: Sequence[int]) -> None:
    """The headline numbers for a person; the JSON that follows has them all."""
    print(f"{result['shape']} on {result['device']} ({result['dtype']}): {result['pairs']} pairs, "
          f"{result['mean_prompt_tokens']:.0f} tokens each, {result['candidates_per_turn']} per turn; "
          f"torch {result['torch']}, transformers {result['transformers']}")
    for path in PATHS:
        mfu = result[f"{path}_mfu"]
        print(f"  {path:8s} {result[f'{path}_pairs_per_s']:10.1f} pairs/s  {result[f'{path}_flops_per_s'] / 1e12:8.3g}"
              f" TFLOP/s  MFU {'n/a' if mfu is None else f'{mfu:.1%}'}  "
              f"({result[f'{path}_share_of_measured_matmul_peak']:.1%} of the measured matmul peak)")
    print(f"  reuse / naive {result['reuse_over_naive']:.2f}x, reuse / batched {result['reuse_over_batched']:.2f}x")
    for name, hours in result["projected_hours"]["reuse"].items():
        cells = ", ".join(f"{n} device(s) {hours[f'{n}_devices']:.2f} h" for n in gpus)
        print(f"  projected {name} ({REDIAL_PAIRS[name]:,} pairs), reuse path: {cells}")
