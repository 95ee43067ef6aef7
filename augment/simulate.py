"""`python -m augment.simulate`: simulated seeker/recommender dialogues for every catalog item, evenly.

Most catalog items are long-tail: rarely or never mentioned in real dialogues, so a recommender trained on real
turns never learns them (LOT-CRS). This stage writes `--per-item N` dialogues for EVERY item from its attributes
(genres, director, stars, plot, year, a real catalog movie sharing an attribute), each ending with the recommender
recommending the item, and saves each dialogue's final recommendation turn in the ordinary turn schema (dataset
`<dataset>-sim`, split "train"), so training and release read them like real turns.

Two modes. `template`: Jinja phrasings in `prompts/simulate/` (one phrasing per rendered line) chosen with a
seeded RNG; no model, byte-identical output for a fixed seed. `llm`: `prompts/simulate/llm.jinja` asks a model
(any backend, through the request cache) for a dialogue in a strict "Seeker: / Recommender:" line format; outputs
are parsed and validated, invalid ones regenerated with a fresh persona up to `--max-attempts`, then dropped and
counted by reason.

The label must not leak: the item's title never appears before the final recommendation (`leaks`). Template mode
guarantees it by discarding any phrasing that would name the item; llm mode regenerates leaking outputs.

Popularity buckets (by the item's `n_mentions` in the real dialogues): tail 0-1 mentions, torso 2-9, head >= 10.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tqdm import tqdm

from augment import runs
from augment.data.records import (
    RECOMMENDER,
    SEEKER,
    TURN_SCHEMA,
    Utterance,
    dialogue_turns,
    display_title,
    merge_messages,
)
from augment.llm import make_backend, uses_raw_completion
from augment.llm.base import Backend
from augment.llm.cache import CachedBackend, reason_head
from augment.score import add_backend_arguments, backend_options
from augment.templates import render, template_hash

STAGE = "simulated"
MODES = ("template", "llm")
SLOTS = ("genre", "director", "star", "plot", "era", "liked")
CONTENT_SLOTS = ("genre", "director", "star", "plot", "liked")  # era alone says too little to recommend from
SEEKER_OPEN = "simulate/seeker_open.jinja"
RECOMMENDER_OPEN = "simulate/recommender_open.jinja"
RECOMMENDER_ASK = "simulate/recommender_ask.jinja"
RECOMMEND = "simulate/recommend.jinja"
LLM_PROMPT = "simulate/llm.jinja"
PERSONAS = "simulate/personas.jinja"
TEMPLATE_MODE_FILES = (SEEKER_OPEN, RECOMMENDER_OPEN, RECOMMENDER_ASK, RECOMMEND) + tuple(
    f"simulate/prefer_{slot}.jinja" for slot in SLOTS
)
LLM_MODE_FILES = (LLM_PROMPT, PERSONAS)
BUCKETS = (("tail", 0, 1), ("torso", 2, 9), ("head", 10, None))
BUCKET_RULE = "by n_mentions in the real dialogues: tail 0-1, torso 2-9, head >= 10"
PLOT_WORDS = 30
LIKED_TRIES = 8
MIN_UTTERANCES = 4  # llm mode: the prompt asks for 4-8 lines; fewer cannot hold a preference and a recommendation
CHUNK = 32  # llm prompts per cached batch: a kill loses at most one chunk
_ROLE_LINE = re.compile(r"^[^A-Za-z]*(seeker|recommender)\b[^A-Za-z:]*:(.*)$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


# ---------------------------------------------------------------------------------------------------- leakage


@lru_cache(maxsize=8192)
def title_pattern(title: str) -> re.Pattern[str]:
    """The title as a whole phrase, any case: 'Up' matches "Up (2009)" or "up!" but not "upset" or "pick-up's".

    Whole-phrase (not substring) search, because a substring test would flag every dialogue for titles such as
    "It", "Up" or "M"; apostrophes count as part of a word so "I'm" does not name the movie "M".
    """
    return re.compile(rf"(?<![\w']){re.escape(title)}(?![\w'])", re.IGNORECASE)


def names(text: str, item: Mapping[str, Any]) -> bool:
    """True when `text` names the item (its title as a whole phrase, case-insensitive)."""
    return bool(title_pattern(item["title"]).search(text))


def leaks(dialogue: Sequence[Utterance | Mapping[str, str]], item: Mapping[str, Any]) -> bool:
    """True when the item's title appears in any utterance before the last one (the final recommendation).

    A simulated dialogue whose seeker, or an earlier recommender line, already names the target would teach a
    recommender to copy the title from the context instead of inferring the item from preferences.
    """
    return any(names(u.text if isinstance(u, Utterance) else u["text"], item) for u in dialogue[:-1])


# ------------------------------------------------------------------------------------------------ the catalog


@dataclass
class Catalog:
    """The items by id, and for each (kind, value) — director, star or genre — the titled items that have it.

    The index lets a seeker name "a movie they enjoyed that shares attributes" in O(1) per dialogue.
    """

    by_id: dict[str, dict[str, Any]]
    sharing: dict[tuple[str, str], list[str]]

    @classmethod
    def build(cls, items: Sequence[dict[str, Any]]) -> Catalog:
        sharing: dict[tuple[str, str], list[str]] = {}
        for item in items:
            if item["title"]:
                for kind, value in attribute_values(item):
                    sharing.setdefault((kind, value), []).append(item["item_id"])
        return cls({item["item_id"]: item for item in items}, sharing)


def attribute_values(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    attributes = item["attributes"]
    return (
        [("director", d) for d in attributes["directors"]]
        + [("star", s) for s in attributes["stars"]]
        + [("genre", g.lower()) for g in attributes["genres"]]
    )


def skip_reason(item: Mapping[str, Any]) -> str | None:
    """Why an item cannot get a meaningful preference dialogue, or None.

    Without a title it cannot be recommended by name; with nothing but a title and year the seeker has no
    preference to state that would point to it.
    """
    if not item["title"]:
        return "no title"
    attributes = item["attributes"]
    if not (attributes["genres"] or attributes["directors"] or attributes["stars"] or attributes["plot"]):
        return "too little metadata"
    return None


def pick_liked(rng: random.Random, catalog: Catalog, item: Mapping[str, Any]) -> tuple[dict[str, Any], str, str] | None:
    """Another real catalog item sharing a director, star or genre with `item`: (liked item, kind, shared value).

    Never the target, and never a movie whose own title contains the target's (that would leak the label).
    """
    options = [key for key in attribute_values(item) if len(catalog.sharing.get(key, ())) > 1]
    for _ in range(LIKED_TRIES if options else 0):
        kind, value = rng.choice(options)
        liked = catalog.by_id[rng.choice(catalog.sharing[(kind, value)])]
        if liked["item_id"] != item["item_id"] and not names(display_title(liked), item):
            return liked, kind, value
    return None


# ------------------------------------------------------------------------------------------------ template mode


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


@dataclass
class Skips:
    """Items skipped, counted by reason, with the first few of each reason named for the summary."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, item: Mapping[str, Any], reason: str) -> None:
        self.counts[reason] += 1
        named = self.examples.setdefault(reason, [])
        if len(named) < 5:
            named.append(f"{item['item_id']} {display_title(item)}".strip())

    def check(self, item: Mapping[str, Any]) -> str | None:
        """Record and return the item's `skip_reason`, if it has one."""
        reason = skip_reason(item)
        if reason is not None:
            self.add(item, reason)
        return reason


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


# ---------------------------------------------------------------------------------------------------- llm mode


def parse_dialogue(text: str) -> list[tuple[str, str]]:
    """(role, text) messages from a model's output, one per "Seeker:" / "Recommender:" line.

    Lines before the first role line are a preamble ("Here is a dialogue:") and are dropped; the first non-role
    line after the dialogue started ends it (trailing commentary is not dialogue). Markdown bold and list markers
    around a role ("**Seeker:**", "1. Recommender:") are tolerated; empty messages are dropped.
    """
    messages: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _ROLE_LINE.match(line.strip())
        if match is None:
            if messages:
                break
            continue
        body = match[2].strip().strip("*").strip()
        if body:
            messages.append((match[1].lower(), body))
    return messages


def validate_dialogue(
    text: str | None, item: Mapping[str, Any], liked: Mapping[str, Any] | None = None
) -> tuple[list[Utterance] | None, str | None]:
    """A parsed, validated dialogue ending at its recommendation, or (None, reason).

    The recommendation is the first recommender utterance that names the item; anything after it is cut (the
    training turn only needs the context before it). Reasons: "empty", "unparseable" (no role lines), "missing
    role" (no seeker before the recommendation, or one role absent), "no final recommendation" (the recommender
    never names the item), "title leaked early" (named before the recommendation), "too short" (fewer than
    MIN_UTTERANCES utterances, consecutive lines of one speaker merged, up to the recommendation). The liked movie,
    when the seeker names it, goes into the utterance's items so it lands in `mentioned`.
    """
    if not text or not text.strip():
        return None, "empty"
    messages = parse_dialogue(text)
    if not messages:
        return None, "unparseable"
    if {role for role, _ in messages} != {SEEKER, RECOMMENDER}:
        return None, "missing role"
    utterances = merge_messages((role, body, []) for role, body in messages)
    final = next((i for i, u in enumerate(utterances) if u.role == RECOMMENDER and names(u.text, item)), None)
    if final is None:
        return None, "no final recommendation"
    dialogue = utterances[: final + 1]
    if not any(u.role == SEEKER for u in dialogue):
        return None, "missing role"
    if leaks(dialogue, item):
        return None, "title leaked early"
    if len(dialogue) < MIN_UTTERANCES:
        return None, "too short"
    for utterance in dialogue[:-1]:
        if liked is not None and names(utterance.text, liked):
            utterance.items.append(liked["item_id"])
    dialogue[-1].items.append(item["item_id"])
    return dialogue, None


@dataclass
class Job:
    """One wanted dialogue (item, k) and the prompt of its current attempt."""

    item: dict[str, Any]
    k: int
    prompt: str = ""
    liked: dict[str, Any] | None = None


def plan_prompt(job: Job, catalog: Catalog, seed: int, attempt: int, completion: bool) -> None:
    """Sample this attempt's persona and liked movie, and render the prompt.

    Each attempt re-samples them, so a regeneration asks a different question: it helps even with greedy decoding,
    and every prompt stays a pure function of (seed, item, k, attempt), so the request cache replays a run exactly.
    """
    rng = random.Random(f"{seed}:{job.item['item_id']}:{job.k}:{attempt}")
    persona = rng.choice(phrasings(PERSONAS))
    liked = pick_liked(rng, catalog, job.item)
    job.liked = liked[0] if liked else None
    attributes = job.item["attributes"]
    job.prompt = render(
        LLM_PROMPT,
        title=display_title(job.item),
        genres=attributes["genres"],
        directors=attributes["directors"],
        stars=attributes["stars"][:3],
        plot=attributes["plot"],
        persona=persona,
        liked=display_title(job.liked) if job.liked else None,
        completion=completion,
    )


@dataclass
class LLMStats:
    """What the model produced: requests, invalid outputs by reason, regenerations, dropped dialogues."""

    requests: int = 0
    valid: int = 0
    first_try_valid: int = 0
    regenerations: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)

    def count_invalid(self, job: Job, reason: str, output: str) -> None:
        """Count an invalid output; keep the first example of each reason (at most 3) for the summary."""
        self.invalid[reason] += 1
        if len(self.examples) < 3 and reason not in {example["reason"] for example in self.examples}:
            self.examples.append({"item_id": job.item["item_id"], "reason": reason, "output": output[:400]})


def llm_dialogues(
    items: Sequence[dict[str, Any]],
    catalog: Catalog,
    backend: Backend,
    per_item: int,
    seed: int,
    max_attempts: int,
    max_tokens: int,
    temperature: float,
) -> tuple[dict[tuple[str, int], list[Utterance]], LLMStats]:
    """Generate, validate, regenerate the invalid ones (fresh prompt each attempt), drop what is still invalid."""
    completion = uses_raw_completion(backend)
    stats = LLMStats()
    done: dict[tuple[str, int], list[Utterance]] = {}
    pending = [Job(item, k) for item in items for k in range(per_item)]
    last_reason: dict[tuple[str, int], str] = {}
    for attempt in range(max_attempts):
        if not pending:
            break
        stats.regenerations += len(pending) if attempt else 0
        for job in pending:
            plan_prompt(job, catalog, seed, attempt, completion)
        outputs = generate_chunked(backend, [job.prompt for job in pending], max_tokens, temperature,
                                   attempt_seed(seed, attempt), attempt)
        retry = []
        for job, (text, error) in zip(pending, outputs):
            dialogue, reason = check_output(job, text, error, completion)
            stats.requests += 1
            if dialogue is not None:
                done[(job.item["item_id"], job.k)] = dialogue
                stats.valid += 1
                stats.first_try_valid += int(attempt == 0)
            else:
                stats.count_invalid(job, reason, text or error or "")
                last_reason[(job.item["item_id"], job.k)] = reason
                retry.append(job)
        pending = retry
    stats.dropped.update(last_reason[(job.item["item_id"], job.k)] for job in pending)
    return done, stats


def check_output(job: Job, text: str | None, error: str | None, completion: bool) -> tuple[list[Utterance] | None, str]:
    """Validate one generation; a backend failure is an invalid output too, counted under its own reason."""
    if error is not None:
        return None, f"backend: {reason_head(error)}"
    dialogue, reason = validate_dialogue(f"Seeker: {text}" if completion else text, job.item, job.liked)
    return dialogue, reason or ""


def attempt_seed(seed: int, attempt: int) -> int:
    """The sampling seed of one attempt: distinct per attempt (a regeneration is a new request even if its prompt
    repeats) and unrelated across run seeds (seed 1's first attempt is not seed 0's second)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{attempt}".encode()).digest()[:4], "big")


def generate_chunked(
    backend: Backend, prompts: Sequence[str], max_tokens: int, temperature: float, seed: int, attempt: int
) -> list[tuple[str | None, str | None]]:
    """(text, error) per prompt, in cached chunks with a progress bar."""
    results: list[tuple[str | None, str | None]] = []
    with tqdm(total=len(prompts), unit="dialogue", desc=f"[simulate] attempt {attempt + 1}", dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), CHUNK):
            chunk = prompts[start : start + CHUNK]
            for generation in backend.generate(chunk, max_tokens=max_tokens, temperature=temperature, seed=seed):
                results.append((generation.text, generation.error))
            bar.update(len(chunk))
    return results


# ------------------------------------------------------------------------------------------ turns and report


def simulated_row(dataset: str, item_id: str, k: int, dialogue: Sequence[Utterance]) -> dict[str, Any]:
    """The dialogue's final recommendation turn, built by the same rule as real turns (`records.dialogue_turns`)."""
    turn = dialogue_turns(f"{dataset}-sim", "train", f"sim-{item_id}-{k}", dialogue)[-1]
    if turn["rec"] != [item_id] or turn["turn_id"] != len(dialogue) - 1:
        raise RuntimeError(f"simulated dialogue for {item_id} does not end with its recommendation")
    return turn


def bucket_of(n_mentions: int) -> str:
    return next(name for name, low, high in BUCKETS if n_mentions >= low and (high is None or n_mentions <= high))


def label_counts(turns: Iterable[Mapping[str, Any]], split: str | None) -> Counter[str]:
    """How many turns (of `split`, or of every split when None) have each item among their gold labels."""
    return Counter(item for turn in turns if split is None or turn["split"] == split for item in turn["rec"])


def coverage_report(items: Sequence[dict], real_turns: Sequence[dict], sim_rows: Sequence[dict]) -> dict[str, Any]:
    """Items with >= 1 training label, real (train split) vs real + simulated, overall and per popularity bucket."""
    real, any_split = label_counts(real_turns, "train"), label_counts(real_turns, None)
    sim = label_counts(sim_rows, None)
    total = len(items)
    report: dict[str, Any] = {
        "catalog": total,
        "real_split": "train",
        "real": sum(1 for item in items if real[item["item_id"]]),
        "real_plus_sim": sum(1 for item in items if real[item["item_id"]] + sim[item["item_id"]]),
        "real_all_splits": sum(1 for item in items if any_split[item["item_id"]]),
        "buckets": {},
        "bucket_rule": BUCKET_RULE,
    }
    report["real_fraction"] = report["real"] / total if total else 0.0
    report["real_plus_sim_fraction"] = report["real_plus_sim"] / total if total else 0.0
    for name, _, _ in BUCKETS:
        members = [item["item_id"] for item in items if bucket_of(item["n_mentions"]) == name]
        n = len(members) or 1
        report["buckets"][name] = {
            "items": len(members),
            "real_covered": sum(1 for i in members if real[i]),
            "real_plus_sim_covered": sum(1 for i in members if real[i] + sim[i]),
            "real_labels_per_item": round(sum(real[i] for i in members) / n, 3),
            "real_plus_sim_labels_per_item": round(sum(real[i] + sim[i] for i in members) / n, 3),
        }
    return report


def plot_labels_per_item(
    items: Sequence[dict], real_turns: Sequence[dict], sim_rows: Sequence[dict], path: Path
) -> Path:
    """Histogram of training labels per item, one panel per popularity bucket, real vs real + simulated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, sim = label_counts(real_turns, "train"), label_counts(sim_rows, None)
    cap = 10
    figure, axes = plt.subplots(1, len(BUCKETS), figsize=(12, 3.5), sharey=False)
    for axis, (name, low, high) in zip(axes, BUCKETS):
        members = [item["item_id"] for item in items if bucket_of(item["n_mentions"]) == name]
        before = Counter(min(real[i], cap) for i in members)
        after = Counter(min(real[i] + sim[i], cap) for i in members)
        xs = list(range(cap + 1))
        axis.bar([x - 0.2 for x in xs], [before[x] for x in xs], width=0.4, label="real", color="#c44e52")
        axis.bar([x + 0.2 for x in xs], [after[x] for x in xs], width=0.4, label="real + simulated", color="#4c72b0")
        axis.set_xticks(xs, [str(x) if x < cap else f"{cap}+" for x in xs])
        mentions = f"{low}-{high}" if high is not None else f">= {low}"
        axis.set_title(f"{name} ({mentions} mentions, {len(members):,d} items)")
        axis.set_xlabel("training labels per item")
    axes[0].set_ylabel("items")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def sample_dialogues(items: Sequence[dict], rows: Sequence[dict], count: int = 3) -> list[dict[str, Any]]:
    """One dialogue per popularity bucket (tail first), then more from the first items, up to `count`."""
    by_item = {}
    for row in rows:
        by_item.setdefault(row["rec"][0], row)
    bucket = {item["item_id"]: bucket_of(item["n_mentions"]) for item in items}
    picks = [next((i for i in by_item if bucket[i] == name), None) for name, _, _ in BUCKETS]
    ordered = list(dict.fromkeys([p for p in picks if p is not None] + list(by_item)))[:count]
    return [
        {
            "item_id": item_id,
            "bucket": bucket[item_id],
            "dialogue": [f"{u['role'].capitalize()}: {u['text']}" for u in by_item[item_id]["context"]]
            + [f"Recommender: {by_item[item_id]['response']}"],
            "mentioned": by_item[item_id]["mentioned"],
        }
        for item_id in ordered
    ]


# -------------------------------------------------------------------------------------------------- the stage


def simulation_params(
    mode: str, per_item: int, seed: int, max_attempts: int, backend: Backend | None, max_tokens: int, temperature: float
) -> dict[str, Any]:
    """Everything that changes the simulated dialogues, including the hash of every template used."""
    files = TEMPLATE_MODE_FILES if mode == "template" else LLM_MODE_FILES
    params: dict[str, Any] = {
        "mode": mode,
        "per_item": per_item,
        "seed": seed,
        "max_attempts": max_attempts,
        "templates": {name: template_hash(name) for name in files},
    }
    if mode == "llm":
        if backend is None:
            raise ValueError("--mode llm needs a backend")
        params |= {
            "backend": {"name": backend.name, "model": backend.model, **backend.params()},
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
    return params


def simulate(
    run: Path,
    mode: str,
    per_item: int,
    seed: int,
    backend: Backend | None = None,
    max_attempts: int = 3,
    *,
    max_tokens: int = 320,
    temperature: float = 0.7,
    cache_path: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write `simulated/` (turns.parquet, labels_per_item.png, summary.json last) and return its summary.

    A finished stage with the same parameters is a no-op returning its summary (`runs.Stage`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if per_item < 1 or max_attempts < 1:
        raise ValueError("--per-item and --max-attempts must be at least 1")
    run = Path(run)
    params = simulation_params(mode, per_item, seed, max_attempts, backend, max_tokens, temperature)
    stage = runs.Stage(run, STAGE, params, reads=("items", "turns") if (run / "turns" / runs.SUMMARY).exists() else ("items",))
    if not stage.needed(force):
        return stage.summary() or {}
    started = time.perf_counter()
    items = runs.read_rows(run / "items" / "items.parquet")
    turns_path = run / "turns" / "turns.parquet"
    real_turns = runs.read_rows(turns_path) if turns_path.exists() else []
    dataset = dataset_name(run, real_turns)
    catalog = Catalog.build(items)
    skips = Skips()
    usable = [item for item in items if not skips.check(item)]
    llm_report = None
    if mode == "template":
        dialogues = template_dialogues(usable, catalog, per_item, seed, max_attempts, skips)
    else:
        cached = CachedBackend(backend, cache_path)
        dialogues, stats = llm_dialogues(usable, catalog, cached, per_item, seed, max_attempts, max_tokens, temperature)
        llm_report = llm_summary(stats, cached)
    rows = [
        simulated_row(dataset, item["item_id"], k, dialogues[(item["item_id"], k)])
        for item in items
        for k in range(per_item)
        if (item["item_id"], k) in dialogues
    ]
    folder = runs.stage_dir(run, STAGE)
    runs.write_rows(folder / "turns.parquet", rows, schema=TURN_SCHEMA)
    plot_labels_per_item(items, real_turns, rows, folder / "labels_per_item.png")
    per_item_counts = Counter(row["rec"][0] for row in rows)
    summary = {
        "dataset": f"{dataset}-sim",
        "items": len(items),
        "items_simulated": len(per_item_counts),
        "items_complete": sum(1 for n in per_item_counts.values() if n == per_item),
        "skipped": dict(skips.counts),
        "skipped_total": sum(skips.counts.values()),
        "skipped_examples": skips.examples,
        "dialogues": len(rows),
        "llm": llm_report,
        "coverage": coverage_report(items, real_turns, rows),
        "samples": sample_dialogues(items, rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary = stage.finish(summary)
    print_summary(summary)
    return summary


def dataset_name(run: Path, real_turns: Sequence[dict]) -> str:
    """The catalog's dataset, as `augment.data prepare` recorded it (or as the real turns name it)."""
    prepared = (runs.read_summary(run, "items") or {}).get("params", {}).get("dataset")
    if prepared:
        return prepared
    if real_turns:
        return real_turns[0]["dataset"]
    raise ValueError(f"{run}: cannot tell the dataset (no items/summary.json and no turns)")


def llm_summary(stats: LLMStats, cached: CachedBackend) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "valid": stats.valid,
        "valid_rate": round(stats.valid / stats.requests, 4) if stats.requests else None,
        "first_try_valid": stats.first_try_valid,
        "regenerations": stats.regenerations,
        "invalid_by_reason": dict(stats.invalid),
        "dropped": sum(stats.dropped.values()),
        "dropped_by_reason": dict(stats.dropped),
        "failure_examples": stats.examples,
        "cache": cached.summary(),
    }


def print_summary(summary: dict[str, Any]) -> None:
    coverage = summary["coverage"]
    print(f"[simulate] {summary['dialogues']:,d} dialogues for {summary['items_simulated']:,d} of {summary['items']:,d} "
          f"items ({summary['items_complete']:,d} complete) in {summary['seconds']} s; skipped {summary['skipped_total']:,d}: "
          f"{summary['skipped'] or 'none'}")
    print(f"  coverage (items with >= 1 training label): real {coverage['real']:,d} ({coverage['real_fraction']:.1%}) "
          f"-> real + simulated {coverage['real_plus_sim']:,d} ({coverage['real_plus_sim_fraction']:.1%})")
    for name, bucket in coverage["buckets"].items():
        print(f"  {name:5s} {bucket['items']:6,d} items: covered {bucket['real_covered']:,d} -> {bucket['real_plus_sim_covered']:,d}, "
              f"labels/item {bucket['real_labels_per_item']:.2f} -> {bucket['real_plus_sim_labels_per_item']:.2f}")
    if summary["llm"]:
        llm = summary["llm"]
        print(f"  llm: {llm['requests']:,d} outputs, {llm['valid']:,d} valid ({llm['valid_rate']}), "
              f"{llm['regenerations']:,d} regenerations, {llm['dropped']:,d} dropped; invalid: {llm['invalid_by_reason'] or 'none'}")
        print(f"  {llm['cache']}")


# ------------------------------------------------------------------------------------------------------- CLI


def run_simulate(
    run: Path,
    mode: str,
    per_item: int,
    seed: int,
    backend_args: argparse.Namespace | None = None,
    *,
    max_attempts: int = 3,
    max_tokens: int = 320,
    temperature: float = 0.7,
    force: bool = False,
) -> dict[str, Any]:
    """The entry point of the CLI and of `augment run --simulate N`: builds the backend in llm mode, then closes it.

    `backend_args` carries the judge/backend options (`--backend`, `--model`, `--base-url`...) as parsed by
    `augment.score.add_backend_arguments`.
    """
    if mode != "llm":
        return simulate(run, mode, per_item, seed, None, max_attempts, force=force)
    if backend_args is None:
        raise ValueError("--mode llm needs backend options")
    backend = make_backend(backend_args.backend, backend_args.model, **backend_options(backend_args))
    try:
        return simulate(run, mode, per_item, seed, backend, max_attempts,
                        max_tokens=max_tokens, temperature=temperature, force=force)
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m augment.simulate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run folder with items/ (and turns/ for real coverage)")
    p.add_argument("--mode", choices=MODES, default="template")
    p.add_argument("--per-item", type=int, default=1, help="dialogues per catalog item")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=3, help="tries per dialogue before it is dropped (llm) or "
                   "the item skipped (template)")
    p.add_argument("--max-tokens", type=int, default=320, help="llm mode: tokens per generated dialogue")
    p.add_argument("--temperature", type=float, default=0.7, help="llm mode: sampling temperature")
    p.add_argument("--force", action="store_true", help="rebuild a finished stage (cached generations cost nothing)")
    add_backend_arguments(p)
    args = p.parse_args(argv)
    return runs.exit_code(lambda: run_simulate(
        args.run, args.mode, args.per_item, args.seed, args, max_attempts=args.max_attempts,
        max_tokens=args.max_tokens, temperature=args.temperature, force=args.force,
    ))


if __name__ == "__main__":
    sys.exit(main())
