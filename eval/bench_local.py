"""Throughput of the local backend's scoring: naive forwards against prefix reuse, and the CPU's matmul peak.

The workload mirrors real judge traffic: per turn one long shared prefix (rubric + dialogue, ~500 tokens) and many
short suffixes (one candidate movie each, ~60-100 tokens). Both paths run side by side in one process on the same
prompts and the same loaded model, so their ratio is not confounded by machine load drift between runs.
`python -m eval.bench_local` prints the numbers as JSON.
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch

from augment.llm.base import DigitScore
from augment.llm.local import LocalBackend, group_by_prefix

_RUBRIC = (
    "You are an expert movie recommender judging whether a candidate movie would satisfy the seeker in a "
    "conversation. Read the whole dialogue, work out what the seeker asks for (genres, moods, actors, directors, "
    "eras, movies they liked or disliked), then rate the candidate on this scale:\n"
    "0 - irrelevant: contradicts the request or is something the seeker said they dislike.\n"
    "1 - weak: shares a surface feature but misses what the seeker is really asking for.\n"
    "2 - plausible: partly fits; a recommender might mention it but would not lead with it.\n"
    "3 - good: fits the request well; the seeker would likely be happy to hear it.\n"
    "4 - excellent: an ideal recommendation for this seeker at this point of the dialogue.\n"
    "Answer with the single digit only.\n\n"
)

_DIALOGUES = [
    [
        ("Seeker", "Hi! I'm looking for something to watch tonight with my partner. We both love clever thrillers "
         "where you can't trust anyone, the kind of movie that keeps you guessing until the last scene."),
        ("Recommender", "Great choice of mood. Have you seen Gone Girl (2014)? It's twisty and very dark."),
        ("Seeker", "Yes, we loved Gone Girl! Also Prisoners (2013) and Zodiac (2007). Anything by David Fincher "
         "is usually a hit with us. We are less into gore or horror though, more the psychological side."),
        ("Recommender", "Understood, psychological rather than gory. Do you mind older movies or subtitles?"),
        ("Seeker", "Older is fine, we watched Vertigo (1958) last month and it was amazing. Subtitles are okay too, "
         "we enjoyed The Secret in Their Eyes (2009). Ideally something with a strong ending that recontextualises "
         "everything you saw before, and great acting."),
        ("Recommender", "Then I have a few ideas. Do you prefer a crime investigation or more of a mind game "
         "between two characters?"),
        ("Seeker", "A mind game sounds perfect, especially if it is set somewhere atmospheric, like a remote house "
         "or a foggy city. We'd like to avoid anything too long, maybe under two and a half hours."),
    ],
    [
        ("Seeker", "Hello, can you suggest a movie for a family night? My kids are eight and eleven and they get "
         "bored quickly with slow movies."),
        ("Recommender", "Sure! What have they enjoyed recently?"),
        ("Seeker", "They adored Paddington 2 (2017) and The Incredibles (2004). My older one also liked Spider-Man: "
         "Into the Spider-Verse (2018), he keeps drawing the characters. They don't like scary villains much."),
        ("Recommender", "Nice picks. Animated or live action, or both?"),
        ("Seeker", "Both are fine. I'd love something funny that we adults can enjoy too, with a bit of heart. "
         "Musicals are a hit with my daughter, and my son likes adventure and gadgets. Nothing too sad please, we "
         "cried at Coco (2017) and they still talk about it."),
        ("Recommender", "Got it: funny, warm, adventurous, not too sad and not too scary."),
        ("Seeker", "Exactly. And if possible something they haven't seen a hundred times already, like a hidden gem "
         "from the last twenty years rather than the obvious big titles everyone has watched."),
    ],
]

_GENRES = ["Thriller", "Mystery", "Drama", "Crime", "Comedy", "Animation", "Family", "Adventure", "Musical",
           "Science Fiction", "Romance", "Fantasy", "Horror", "Documentary", "Western"]
_PEOPLE = ["Denis Villeneuve", "Park Chan-wook", "Greta Gerwig", "Brad Bird", "Rian Johnson", "Kathryn Bigelow",
           "Hayao Miyazaki", "Sofia Coppola", "Bong Joon-ho", "Nora Ephron", "Alfred Hitchcock", "Jane Campion",
           "Emma Stone", "Jake Gyllenhaal", "Tilda Swinton", "Oscar Isaac", "Viola Davis", "Song Kang-ho",
           "Frances McDormand", "Mahershala Ali", "Cate Blanchett", "Daniel Kaluuya", "Saoirse Ronan"]
_PLOTS = [
    "a reclusive novelist invites her estranged sister to a lighthouse, where old letters reveal a secret",
    "a detective with a failing memory reopens the case that ended his career",
    "two rival magicians sabotage each other's tricks in fin-de-siecle London",
    "a young inventor builds a robot that wants to become a chef",
    "a family on a road trip across the desert stumbles into a talent show",
    "a con artist poses as a therapist and starts to believe her own advice",
    "an island village hides a festival that outsiders never leave",
    "a mouse orchestra plans a heist to save their concert hall",
    "a journalist follows a trail of anonymous postcards through a snowbound city",
    "a retired spy teaches a cooking class whose students are not what they seem",
]

_TITLE_WORDS = (
    ["Quiet", "Last", "Silver", "Hidden", "Burning", "Paper", "Winter", "Crooked", "Electric", "Borrowed"],
    ["Harbor", "Orchestra", "Alibi", "Garden", "Signal", "Lighthouse", "Recipe", "Frontier", "Mirror", "Parade"],
)


def synthetic_judge_prompts(n_turns: int, n_candidates: int, seed: int = 0) -> list[str]:
    """Judge-shaped prompts: rubric and dialogue first, one candidate movie last, turns kept contiguous."""
    rng = random.Random(seed)
    prompts = []
    for turn in range(n_turns):
        lines = _DIALOGUES[turn % len(_DIALOGUES)]
        dialogue = "\n".join(f"{who}: {text}" for who, text in lines)
        head = f"{_RUBRIC}Dialogue (conversation {turn + 1}):\n{dialogue}\n\n"
        prompts += [head + _candidate_text(rng) for _ in range(n_candidates)]
    return prompts


def _candidate_text(rng: random.Random) -> str:
    title = f"The {rng.choice(_TITLE_WORDS[0])} {rng.choice(_TITLE_WORDS[1])}"
    genres = ", ".join(rng.sample(_GENRES, 3))
    director, *stars = rng.sample(_PEOPLE, 4)
    plot, twist = rng.sample(_PLOTS, 2)
    return (
        f"Candidate movie: {title} ({rng.randint(1950, 2023)})\n"
        f"Genre: {genres}\nDirector: {director}\nStars: {', '.join(stars)}\n"
        f"Plot: {plot.capitalize()}; meanwhile {twist}.\n\nRating (0-4):"
    )


def bench_score_local(
    model: str = "smollm2-135m-instruct",
    n_turns: int = 2,
    n_candidates: int = 50,
    batch_size: int = 8,
    chat: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Pairs/s of the naive and prefix-reuse scoring paths on the same prompts, their ratio and FLOP rates.

    The paths alternate turn by turn, so a load change on a shared machine hits both alike. FLOP rates count
    2 x (non-embedding parameters) per token actually run through the model (an embedding is a lookup, and the
    output projection runs for one position per prompt only), so they compare to a matmul peak.
    `max_prob_difference` shows the two paths gave the same answers.
    """
    backend = LocalBackend(model, chat=chat, batch_size=batch_size, threads=threads)
    prompts = synthetic_judge_prompts(n_turns, n_candidates)
    seqs = backend.encode(prompts)
    _run(backend, prompts[:2], prefix_reuse=False)  # warm-up: first-call allocations and kernel selection
    seconds = {False: 0.0, True: 0.0}
    difference = 0.0
    for start in range(0, len(prompts), n_candidates):
        turn = prompts[start : start + n_candidates]
        naive, seconds_naive = _run(backend, turn, prefix_reuse=False)
        reuse, seconds_reuse = _run(backend, turn, prefix_reuse=True)
        seconds[False] += seconds_naive
        seconds[True] += seconds_reuse
        difference = max([difference] + [abs(x - y) for a, b in zip(naive, reuse) for x, y in zip(a.probs, b.probs)])
    flops_per_token = 2 * _non_embedding_params(backend.lm)
    naive_tokens = sum(len(s) for s in seqs)
    reuse_tokens = sum(g.shared + sum(len(seqs[i]) - g.shared for i in g.members) for g in group_by_prefix(seqs))
    return {
        "model": model,
        "pairs": len(prompts),
        "mean_prompt_tokens": naive_tokens / len(seqs),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "naive_pairs_per_s": len(prompts) / seconds[False],
        "reuse_pairs_per_s": len(prompts) / seconds[True],
        "speedup": seconds[False] / seconds[True],
        "naive_flops_per_s": flops_per_token * naive_tokens / seconds[False],
        "reuse_flops_per_s": flops_per_token * reuse_tokens / seconds[True],
        "max_prob_difference": difference,
    }


def _run(backend: LocalBackend, prompts: list[str], prefix_reuse: bool) -> tuple[list[DigitScore], float]:
    backend.prefix_reuse = prefix_reuse
    start = time.perf_counter()
    scores = backend.score_digits(prompts)
    return scores, time.perf_counter() - start


def _non_embedding_params(model: torch.nn.Module) -> int:
    embedding = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embedding


def cpu_matmul_peak(dtype: str = "float32", size: int = 1024, seconds: float = 2.0) -> float:
    """FLOP/s of the fastest square matmul in a `seconds` budget: the ceiling a model forward can approach.

    A small matmul warms up first (thread pool, kernel selection). The budget bounds the run where a dtype has
    no hardware support (bf16 on CPUs without AVX512-BF16/AMX runs ~100x slower than fp32): one matmul then
    already takes seconds and is the only one timed.
    """
    torch_dtype = getattr(torch, dtype)
    torch.mm(torch.ones(64, 64, dtype=torch_dtype), torch.ones(64, 64, dtype=torch_dtype))
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while best == float("inf") or time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_bf16_matmul_peak() -> float:
    """bf16 matmul FLOP/s: whether a bf16 model would run faster than fp32 on this CPU (only with bf16 units)."""
    return cpu_matmul_peak("bfloat16")
