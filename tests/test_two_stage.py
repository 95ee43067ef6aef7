"""The two-stage trainer on a real slice of ReDial (first train and test conversations, their movies' catalog)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from augment import runs
from augment.data.prepare import prepare
from augment.data.sample import write_redial_sample
from augment.retrieve import retrieve
from train import labels as L
from train import two_stage as T
from train.recommender import Contexts, ThinRecommender

CONVERSATIONS = 150


@pytest.fixture(scope="module")
def slice_run(shared_data, embedding_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_stage")
    write_redial_sample(shared_data / "redial", root / "redial", CONVERSATIONS, ("train_data.jsonl", "test_data.jsonl"))
    run = root / "run"
    prepare("redial", root / "redial", run)
    retrieve(run, top_k=20, cache_path=embedding_cache)
    return run


@pytest.fixture(scope="module")
def data(slice_run, embedding_cache) -> T.Data:
    torch.set_num_threads(2)
    return T.Data(slice_run, 0.15, cache_path=embedding_cache)


def test_stage2_loss_is_ce_at_alpha_zero_and_adds_the_batchmean_kl(data):
    model = ThinRecommender(data.item_init)
    student = model(data.contexts.batch(data.indices("train")[:16]))
    reference = student.detach() * 0.5 + torch.randn_like(student)
    targets = torch.tensor([row for _, row in L.pairs(data.train, data.row_of)[:16]])
    ce = F.cross_entropy(student, targets)
    assert torch.equal(T.stage2_loss(student, reference, targets, 0.0), ce)
    p, log_q = F.softmax(reference, -1), F.log_softmax(student, -1)
    kl = (p * (p.log() - log_q)).sum() / len(student)  # KL(reference || student), mean over the batch
    assert T.stage2_loss(student, reference, targets, 0.7).item() == pytest.approx((ce + 0.7 * kl).item(), rel=1e-5)
    assert kl.item() > 0


def test_reference_is_frozen_and_never_the_student(data):
    config = T.Config(alpha=1.0, epochs=1, seed=0)
    stage1 = T.make_model(data, config)
    before = copy.deepcopy(stage1.state_dict())
    student, history = T.fine_tune(stage1, data, T.gold_samples(data)[:300], config)
    assert student is not stage1
    assert all(p.data_ptr() != q.data_ptr() for p in student.parameters() for q in stage1.parameters())
    assert all(torch.equal(before[k], v) for k, v in stage1.state_dict().items())
    assert not any(p.requires_grad for p in stage1.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert [row["epoch"] for row in history] == [0, 1] and history[-1]["loss"] > 0  # the student trained


def test_no_test_or_validation_turn_reaches_training(data):
    config = T.Config(epochs=1, similarity_top=5)
    train_range = set(data.indices("train"))
    for samples in (T.stage1_samples(data, config, "similarity"), T.gold_samples(data)):
        assert samples and {index for index, _ in samples} <= train_range
    assert {t["split"] for t in data.train + data.valid} == {"train"} and {t["split"] for t in data.test} == {"test"}
    assert not {t["dialog_id"] for t in data.train} & {t["dialog_id"] for t in data.valid}
    with pytest.raises(ValueError, match="must not reach training"):
        L.check_training_turns(data.test[:1], "train", set())
    # poison every test context: one test vector in a training step would make the weights NaN
    poisoned = copy.copy(data)
    vectors = data.contexts.vectors.clone()
    vectors[data.indices("test")] = float("nan")
    poisoned.contexts = Contexts(data.contexts.texts, vectors)
    model = T.make_model(poisoned, config)
    T.fit(model, poisoned, T.stage1_samples(poisoned, config, "similarity"), config, 1, T.ce_loss, "poisoned")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_end_to_end_on_a_real_slice_beats_the_untrained_model(slice_run, data, embedding_cache, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("CRS_AUGMENT_CACHE", str(embedding_cache.parent))
    untrained, _ = T.evaluate(ThinRecommender(data.item_init).eval(), data, "test")
    # 70 validation pairs here: recall@50 is the selection metric that is not mostly noise
    assert T.main(["--run", str(slice_run), "--baseline", "--epochs", "3", "--valid-share", "0.15",
                   "--select-metric", "recall@50"]) == 0
    baseline = json.loads((slice_run / "train-baseline-e3-s0" / "summary.json").read_text())
    # the slice is small (hundreds of test pairs): the deep cut-off is the stable signal
    assert baseline["test"]["recall@50"] > untrained["recall@50"]
    assert baseline["test"]["ndcg@50"] > untrained["ndcg@50"]
    assert [row["epoch"] for row in baseline["curves"]["baseline"]] == list(range(7))  # both stages' budget

    args = ["--run", str(slice_run), "--alpha", "0.5", "--labels", "similarity", "--similarity-top", "5",
            "--epochs", "2", "--valid-share", "0.15"]
    capsys.readouterr()
    assert T.main(args) == 0
    said = capsys.readouterr().out  # the run says what stage 1 trained on and which epoch each stage kept
    gold = len(T.gold_samples(data))
    assert f"[stage 1] {gold:,d} gold + " in said and " + 0 synthetic" not in said
    assert said.count("kept epoch ") == 2
    final = slice_run / "train-similarity-a0.5-e2-s0"
    summary = json.loads((final / "summary.json").read_text())
    assert summary["params"]["alpha"] == 0.5 and summary["params"]["label_source"] == "similarity"
    assert [row["epoch"] for row in summary["curves"]["stage2"]] == [0, 1, 2]
    for name in ("model.pt", "loss_curve.png", "test_rankings.parquet"):
        assert (final / name).exists()
    assert (slice_run / "train-stage1-similarity-e2-s0" / "summary.json").exists()
    # a finished stage is reused; other parameters without --force are refused with exit code 2
    assert T.main(args) == 0
    assert T.main(args + ["--lr", "0.01"]) == 2


def test_judge_labels_come_from_the_labels_stage(slice_run, data, capsys):
    """Labels written by augment.score's own labelling code (scores here: 4 x retrieval similarity, a stand-in
    judge) become stage-1 samples; turns outside training never do."""
    from augment.score import label

    candidates = runs.read_rows(slice_run / "candidates" / "candidates.parquet")
    judgments = [{"turn_uid": c["turn_uid"], "item_id": c["item_id"], "rank": c["rank"], "probs": None,
                  "score": 4 * c["similarity"], "status": "ok", "reason": None, "backend": "similarity",
                  "model": "minilm", "prompt_hash": "none"} for c in candidates]
    runs.write_rows(runs.stage_dir(slice_run, "judgments") / "judgments.parquet", judgments)
    runs.write_summary(slice_run, "judgments", {"pairs": len(judgments)})
    label(slice_run, 2.0)
    assert L.resolve_source(slice_run, "auto") == "judge"
    synthetic = L.judge_labels(slice_run, data.train)
    assert synthetic and set(synthetic) <= {t["turn_uid"] for t in data.train}
    samples = T.stage1_samples(data, T.Config(), "judge")
    assert len(samples) == len(L.pairs(data.train, data.row_of, synthetic)) > len(T.gold_samples(data))
    label(slice_run, 4.0)  # nothing passes: stage 1 would be the baseline, and the run says so
    capsys.readouterr()
    assert len(T.stage1_samples(data, T.Config(), "judge")) == len(T.gold_samples(data))
    assert "nothing beyond the gold labels: stage 1 trains the baseline" in capsys.readouterr().out
