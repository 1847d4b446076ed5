"""Registries of systems, tasks and metrics, found through entry points.

Built-in plug-ins are registered in this distribution's pyproject.toml exactly the way a
third-party package registers its own, under the groups below. Nothing is imported until it is
asked for, and plug-in modules import their heavy libraries only in `load()`, so listing is fast.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from bench.errors import BenchError, UnknownName

GROUPS = {"system": "bench.systems", "task": "bench.tasks", "metric": "bench.metrics", "report": "bench.reports",
          "command": "bench.commands"}


@lru_cache(maxsize=None)
def _entry_points(kind: str) -> dict[str, Any]:
    group = GROUPS[kind]
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        # First registration wins; a duplicate name from another package is an error to surface.
        if ep.name in found and found[ep.name].value != ep.value:
            raise BenchError(f"two packages register the {kind} '{ep.name}': "
                             f"{found[ep.name].value} and {ep.value}; uninstall one of them")
        found[ep.name] = ep
    if not found:
        raise BenchError(f"no {kind}s are registered under entry point group '{group}': "
                         "is the package installed? Run `pip install -e .` in the repository")
    return found


def names(kind: str) -> list[str]:
    return sorted(_entry_points(kind))


_VARIANT = re.compile(r"^(?P<base>[^@]+)@(?P<label>[A-Za-z0-9_-]{1,40})$")


def split_variant(name: str) -> tuple[str, str | None]:
    """'tiny-flow@nfe8' -> ('tiny-flow', 'nfe8'); a name without '@' -> (name, None).

    A variant is the same system under its own options (--system-opt tiny-flow@nfe8.nfe=8): one run
    can hold several as separate rows, each recorded in the spec with its options and label."""
    if "@" not in name:
        return name, None
    match = _VARIANT.match(name)
    if not match:
        raise BenchError(f"'{name}': a system variant is NAME@LABEL, the label made of letters, digits, '-' and '_'")
    return match["base"], match["label"]


def get_class(kind: str, name: str) -> type:
    """The class registered as `name`, or, for 'package.module:Class', that class directly
    (lets a user try an unpackaged plug-in before registering it). For systems, a variant label
    (NAME@LABEL) selects NAME's class."""
    if kind == "system":
        name = split_variant(name)[0]
    if ":" in name and not name.startswith("audio-dir:"):
        return _import_reference(kind, name)
    eps = _entry_points(kind)
    if name not in eps:
        close = difflib.get_close_matches(name, eps, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown {kind} '{name}'.{hint} `bench {kind}s list` shows them all.")
    try:
        cls = eps[name].load()
    except Exception as exc:
        raise BenchError(f"the {kind} '{name}' ({eps[name].value}) failed to import: "
                         f"{type(exc).__name__}: {exc}. Reinstall the package that provides it.") from exc
    if not getattr(cls, "name", None):
        cls.name = name
    return cls


def create(kind: str, name: str, **options: Any) -> Any:
    return get_class(kind, name)(**options)


def parse_names(csv: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'], keeping order and rejecting duplicates."""
    out = [n.strip() for n in csv.split(",") if n.strip()]
    dupes = {n for n in out if out.count(n) > 1}
    if dupes:
        raise BenchError(f"listed more than once: {', '.join(sorted(dupes))}")
    return out


def _import_reference(kind: str, ref: str) -> type:
    import importlib

    module_name, _, attr = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownName(f"cannot import {kind} '{ref}': {exc}") from exc
    if not getattr(cls, "name", None):
        cls.name = ref
    return cls
