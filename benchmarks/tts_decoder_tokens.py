"""Does the token families' decoder read its tokens? (the README's "what limits the token families")

On every tts-seen item the committed decoder makes the target's features from: null tokens (the
guidance's "no token" entry), uniformly random tokens, and the reference recording's own level-1
tokens with its own durations (the aligner's); Whisper WER of each (Griffin-Lim, as the systems).
A decoder that reads its tokens fails on null and random tokens; the reference tokens give the
ceiling of what any token model could reach through it.

Usage: python benchmarks/tts_decoder_tokens.py [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="only the first N items")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from bench.audio import read_audio
    from bench.contracts import MetricInput
    from bench.metrics.wer import WER
    from bench.registry import create
    from systems.tts.aligner import align
    from systems.tts.features import log_mel
    from systems.tts.modules import frame_alignment
    from systems.tts.system import TinyNAR

    items = create("task", "tts-seen").items()[:args.limit]
    system = TinyNAR()  # any token family: only its shared pieces and the decoder are used
    system.load()
    wer = WER()
    wer.load()
    null = system.decoder.null_token
    gen = torch.Generator().manual_seed(0)
    outputs: dict[str, list] = {}
    with torch.inference_mode():
        for item in items:
            plan = system.plan(item.text, item.prompt)
            prompt_tokens = torch.from_numpy(system.tokenizer.encode(plan["prompt_mel"]))
            n = plan["target_frames"]
            outputs.setdefault("null tokens", []).append((item, system.decode_level1(plan, prompt_tokens, [null] * n)))
            random = torch.randint(0, system.tokenizer.codes, (n,), generator=gen).tolist()
            outputs.setdefault("random tokens", []).append((item, system.decode_level1(plan, prompt_tokens, random)))
            reference = system.stats.normalise(log_mel(read_audio(item.reference_path).resampled(16000).samples).T)
            k = plan["prompt_phones"]
            durations = np.concatenate([plan["durations"][:k], align(system.aligner, list(plan["phones"][k:]), reference)])
            frame_phones, position = frame_alignment(plan["phones"], durations)
            own = {**plan, "frame_phones": frame_phones, "position": position, "durations": durations}
            tokens = system.tokenizer.encode(reference)[:, 0].tolist()
            outputs.setdefault("reference tokens", []).append((item, system.decode_level1(own, prompt_tokens, tokens)))
    result = {"items": len(items)}
    for name, pairs in outputs.items():
        scored = wer.score_batch([MetricInput(item_id=it.id, hypothesis=system.to_audio(f), text=it.text) for it, f in pairs])
        result[name] = float(np.mean([o.values["wer"] for o in scored]))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"decoder WER on {len(items)} tts-seen items: " +
              ", ".join(f"{name} {100 * result[name]:.1f} %" for name in outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
