"""`command-tts`: any TTS program, run once per item from a command-line template, without a shell.

  bench run --systems command-tts --task tts-seen \\
      --system-opt 'command-tts.command=f5-tts_infer-cli --ref_audio {prompt_wav} --ref_text {prompt_text}
                    --gen_text {text} --output_dir {output_dir} --output_file {output_name}' \\
      --system-opt command-tts.revision=F5TTS_v1_Base@<commit>

The template is split into arguments like a shell would (shlex) and then each placeholder is
filled inside its argument, so a text with spaces, quotes or `;` stays one argument and can never
become a command. Placeholders: {text}, {text_file} (UTF-8 file holding the text), {prompt_wav},
{prompt_text}, {prompt_text_file}, {output} (the WAV path the program must write), {output_dir},
{output_name}, {item_id}. A text that begins with '-' could be read as an option by the program:
prefer {text_file} where the program takes one.

Failures, each counted with its own reason: the program exits non-zero (`command_failed`, with
the end of its stderr), writes nothing or an empty file (`no_output`), or runs past timeout_s
(`timeout`: its whole process group is killed, so no grandchild is left running).
"""

from __future__ import annotations

import os
import shlex
import signal
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.audio import Audio, read_audio
from bench.contracts import Availability, Prompt, TTSItem, TTSSystem
from bench.errors import BenchError

PLACEHOLDERS = ("text", "text_file", "prompt_wav", "prompt_text", "prompt_text_file", "output", "output_dir",
                "output_name", "item_id")
DEFAULT_TIMEOUT_S = 600.0


class CommandFailed(BenchError):
    reason = "command_failed"


class NoOutput(BenchError):
    reason = "no_output"


class CommandTimeout(BenchError):
    reason = "command_timeout"


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class CommandTTS(TTSSystem):
    name = "command-tts"
    family = "external"
    license = "that of the program run"
    description = ("any TTS command line, per item, from a template (no shell): options command, revision, "
                   "family, timeout_s, clones_voice")

    def __init__(self, **options: Any):
        allowed = {"command", "revision", "family", "timeout_s", "clones_voice"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise BenchError(f"system 'command-tts' has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")
        command = str(options.get("command", "")).strip()
        if not command:
            raise BenchError("system 'command-tts' needs --system-opt command-tts.command='PROGRAM ARGS' "
                             f"with placeholders {{{'}, {'.join(PLACEHOLDERS)}}}")
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise BenchError(f"command-tts: cannot split the command template ({exc})") from None
        bad = sorted(set().union(*(_fields(a) for a in self.argv)) - set(PLACEHOLDERS))
        if bad:
            raise BenchError(f"command-tts: unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}; "
                             f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
        if not {"output", "output_dir"} & set().union(*(_fields(a) for a in self.argv)):
            raise BenchError("command-tts: the template must say where to write the audio ({output} or {output_dir})")
        try:
            self.timeout_s = float(options.get("timeout_s", DEFAULT_TIMEOUT_S))
        except (TypeError, ValueError):
            raise BenchError(f"command-tts: timeout_s={options.get('timeout_s')!r} is not a number") from None
        resolved = {"command": command, "revision": str(options.get("revision", "unpinned")),
                    "family": str(options.get("family", "external")), "timeout_s": self.timeout_s,
                    "clones_voice": str(options.get("clones_voice", "true")).lower() in ("1", "true", "yes")}
        super().__init__(**resolved)
        self.revision = resolved["revision"]  # type: ignore[misc]
        self.family = resolved["family"]  # type: ignore[misc]
        self.clones_voice = resolved["clones_voice"]  # type: ignore[misc]

    @classmethod
    def availability(cls) -> Availability:
        return Availability.yes()  # which program runs is an option; load() checks it exists

    def load(self) -> None:
        import shutil

        program = self.argv[0]
        if not (shutil.which(program) or Path(program).is_file()):
            raise BenchError(f"command-tts: program '{program}' is not on PATH (and is not a file)")

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        with tempfile.TemporaryDirectory(prefix="bench-command-") as tmp:
            work = Path(tmp)
            (work / "text.txt").write_text(text, encoding="utf-8")
            (work / "prompt.txt").write_text(prompt.text if prompt else "", encoding="utf-8")
            output = work / "out" / "output.wav"
            output.parent.mkdir()
            values = {"text": text, "text_file": str(work / "text.txt"),
                      "prompt_wav": str(prompt.audio_path) if prompt else "",
                      "prompt_text": prompt.text if prompt else "", "prompt_text_file": str(work / "prompt.txt"),
                      "output": str(output), "output_dir": str(output.parent), "output_name": output.name,
                      "item_id": item.id}
            # Fill each argument on its own: a value never splits into several arguments.
            argv = [arg.format_map(values) for arg in self.argv]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=work, start_new_session=True)
            try:
                out, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise CommandTimeout(f"'{self.argv[0]}' did not finish within {self.timeout_s:g} s; "
                                     "its process group was killed") from None
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
            messages = (err or b"").decode("utf-8", "replace").strip()
            if proc.returncode != 0:
                raise CommandFailed(f"'{self.argv[0]}' exited with code {proc.returncode}: {messages[-600:]}")
            produced = output if output.is_file() else next(iter(sorted(output.parent.glob("*.wav"))), None)
            if produced is None or produced.stat().st_size == 0:
                raise NoOutput(f"'{self.argv[0]}' exited normally but wrote no audio to {output}"
                               + (f" ({messages[-300:]})" if messages else ""))
            return read_audio(produced)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
