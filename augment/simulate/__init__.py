"""`python -m augment.simulate`: simulated seeker/recommender dialogues for every catalog item, evenly.

Most catalog items are long-tail: rarely or never mentioned in real dialogues, so a recommender trained on real
turns never learns them (LOT-CRS). This stage writes `--per-item N` dialogues for EVERY item from its attributes
(genres, director, stars, plot, year, a real catalog movie sharing an attribute), each ending with the recommender
recommending the item, and saves each dialogue's final recommendation turn in the ordinary turn schema (dataset
`<dataset>-sim`, split "train"), so training and release read them like real turns.

Reads RUN/items/ (and RUN/turns/ when present, for the real coverage); writes RUN/simulated/: turns.parquet,
labels_per_item.png, and summary.json (coverage per popularity bucket, skips and failures by reason, samples).

Two modes. `template`: Jinja phrasings in `prompts/simulate/` (one phrasing per rendered line) chosen with a
seeded RNG; no model, byte-identical output for a fixed seed. `llm`: `prompts/simulate/llm.jinja` asks a model
(any backend, through the request cache) for a dialogue in a strict "Seeker: / Recommender:" line format; outputs
are parsed and validated, invalid ones regenerated with a fresh persona up to `--max-attempts`, then dropped and
counted by reason.

The label must not leak: the item's title never appears before the final recommendation (`leaks`). Template mode
guarantees it by discarding any phrasing that would name the item; llm mode regenerates leaking outputs.

Popularity buckets are the project's one definition (`augment.data.popularity`, by the item's `n_mentions` in the
real dialogues): tail <= 4 mentions (LOT-CRS), torso 5-19, head >= 20.
"""

from augment.simulate.catalog import (
    Catalog,
    Skips,
    attribute_values,
    leaks,
    names,
    pick_liked,
    skip_reason,
    title_pattern,
)
from augment.simulate.cli import main, run_simulate
from augment.simulate.coverage import coverage_report, label_counts, print_summary, sample_dialogues
from augment.simulate.llm_mode import (
    LLM_MODE_FILES,
    Job,
    LLMStats,
    attempt_seed,
    check_output,
    generate_chunked,
    llm_dialogues,
    llm_summary,
    parse_dialogue,
    plan_prompt,
    validate_dialogue,
)
from augment.simulate.plots import plot_labels_per_item
from augment.simulate.stage import MODES, STAGE, dataset_name, simulate, simulated_row, simulation_params
from augment.simulate.template_mode import (
    SLOTS,
    TEMPLATE_MODE_FILES,
    phrasings,
    recommendation_lines,
    short_plot,
    slot_variables,
    template_dialogue,
    template_dialogues,
    template_item_dialogues,
)

__all__ = [
    "LLM_MODE_FILES", "MODES", "SLOTS", "STAGE", "TEMPLATE_MODE_FILES",
    "Catalog", "Job", "LLMStats", "Skips",
    "attempt_seed", "attribute_values", "check_output", "coverage_report", "dataset_name", "generate_chunked",
    "label_counts", "leaks", "llm_dialogues", "llm_summary", "main", "names", "parse_dialogue", "phrasings",
    "pick_liked", "plan_prompt", "plot_labels_per_item", "print_summary", "recommendation_lines", "run_simulate",
    "sample_dialogues", "short_plot", "simulate", "simulated_row", "simulation_params", "skip_reason",
    "slot_variables", "template_dialogue", "template_dialogues", "template_item_dialogues", "title_pattern",
    "validate_dialogue",
]
