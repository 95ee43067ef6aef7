"""LLM mode: a model writes each dialogue from `prompts/simulate/llm.jinja` in a strict "Seeker: / Recommender:"
line format; outputs are parsed and validated, invalid ones regenerated with a fresh persona up to `max_attempts`,
then dropped and counted by reason.

Every prompt is a pure function of (seed, item, k, attempt) and goes through the request cache, so a run replays
exactly and a killed run resumes without paying again.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from augment.data.records import RECOMMENDER, SEEKER, Utterance, display_title, merge_messages
from augment.llm import uses_raw_completion
from augment.llm.base import Backend
from augment.llm.cache import CachedBackend, reason_head
from augment.simulate.catalog import Catalog, leaks, names, pick_liked
from augment.simulate.template_mode import phrasings
from augment.templates import render

LLM_PROMPT = "simulate/llm.jinja"
PERSONAS = "simulate/personas.jinja"
LLM_MODE_FILES = (LLM_PROMPT, PERSONAS)
MIN_UTTERANCES = 4  # llm mode: the prompt asks for 4-8 lines; fewer cannot hold a preference and a recommendation
CHUNK = 32  # llm prompts per cached batch: a kill loses at most one chunk
_ROLE_LINE = re.compile(r"^[^A-Za-z]*(seeker|recommender)\b[^A-Za-z:]*:(.*)$", re.IGNORECASE)


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

