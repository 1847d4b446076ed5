"""Errors the harness raises. Each message says what went wrong and what to do next."""

from __future__ import annotations


class BenchError(Exception):
    """Base class: an error a user can act on. The CLI prints it without a traceback."""


class UnknownName(BenchError):
    """A system, task, metric or evaluator model name that is not registered."""


class Unavailable(BenchError):
    """A registered component that cannot run on this machine (missing package, weights, binary)."""


class BadAudio(BenchError):
    """Audio that cannot be scored: corrupt, empty, silent, NaN, clipped beyond use, and so on.

    `reason` is a short machine-readable tag (e.g. "silent") stored in result records.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BadResultFile(BenchError):
    """A results file that does not parse or does not match the schema."""


class SpecMismatch(BenchError):
    """An output folder that holds a different run spec than the one asked for."""
