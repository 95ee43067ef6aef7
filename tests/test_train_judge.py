"""Judge distillation: the loss, a tiny real training run per student kind, and the saved students scoring through
the ordinary backends with the probabilities they had at the end of training."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from augment.llm import make_backend
from augment.llm.base import prompt_token_ids
from augment.runs import read_rows, read_summary
from augment.score import main as score_main
from augment.teach import main as teach_main
from tests.test_teach import judge_slice  # noqa: F401 (the shared real slice fixture)
from train.judge import batches, main as judge_main
from train.judge_data import kl_loss, load_examples, split_by_dialogue


def test_loss_is_kl_over_the_five_ratings_on_a_hand_example():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]]))  # softmax of log q is q
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]])
    by_hand = 0.5 * math.log(0.5 / 0.1) + 0.5 * math.log(0.5 / 0.2)
    assert kl_loss(logits, p).item() == pytest.approx(by_hand, abs=1e-6)
    hard = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])  # a one-hot teacher: cross-entropy
    assert kl_loss(logits, hard).item() == pytest.approx(-math.log(0.2), abs=1e-6)
    assert kl_loss(logits, torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2]])).item() == pytest.approx(0.0, abs=1e-6)


def test_batches_resume_where_they_stopped():
    n, size = 37, 8
    first_epochs = [batches(n, size, 3, step) for step in range(8)]
    assert sorted(i for b in first_epochs[:4] for i in b) == sorted(set(i for b in first_epochs[:4] for i in b))
    assert first_epochs == [batches(n, size, 3, step) for step in range(8)]  # a function of (seed, step) only
    assert first_epochs[0] != batches(n, size, 4, 0)


def test_in_batch_term_ranks_each_keep_against_the_batch_items_but_not_the_dialogues_other_keeps():
    from augment.llm.pair_judge import DIALOGUE_MARK, END_MARK, ITEM_MARK
    from train.judge_data import Example
    from train.judge_students import BiEncoderStudent

    def example(dialogue: str, item: str, rating: int) -> Example:
        prompt = f"rubric{DIALOGUE_MARK}{dialogue}{ITEM_MARK}{item}{END_MARK} from 0 to 4."
        return Example(dialogue, dialogue, item, "x", prompt, tuple(float(r == rating) for r in range(5)))

    batch = [example("Seeker: a comedy?", "Superbad (2007)", 4), example("Seeker: a comedy?", "Airplane! (1980)", 4),
             example("Seeker: a comedy?", "Saw (2004)", 0), example("Seeker: scary, please", "It (2017)", 4)]
    student = BiEncoderStudent("minilm")
    student.logits(batch)
    loss = student.in_batch_loss(batch).item()
    dialogues, items, d_index, i_index = student._encoded[1]
    logits = 20.0 * dialogues @ items.T
    by_hand = 0.0
    for k, other_keep in ((0, 1), (1, 0), (3, None)):
        row = logits[d_index[k]].clone()
        if other_keep is not None:
            row[i_index[other_keep]] = float("-inf")  # the dialogue's other keep is not a negative
        by_hand += -torch.log_softmax(row, dim=0)[i_index[k]].item() / 3
    assert loss == pytest.approx(by_hand, rel=1e-5)
    with pytest.raises(ValueError, match="same batch"):
        student.in_batch_loss(batch[:2])


@pytest.fixture(scope="module")
def teacher(judge_slice, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("judge_run") / "run"
    for stage in ("turns", "items", "candidates"):
        shutil.copytree(judge_slice / stage, run / stage)
    assert teach_main(["--run", str(run), "--teacher", "gold", "--max-pairs", "400"]) == 0
    return run / "teacher"


def test_validation_split_is_by_dialogue(teacher):
    examples = load_examples(teacher)
    train, held = split_by_dialogue(examples, 0.2, 0)
    assert train and held and not {e.dialog_id for e in train} & {e.dialog_id for e in held}
    assert (train, held) == split_by_dialogue(examples, 0.2, 0)


def trained(teacher: Path, out: Path, *args: str) -> dict:
    assert judge_main(["--teacher", str(teacher), "--out", str(out), "--valid-fraction", "0.2", "--threads", "2",
                       *args]) == 0
    return json.loads((out / "judge_summary.json").read_text())


@pytest.mark.parametrize("student,options", [("cross-encoder", ()),
                                             ("bi-encoder", ("--in-batch", "1", "--dialogue-tokens", "48"))])
def test_pair_student_learns_and_scores_through_its_backend(teacher, tmp_path, monkeypatch, student, options):
    out = tmp_path / "student"
    summary = trained(teacher, out, "--student", student, "--max-steps", "12", "--batch-size", "8",
                      "--lr", "1e-4", "--eval-every", "6", "--max-valid", "40", *options)
    assert summary["final"]["kl"] < summary["initial"]["kl"]
    assert [p["step"] for p in summary["valid_curve"]] == [0, 6, 12] and (out / "curves.png").stat().st_size > 0
    assert not (out / "checkpoint").exists()
    if student == "bi-encoder":  # the token budget travels with the head, so scoring reads what training read
        assert json.loads((out / "rating_head.json").read_text())["dialogue_tokens"] == 48
    # the saved folder, through the backend, gives the probabilities seen at the end of training
    examples = {(e.turn_uid, e.item_id): e for e in load_examples(teacher)}
    predictions = json.loads((out / "heldout_predictions.json").read_text())
    backend = make_backend(student, str(out))
    results = backend.score_digits([examples[(p["turn_uid"], p["item_id"])].prompt for p in predictions])
    assert max(abs(a - b) for p, r in zip(predictions, results) for a, b in zip(p["probs"], r.probs)) < 1e-4
    # and the score stage writes the ordinary judgments artifact with it
    run = teacher.parent
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(tmp_path / "cache"))
    assert score_main(["--run", str(run), "--backend", student, "--model", str(out), "--max-turns", "2",
                       "--top-n", "5", "--force"]) == 0
    judgments = read_rows(run / "judgments" / "judgments.parquet")
    assert len(judgments) == 10 and all(j["status"] == "ok" and len(j["probs"]) == 5 for j in judgments)
    assert all(j["score"] == pytest.approx(sum(d * p for d, p in enumerate(j["probs"]))) for j in judgments)
    assert read_summary(run, "judgments")["params"]["backend"] == student


@pytest.mark.slow  # full fine-tuning of a 135M model: ~1-2 min on 2 free cores, far more on a loaded machine
def test_causal_lm_student_learns_and_loads_in_the_local_backend(teacher, tmp_path):
    out = tmp_path / "causal"
    summary = trained(teacher, out, "--student", "causal-lm", "--max-steps", "4", "--batch-size", "2",
                      "--lr", "1e-4", "--eval-every", "4", "--max-valid", "6", "--context-window", "2")
    assert summary["final"]["kl"] < summary["initial"]["kl"]
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    examples = {(e.turn_uid, e.item_id): e for e in load_examples(teacher, context_window=2)}
    predictions = json.loads((out / "heldout_predictions.json").read_text())
    backend = make_backend("local", str(out))
    results = backend.score_digits([examples[(p["turn_uid"], p["item_id"])].prompt for p in predictions])
    assert max(abs(a - b) for p, r in zip(predictions, results) for a, b in zip(p["probs"], r.probs)) < 1e-4


def test_causal_lm_loss_is_the_kl_over_the_whole_vocabulary(teacher):
    """KL over the five ratings + the causal LM's answer term = KL over the vocabulary (digit tokens grouped), from
    a teacher whose mass is all on the digits: the student cannot push the digits out of a server's top-k."""
    from train.judge_students import CausalLMStudent

    student = CausalLMStudent("smollm2-135m-instruct")
    examples = load_examples(teacher, context_window=1)[:2]
    target = torch.tensor([e.target for e in examples])
    with torch.no_grad():
        loss = kl_loss(student.logits(examples), target) + student.extra_loss(examples)
        seqs = prompt_token_ids(student.tokenizer, [e.prompt for e in examples], chat=True)
        log_vocab = [torch.log_softmax(student.net(input_ids=torch.tensor([seq])).logits[0, -1].float(), dim=-1)
                     for seq in seqs]
    by_digit = [student.digit_ids[student.digit_of == d] for d in range(5)]
    log_q = torch.stack([torch.stack([torch.logsumexp(row[ids], dim=0) for ids in by_digit]) for row in log_vocab])
    full_kl = (target * (torch.log(target.clamp_min(1e-30)) - log_q)).where(target > 0, torch.tensor(0.0))
    assert student.extra_loss(examples).item() > 0.0
    assert loss.item() == pytest.approx(full_kl.sum(dim=-1).mean().item(), rel=1e-4)


@pytest.mark.parametrize("flag", [("--in-batch", "1"), ("--dialogue-tokens", "64")])
def test_bi_encoder_options_are_refused_for_other_students(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        judge_main(["--teacher", "t", "--student", "cross-encoder", "--out", "o", *flag])
    assert exit_info.value.code == 2
    assert f"{flag[0]} applies to --student bi-encoder only" in capsys.readouterr().err


def test_lora_without_peft_says_how_to_get_it(monkeypatch):
    import sys

    from train.judge_students import with_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ValueError, match=r'--lora needs peft: pip install -e "\.\[lora\]"'):
        with_lora(torch.nn.Linear(2, 2), 4)
