"""How much phone content the token families' level-1 tokens carry across voices (the README's
"what limits the token families").

A token -> phone majority map is fitted on frames of 5 training voices and labels the frames of the
other 2 voices (900 corpus utterances, seeded; phones from the aligner's durations). Compared:
  level1    the tokenizer's level 1 (--checkpoints; the committed tokenizer quantises the aligner's
            frame encoder, the one before it residual k-means on normalised log-mel; both 1,024
            codes and fitted on all 7 training voices)
  content   k-means (1,024 codes, same fitting code) on the aligner's frame encoder fitted on the 5
            fitting voices only (the role CosyVoice's supervised S3 tokens play)
Printed: frame phone accuracy on the 2 held-apart voices, and the share of their frames whose code
occurs in the 5 fitting voices at all.

Usage: python benchmarks/tts_token_content.py [--corpus data/tts-corpus] [--checkpoints DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "tts-corpus")
    parser.add_argument("--utterances", type=int, default=900)
    parser.add_argument("--checkpoints", type=Path, help="checkpoint folder (default: the committed one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from systems.tts.aligner import Aligner
    from systems.tts.families import attach_tokens
    from systems.tts.modules import frame_alignment, load_weights_strict
    from systems.tts.tokenizer import ResidualKMeans, TokenizerConfig
    from systems.tts.train import CHECKPOINTS, load_aligned_corpus

    torch.set_num_threads(1)
    checkpoints = args.checkpoints or CHECKPOINTS
    quiet = lambda _: None  # noqa: E731
    utterances, stats = load_aligned_corpus(args.corpus, checkpoints, quiet)
    attach_tokens(utterances, stats, checkpoints, args.corpus, quiet)
    aligner = Aligner()
    load_weights_strict(aligner, checkpoints / "aligner" / "model.safetensors")
    aligner.eval()
    voices = sorted({u.voice for u in utterances})
    apart = set(voices[-2:])
    rng = np.random.default_rng(0)
    sample = [utterances[i] for i in rng.choice(len(utterances), min(args.utterances, len(utterances)), replace=False)]
    encoded, level1, phones, held = [], [], [], []
    with torch.no_grad():
        for u in sample:
            mel = torch.from_numpy(stats.normalise(u.log_mel))[None]
            encoded.append(aligner.frames(mel.transpose(1, 2)).transpose(1, 2)[0].numpy())
            frame_phones, _ = frame_alignment(u.phones, u.durations)
            level1.append(u.tokens[:, 0])
            phones.append(frame_phones)
            held.append(np.full(len(frame_phones), u.voice in apart))
    encoded, level1 = np.concatenate(encoded), np.concatenate(level1)
    phones, held = np.concatenate(phones), np.concatenate(held)
    content_tokenizer, _ = ResidualKMeans.fit(encoded[~held], TokenizerConfig(levels=1, codes=1024, sample_frames=100_000,
                                                                              iterations=10), log=quiet)
    content = content_tokenizer.encode(encoded)[:, 0]

    def accuracy(tokens: np.ndarray) -> dict[str, float]:
        table = np.zeros((1024, int(phones.max()) + 1))
        np.add.at(table, (tokens[~held], phones[~held]), 1)
        seen = table.sum(1) > 0
        return {"phone_accuracy": float((table.argmax(1)[tokens[held]] == phones[held]).mean()),
                "codes_seen": float(seen[tokens[held]].mean())}

    result = {"fitting_voices": sorted(set(voices) - apart), "held_apart_voices": sorted(apart),
              "frames_fitting": int((~held).sum()), "frames_held_apart": int(held.sum()),
              "level1": accuracy(level1), "content": accuracy(content)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"token -> phone map fitted on {result['frames_fitting']} frames of {', '.join(result['fitting_voices'])};"
          f" tested on {result['frames_held_apart']} frames of {', '.join(result['held_apart_voices'])}")
    for name in ("level1", "content"):
        r = result[name]
        print(f"  {name:8s} tokens: phone accuracy {100 * r['phone_accuracy']:.1f} %, "
              f"frames whose code occurs in the fitting voices {100 * r['codes_seen']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
