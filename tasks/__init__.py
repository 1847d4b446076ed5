"""Built-in tasks: test-set loaders (TTS) and their shared helpers.

Each loader turns a dataset on disk into `TTSItem`s with stable ids. Malformed input (a line
with the wrong number of fields, a duplicate id, a referenced file that does not exist) is a
`BenchError` that names the file and the line, never a silently skipped row.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.errors import BenchError


class options_aware:
    """Decorator for `availability`: callable on the class (checks the default options) and on
    an instance (checks that instance's options, e.g. whether the folder it was given exists).

    The runner calls `task.availability()` on a configured instance; listings call it on the
    class. Task constructors only store options, so building a default instance is cheap.
    """

    def __init__(self, func: Callable[..., Any]):
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj: Any, owner: type) -> Callable[[], Any]:
        return functools.partial(self.func, obj if obj is not None else owner())


def check_options(task_name: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    """Reject unknown option names, so a typo is an error rather than a silently ignored setting."""
    allowed = sorted(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise BenchError(f"task '{task_name}' has no option(s) {', '.join(unknown)}; "
                         f"valid options: {', '.join(allowed) or '(none)'}")


def data_home() -> Path:
    """Where users put datasets by default: $BENCH_HOME/data (default ~/.cache/speechbench/data)."""
    return Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "speechbench")) / "data"


def line_error(path: Path, line_no: int, message: str) -> BenchError:
    return BenchError(f"{path}, line {line_no}: {message}")


def resolve_audio(base: Path, relative: str, path: Path, line_no: int, what: str) -> Path:
    """`relative` resolved against `base` (absolute paths kept); an error if the file is missing."""
    if not relative.strip():
        raise line_error(path, line_no, f"the {what} path is empty")
    audio = Path(relative.strip())
    audio = audio if audio.is_absolute() else base / audio
    if not audio.is_file():
        raise line_error(path, line_no, f"the {what} file {audio} does not exist")
    return audio
