"""The ground-truth "system": returns each item's real recording.

Scoring it gives the ceiling of every metric on a task (ASR errors on human speech, the SIM of
two real utterances of one speaker, the MOS of the recordings), which is how a reader tells a
metric's floor noise from a system's faults.
"""

from __future__ import annotations

from typing import Any

from bench.audio import Audio, read_audio
from bench.contracts import Prompt, TTSItem, TTSSystem
from bench.errors import BenchError


class GroundTruth(TTSSystem):
    name = "ground-truth"
    family = "reference"
    revision = "recording"  # the output is the task's own file; the task's digest pins it
    license = "that of the task's recordings"
    description = "The item's reference recording (the real speech of the text): the metric ceiling"
    # The recording is the target speaker's own voice, so SIM is meaningful (its upper bound).
    clones_voice = True

    def __init__(self, **options: Any):
        if options:
            raise BenchError(f"system 'ground-truth' takes no options (got {', '.join(sorted(options))})")
        super().__init__()

    def synthesize(self, text: str, prompt: Prompt | None, item: TTSItem) -> Audio:
        if item.reference_path is None:
            raise BenchError(f"item '{item.id}' has no reference recording, so ground-truth has "
                             "nothing to return; run it on a task that ships recordings")
        return read_audio(item.reference_path)
