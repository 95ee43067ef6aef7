"""Jinja prompt templates: data, not code.

Templates live in the top-level `prompts/` package so they ship with a non-editable install. They render with
StrictUndefined (a missing variable is an error, never an empty string in a prompt), and each template's hash is
recorded in every artifact it produced, so a changed prompt is visible in the outputs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    root = files("prompts")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **variables: Any) -> str:
    return environment().get_template(name).render(**variables)


def template_hash(name: str) -> str:
    """sha256 (first 12 hex digits) of the template source."""
    source, _, _ = environment().loader.get_source(environment(), name)
    return hashlib.sha256(source.encode()).hexdigest()[:12]
