"""The command line of `python -m augment.simulate`, and `run_simulate`, which `augment run --simulate N` calls too."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from augment import runs
from augment.cli import POSITIVE_INT, float_in
from augment.llm import make_backend
from augment.score import add_backend_arguments, backend_options
from augment.simulate.stage import MODES, simulate

TEMPERATURE = float_in(0.0, 2.0)


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
    if backend_args.backend == "cross-encoder":
        raise ValueError("--backend cross-encoder only scores pairs; --mode llm needs a backend that writes text "
                         "(local, openai or vllm)")
    backend = make_backend(backend_args.backend, backend_args.model, **backend_options(backend_args))
    try:
        return simulate(run, mode, per_item, seed, backend, max_attempts,
                        max_tokens=max_tokens, temperature=temperature, force=force)
    finally:
        backend.close()


def parser() -> argparse.ArgumentParser:
    """The simulate command line; numeric flags are refused out of range at parse time (exit 2)."""
    package = importlib.import_module("augment.simulate")  # its docstring is the description; imported late (cycle)
    p = argparse.ArgumentParser(prog="python -m augment.simulate", description=package.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True,
                   help="run folder with items/ (and turns/ for the real coverage); writes RUN/simulated/ (required)")
    p.add_argument("--mode", choices=MODES, default="template",
                   help="template: seeded Jinja phrasings, no model; llm: a model writes each dialogue "
                   "(default: %(default)s)")
    p.add_argument("--per-item", type=POSITIVE_INT, default=1,
                   help="dialogues per catalog item, >= 1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the phrasing / persona choices and of sampling (default: %(default)s)")
    p.add_argument("--max-attempts", type=POSITIVE_INT, default=3,
                   help="tries per dialogue before it is dropped (llm) or the item skipped (template), >= 1 "
                   "(default: %(default)s)")
    p.add_argument("--max-tokens", type=POSITIVE_INT, default=320,
                   help="llm mode: tokens per generated dialogue, >= 1 (default: %(default)s)")
    p.add_argument("--temperature", type=TEMPERATURE, default=0.7,
                   help="llm mode: sampling temperature in [0, 2] (the OpenAI API's range), 0 = greedy "
                   "(default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="rebuild a finished stage; cached generations cost nothing (default: off)")
    add_backend_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m augment.simulate`: parse, run, exit code of the run."""
    args = parser().parse_args(argv)
    return runs.exit_code(lambda: run_simulate(
        args.run, args.mode, args.per_item, args.seed, args, max_attempts=args.max_attempts,
        max_tokens=args.max_tokens, temperature=args.temperature, force=args.force,
    ))
