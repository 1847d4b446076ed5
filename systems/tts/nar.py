"""Masked generative TTS (MaskGCT / MaskGIT style) over residual k-means speech tokens.

A bidirectional transformer sees, per frame, the sum of the frame's token embeddings (one table
per residual level; a masked frame shows the MASK entry at every level) and the frame-aligned
phones; it predicts every level of every masked frame. Training: the prompt is a random prefix of
0-40 % of the crop (never masked, never scored), and of the rest a fraction cos(pi u / 2),
u ~ U(0, 1), is masked (MaskGIT's cosine schedule); cross-entropy on the masked frames.
Inference: all target frames start masked; each of `steps` rounds predicts them all, samples level
1 (temperature, top-k) and takes the other levels greedily, and keeps unmasked the most confident
frames so that a cos(pi k / 2K) share stays masked after round k (confidence noise decays to zero,
as in MaskGIT). One network predicts all levels of a frame at once; by default the system keeps
only level 1 and lets the shared flow-matching decoder make the features (systems/tts/system.py,
`acoustic`), the split MaskGCT makes between text-to-semantic and semantic-to-acoustic.

Duration-free form (`alignment: "prefix"`, MaskGCT's T2S): no frame carries a phone; the phones
(refined by the same ConvNeXt blocks) are a prefix of the sequence, and every frame attends to all
of them and to every other frame. At inference the total length comes from the prompt's speaking
rate alone (target phones x the prompt's frames per phone), as MaskGCT does. It must find the
alignment itself, which takes far more steps than the CPU budget (systems/tts/checkpoints/README.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from systems.tts.modules import Block, FrameText, check_alignment, front_end_json
from systems.tts.text import vocab_size


@dataclass(frozen=True)
class NARConfig:
    d: int = 192
    layers: int = 6
    heads: int = 3
    mlp_ratio: float = 3.0
    levels: int = 8
    codes: int = 1024
    text_blocks: int = 2
    max_prompt: float = 0.4
    alignment: str = "duration"  # duration | prefix (duration-free, MaskGCT's T2S)
    text: str = "phones"  # the front end (systems.tts.text.FRONT_ENDS)

    def __post_init__(self) -> None:
        check_alignment(self.alignment, ('duration', 'prefix'))
        vocab_size(self.text)

    def to_json(self) -> dict[str, Any]:
        return front_end_json(asdict(self))


class MaskedModel(nn.Module):
    def __init__(self, config: NARConfig):
        super().__init__()
        self.config = config
        d = config.d
        self.text = FrameText(vocab_size(config.text), d, config.text_blocks)
        self.tokens = nn.ModuleList(nn.Embedding(config.codes + 1, d) for _ in range(config.levels))  # +MASK
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.levels * config.codes)

    @property
    def mask_id(self) -> int:
        return self.config.codes

    def forward(self, tokens: torch.Tensor, frame_phones: torch.Tensor | None, position: torch.Tensor | None,
                pad_mask: torch.Tensor | None = None, phones: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T, levels) with mask_id where masked -> logits (B, T, levels, codes).
        Duration form: frame_phones, position (B, T). Prefix form: phones (B, N), 0 = padding."""
        t = tokens.shape[1]
        prefix = self.config.alignment == "prefix"
        if prefix and phones is None:
            raise ValueError("the prefix form needs the phone sequence")
        h = torch.zeros(()) if prefix else self.text(frame_phones, position)
        for level, table in enumerate(self.tokens):
            h = h + table(tokens[..., level])
        if prefix:
            h = torch.cat([self.text(phones, torch.zeros(phones.shape)), h], dim=1)
            frames_valid = torch.ones(tokens.shape[:2], dtype=torch.bool) if pad_mask is None else pad_mask
            pad_mask = torch.cat([phones != 0, frames_valid], dim=1)
        positions = torch.arange(h.shape[1])
        mask = None if pad_mask is None else pad_mask[:, None, None, :]
        for block in self.blocks:
            h = block(h, positions, mask=mask)
        logits = self.head(self.norm(h[:, -t:]))
        return logits.view(h.shape[0], t, self.config.levels, self.config.codes)


def training_loss(model: MaskedModel, batch: dict[str, Any], gen: torch.Generator,
                  rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    tokens, pad = batch["tokens"], batch["pad_mask"]
    b, t_len, levels = tokens.shape
    masked = torch.zeros(b, t_len, dtype=torch.bool)
    for i, n in enumerate(pad.sum(1).tolist()):
        prompt = int(n * rng.uniform(0, model.config.max_prompt))
        target = n - prompt
        ratio = math.cos(math.pi / 2 * rng.uniform(0, 1))
        count = max(1, int(math.ceil(ratio * target)))
        chosen = prompt + rng.choice(target, size=count, replace=False)
        masked[i, torch.from_numpy(chosen)] = True
    inputs = tokens.masked_fill(masked[..., None], model.mask_id)
    phones = None
    if model.config.alignment == "prefix":  # the phones each crop covers, as a prefix
        phones = torch.zeros(b, max(len(p) for p, _ in batch["texts"]), dtype=torch.long)
        for i, (ph, _) in enumerate(batch["texts"]):
            phones[i, :len(ph)] = torch.as_tensor(np.asarray(ph))
    logits = model(inputs, batch["frame_phones"], batch["position"], pad, phones)
    picked = logits[masked].float()  # (M, levels, codes)
    targets = tokens[masked]
    loss = F.cross_entropy(picked.reshape(-1, model.config.codes), targets.reshape(-1))
    with torch.no_grad():
        first = F.cross_entropy(picked[:, 0], targets[:, 0])
    return loss, {"ce_level1": float(first)}


def _sample_level(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    scaled = logits / temperature
    if top_k:
        kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(torch.softmax(scaled, -1), 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(model: MaskedModel, prompt_tokens: torch.Tensor, frame_phones: torch.Tensor | None,
             position: torch.Tensor | None, *, steps: int = 16, temperature: float = 1.0, top_k: int = 50,
             noise: float = 1.0, seed: int = 0, phones: torch.Tensor | None = None,
             total: int | None = None) -> torch.Tensor:
    """prompt_tokens (P, levels); frame_phones/position (P + N,) -> all tokens (P + N, levels).
    Prefix form: phones (all, prompt's then target's) and the total frame count instead."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    prefix = model.config.alignment == "prefix"
    total = total if prefix else frame_phones.shape[0]
    p = prompt_tokens.shape[0]
    n = total - p
    tokens = torch.full((1, total, model.config.levels), model.mask_id, dtype=torch.long)
    tokens[0, :p] = prompt_tokens
    masked = torch.zeros(total, dtype=torch.bool)
    masked[p:] = True
    for k in range(1, steps + 1):
        if prefix:
            logits = model(tokens, None, None, phones=phones[None])[0]
        else:
            logits = model(tokens, frame_phones[None], position[None])[0]  # (T, levels, codes)
        idx = masked.nonzero().squeeze(-1)
        if idx.numel() == 0:
            break
        chosen = logits[idx].argmax(-1)
        chosen[:, 0] = _sample_level(logits[idx, 0], temperature, top_k, gen)
        logp = torch.log_softmax(logits[idx, 0].float(), -1).gather(-1, chosen[:, :1]).squeeze(-1)
        anneal = noise * (1 - k / steps)
        if anneal > 0:
            gumbel = -torch.log(-torch.log(torch.rand(logp.shape, generator=gen).clamp(1e-9, 1 - 1e-9)))
            logp = logp + anneal * gumbel
        keep_masked = int(math.floor(n * math.cos(math.pi / 2 * k / steps))) if k < steps else 0
        reveal = idx.numel() - keep_masked
        if reveal <= 0:
            continue
        order = logp.argsort(descending=True)[:reveal]
        tokens[0, idx[order]] = chosen[order]
        masked[idx[order]] = False
    return tokens[0]
