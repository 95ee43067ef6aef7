"""Jinja prompt templates (data, not code); loaded through augment.templates."""
