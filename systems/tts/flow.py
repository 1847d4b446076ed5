"""Flow-matching TTS (Voicebox / F5-TTS style): conditional flow matching on an infilling mask.

Per frame the model sees the noisy features x_t, the context features (the prompt's frames; zero
where it must generate) and the frame-aligned phones refined by ConvNeXt blocks (F5's text
refinement); a DiT (transformer blocks with adaLN-Zero on the flow time) predicts the velocity
x1 - x0 of the optimal-transport path x_t = (1 - t) x0 + t x1. Training masks a contiguous span of
70-100 % of the frames (Voicebox) and scores the velocity there only; the context is dropped with
probability 0.3 and context and text together with 0.2 (F5), which is what classifier-free guidance
needs. Inference: Euler steps (NFE) from noise, F5's sway sampling of the step times
(t + s (cos(pi t / 2) - 1 + t), s = -1 by default, 0 = uniform steps) and guidance
v = v_cond + w (v_cond - v_uncond).

Token-to-features decoder (`tokens > 0`, `phones: false`; CosyVoice's flow-matching decoder, which
Seed-TTS's diffusion stage resembles): the same network, told each frame's level-1 speech token
(one embedding table) and the prompt's features, but not the phones: as in CosyVoice, what is said
reaches it only through the tokens, so the token model (tiny-ar, tiny-nar) decides it. (A decoder
that also read the phones was tried first: it spoke as well from null tokens as from the AR's, so
the token model did nothing; systems/tts/checkpoints/README.md has the numbers.) It fine-tunes
from the TTS flow model's weights, its text refinement left out. The token families let it make the
features instead of predicting the finer residual levels (VALL-E's NAR stage; still available).
Training replaces a fraction `p_token_noise` of the tokens with random codes, so that a wrong
generated token is not copied blindly; tokens are dropped with the context for guidance.

Duration-free option (`alignment: "filler"`, E2/F5's recipe): the phone sequence is padded with
filler tokens to the frame count instead of aligned (total length from the prompt's speaking rate).
It needs far more steps than a CPU hour gives (see systems/tts/checkpoints/README.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from systems.tts.features import N_MELS
from systems.tts.modules import Block, FrameText, front_end_json, time_embedding, check_alignment
from systems.tts.text import vocab_size


@dataclass(frozen=True)
class FlowConfig:
    d: int = 192
    layers: int = 6
    heads: int = 3
    mlp_ratio: float = 2.5
    text_blocks: int = 2
    alignment: str = "duration"  # duration | filler
    p_drop_context: float = 0.3
    p_drop_all: float = 0.2
    min_mask: float = 0.7
    tokens: int = 0  # > 0: condition on level-1 speech tokens of this many codes (the decoder)
    p_token_noise: float = 0.1
    # Fraction of training examples shaped like a stream's chunk (CosyVoice 2's chunk-aware decoder):
    # the utterance cut at a random end, the last 8-96 frames generated from everything before.
    p_stream: float = 0.0
    phones: bool = True  # False: no text input at all (the decoder reads only tokens and context)
    text: str = "phones"  # the front end (systems.tts.text.FRONT_ENDS)

    def __post_init__(self) -> None:
        check_alignment(self.alignment, ('duration', 'filler'))
        if not self.phones and not self.tokens:
            raise ValueError("a flow model without phones needs tokens to read")
        vocab_size(self.text)  # validates the front end's name

    @property
    def filler_id(self) -> int:
        """The duration-free form's filler token: one past the front end's vocabulary."""
        return vocab_size(self.text)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.tokens:  # a plain TTS flow model: its config reads as it did before decoders
            for key in ("tokens", "p_token_noise", "phones"):
                del data[key]
        if not self.p_stream:  # configs from before chunk-shaped training read as they did
            del data["p_stream"]
        return front_end_json(data)


class FlowModel(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        d = config.d
        if config.phones:
            self.text = FrameText(config.filler_id + 1, d, config.text_blocks)
        if config.tokens:  # the last entry is the null token (guidance, no tokens)
            self.token_embed = nn.Embedding(config.tokens + 1, d)
            nn.init.zeros_(self.token_embed.weight)
        self.inp = nn.Linear(2 * N_MELS + d, d)
        self.conv_pos = nn.Sequential(nn.Conv1d(d, d, 31, padding=15, groups=16), nn.Mish(),
                                      nn.Conv1d(d, d, 31, padding=15, groups=16), nn.Mish())
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio, cond_dim=d) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.final = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, N_MELS)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    @property
    def null_token(self) -> int:
        return self.config.tokens

    def forward(self, x_t: torch.Tensor, context: torch.Tensor, frame_phones: torch.Tensor,
                position: torch.Tensor, t: torch.Tensor, pad_mask: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        """x_t, context (B, T, N_MELS); frame_phones, position (B, T); t (B,) -> velocity (B, T, N_MELS).
        pad_mask: (B, T) True on real frames. tokens (B, T): the decoder's level-1 tokens."""
        text = self.text(frame_phones, position) if self.config.phones else torch.zeros(())
        if self.config.tokens:
            if tokens is None:
                raise ValueError("this flow model is a token decoder: give it the frames' tokens")
            text = text + self.token_embed(tokens)
        text = text.expand(*x_t.shape[:2], self.config.d)
        h = self.inp(torch.cat([x_t, context, text], dim=-1))
        h = h + self.conv_pos(h.transpose(1, 2)).transpose(1, 2)
        cond = self.time(time_embedding(t, self.config.d))
        positions = torch.arange(h.shape[1], device=h.device)
        mask = None if pad_mask is None else pad_mask[:, None, None, :]
        for block in self.blocks:
            h = block(h, positions, mask=mask, cond=cond)
        shift, scale = self.final(cond)[:, None].chunk(2, dim=-1)
        return self.out(self.norm(h) * (1 + scale) + shift)


def infill_mask(rng: np.random.Generator, n_frames: int, min_fraction: float) -> np.ndarray:
    """A contiguous span of min_fraction..100 % of the frames: True = generate."""
    length = max(1, int(round(n_frames * rng.uniform(min_fraction, 1.0))))
    start = int(rng.integers(0, n_frames - length + 1))
    mask = np.zeros(n_frames, dtype=bool)
    mask[start:start + length] = True
    return mask


STREAM_MIN_CONTEXT = 24  # frames before a chunk-shaped example's span (a prompt is >= 0.3 s, 19 frames)
STREAM_CHUNK = (8, 96)  # its span's length range: the stream's chunks (48 by default) and ragged last ones


def chunk_span(rng: np.random.Generator, n_frames: int) -> tuple[int, int]:
    """A chunk-shaped example's generated frames [start, end): the last chunk of an utterance cut at `end`."""
    chunk = int(rng.integers(STREAM_CHUNK[0], min(STREAM_CHUNK[1], n_frames - STREAM_MIN_CONTEXT) + 1))
    end = int(rng.integers(STREAM_MIN_CONTEXT + chunk, n_frames + 1))
    return end - chunk, end


def training_loss(model: FlowModel, batch: dict[str, torch.Tensor], gen: torch.Generator,
                  rng: np.random.Generator) -> torch.Tensor:
    """Conditional flow matching loss on the infill span, with the guidance drop-outs. The random
    draws come from CPU generators whatever the batch's device, so a run's draws do not depend on it."""
    x1, pad, all_tokens = batch["mel"], batch["pad_mask"], batch["tokens"]
    device = x1.device
    b, t_len, _ = x1.shape
    # The trainer's batches carry their lengths: reading them off a GPU tensor would wait for it.
    lengths = batch["lengths"] if "lengths" in batch else pad.sum(1).tolist()
    span = torch.zeros(b, t_len, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if model.config.p_stream and rng.random() < model.config.p_stream and n >= STREAM_MIN_CONTEXT + STREAM_CHUNK[0]:
            if x1 is batch["mel"]:  # cut examples are edited on copies
                x1, pad, all_tokens = x1.clone(), pad.clone(), all_tokens.clone()
            start, end = chunk_span(rng, int(n))
            # After the cut the example is padding, as if the crop had ended there: the model
            # cannot see frames or tokens that a stream has not produced yet.
            x1[i, end:], pad[i, end:], all_tokens[i, end:] = 0.0, False, 0
            span[i, start:end] = True
        else:
            span[i, :n] = torch.from_numpy(infill_mask(rng, int(n), model.config.min_mask))
    span = span.to(device)
    x0 = torch.randn(x1.shape, generator=gen).to(device)
    t = torch.rand(b, generator=gen).to(device)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    context = x1.masked_fill(span[..., None], 0.0)
    phones = batch["frame_phones"].clone()
    roll = torch.rand(b, generator=gen).to(device)
    drop_all = roll < model.config.p_drop_all
    drop_context = roll < model.config.p_drop_all + model.config.p_drop_context
    context = context.masked_fill(drop_context[:, None, None], 0.0)
    phones = phones.masked_fill(drop_all[:, None], 0)
    tokens = None
    if model.config.tokens:
        tokens = all_tokens[..., 0].clone()
        noisy = (torch.rand(tokens.shape, generator=gen) < model.config.p_token_noise).to(device)
        tokens[noisy] = torch.randint(model.config.tokens, (int(noisy.sum()),), generator=gen).to(device)
        tokens = tokens.masked_fill(drop_all[:, None], model.null_token)
    v = model(x_t, context, phones, batch["position"], t, pad, tokens)
    err = ((v - (x1 - x0)) ** 2).mean(-1)
    weight = (span & pad).float()
    return (err * weight).sum() / weight.sum().clamp_min(1)


def sway_times(nfe: int, sway: float) -> torch.Tensor:
    """NFE + 1 step times from 0 to 1, warped by F5-TTS's sway sampling (s = 0: uniform)."""
    u = torch.linspace(0, 1, nfe + 1)
    return u + sway * (torch.cos(math.pi / 2 * u) - 1 + u)


@torch.no_grad()
def sample(model: FlowModel, context: torch.Tensor, frame_phones: torch.Tensor, position: torch.Tensor,
           generate: torch.Tensor, *, nfe: int = 16, sway: float = -1.0, guidance: float = 2.0,
           seed: int = 0, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate the flow for one utterance. context (T, N_MELS) (zeros where generate is True),
    frame_phones/position (T,), generate (T,) bool -> (T, N_MELS) features (context frames kept).
    tokens (T,): every frame's level-1 token, for a token decoder."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(context.shape, generator=gen)[None]
    ctx = context.masked_fill(generate[:, None], 0.0)[None]
    phones, pos = frame_phones[None], position[None]
    toks = null = None
    if model.config.tokens:
        if tokens is None or tokens.shape[0] != context.shape[0]:
            raise ValueError("a token decoder needs one token per frame")
        toks = tokens.long()[None]
        null = torch.full_like(toks, model.null_token)
    times = sway_times(nfe, sway)
    for i in range(nfe):
        t0, t1 = float(times[i]), float(times[i + 1])
        t = torch.tensor([t0])
        v = model(x, ctx, phones, pos, t, tokens=toks)
        if guidance:
            v_null = model(x, torch.zeros_like(ctx), torch.zeros_like(phones), pos, t, tokens=null)
            v = v + guidance * (v - v_null)
        x = x + (t1 - t0) * v
    out = torch.where(generate[:, None], x[0], context)
    return out
