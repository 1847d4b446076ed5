"""Tiny random-initialised checkpoints of every TTS piece, for tests of the plumbing (the trained
checkpoints are tested separately): same files, same loaders, same manifest as the real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.jsonio import write_json_atomic
from systems.tts.aligner import Aligner, DurationPredictor
from systems.tts.ar import ARConfig, ARModel
from systems.tts.features import N_MELS, FeatureStats
from systems.tts.flow import FlowConfig, FlowModel
from systems.tts.modules import save_checkpoint
from systems.tts.nar import MaskedModel, NARConfig
from systems.tts.tokenizer import SpeechTokenizer, TokenizerConfig
from systems.tts.train import write_manifest

TINY = {"d": 32, "layers": 1, "heads": 2}


def make_tiny_checkpoints(folder: Path, stats_frames: np.ndarray | None = None) -> Path:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = stats_frames if stats_frames is not None else rng.normal(-4, 2, size=(2000, N_MELS)).astype(np.float32)
    stats = FeatureStats.fit(frames)
    (folder / "aligner").mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "aligner" / "feature_stats.json", stats.to_json())
    aligner = Aligner()
    save_checkpoint(folder / "aligner", aligner, {"kind": "aligner"})
    save_checkpoint(folder / "duration", DurationPredictor(), {"kind": "duration-predictor"})
    tok_config = TokenizerConfig(levels=2, codes=16, sample_frames=2000, iterations=2)
    utterances = np.array_split(stats.normalise(frames), 10)
    tokenizer, _ = SpeechTokenizer.fit(utterances, tok_config, aligner.frames, log=lambda _: None)
    tokenizer.save(folder / "tokenizer", tok_config, {})
    flow = FlowConfig(**TINY, text_blocks=1)
    save_checkpoint(folder / "flow", FlowModel(flow), {"kind": "flow", "model": flow.to_json()}, half=True)
    decoder = FlowConfig(**TINY, text_blocks=1, tokens=16, phones=False)
    decoder_model = FlowModel(decoder)
    torch.nn.init.normal_(decoder_model.token_embed.weight)  # a trained decoder reads its tokens
    save_checkpoint(folder / "decoder", decoder_model, {"kind": "decoder", "model": decoder.to_json()}, half=True)
    nar = NARConfig(**TINY, levels=2, codes=16, text_blocks=1)
    save_checkpoint(folder / "nar", MaskedModel(nar), {"kind": "nar", "model": nar.to_json()}, half=True)
    ar = ARConfig(**TINY, nar_layers=1, levels=2, codes=16)
    save_checkpoint(folder / "ar", ARModel(ar), {"kind": "ar", "model": ar.to_json()}, half=True)
    write_manifest(folder)
    return folder
