"""`python -m train.two_stage`: pre-train the thin recommender on synthetic labels, fine-tune it on the original ones.

Stage 1: cross-entropy on every (train turn, label) pair, labels = gold + synthetic (`--labels judge`: the run's
labels/ stage, any judge; `--labels similarity`: top-M retrieved candidates, no judge), plus the simulated
dialogues' turns with `--with-simulated`. Stage 2: cross-entropy on the gold labels only
+ alpha * KLDivLoss(batchmean)(log_softmax(student), softmax(reference)), the reference a frozen copy of the
stage-1 model, no temperature (FNSCRS's released loss). `--baseline`: the same recommender on gold labels only for
both stages' epochs. After every epoch the model is scored on a validation slice of the TRAIN dialogues and the
best epoch is kept (test turns never reach training or selection); the kept model is then evaluated on test.
Each stage writes RUN/train-<name>/ (model.pt, rankings parquet, loss_curve.png, summary.json last); stage 1 is
shared by every alpha.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F
from tqdm import tqdm

from augment import runs
from augment.cli import NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, float_in
from augment.data.popularity import mention_counts
from eval import metrics
from train import labels as L
from train.recommender import TextEncoder, ThinRecommender, item_vectors, load_contexts, retrieval_settings, top_items


@dataclass(frozen=True)
class Config:
    """Everything that changes a trained model (recorded in each stage's params)."""

    alpha: float = 0.5
    baseline: bool = False
    labels: str = "auto"
    similarity_top: int = L.DEFAULT_SIMILARITY_TOP
    with_simulated: bool = False
    seed: int = 0
    epochs: int = 8
    batch_size: int = 128  # turns per step (each with all of its labels)
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.1
    valid_share: float = 0.1
    select_metric: str = "recall@10"
    finetune_encoder: bool = False
    encoder_lr: float = 2e-5


class Data:
    """A run's items, training / validation / test turns and their model inputs, loaded once."""

    def __init__(self, run: Path, valid_share: float, finetune: bool = False, with_simulated: bool = False,
                 cache_path: Path | None = None):
        self.run = Path(run)
        runs.require(self.run, "turns", "items", "candidates")
        turns = runs.read_rows(self.run / "turns" / "turns.parquet")
        self.items = runs.read_rows(self.run / "items" / "items.parquet")
        self.catalog = [item["item_id"] for item in self.items]
        self.row_of = {item_id: row for row, item_id in enumerate(self.catalog)}
        self.split = L.train_split(turns)
        self.train, self.valid = L.split_train_valid(turns, valid_share)
        self.test = L.evaluation_turns(turns)
        self.simulated = L.simulated_turns(self.run) if with_simulated else []
        self.counts = mention_counts(turns, self.split)
        settings = retrieval_settings(self.run)
        self.item_init = item_vectors(self.items, settings, cache_path)
        ordered = self.train + self.valid + self.test + self.simulated
        self.contexts = load_contexts(ordered, settings, finetune, cache_path)
        self.offset = {"train": 0, "valid": len(self.train), "test": len(self.train) + len(self.valid),
                       "simulated": len(self.train) + len(self.valid) + len(self.test)}
        self.settings = settings

    def indices(self, part: str) -> list[int]:
        return list(range(self.offset[part], self.offset[part] + len(getattr(self, part))))


def stage2_loss(student_logits: torch.Tensor, reference_logits: torch.Tensor, targets: torch.Tensor,
                alpha: float) -> torch.Tensor:
    """CE(student, gold) + alpha * KL(softmax(reference) || softmax(student)), batch mean, no temperature."""
    ce = F.cross_entropy(student_logits, targets)
    kl = F.kl_div(F.log_softmax(student_logits, dim=-1), F.softmax(reference_logits, dim=-1), reduction="batchmean")
    return ce + alpha * kl


def ce_loss(logits: torch.Tensor, targets: torch.Tensor, inputs: Any, pair_rows: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[pair_rows], targets)


def make_model(data: Data, config: Config) -> ThinRecommender:
    torch.manual_seed(config.seed)
    encoder = TextEncoder(data.settings["embedder"]) if config.finetune_encoder else None
    return ThinRecommender(data.item_init, config.dropout, encoder)


def rank_turns(model: ThinRecommender, data: Data, part: str) -> list[list[str]]:
    """Unfiltered top (50 + most mentions) item ids per turn of `part`: deep enough to filter mentioned items."""
    turns = getattr(data, part)
    depth = max(metrics.KS) + max((len(t["mentioned"]) for t in turns), default=0)
    return [[data.catalog[r] for r in rows] for rows in top_items(model, data.contexts, data.indices(part), depth)]


def evaluate(model: ThinRecommender, data: Data, part: str) -> tuple[dict[str, Any], list[list[str]]]:
    turns = [t for t in getattr(data, part)]
    rankings = rank_turns(model, data, part)
    keep = [i for i, t in enumerate(turns) if t["rec"]]
    result = metrics.evaluate([rankings[i] for i in keep], [turns[i]["rec"] for i in keep],
                              [turns[i]["mentioned"] for i in keep], data.catalog, data.counts)
    return result, rankings


def fit(model: ThinRecommender, data: Data, samples: Sequence[tuple[int, int]], config: Config, epochs: int,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, Any, torch.Tensor], torch.Tensor], desc: str) -> list[dict[str, Any]]:
    """Train for `epochs`, validate after each (and before the first), keep the best epoch's weights."""
    if not samples:
        raise ValueError(f"{desc}: no training samples")
    encoder_params = list(model.encoder.parameters()) if model.encoder is not None else []
    others = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": others, "lr": config.lr}] + ([{"params": encoder_params, "lr": config.encoder_lr}] if encoder_params else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    turns, targets = group_by_turn(samples)
    history = [{"epoch": 0, "loss": None, **pick(evaluate(model, data, "valid")[0])}]
    best_epoch, best_score, best_state = 0, history[0][config.select_metric], copy.deepcopy(model.state_dict())
    steps = (len(turns) + config.batch_size - 1) // config.batch_size
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for batch in tqdm(torch.randperm(len(turns), generator=generator).split(config.batch_size), total=steps,
                          desc=f"[{desc}] epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True):
            inputs = data.contexts.batch(turns[batch])
            labels = [targets[b] for b in batch.tolist()]
            local = torch.repeat_interleave(torch.arange(len(labels)), torch.tensor([len(x) for x in labels]))
            wanted = torch.cat(labels)
            loss = loss_fn(model(inputs), wanted, inputs, local)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(wanted)
        history.append({"epoch": epoch, "loss": total / len(samples), **pick(evaluate(model, data, "valid")[0])})
        if history[-1][config.select_metric] > best_score:
            best_epoch, best_score = epoch, history[-1][config.select_metric]
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    note = " (the starting weights: no epoch beat them)" if best_epoch == 0 else ""
    tqdm.write(f"[{desc}] kept epoch {best_epoch} of {epochs}{note}: "
               f"validation {config.select_metric} {best_score:.2%}")
    return history


def group_by_turn(samples: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Turns with their label rows: a batch encodes each context once and scores all of its (turn, label) pairs,
    which is the per-pair cross-entropy at a fraction of the cost (a turn has up to ~10 synthetic labels)."""
    by_turn: dict[int, list[int]] = {}
    for turn, row in samples:
        by_turn.setdefault(turn, []).append(row)
    order = sorted(by_turn)
    return torch.tensor(order, dtype=torch.long), [torch.tensor(by_turn[t], dtype=torch.long) for t in order]


SELECT_METRICS = ("recall@1", "recall@10", "recall@50", "ndcg@10", "tail_recall@50")


def pick(result: dict[str, Any]) -> dict[str, float]:
    return {key: result[key] for key in SELECT_METRICS}


def stage1_samples(data: Data, config: Config, source: str) -> list[tuple[int, int]]:
    """Gold + synthetic labels of training turns, plus simulated turns' labels when asked."""
    L.check_training_turns(data.train, data.split, {t["turn_uid"] for t in data.valid + data.test})
    synthetic = L.synthetic_labels(data.run, data.train, source, config.similarity_top)
    samples = L.pairs(data.train, data.row_of, synthetic)
    gold = len(L.pairs(data.train, data.row_of))
    simulated = L.pairs(data.simulated, data.row_of, offset=data.offset["simulated"]) if config.with_simulated else []
    only_gold = len(samples) == gold and not simulated
    note = " -- nothing beyond the gold labels: stage 1 trains the baseline" if only_gold else ""
    tqdm.write(f"[stage 1] {gold:,d} gold + {len(samples) - gold:,d} synthetic ({source}) + {len(simulated):,d} "
               f"simulated (turn, label) pairs{note}")
    return samples + simulated


def gold_samples(data: Data) -> list[tuple[int, int]]:
    L.check_training_turns(data.train, data.split, {t["turn_uid"] for t in data.valid + data.test})
    return L.pairs(data.train, data.row_of)


def stage_names(config: Config, source: str) -> tuple[str, str]:
    """(stage-1 folder, final folder): stage 1 depends on labels, simulation and seed, not on alpha."""
    sim = "-sim" if config.with_simulated else ""
    tail = f"{'-ft' if config.finetune_encoder else ''}-e{config.epochs}-s{config.seed}"
    if config.baseline:
        return "", f"train-baseline{tail}"
    return f"train-stage1-{source}{sim}{tail}", f"train-{source}-a{config.alpha:g}{sim}{tail}"


def stage_params(config: Config, source: str, keys: Sequence[str]) -> dict[str, Any]:
    return {**{k: v for k, v in asdict(config).items() if k in keys}, "label_source": source}


COMMON_KEYS = ("seed", "epochs", "batch_size", "lr", "weight_decay", "dropout", "valid_share", "select_metric",
               "finetune_encoder", "encoder_lr")
STAGE1_KEYS = COMMON_KEYS + ("similarity_top", "with_simulated")


def write_stage(stage: runs.Stage, model: ThinRecommender, data: Data, curves: dict[str, list], extra: dict[str, Any],
                started: float) -> dict[str, Any]:
    """Checkpoint, validation and test rankings, loss curves, then the summary (last)."""
    folder = runs.stage_dir(stage.run, stage.name)
    torch.save(model.state_dict(), folder / "model.pt")
    test, rankings = evaluate(model, data, "test")
    valid, valid_rankings = evaluate(model, data, "valid")
    runs.write_rows(folder / "test_rankings.parquet",
                    [{"turn_uid": t["turn_uid"], "ranking": r} for t, r in zip(data.test, rankings)])
    runs.write_rows(folder / "valid_rankings.parquet",
                    [{"turn_uid": t["turn_uid"], "ranking": r} for t, r in zip(data.valid, valid_rankings)])
    from eval.plots import plot_curves

    plot_curves(curves, folder / "loss_curve.png", stage.name)
    summary = {**extra, "curves": curves, "valid": valid, "test": test, "seconds": round(time.perf_counter() - started, 1)}
    return stage.finish(summary)


def train_stage1(data: Data, config: Config, source: str, force: bool = False) -> tuple[ThinRecommender, str]:
    """Stage 1 (shared by every alpha): reuse the finished checkpoint when its params and inputs match."""
    name, _ = stage_names(config, source)
    reads = ("turns", "items", "candidates") + (("labels",) if source == "judge" else ()) + (("simulated",) if config.with_simulated else ())
    stage = runs.Stage(data.run, name, stage_params(config, source, STAGE1_KEYS), reads=reads)
    model = make_model(data, config)
    if not stage.needed(force, quiet=True):
        model.load_state_dict(torch.load(data.run / name / "model.pt"))
        return model.eval(), name
    started = time.perf_counter()
    samples = stage1_samples(data, config, source)
    history = fit(model, data, samples, config, config.epochs, ce_loss, "stage 1")
    write_stage(stage, model, data, {"stage1": history}, {"samples": len(samples)}, started)
    return model, name


def fine_tune(stage1_model: ThinRecommender, data: Data, samples: Sequence[tuple[int, int]],
              config: Config) -> tuple[ThinRecommender, list[dict[str, Any]]]:
    """Stage 2: the student starts as a deep copy of the stage-1 model, which is frozen and serves as the reference."""
    student = copy.deepcopy(stage1_model).requires_grad_(True)
    reference = stage1_model.eval().requires_grad_(False)

    def kl_loss(logits: torch.Tensor, targets: torch.Tensor, inputs: Any, pair_rows: torch.Tensor) -> torch.Tensor:
        """Per (turn, gold) pair, as FNSCRS computes it: a turn with two gold items counts twice in the KL too."""
        with torch.no_grad():
            reference_logits = reference(inputs)
        return stage2_loss(logits[pair_rows], reference_logits[pair_rows], targets, config.alpha)

    history = fit(student, data, samples, config, config.epochs, kl_loss, f"stage 2 alpha {config.alpha:g}")
    return student, history


def train_two_stage(data: Data, config: Config, force: bool = False) -> dict[str, Any]:
    """Stage 1 then stage 2 (or the baseline); returns the final stage's summary."""
    source = "gold" if config.baseline else L.resolve_source(data.run, config.labels)
    started = time.perf_counter()
    if config.baseline:
        _, name = stage_names(config, source)
        stage = runs.Stage(data.run, name, stage_params(config, source, COMMON_KEYS), reads=("turns", "items", "candidates"))
        if not stage.needed(force):
            return stage.summary()
        model, samples = make_model(data, config), gold_samples(data)
        history = fit(model, data, samples, config, 2 * config.epochs, ce_loss, "baseline")
        return write_stage(stage, model, data, {"baseline": history}, {"samples": len(samples)}, started)
    reference, stage1 = train_stage1(data, config, source, force)
    _, name = stage_names(config, source)
    stage = runs.Stage(data.run, name, {**stage_params(config, source, STAGE1_KEYS), "alpha": config.alpha},
                       reads=("turns", "items", "candidates", stage1))
    if not stage.needed(force):
        return stage.summary()
    stage1_curves = runs.read_summary(data.run, stage1)["curves"]["stage1"]
    samples = gold_samples(data)
    student, history = fine_tune(reference, data, samples, config)
    return write_stage(stage, student, data, {"stage1": stage1_curves, "stage2": history},
                       {"samples": len(samples), "stage1": stage1}, started)


def config_from(args: argparse.Namespace) -> Config:
    return Config(alpha=args.alpha, baseline=args.baseline, labels=args.labels, similarity_top=args.similarity_top,
                  with_simulated=args.with_simulated, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, valid_share=args.valid_share, select_metric=args.select_metric,
                  finetune_encoder=args.finetune_encoder)


def print_result(summary: dict[str, Any], run: Path) -> None:
    test = summary["test"]
    print(f"[train] test ({test['pairs']:,d} pairs): R@1 {test['recall@1']:.2%}  R@10 {test['recall@10']:.2%}  "
          f"R@50 {test['recall@50']:.2%}  NDCG@10 {test['ndcg@10']:.4f}  tail R@50 {test['tail_recall@50']:.2%}  "
          f"coverage@50 {test['coverage@50']:.2%}; valid R@10 {summary['valid']['recall@10']:.2%}; "
          f"{summary['seconds']} s; in {run}")


def parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m train.two_stage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/, items/, candidates/ (and labels/)")
    p.add_argument("--alpha", type=NON_NEGATIVE_FLOAT, default=d.alpha, help=f"weight of the KL term (default {d.alpha})")
    p.add_argument("--baseline", action="store_true", help="gold labels only, both stages' epochs (default off)")
    p.add_argument("--labels", choices=("auto",) + L.LABEL_SOURCES, default=d.labels,
                   help="stage-1 synthetic labels: judge (labels/), similarity (top-M candidates), auto = judge if "
                        "labels/ exists else similarity (default auto)")
    p.add_argument("--similarity-top", type=POSITIVE_INT, default=d.similarity_top,
                   help=f"similarity labels: the first M candidates per turn (default {d.similarity_top})")
    p.add_argument("--with-simulated", action="store_true", help="add RUN/simulated/ turns to stage 1 (default off)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of init and shuffling (default {d.seed})")
    p.add_argument("--epochs", type=POSITIVE_INT, default=d.epochs, help=f"epochs per stage (default {d.epochs})")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--valid-share", type=float_in(0.0, 0.5, low_open=True), default=d.valid_share,
                   help=f"share of train dialogues held out for model selection (default {d.valid_share})")
    p.add_argument("--select-metric", choices=SELECT_METRICS, default=d.select_metric,
                   help=f"validation metric that picks the kept epoch (default {d.select_metric})")
    p.add_argument("--finetune-encoder", action="store_true", help="train the MiniLM encoder too (slow; default off)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="torch threads (default 1: on a shared CPU more threads spin and run slower)")
    p.add_argument("--force", action="store_true", help="retrain even when a matching checkpoint exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    def action() -> None:
        config = config_from(args)
        data = Data(args.run, config.valid_share, config.finetune_encoder, config.with_simulated)
        print_result(train_two_stage(data, config, args.force), args.run)

    return runs.exit_code(action)


if __name__ == "__main__":
    sys.exit(main())
