"""`crslab`: a folder CRSLab's `ReDialDataset` (tokenize `nltk`) reads as it is, without downloading anything.

Checked by running CRSLab's own code (`crslab/data/dataset/redial/redial.py`, `crslab/download.py`, the KBRD
dataloader and model): it reads `{train,valid,test}_data.json` (conversations of utterances `{utt_id, role, text:
[tokens], movies, entity, word}`), `token2id.json`, `entity2id.json`, `dbpedia_subkg.json` (`{head: [[relation,
tail], ...]}`), `concept2id.json`, `conceptnet_subkg.txt` and `movie_ids.json`, and downloads its own ReDial
resources over the folder unless `.built` names the version its resources expect (`RESOURCE_VERSION`).

- `text` is a token list: NLTK's word tokenizer (`word_tokenize`'s) over sentences split by NLTK's Punkt with its
  default parameters — CRSLab tokenizes with `nltk.word_tokenize`, whose English Punkt model is a separate download
  and not on PyPI, so the untrained Punkt keeps the export the same on every machine.
- Entities are the run's knowledge graph (`augment.kg`): `movies` are the utterance's movie entities, `entity` its
  linked genres and people; entity ids are the KG's plus one (id 0 is a padding entity: KGSF and NTRD mask
  `pad_entity` 0); `dbpedia_subkg.json` holds the item -> genre/star/director/writer triples, so KBRD's
  R-GCN gets graph signal (CRSLab keeps relations with more than 1,000 edges: on a whole catalog, all four).
- Synthetic labels are recommendation targets only: each train turn with synthetic labels adds a copy of its
  conversation cut at that turn, whose last utterance carries the synthetic labels as its `movies` (the targets)
  and whose earlier utterances carry their movies as `entity` (context, not targets), so no gold label is repeated
  and no synthetic label ever becomes context for a later turn. A conversation model trained on `train_data.json`
  sees those earlier responses once more per copy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer

from augment.export.files import dump
from augment.data.records import SPLIT_NAMES
from augment.kg import Graph, dialogues

if TYPE_CHECKING:
    from augment.export import Bundle

RESOURCE_VERSION = "0.31"  # crslab/data/dataset/redial/resources.py: resources['nltk']['version']
SPECIAL_TOKENS = {"__pad__": 0, "__start__": 1, "__end__": 2, "__unk__": 3}  # resources['nltk']['special_token_idx']
ROLES = {"seeker": "Seeker", "recommender": "Recommender"}
PAD_ENTITY = "__pad_entity__"  # id 0: resources['nltk']['special_token_idx']['pad_entity']
TOKENIZER = "nltk: NLTKWordTokenizer (word_tokenize's) over sentences of an untrained PunktSentenceTokenizer"
_SENTENCES, _WORDS = PunktSentenceTokenizer(), NLTKWordTokenizer()


def tokenize(text: str) -> list[str]:
    return [token for sentence in _SENTENCES.tokenize(text) for token in _WORDS.tokenize(sentence)]


def utterances(rows: list[dict[str, Any]], links: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """CRSLab utterances of one dialogue (its last turn's context and response), gold movies and entities."""
    texts = list(rows[-1]["context"]) + [{"role": "recommender", "text": rows[-1]["response"]}]
    return [
        {"utt_id": index, "role": ROLES[u["role"]], "text": tokenize(u["text"]),
         "movies": [names[e] for e in link["movies"]], "entity": [names[e] for e in link["attributes"]], "word": []}
        for index, (u, link) in enumerate(zip(texts, links))
    ]


def synthetic_copy(dialog: list[dict[str, Any]], turn: dict[str, Any], names: list[str],
                   entity_of_item: dict[str, int]) -> dict[str, Any]:
    """The conversation cut at `turn`: earlier movies as context entities only, synthetic labels as the targets."""
    earlier = [{**u, "movies": [], "entity": u["movies"] + u["entity"]} for u in dialog[:turn["turn_id"]]]
    last = {**dialog[turn["turn_id"]], "movies": [names[entity_of_item[s["item_id"]]] for s in turn["rec_synthetic"]],
            "entity": []}
    return {"conv_id": f"{turn['dialog_id']}/synthetic/{turn['turn_id']}", "dialog": earlier + [last]}


def conversations(bundle: Bundle, split: str) -> tuple[list[dict[str, Any]], int]:
    """The split's conversations, then (train) one synthetic copy per augmented turn; and the copies' count."""
    graph, names = bundle.kg.graph, bundle.kg.graph.names
    entity_of_item = graph.entity_of_item
    originals, copies = [], []
    for rows in dialogues(bundle.split(split)).values():
        dialog = utterances(rows, bundle.utterance_links(rows[-1]), names)
        originals.append({"conv_id": rows[-1]["dialog_id"], "dialog": dialog})
        copies += [synthetic_copy(dialog, t, names, entity_of_item) for t in rows if t["rec_synthetic"]]
    return originals + copies, len(copies)


def token2id(splits: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Special tokens at CRSLab's indices, then every token of the export, most frequent first."""
    counts = Counter(token for convs in splits.values() for c in convs for u in c["dialog"] for token in u["text"])
    vocabulary = dict(SPECIAL_TOKENS)
    for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        vocabulary.setdefault(token, len(vocabulary))
    return vocabulary



def graph_files(graph: Graph, out: Path) -> list[Path]:
    """entity2id.json, dbpedia_subkg.json and movie_ids.json with the KG's ids shifted by one: CRSLab's KGSF and
    NTRD mask entity id 0 (`pad_entity`) as padding, so id 0 is a padding entity no triple or label uses."""
    entity2id = {PAD_ENTITY: 0, **{name: index + 1 for name, index in graph.entity2id.items()}}
    adjacency = {str(int(head) + 1): [[relation, tail + 1] for relation, tail in pairs]
                 for head, pairs in graph.adjacency().items()}
    return [dump(out / "entity2id.json", entity2id), dump(out / "dbpedia_subkg.json", adjacency),
            dump(out / "movie_ids.json", sorted(e + 1 for e in graph.item_of))]


def write(bundle: Bundle, out: Path) -> tuple[list[Path], dict[str, Any]]:
    built = {split: conversations(bundle, split) for split in SPLIT_NAMES}
    splits = {split: convs for split, (convs, _) in built.items()}
    graph = bundle.kg.graph
    paths = [dump(out / f"{split}_data.json", convs) for split, convs in splits.items()]
    vocabulary = token2id(splits)
    paths += [
        dump(out / "token2id.json", vocabulary),
        *graph_files(graph, out),
        dump(out / "entity2item.json", {graph.names[e]: i for e, i in graph.item_of.items()}),
        dump(out / "concept2id.json", {"__pad__": 0}),  # CRSLab takes max(ids) + 1: never empty; no ConceptNet here
    ]
    (out / "conceptnet_subkg.txt").write_text("", encoding="utf-8")
    (out / ".built").write_text(f"exported by crs-augment (CRSLab reads the version below and downloads nothing)\n"
                                f"{RESOURCE_VERSION}", encoding="utf-8")
    no_context = sum(len(t["rec_synthetic"]) for t in bundle.split("train") if t["turn_id"] == 0)
    details = {
        "conversations": {split: len(convs) for split, convs in splits.items()},
        "synthetic_copies": built["train"][1],
        "synthetic_labels_without_context": no_context,
        "tokenizer": TOKENIZER,
        "vocabulary": len(vocabulary),
        "crslab_resource_version": RESOURCE_VERSION,
    }
    return paths + [out / "conceptnet_subkg.txt", out / ".built"], details
