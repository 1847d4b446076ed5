"""Metrics: each module holds one family of evaluators, registered as entry points in pyproject.toml."""
