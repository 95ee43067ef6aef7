"""Template mode: dialogues from the Jinja phrasings in `prompts/simulate/`, chosen with a seeded RNG.

No model and byte-identical output for a fixed seed: each dialogue has its own RNG seeded by (seed, item, k). Every
rendered line is one phrasing; a phrasing that would name the target item is discarded, so no dialogue leaks its label.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from augment.data.records import RECOMMENDER, SEEKER, Utterance, display_title, merge_messages
from augment.simulate.catalog import Catalog, Skips, leaks, names, pick_liked
from augment.templates import render

SLOTS = ("genre", "director", "star", "plot", "era", "liked")
CONTENT_SLOTS = ("genre", "director", "star", "plot", "liked")  # era alone says too little to recommend from
SEEKER_OPEN = "simulate/seeker_open.jinja"
RECOMMENDER_OPEN = "simulate/recommender_open.jinja"
RECOMMENDER_ASK = "simulate/recommender_ask.jinja"
RECOMMEND = "simulate/recommend.jinja"
TEMPLATE_MODE_FILES = (SEEKER_OPEN, RECOMMENDER_OPEN, RECOMMENDER_ASK, RECOMMEND) + tuple(
    f"simulate/prefer_{slot}.jinja" for slot in SLOTS
)
PLOT_WORDS = 30
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@lru_cache(maxsize=4096)
def _rendered_lines(name: str, variables: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    return tuple(line.strip() for line in render(name, **dict(variables)).splitlines() if line.strip())


def phrasings(name: str, item: Mapping[str, Any] | None = None, **variables: Any) -> list[str]:
    """The phrasings a template offers (one per rendered line), without those that would name `item`."""
    lines = _rendered_lines(name, tuple(sorted(variables.items())))
    return [line for line in lines if item is None or not names(line, item)]


def short_plot(plot: str, item: Mapping[str, Any]) -> str:
    """The plot's first sentence that does not name the item, at most PLOT_WORDS words: enough for a premise, short
    enough for a chat line (a plot such as "...unearths a werewolf skeleton" names the movie "Werewolf")."""
    sentences = _SENTENCE_END.split(plot.strip())
    sentence = next((s for s in sentences if not names(s, item)), sentences[0])
    words = sentence.split()
    return sentence if len(words) <= PLOT_WORDS else " ".join(words[:PLOT_WORDS]) + "..."


def slot_variables(
    rng: random.Random, item: Mapping[str, Any], catalog: Catalog
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """For each slot the item can fill, the template variables of this dialogue (a sampled genre, star...), and the
    id of the liked movie the "liked" slot names (None without one)."""
    attributes = item["attributes"]
    slots: dict[str, dict[str, Any]] = {}
    if attributes["genres"]:
        genres = [g.lower() for g in attributes["genres"]]
        slots["genre"] = {"genre": " and ".join(rng.sample(genres, min(len(genres), rng.randint(1, 2))))}
    if attributes["directors"]:
        slots["director"] = {"director": rng.choice(attributes["directors"])}
    if attributes["stars"]:
        slots["star"] = {"star": rng.choice(attributes["stars"][:3])}
    if attributes["plot"]:
        slots["plot"] = {"plot": short_plot(attributes["plot"], item)}
    if item["year"]:
        slots["era"] = {"year": item["year"], "decade": f"{item['year'] // 10 * 10}s"}
    liked = pick_liked(rng, catalog, item)
    if liked is None:
        return slots, None
    movie, kind, shared = liked
    slots["liked"] = {"liked": display_title(movie), "kind": kind, "shared": shared}
    return slots, movie["item_id"]


def template_dialogue(rng: random.Random, item: Mapping[str, Any], catalog: Catalog) -> list[Utterance] | None:
    """One dialogue: [recommender greeting], seeker preferences with recommender questions between them, and the
    final recommendation naming the item with a reason drawn from the preferences the seeker stated.

    Returns None when no preference can be phrased without naming the item.
    """
    variables, liked_id = slot_variables(rng, item, catalog)
    lines = {slot: phrasings(f"simulate/prefer_{slot}.jinja", item, **values) for slot, values in variables.items()}
    available = [slot for slot in SLOTS if lines.get(slot)]
    if not any(slot in CONTENT_SLOTS for slot in available):
        return None
    chosen = rng.sample(available, min(len(available), rng.randint(2, 3)))
    messages: list[tuple[str, str, list[str]]] = []
    greeting = phrasings(RECOMMENDER_OPEN, item)
    if greeting and rng.random() < 0.5:
        messages.append((RECOMMENDER, rng.choice(greeting), []))
    openers = phrasings(SEEKER_OPEN, item)
    for index, slot in enumerate(chosen):
        if index:
            questions = phrasings(RECOMMENDER_ASK, item, slot=slot)
            if questions:
                messages.append((RECOMMENDER, rng.choice(questions), []))
        text = rng.choice(lines[slot])
        if index == 0 and openers:
            text = f"{rng.choice(openers)} {text}"
        messages.append((SEEKER, text, [liked_id] if slot == "liked" else []))
    messages.append((RECOMMENDER, rng.choice(recommendation_lines(item, chosen, variables)), [item["item_id"]]))
    return merge_messages(messages)


def recommendation_lines(item: Mapping[str, Any], chosen: Sequence[str], variables: Mapping[str, dict]) -> list[str]:
    """Final lines naming the item; the reason speaks only to the preferences this seeker stated."""
    said = {slot: variables[slot] for slot in chosen}
    return phrasings(
        RECOMMEND,
        title=display_title(item),
        genre=said.get("genre", {}).get("genre"),
        director=said.get("director", {}).get("director"),
        star=said.get("star", {}).get("star"),
        decade=said.get("era", {}).get("decade"),
        liked=said.get("liked", {}).get("liked"),
        plot="plot" in said,
    )


def template_item_dialogues(
    item: Mapping[str, Any], catalog: Catalog, per_item: int, seed: int, max_attempts: int
) -> list[list[Utterance]] | None:
    """The item's `per_item` dialogues, or None (item skipped) if one of them cannot avoid naming the item.

    Each dialogue has its own RNG seeded by (seed, item, k), so an item's dialogues do not depend on the order or
    the content of the rest of the run.
    """
    dialogues = []
    for k in range(per_item):
        rng = random.Random(f"{seed}:{item['item_id']}:{k}")
        attempts = (template_dialogue(rng, item, catalog) for _ in range(max_attempts))
        dialogue = next((d for d in attempts if d is not None and not leaks(d, item)), None)
        if dialogue is None:
            return None
        dialogues.append(dialogue)
    return dialogues


def template_dialogues(
    items: Sequence[dict[str, Any]], catalog: Catalog, per_item: int, seed: int, max_attempts: int, skips: Skips
) -> dict[tuple[str, int], list[Utterance]]:
    """Every item's dialogues by (item_id, k); an item that cannot avoid naming itself is skipped whole."""
    dialogues: dict[tuple[str, int], list[Utterance]] = {}
    for item in tqdm(items, unit="item", desc="[simulate] template", dynamic_ncols=True):
        made = template_item_dialogues(item, catalog, per_item, seed, max_attempts)
        if made is None:
            skips.add(item, "title unavoidable")
            continue
        dialogues |= {(item["item_id"], k): dialogue for k, dialogue in enumerate(made)}
    return dialogues

