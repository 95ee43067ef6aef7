"""crs-augment: find the false negatives of conversational-recommendation datasets with LLM judges.

Hugging Face's weight-loading progress bars are switched off unless the user set `HF_HUB_DISABLE_PROGRESS_BARS`:
every stage loads a model, and a bar per load buries the stage's own progress and summary lines.
"""

import os

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
