"""The local backend on the real offline models: prefix reuse must give the naive path's probabilities.

The models load once per session (converted folders are cached under `cache_dir()/models`; the first run on a
fresh machine converts them, ~0.5 min for SmolLM2 and ~2 min for Gemma 3). Prompts are kept short because every
naive forward costs seconds on 2 cores; the Gemma prompts are the exception, their shared prefix being longer
than Gemma 3's 512-token sliding window so that the windowed layers' cache handling is exercised. One torch
thread: on a shared 2-core machine two OpenMP threads spin against other processes and run 2-8x slower.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from augment.llm.local import LocalBackend, group_by_prefix
from augment.llm.models import OFFLINE_MODELS, resolve_model

TOLERANCE = 1e-3

RUBRIC = (
    "Rate how well the candidate movie fits the seeker's request, from 0 (irrelevant) to 4 (ideal). "
    "Answer with one digit.\n\n"
)
DIALOGUES = [
    "Seeker: I want a clever psychological thriller for tonight, like Gone Girl or Prisoners, nothing gory.\n"
    "Recommender: Do you mind older movies?\n"
    "Seeker: Not at all, I loved Vertigo. A twist ending would be great.\n",
    "Seeker: Any funny animated movie for my kids? They loved Paddington 2 and The Incredibles.\n"
    "Recommender: Musicals too?\n"
    "Seeker: Yes, my daughter adores musicals, but nothing scary please.\n",
]
CANDIDATES = [
    "Candidate: Shutter Island (2010). Genre: Mystery, Thriller. A marshal investigates an asylum on an island.",
    "Candidate: Sing (2016). Genre: Animation, Comedy, Musical. Animals enter a singing competition.",
    "Candidate: Saw (2004). Genre: Horror. Two men wake up chained in a grimy bathroom.",
]


def judge_prompt(dialogue: str, candidate: str, preamble: str = "") -> str:
    return f"{preamble}{RUBRIC}Dialogue:\n{dialogue}\n{candidate}\nRating (0-4):"


def max_prob_difference(a: list, b: list) -> float:
    assert all(s.ok for s in a + b), [s.error for s in a + b if not s.ok]
    return max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa.probs, sb.probs))


def naive_and_reuse(backend: LocalBackend, prompts: list[str]) -> tuple[list, list]:
    try:
        backend.prefix_reuse = False
        naive = backend.score_digits(prompts)
    finally:
        backend.prefix_reuse = True
    return naive, backend.score_digits(prompts)


@pytest.fixture(scope="session")
def smollm() -> LocalBackend:
    return LocalBackend("smollm2-135m-instruct", chat=True, batch_size=2, threads=1)


@pytest.fixture(scope="session")
def gemma() -> LocalBackend:
    return LocalBackend("gemma3-270m", chat=False, batch_size=2, threads=1)


def test_offline_names_resolve_to_converted_folders():
    for name in OFFLINE_MODELS:
        folder = Path(resolve_model(name))
        assert (folder / "config.json").is_file()
        assert (folder / "model.safetensors").is_file()


def test_other_names_pass_through(tmp_path):
    assert resolve_model("google/gemma-2-9b-it") == "google/gemma-2-9b-it"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_smollm2_folder_keeps_its_chat_template():
    folder = Path(resolve_model("smollm2-135m-instruct"))
    assert "<|im_start|>" in (folder / "tokenizer_config.json").read_text()


def test_grouping_finds_each_turn_in_an_interleaved_batch():
    rubric, turn_a, turn_b = list(range(100)), list(range(1000, 1100)), list(range(2000, 2100))
    seqs = [rubric + turn_a + [7, 8], rubric + turn_b + [9], rubric + turn_a + [5], rubric + turn_b + [3, 4]]
    groups = sorted((sorted(g.members), g.shared) for g in group_by_prefix(seqs))
    assert groups == [([0, 2], 200), ([1, 3], 200)]


def test_grouping_keeps_a_token_after_the_prefix_and_leaves_strangers_alone():
    shared = list(range(50))
    groups = group_by_prefix([shared, shared + [1, 2], [9] * 60])
    by_members = {tuple(sorted(g.members)): g.shared for g in groups}
    assert by_members == {(0, 1): 49, (2,): 0}


def test_smollm2_prefix_reuse_matches_naive_on_interleaved_turns(smollm):
    prompts = [judge_prompt(d, c) for c in CANDIDATES for d in DIALOGUES]  # turns interleaved
    groups = group_by_prefix(smollm.encode(prompts))
    assert len(groups) == 2 and all(g.shared > 60 for g in groups)
    naive, reuse = naive_and_reuse(smollm, prompts)
    assert max_prob_difference(naive, reuse) < TOLERANCE
    assert naive[0].probs != naive[1].probs  # different dialogues really give different answers
    assert 0.0 <= reuse[0].score <= 4.0
    twins = smollm.score_digits([prompts[0], prompts[0]])  # the whole prompt is the common prefix
    assert max_prob_difference(twins, naive[:1] * 2) < TOLERANCE


def test_gemma3_prefix_reuse_matches_naive_beyond_the_sliding_window(gemma):
    history = "Earlier in the conversation:\n" + "".join(DIALOGUES) * 6
    prompts = [judge_prompt(DIALOGUES[0], c, preamble=history) for c in CANDIDATES[:2]]
    (group,) = group_by_prefix(gemma.encode(prompts))
    assert group.shared > gemma.lm.config.sliding_window
    naive, reuse = naive_and_reuse(gemma, prompts)
    assert max_prob_difference(naive, reuse) < TOLERANCE


def test_generate_is_deterministic_greedy_and_seeded_when_sampling(smollm):
    prompt = ["Name one funny movie for kids."]
    greedy = smollm.generate(prompt * 2, max_tokens=8)
    assert greedy[0].ok and greedy[0].text.strip() and greedy[0] == greedy[1]
    sampled = [smollm.generate(prompt, max_tokens=8, temperature=1.0, seed=3)[0] for _ in range(2)]
    assert sampled[0].ok and sampled[0] == sampled[1]


def test_params_name_what_changes_answers(smollm):
    assert smollm.name == "local"
    assert smollm.params() == {"chat": True, "dtype": "float32"}


def test_chat_mode_needs_a_chat_template():
    with pytest.raises(ValueError, match="chat=False"):
        LocalBackend("gemma3-270m", chat=True)
