"""`python -m augment.kg --run RUN`: a knowledge graph from the catalog's metadata, and the entities of every turn.

Entities are the catalog's items, named 'Title (Year)' (unique: a display name shared by two items gets its item id
appended), then the genre and person values of their metadata (a person who directs and writes is one entity).
Relations are CFCRS's four, with its ids: genre 0, star 1, director 2, writer 3; a triple is (item, relation,
value). ReDial and INSPIRED alike: both catalogs carry genres, directors and stars (writers where known).

Entity linking, per utterance of every dialogue in the run: movies are already linked (an utterance's movies are
the dialogue's items whose title it shows, and every gold label sits on its own turn); attribute entities are found
in the text by whole-word match of their names, with the utterance's movie titles removed first (so 'Scary Movie'
links no genre). People need at least two name words ('Will' is no person); genres match their plural and a few
common spellings (sci fi, romantic, animated); genres that are mostly ordinary words in chat (short, news, history,
music, sport) are not linked from text. A turn's context entities are the movies and attributes of its earlier
utterances, in order of first mention: what CRSLab, UniCRS and CFCRS feed their recommenders.

Artifacts in RUN/kg/: entities.parquet (entity_id, name, kind, item_id), triples.parquet (head, relation, tail),
utterances.parquet (per utterance: movies, attributes) and turns.parquet (per turn: context_entities). For ReDial
the summary compares the graph with CFCRS's (../shared/clients/cfcrs-kg): shared entities, relations, triples.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from augment import runs
from augment.data.records import display_title

RELATIONS = {"genre": 0, "star": 1, "director": 2, "writer": 3}  # CFCRS's relation2id.json
FIELDS = {"genre": "genres", "star": "stars", "director": "directors", "writer": "writers"}
KIND_OF = {"genre": "genre", "star": "person", "director": "person", "writer": "person"}
AMBIGUOUS_GENRES = ("history", "music", "news", "short", "sport")
GENRE_ALIASES = {"sci fi": "sci-fi", "scifi": "sci-fi", "science fiction": "sci-fi", "romantic": "romance",
                 "animated": "animation", "rom-com": "romance", "romcom": "romance"}
MIN_PERSON_WORDS = 2
LINKER_VERSION = 1  # bump when the linking rules change: the stage then rebuilds
CFCRS_KG = Path(__file__).resolve().parents[2] / "shared" / "clients" / "cfcrs-kg"
_WORD = re.compile(r"[a-z0-9]+(?:['.\-][a-z0-9]+)*")


def words(text: str) -> tuple[str, ...]:
    """Lower-cased words, keeping inner hyphens, apostrophes and dots ('sci-fi', "o'brien", 'j.d')."""
    return tuple(_WORD.findall(text.lower()))


@dataclass
class Graph:
    """Entities (names in id order), what each is, the item of each item entity, and the triples."""

    names: list[str]
    kinds: list[str]
    item_of: dict[int, str]
    triples: list[tuple[int, int, int]]

    @property
    def entity2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    @property
    def entity_of_item(self) -> dict[str, int]:
        return {item_id: entity for entity, item_id in self.item_of.items()}

    def adjacency(self) -> dict[str, list[list[int]]]:
        """{str(head): [[relation, tail], ...]}: the dbpedia_subkg.json / kg.json layout CRSLab, UniCRS, CFCRS read."""
        out: dict[str, list[list[int]]] = defaultdict(list)
        for head, relation, tail in self.triples:
            out[str(head)].append([relation, tail])
        return dict(out)


def item_names(items: Sequence[Mapping[str, Any]]) -> tuple[list[str], int]:
    """'Title (Year)' per item; a name shared by several items gets ' [item_id]' on each, so names are unique."""
    display = [display_title(item) or f"[{item['item_id']}]" for item in items]
    counts = Counter(display)
    return [f"{name} [{item['item_id']}]" if counts[name] > 1 else name for name, item in zip(display, items)], \
        sum(n for n in counts.values() if n > 1)


def build_graph(items: Sequence[Mapping[str, Any]]) -> tuple[Graph, dict[str, int]]:
    """The graph of a catalog (items first, in catalog order, then attribute values by first appearance)."""
    names, disambiguated = item_names(items)
    taken = set(names)
    graph = Graph(list(names), ["item"] * len(names), {i: item["item_id"] for i, item in enumerate(items)}, [])
    value_id: dict[tuple[str, str], int] = {}
    collisions = 0
    for head, item in enumerate(items):
        attributes = item.get("attributes") or {}
        for relation, field in FIELDS.items():
            for raw in attributes.get(field) or []:
                value = " ".join(str(raw).split())
                if not value:
                    continue
                key = (KIND_OF[relation], value.lower() if relation == "genre" else value)
                if key not in value_id:
                    name = key[1]
                    if name in taken:  # a person named like a movie without a year: keep both apart
                        name, collisions = f"{name} ({key[0]})", collisions + 1
                    value_id[key] = len(graph.names)
                    graph.names.append(name)
                    graph.kinds.append(key[0])
                    taken.add(name)
                graph.triples.append((head, RELATIONS[relation], value_id[key]))
    graph.triples = list(dict.fromkeys(graph.triples))
    return graph, {"disambiguated_item_names": disambiguated, "attribute_name_collisions": collisions}


class Linker:
    """Finds attribute entities in text: longest whole-word match over a phrase table."""

    def __init__(self, graph: Graph) -> None:
        self.phrases: dict[tuple[str, ...], int] = {}
        for entity, (name, kind) in enumerate(zip(graph.names, graph.kinds)):
            key = words(name)
            if kind == "person" and len(key) >= MIN_PERSON_WORDS:
                self.phrases.setdefault(key, entity)
            elif kind == "genre" and name not in AMBIGUOUS_GENRES and key:
                for form in (key, key[:-1] + (plural(key[-1]),)):
                    self.phrases.setdefault(form, entity)
        genre_ids = {name: e for e, (name, kind) in enumerate(zip(graph.names, graph.kinds)) if kind == "genre"}
        for alias, genre in GENRE_ALIASES.items():
            if genre in genre_ids:
                self.phrases.setdefault(words(alias), genre_ids[genre])
        self.longest = max((len(k) for k in self.phrases), default=0)

    def link(self, text: str, titles: Iterable[str] = ()) -> list[int]:
        """Entity ids found in `text`, in order, once each; the given movie titles are removed first."""
        for title in sorted(titles, key=len, reverse=True):
            text = text.replace(title, " ")
        tokens, found, start = words(text), [], 0
        while start < len(tokens):
            for size in range(min(self.longest, len(tokens) - start), 0, -1):
                entity = self.phrases.get(tokens[start:start + size])
                if entity is not None:
                    if entity not in found:
                        found.append(entity)
                    start += size
                    break
            else:
                start += 1
        return found


def plural(word: str) -> str:
    if word.endswith("y") and not word.endswith(("ay", "ey", "oy")):
        return word[:-1] + "ies"
    return word + "es" if word.endswith(("s", "x", "ch", "sh")) else word + "s"


def dialogues(turns: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Turns grouped by (split, dialog_id), in turn order; dialogues in the order they first appear."""
    grouped: dict[tuple[str, str], list] = defaultdict(list)
    for turn in turns:
        grouped[(turn["split"], turn["dialog_id"])].append(turn)
    return {key: sorted(rows, key=lambda t: t["turn_id"]) for key, rows in grouped.items()}


def find_titles(text: str, known: Sequence[str], titles: Mapping[str, str]) -> list[str]:
    """Items of `known` whose title `text` shows as whole words, in text order; a longer title is matched first and
    blanked, so 'Star Wars' is not found inside 'Star Wars: Episode II (2002)'."""
    found = []
    for item in sorted((i for i in known if titles[i]), key=lambda i: -len(titles[i])):
        pattern = re.compile(rf"(?<!\w){re.escape(titles[item])}(?!\w)")
        match = pattern.search(text)
        if match:
            found.append((match.start(), item))
            text = pattern.sub(lambda m: "\0" * len(m[0]), text)
    return [item for _, item in sorted(found)]


def utterance_movies(rows: Sequence[Mapping[str, Any]], titles: Mapping[str, str]) -> list[list[str]]:
    """Item ids per utterance of one dialogue: items whose title the utterance shows, every gold label on its turn,
    and an earlier mention no text shows on the utterance just before the first turn that lists it."""
    utterances = list(rows[-1]["context"]) + [{"role": "recommender", "text": rows[-1]["response"]}]
    known = list(dict.fromkeys(i for t in rows for i in [*t["mentioned"], *t["rec"]]))
    movies = [find_titles(u["text"], known, titles) for u in utterances]
    for turn in rows:
        movies[turn["turn_id"]] += [i for i in turn["rec"] if i not in movies[turn["turn_id"]]]
        placed = {i for utterance in movies[:turn["turn_id"]] for i in utterance}
        if turn["turn_id"] > 0:
            movies[turn["turn_id"] - 1] += [i for i in turn["mentioned"] if i not in placed]
    return movies


def link_dialogue(rows: Sequence[Mapping[str, Any]], entity: Mapping[str, int], linker: Linker,
                  titles: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per utterance of a dialogue: its role, movie entities and attribute entities (`entity`: the entity
    id of each item)."""
    last = rows[-1]
    utterances = list(last["context"]) + [{"role": "recommender", "text": last["response"]}]
    movies = utterance_movies(rows, titles)
    return [
        {"split": last["split"], "dialog_id": last["dialog_id"], "utt_id": index, "role": utterance["role"],
         "movies": [entity[i] for i in movies[index] if i in entity],
         "attributes": linker.link(utterance["text"], [titles[i] for i in movies[index]])}
        for index, utterance in enumerate(utterances)
    ]


def context_entities(utterances: Sequence[Mapping[str, Any]], turn_id: int) -> list[int]:
    """Movies and attributes of the utterances before `turn_id`, in order of first mention."""
    return list(dict.fromkeys(e for u in utterances[:turn_id] for e in [*u["movies"], *u["attributes"]]))


def compare_with_cfcrs(graph: Graph, folder: Path) -> dict[str, Any]:
    """Shared entities (by name), relations and triples (head name, relation name, tail name) with CFCRS's KG."""
    entity2id = json.loads((folder / "entity2id.json").read_text(encoding="utf-8"))
    relation2id = json.loads((folder / "relation2id.json").read_text(encoding="utf-8"))
    adjacency = json.loads((folder / "kg.json").read_text(encoding="utf-8"))
    items = set(json.loads((folder / "item_ids.json").read_text(encoding="utf-8")))
    name_of, relation_of = {v: k for k, v in entity2id.items()}, {v: k for k, v in relation2id.items()}
    theirs = {(name_of[int(h)], relation_of[r], name_of[t]) for h, pairs in adjacency.items() for r, t in pairs}
    ours_relation = {v: k for k, v in RELATIONS.items()}
    ours = {(graph.names[h], ours_relation[r], graph.names[t]) for h, r, t in graph.triples}
    their_items = {name_of[i] for i in items}
    our_items = {graph.names[e] for e in graph.item_of}
    share = lambda a, b: {"ours": len(a), "cfcrs": len(b), "shared": len(a & b)}
    return {
        "folder": str(folder),
        "entities": share(set(graph.names), set(entity2id)),
        "items": share(our_items, their_items),
        "attributes": share(set(graph.names) - our_items, set(entity2id) - their_items),
        "relations": share(set(RELATIONS), set(relation2id)),
        "triples": share(ours, theirs),
        "triples_by_relation": {r: share({t for t in ours if t[1] == r}, {t for t in theirs if t[1] == r})
                                for r in RELATIONS},
    }


def link_turns(turns: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]],
               graph: Graph) -> tuple[list[dict], list[dict]]:
    """Utterance rows of every dialogue, and each turn's context entities."""
    linker = Linker(graph)
    titles = {item["item_id"]: display_title(item) for item in items}
    entity, utterance_rows, turn_rows = graph.entity_of_item, [], []
    for rows in dialogues(turns).values():
        linked = link_dialogue(rows, entity, linker, titles)
        utterance_rows += linked
        turn_rows += [{"turn_uid": t["turn_uid"], "context_entities": context_entities(linked, t["turn_id"])}
                      for t in rows]
    return utterance_rows, turn_rows


def link_summary(graph: Graph, utterances: Sequence[Mapping], turns: Sequence[Mapping]) -> dict[str, Any]:
    attributes = [e for u in utterances for e in u["attributes"]]
    kinds = Counter(graph.kinds[e] for e in attributes)
    with_attributes = sum(1 for t in turns if any(graph.kinds[e] != "item" for e in t["context_entities"]))
    return {
        "utterances": len(utterances),
        "utterances_with_attributes": sum(1 for u in utterances if u["attributes"]),
        "attribute_links": dict(kinds),
        "turns": len(turns),
        "turns_with_attribute_context": with_attributes,
        "mean_context_entities": round(sum(len(t["context_entities"]) for t in turns) / len(turns), 2) if turns else 0,
    }


def graph_summary(graph: Graph) -> dict[str, Any]:
    by_relation = Counter(relation for _, relation, _ in graph.triples)
    linked_items = {head for head, _, _ in graph.triples}
    return {
        "entities": len(graph.names),
        "entities_by_kind": dict(Counter(graph.kinds)),
        "relations": dict(RELATIONS),
        "triples": len(graph.triples),
        "triples_by_relation": {name: by_relation[index] for name, index in RELATIONS.items()},
        "items_without_triples": len(graph.item_of) - len(linked_items & set(graph.item_of)),
    }


def build(run: Path, force: bool = False, cfcrs: Path | None = CFCRS_KG) -> dict[str, Any]:
    """The kg/ stage: graph, links and summary; a no-op when built from the same turns and items."""
    params = {"linker_version": LINKER_VERSION, "relations": RELATIONS, "ambiguous_genres": list(AMBIGUOUS_GENRES),
              "min_person_words": MIN_PERSON_WORDS}
    stage = runs.Stage(run, "kg", params, reads=("turns", "items"))
    done = stage.summary()
    if done is not None and done.get("params") != stage.params and not force:
        print(f"[kg] rebuilding: the linking rules changed since {Path(run) / 'kg'} was built")
        force = True  # cheap and deterministic, and read only by exports, which rebuild in turn
    if not stage.needed(force, quiet=True):
        return stage.summary()
    items = runs.read_rows(Path(run) / "items" / "items.parquet")
    turns = runs.read_rows(Path(run) / "turns" / "turns.parquet")
    graph, naming = build_graph(items)
    utterances, turn_rows = link_turns(turns, items, graph)
    folder = runs.stage_dir(run, "kg")
    runs.write_rows(folder / "entities.parquet", [
        {"entity_id": e, "name": n, "kind": k, "item_id": graph.item_of.get(e)}
        for e, (n, k) in enumerate(zip(graph.names, graph.kinds))])
    runs.write_rows(folder / "triples.parquet", [{"head": h, "relation": r, "tail": t} for h, r, t in graph.triples])
    runs.write_rows(folder / "utterances.parquet", utterances)
    runs.write_rows(folder / "turns.parquet", turn_rows)
    dataset = turns[0]["dataset"] if turns else None
    summary = {"dataset": dataset, **graph_summary(graph), **naming, "linking": link_summary(graph, utterances, turn_rows)}
    if dataset == "redial" and cfcrs is not None and (Path(cfcrs) / "kg.json").exists():
        summary["cfcrs_overlap"] = compare_with_cfcrs(graph, Path(cfcrs))
    summary = stage.finish(summary)
    print_summary(run, summary)
    return summary


def print_summary(run: Path, summary: Mapping[str, Any]) -> None:
    kinds = ", ".join(f"{n:,d} {k}" for k, n in summary["entities_by_kind"].items())
    link = summary["linking"]
    print(f"[kg] {Path(run) / 'kg'}: {summary['entities']:,d} entities ({kinds}), {summary['triples']:,d} triples; "
          f"{link['turns_with_attribute_context']:,d} of {link['turns']:,d} turns have attribute entities in context")
    overlap = summary.get("cfcrs_overlap")
    if overlap:
        print("  vs CFCRS: " + ", ".join(f"{key} {overlap[key]['shared']:,d} shared of {overlap[key]['ours']:,d} ours / "
                                         f"{overlap[key]['cfcrs']:,d} theirs" for key in ("entities", "relations", "triples")))


@dataclass
class Loaded:
    """The kg/ stage read back: the graph, utterance links by dialogue, context entities by turn."""

    graph: Graph
    utterances: dict[tuple[str, str], list[dict]]
    context: dict[str, list[int]]


def load(run: Path) -> Loaded:
    folder = Path(run) / "kg"
    runs.require(run, "kg")
    entities = sorted(runs.read_rows(folder / "entities.parquet"), key=lambda e: e["entity_id"])
    graph = Graph([e["name"] for e in entities], [e["kind"] for e in entities],
                  {e["entity_id"]: e["item_id"] for e in entities if e["item_id"] is not None},
                  [(t["head"], t["relation"], t["tail"]) for t in runs.read_rows(folder / "triples.parquet")])
    utterances: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in sorted(runs.read_rows(folder / "utterances.parquet"), key=lambda u: u["utt_id"]):
        utterances[(row["split"], row["dialog_id"])].append(row)
    context = {row["turn_uid"]: row["context_entities"] for row in runs.read_rows(folder / "turns.parquet")}
    return Loaded(graph, dict(utterances), context)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m augment.kg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with turns/ and items/ (from augment.data)")
    p.add_argument("--force", action="store_true", help="rebuild even if built from the same turns and items")
    p.add_argument("--cfcrs", type=Path, default=CFCRS_KG,
                   help=f"CFCRS's ReDial KG folder to compare a ReDial graph with (default {CFCRS_KG}; skipped if absent)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: build(args.run, args.force, args.cfcrs))


if __name__ == "__main__":
    sys.exit(main())
