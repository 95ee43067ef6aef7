"""`python -m train.judge`: distil teacher judgments (`augment.teach`) into a student judge.

One trainer, one loss: KL(p_teacher || p_student) over the five ratings (cross-entropy when the teacher gives hard
digits), plus each student's own term: the bi-encoder may add an in-batch ranking term (`--in-batch`; the README
compares it with KL alone), and the causal LM adds -log P(the answer is a digit), which makes its loss the KL over
the whole vocabulary, so the digits stay in a server's top-k logprobs. Students: `causal-lm` (the scorer: the
exact prompt of `prompts/score.jinja`, p_student = softmax of the five digit-token logits at the answer position;
SmolLM2-135M offline default, `--lora` for large bases),
`cross-encoder` (MiniLM with a 5-way head) or `bi-encoder` (MiniLM dual encoder with a rating head on the cosine:
the CPU judge that starts with signal). The held-out split is by dialogue. A checkpoint is
written every `--eval-every` steps and a re-run with the same `--out` resumes from it. The finished folder is a
model the score stage loads (`--backend local|cross-encoder|bi-encoder --model DIR`), with
`judge_summary.json` (parameters, curves, held-out metrics) and `curves.png` next to it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from augment import plots, runs
from augment.cli import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, float_in
from augment.llm.base import expected_score
from train.judge_data import Example, kl_loss, load_examples, split_by_dialogue, targets
from train.judge_students import DEFAULT_BASES, make_student

SUMMARY = "judge_summary.json"
CHECKPOINT = "checkpoint"
DEFAULTS = {"bi-encoder": {"batch_size": 32, "lr": 5e-5}, "cross-encoder": {"batch_size": 16, "lr": 5e-5},
            "causal-lm": {"batch_size": 4, "lr": 2e-5}}


def batches(n_train: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of global step `step`: epoch e is a permutation seeded by (seed, e), so a resumed run
    sees exactly the batches an uninterrupted one would."""
    per_epoch = max(1, n_train // batch_size)
    epoch, within = divmod(step, per_epoch)
    order = list(range(n_train))
    random.Random(seed * 1000003 + epoch).shuffle(order)
    return order[within * batch_size : (within + 1) * batch_size]


def learning_rate(base: float, step: int, total: int, warmup: float = 0.1) -> float:
    """Linear warm-up over the first `warmup` of the steps, then linear decay to 0."""
    ramp = max(1, int(warmup * total))
    return base * (step + 1) / ramp if step < ramp else base * max(0.0, (total - step) / max(1, total - ramp))


def predict(student: Any, examples: Sequence[Example], batch_size: int) -> torch.Tensor:
    """Student P(0..4) for `examples`, in eval mode, no gradients."""
    student.net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            out.append(torch.softmax(student.logits(examples[start : start + batch_size]).float(), dim=-1).cpu())
    student.net.train()
    return torch.cat(out) if out else torch.zeros((0, 5))


def heldout_metrics(probs: torch.Tensor, examples: Sequence[Example]) -> dict[str, float]:
    """Held-out KL (the loss), teacher-student Spearman of expected scores, and MAE."""
    from eval.judge_quality import spearman

    target = targets(examples)
    kl = kl_loss(torch.log(probs.clamp_min(1e-12)), target).item()
    student = [expected_score(p) for p in probs.tolist()]
    teacher = [expected_score(p) for p in target.tolist()]
    mae = sum(abs(a - b) for a, b in zip(student, teacher)) / max(1, len(student))
    return {"kl": kl, "spearman": spearman(teacher, student), "mae": mae}


def save_checkpoint(out: Path, student: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Model + optimizer + loop state, written to a temporary folder and renamed: a kill never leaves half of one."""
    tmp = out / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": student.net.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp / "state.pt")
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    tmp.rename(out / CHECKPOINT)


def same_training(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a resumed run must share with the checkpoint (time limits, threads, device may change)."""
    return {key: value for key, value in params.items() if key not in ("max_minutes", "threads", "device")}


def load_checkpoint(out: Path, student: Any, optimizer: torch.optim.Optimizer, params: dict[str, Any]) -> dict | None:
    path = out / CHECKPOINT / "state.pt"
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False, map_location="cpu")
    if same_training(saved["state"]["params"]) != same_training(params):
        raise ValueError(f"{out} holds a checkpoint of another training (other parameters): choose another --out "
                         "or delete it")
    student.net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["state"]


def train(params: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) a student; saves the model, the summary and the curves in `params['out']`."""
    out = Path(params["out"])
    torch.manual_seed(params["seed"])
    torch.set_num_threads(params["threads"])
    student = make_student(params["student"], params["base"], chat=params["chat"], lora=params["lora"],
                           dialogue_tokens=params["dialogue_tokens"], in_batch=params["in_batch"])
    student.net.to(params["device"])
    examples = load_examples(Path(params["teacher"]), student.completion, params["context_window"])
    train_set, held = split_by_dialogue(examples, params["valid_fraction"], params["seed"])
    held = held[: params["max_valid"]]
    total = params["max_steps"] or params["epochs"] * max(1, len(train_set) // params["batch_size"])
    optimizer = torch.optim.AdamW(student.param_groups(params["lr"]), lr=params["lr"], weight_decay=0.01)
    out.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(out, student, optimizer, params) or {
        "step": 0, "train_curve": [], "valid_curve": [], "seconds": 0.0}
    state["params"] = params  # a resumed run keeps its new time limit, threads and device
    if state["step"] == 0:
        state["valid_curve"].append({"step": 0, **heldout_metrics(predict(student, held, params["batch_size"]), held)})
    run_steps(student, optimizer, train_set, held, state, total, out)
    return finish(student, train_set, held, state, total, out)


def run_steps(student: Any, optimizer: torch.optim.Optimizer, train_set: Sequence[Example], held: Sequence[Example],
              state: dict[str, Any], total: int, out: Path) -> None:
    """Optimise from `state['step']` to `total`, evaluating and checkpointing every `eval_every` steps."""
    params = state["params"]
    student.net.train()
    started = time.perf_counter() - state["seconds"]
    with tqdm(total=total, initial=state["step"], unit="step", desc=f"[train {student.kind}]", dynamic_ncols=True) as bar:
        while state["step"] < total:
            if params["max_minutes"] and time.perf_counter() - started > 60 * params["max_minutes"]:
                bar.write(f"[train] --max-minutes {params['max_minutes']} reached at step {state['step']}: stopping")
                state["stopped_early"] = True
                break
            step = state["step"]
            batch = [train_set[i] for i in batches(len(train_set), params["batch_size"], params["seed"], step)]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(group["base_lr"], step, total)
            logits = student.logits(batch)
            loss = kl_loss(logits, targets(batch).to(logits.device))
            extra = student.extra_loss(batch)
            if extra is not None:
                loss = loss + extra
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.net.parameters(), 1.0)
            optimizer.step()
            state["step"] = step + 1
            state["train_curve"].append({"step": step + 1, "loss": loss.item()})
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
            if state["step"] % params["eval_every"] == 0 or state["step"] == total:
                metrics = heldout_metrics(predict(student, held, params["batch_size"]), held)
                state["valid_curve"].append({"step": state["step"], **metrics})
                state["seconds"] = time.perf_counter() - started
                bar.write(f"[train] step {state['step']}: held-out KL {metrics['kl']:.4f}, "
                          f"Spearman {metrics['spearman']:.3f}")
                if state["step"] < total:
                    save_checkpoint(out, student, optimizer, state)
    state["seconds"] = time.perf_counter() - started


def finish(student: Any, train_set: Sequence[Example], held: Sequence[Example], state: dict[str, Any], total: int,
           out: Path) -> dict[str, Any]:
    """Save the model, the held-out predictions (what a reloaded model must reproduce), the summary and curves."""
    params = state["params"]
    student.save(out)
    probs = predict(student, held, params["batch_size"])
    if state["valid_curve"][-1]["step"] != state["step"]:  # stopped between evaluations
        state["valid_curve"].append({"step": state["step"], **heldout_metrics(probs, held)})
    predictions = [{"turn_uid": e.turn_uid, "item_id": e.item_id, "kind": e.kind, "probs": p}
                   for e, p in zip(held, probs.tolist())]
    (out / "heldout_predictions.json").write_text(json.dumps(predictions))
    summary = {
        "student": student.kind, "base": params["base"] or DEFAULT_BASES[student.kind], "steps": state["step"],
        "planned_steps": total, "stopped_early": state.get("stopped_early", False),
        "train_pairs": len(train_set), "heldout_pairs": len(held),
        "heldout_dialogues": sorted({e.dialog_id for e in held}),
        "initial": state["valid_curve"][0], "final": state["valid_curve"][-1],
        "train_curve": state["train_curve"], "valid_curve": state["valid_curve"],
        "seconds": round(state["seconds"], 1), "params": params,
        "score_command": ["python", "-m", "augment.score", "--run", "RUN", *student.score_args(out)],
    }
    (out / SUMMARY).write_text(json.dumps(runs.json_safe(summary), indent=2) + "\n")
    plot_curves(summary, out / "curves.png")
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    print(f"[train] {student.kind} saved to {out}: held-out KL {summary['initial']['kl']:.4f} -> "
          f"{summary['final']['kl']:.4f}, Spearman {summary['initial']['spearman']:.3f} -> "
          f"{summary['final']['spearman']:.3f}, {state['step']} steps in {summary['seconds']:.0f}s")
    return summary


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    figure, axis = plots.figure(figsize=(6, 3.5))
    train_curve, valid_curve = summary["train_curve"], summary["valid_curve"]
    if train_curve:
        axis.plot([p["step"] for p in train_curve], [p["loss"] for p in train_curve], color="#4c72b0", alpha=0.5,
                  label="train KL (batch)")
    axis.plot([p["step"] for p in valid_curve], [p["kl"] for p in valid_curve], "o-", color="#c44e52",
              label="held-out KL")
    axis.set_xlabel("step")
    axis.set_ylabel("KL(teacher || student)")
    axis.set_title(f"{summary['student']} student ({summary['base']})")
    axis.legend()
    return plots.save(figure, path, dpi=120)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.judge", description=__doc__)
    p.add_argument("--teacher", type=Path, required=True, help="a teacher stage folder, RUN/teacher")
    p.add_argument("--student", choices=tuple(DEFAULT_BASES), required=True,
                   help="bi-encoder (fastest, starts from the retrieval cosine), cross-encoder or causal-lm")
    p.add_argument("--base", help="base model (default: minilm for bi-/cross-encoder, smollm2-135m-instruct for causal-lm)")
    p.add_argument("--out", type=Path, required=True, help="folder of the trained student (resumes a checkpoint there)")
    p.add_argument("--max-steps", type=POSITIVE_INT, help="optimiser steps (default: --epochs over the train pairs)")
    p.add_argument("--max-minutes", type=POSITIVE_FLOAT, help="stop (and save) after this much training time")
    p.add_argument("--epochs", type=POSITIVE_INT, default=1, help="epochs when --max-steps is not given (default 1)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="pairs per step (default 32 bi-encoder, 16 cross-encoder, 4 causal-lm)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="peak learning rate (default 5e-5 bi-/cross-encoder, 2e-5 causal-lm; "
                   "the bi-encoder's head learns 100x faster)")
    p.add_argument("--valid-fraction", type=float_in(0.0, 0.9), default=0.1, help="dialogues held out (default 0.1)")
    p.add_argument("--max-valid", type=POSITIVE_INT, default=400, help="held-out pairs evaluated (default 400)")
    p.add_argument("--eval-every", type=POSITIVE_INT, default=50, help="steps between evaluations/checkpoints (50)")
    p.add_argument("--context-window", type=NON_NEGATIVE_INT, default=10,
                   help="last N utterances in the prompt, as augment.score's default (default 10)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="split, order and head initialisation (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda for a GPU (default cpu)")
    p.add_argument("--threads", type=POSITIVE_INT, default=2, help="torch threads (default 2)")
    p.add_argument("--in-batch", type=float_in(0.0, 100.0), default=0.0, metavar="WEIGHT",
                   help="bi-encoder: add WEIGHT x InfoNCE of the teacher's keeps against the batch's other items "
                   "(free negatives; meant for the gold teacher, whose negatives they resemble). Default 0: KL only")
    p.add_argument("--dialogue-tokens", type=POSITIVE_INT, metavar="N",
                   help="bi-encoder: the dialogue's last N tokens are embedded, in training and in scoring (saved with "
                   "the head; default 128, or the --base student's own)")
    p.add_argument("--no-chat", dest="chat", action="store_false", help="causal-lm: raw prompt (base models)")
    p.add_argument("--lora", action="store_true", help="causal-lm: LoRA adapters (peft), merged on save")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    defaults = DEFAULTS[args.student]
    params = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    params["batch_size"] = args.batch_size or defaults["batch_size"]
    params["lr"] = args.lr or defaults["lr"]
    for flag, value in (("--in-batch", args.in_batch), ("--dialogue-tokens", args.dialogue_tokens)):
        if value and args.student != "bi-encoder":
            parser().error(f"{flag} applies to --student bi-encoder only, not {args.student}")
    return runs.exit_code(lambda: train(params))


if __name__ == "__main__":
    sys.exit(main())
