"""command-tts: a user's TTS program run per item from a template, without a shell."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.contracts import Prompt, TTSItem
from bench.errors import BenchError
from bench.worker import failure_reason
from systems.command import CommandTTS

FAKE = r'''
import sys, time, subprocess, numpy as np, soundfile as sf
mode, text_file, out, side = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
text = open(text_file, encoding="utf-8").read()
if mode == "ok":
    sf.write(out, 0.1 * np.sin(np.arange(1600 * len(text)) / 5), 16000)
elif mode == "fail":
    print("model exploded", file=sys.stderr); sys.exit(3)
elif mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open(side, "w").write(str(child.pid))
    time.sleep(60)
elif mode == "argv":
    open(side, "w").write("\n".join(sys.argv[5:]))
    sf.write(out, 0.1 * np.ones(1600), 16000)
'''


@pytest.fixture()
def fake(tmp_path):
    script = tmp_path / "fake_tts.py"
    script.write_text(FAKE)
    return script


def _system(fake: Path, mode: str, extra: str = "", side: Path = Path("/dev/null"), **options) -> CommandTTS:
    system = CommandTTS(command=f"{sys.executable} {fake} {mode} {{text_file}} {{output}} {side} {extra}", **options)
    system.load()
    return system


ITEM = TTSItem(id="i1", text="hello there")


def test_ok_command_writes_audio(fake):
    audio = _system(fake, "ok").synthesize("hello", None, ITEM)
    assert audio.sample_rate == 16000 and len(audio.samples) == 1600 * 5


def test_placeholders_stay_single_arguments(fake, tmp_path):
    text = 'a "quoted"; rm -rf / $(echo x) text'
    prompt = Prompt(tmp_path / "p.wav", "prompt words")
    side = tmp_path / "args.txt"
    system = _system(fake, "argv", "{text} {prompt_text} {item_id}", side=side)
    audio = system.synthesize(text, prompt, TTSItem(id="odd id", text=text))
    assert len(audio.samples) == 1600
    assert side.read_text().split("\n") == [text, "prompt words", "odd id"]


def test_failing_command_is_a_counted_failure(fake):
    with pytest.raises(BenchError, match="exited with code 3: model exploded") as info:
        _system(fake, "fail").synthesize("x", None, ITEM)
    assert failure_reason(info.value) == "command_failed"


def test_command_that_writes_nothing(fake):
    system = CommandTTS(command=f"{sys.executable} -c pass {{output}}")
    system.load()
    with pytest.raises(BenchError, match="wrote no audio") as info:
        system.synthesize("x", None, ITEM)
    assert failure_reason(info.value) == "no_output"


def test_hanging_command_is_killed_with_its_children(fake, tmp_path):
    side = tmp_path / "child.pid"
    system = _system(fake, "hang", side=side, timeout_s=3)
    start = time.time()
    with pytest.raises(BenchError, match="did not finish") as info:
        system.synthesize("x", None, ITEM)
    assert time.time() - start < 20
    assert failure_reason(info.value) == "command_timeout"
    child = int(side.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{child}/status")
    # The grandchild is gone too (or a zombie waiting for init to reap it: no longer running).
    assert not status.exists() or "\nState:\tZ" in status.read_text()


def test_template_is_checked():
    with pytest.raises(BenchError, match="needs"):
        CommandTTS()
    with pytest.raises(BenchError, match="unknown placeholder"):
        CommandTTS(command="tts {txt} {output}")
    with pytest.raises(BenchError, match="where to write"):
        CommandTTS(command="tts {text}")
    with pytest.raises(BenchError, match="not on PATH"):
        CommandTTS(command="no-such-program-xyz {output}").load()
