"""Autoregressive codec-LM TTS (VALL-E / CosyVoice-LM style) with RALL-E's duration guidance.

Stage 1 (autoregressive): a decoder-only transformer over [phones ; BOS, level-1 tokens] predicts
the next level-1 token or EOS. RALL-E's alignment: durations are predicted before the speech
tokens (the shared duration predictor), each speech position is told its phone (the phone's
embedding and the frame's place in it are added to its input) and may attend, in the text part,
only to that phone and `phone_window` neighbours on each side (duration-guided masking); frames
after the last phone carry the END phone, where the model learns to emit EOS.
Stage 2 (non-autoregressive, VALL-E's NAR): a bidirectional transformer predicts level l from the
sum of levels < l, all levels of the prompt frames, the frame-aligned phones and a level embedding.

Inference: a KV cache for stage 1; sampling with temperature, top-k and top-p; a length guard
(`NoStop` when no EOS comes within max(2 x, +100 frames) of the predicted length: the run records
a failure with reason `no_stop`); streaming yields audio every `chunk` frames.

Duration-free option (`alignment: "none"`, plain VALL-E): no phone on the speech positions and
full causal attention over the text; it must learn when to stop by itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from systems.tts.modules import Block, FrameText, check_alignment, front_end_json
from systems.tts.text import END_ID, vocab_size


class NoStop(BenchError):
    """The autoregressive model produced no EOS within the length guard."""

    reason = "no_stop"


@dataclass(frozen=True)
class ARConfig:
    d: int = 192
    layers: int = 6
    heads: int = 3
    mlp_ratio: float = 3.0
    nar_layers: int = 4
    levels: int = 8
    codes: int = 1024
    phone_window: int = 1
    alignment: str = "duration"  # duration | none
    max_prompt: float = 0.5
    text: str = "phones"  # the front end (systems.tts.text.FRONT_ENDS)

    def __post_init__(self) -> None:
        check_alignment(self.alignment, ('duration', 'none'))
        vocab_size(self.text)

    def to_json(self) -> dict[str, Any]:
        return front_end_json(asdict(self))


class ARModel(nn.Module):
    def __init__(self, config: ARConfig):
        super().__init__()
        self.config = config
        d = config.d
        vocab = vocab_size(config.text)
        self.phone_embed = nn.Embedding(vocab, d, padding_idx=0)
        self.token_embed = nn.Embedding(config.codes + 1, d)  # + BOS
        self.frame_text = FrameText(vocab, d, blocks=1)
        self.ar_blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.ar_norm = nn.LayerNorm(d)
        self.ar_head = nn.Linear(d, config.codes + 1)  # + EOS
        # Stage 2
        self.nar_text = FrameText(vocab, d, blocks=1)
        self.nar_tokens = nn.ModuleList(nn.Embedding(config.codes, d) for _ in range(config.levels))
        self.level_embed = nn.Embedding(config.levels, d)
        self.nar_blocks = nn.ModuleList(Block(d, config.heads, config.mlp_ratio) for _ in range(config.nar_layers))
        self.nar_norm = nn.LayerNorm(d)
        self.nar_heads = nn.ModuleList(nn.Linear(d, config.codes) for _ in range(config.levels - 1))

    @property
    def bos(self) -> int:
        return self.config.codes

    @property
    def eos(self) -> int:
        return self.config.codes

    # ------------------------------------------------------------------ stage 1
    def speech_inputs(self, previous: torch.Tensor, frame_text: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings plus, in the duration-guided form, each frame's phone features
        (`frame_text`, from `frame_text_features` over the whole frame sequence)."""
        h = self.token_embed(previous)
        if self.config.alignment == "duration":
            h = h + frame_text
        return h

    def frame_text_features(self, frame_phones: torch.Tensor, position: torch.Tensor) -> torch.Tensor | None:
        """Phone features of every frame at once: FrameText's convolutions look at neighbouring
        frames, so they must run over the whole planned sequence, never frame by frame."""
        if self.config.alignment != "duration":
            return None
        return self.frame_text(frame_phones, position)

    def guided_mask(self, n_text: int, speech_phone_index: torch.Tensor, n_text_valid: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, L) bool for L = n_text + S: causal, and in the text part each speech position
        sees only its phone +- phone_window (duration guidance); padded text is never seen."""
        b, s = speech_phone_index.shape
        total = n_text + s
        allowed = torch.ones(total, total, dtype=torch.bool).tril()[None].repeat(b, 1, 1)
        text_pos = torch.arange(n_text)
        valid = text_pos[None] < n_text_valid[:, None]  # (B, n_text)
        allowed[:, :, :n_text] &= valid[:, None, :]
        if self.config.alignment == "duration":
            near = (text_pos[None, None] - speech_phone_index[..., None]).abs() <= self.config.phone_window
            allowed[:, n_text:, :n_text] &= near
        # Padded text rows must still see something (themselves) to keep softmax finite.
        allowed |= torch.eye(total, dtype=torch.bool)[None]
        return allowed[:, None]

    def ar_forward(self, phones: torch.Tensor, n_text_valid: torch.Tensor, previous: torch.Tensor,
                   frame_phones: torch.Tensor, position: torch.Tensor, phone_index: torch.Tensor) -> torch.Tensor:
        """phones (B, N) padded; previous (B, S) tokens shifted right (BOS first); frame_phones,
        position, phone_index (B, S) for the frame each position predicts -> logits (B, S, codes+1)."""
        n = phones.shape[1]
        h = torch.cat([self.phone_embed(phones), self.speech_inputs(previous, self.frame_text_features(frame_phones, position))], dim=1)
        mask = self.guided_mask(n, phone_index, n_text_valid)
        positions = torch.arange(h.shape[1])
        for block in self.ar_blocks:
            h = block(h, positions, mask=mask)
        return self.ar_head(self.ar_norm(h[:, n:]))

    # ------------------------------------------------------------------ stage 2
    def nar_forward(self, tokens: torch.Tensor, level: int, prompt_frames: torch.Tensor,
                    frame_phones: torch.Tensor, position: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, codes) of `level` (1..levels-1) from levels < level (all levels on the
        first prompt_frames[b] frames)."""
        b, t, _ = tokens.shape
        h = self.nar_text(frame_phones, position) + self.level_embed.weight[level][None, None]
        is_prompt = torch.arange(t)[None] < prompt_frames[:, None]
        for m, table in enumerate(self.nar_tokens):
            emb = table(tokens[..., m])
            if m < level:
                h = h + emb
            else:
                h = h + emb * is_prompt[..., None]
        positions = torch.arange(t)
        mask = None if pad_mask is None else pad_mask[:, None, None, :]
        for block in self.nar_blocks:
            h = block(h, positions, mask=mask)
        return self.nar_heads[level - 1](self.nar_norm(h))


def training_loss(model: ARModel, batch: dict[str, Any], gen: torch.Generator,
                  rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    tokens, pad = batch["tokens"], batch["pad_mask"]
    b, t_len, levels = tokens.shape
    lengths = pad.sum(1)
    # Stage 1: text = the phones the crop covers; each crop gets one more position that predicts
    # EOS where the crop ends the utterance (frame phone END) and is ignored otherwise.
    texts = batch["texts"]
    n_text = max(len(p) for p, _ in texts)
    phones = torch.zeros(b, n_text, dtype=torch.long)
    phone_index = torch.zeros(b, t_len + 1, dtype=torch.long)
    frame_phones = torch.zeros(b, t_len + 1, dtype=torch.long)
    position = torch.zeros(b, t_len + 1)
    previous = torch.full((b, t_len + 1), model.bos, dtype=torch.long)
    target = torch.full((b, t_len + 1), -100, dtype=torch.long)
    for i, (ph, index) in enumerate(texts):
        n = int(lengths[i])
        phones[i, :len(ph)] = torch.from_numpy(np.asarray(ph))
        phone_index[i, :n] = torch.from_numpy(index)
        phone_index[i, n] = len(ph) - 1
        frame_phones[i, :n] = batch["frame_phones"][i, :n]
        position[i, :n] = batch["position"][i, :n]
        previous[i, 1:n + 1] = tokens[i, :n, 0]
        target[i, :n] = tokens[i, :n, 0]
        if batch["ends"][i]:
            frame_phones[i, n] = END_ID
            target[i, n] = model.eos
    n_valid = torch.tensor([len(p) for p, _ in texts])
    logits = model.ar_forward(phones, n_valid, previous, frame_phones, position, phone_index)
    ar_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
    # Stage 2: one random level per batch, prompt = a random prefix of each crop.
    level = int(rng.integers(1, levels))
    prompt = torch.tensor([int(n * rng.uniform(0, model.config.max_prompt)) for n in lengths.tolist()])
    nar_logits = model.nar_forward(tokens, level, prompt, batch["frame_phones"], batch["position"], pad)
    scored = pad & (torch.arange(t_len)[None] >= prompt[:, None])
    nar_loss = F.cross_entropy(nar_logits[scored].float(), tokens[..., level][scored])
    return ar_loss + nar_loss, {"ar_ce": float(ar_loss.detach()), "nar_ce": float(nar_loss.detach())}


def _filter(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    scaled = logits.float() / max(temperature, 1e-6)
    if top_k:
        kth = scaled.topk(min(top_k, scaled.shape[-1])).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = scaled.sort(descending=True)
        cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, -1) > top_p
        scaled[order[drop]] = float("-inf")
    return scaled


@torch.no_grad()
def generate_level1(model: ARModel, phones: torch.Tensor, prompt_tokens: torch.Tensor,
                    frame_phones: torch.Tensor, position: torch.Tensor, phone_index: torch.Tensor, *,
                    temperature: float = 1.0, top_k: int = 50, top_p: float = 0.0, seed: int = 0,
                    max_frames: int) -> Iterator[int]:
    """Yield level-1 tokens of the target frames one by one (KV cache), until EOS.

    phones (N,) all phones (prompt's, then target's); prompt_tokens (P,) level 1; frame_phones,
    position, phone_index (P + N_target,) for every frame the durations give; beyond them the
    END phone. Raises NoStop after max_frames target frames without EOS."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n, p = phones.shape[0], prompt_tokens.shape[0]
    planned = frame_phones.shape[0]
    caches = [dict() for _ in model.ar_blocks]

    # Every frame's phone features, computed once over the planned frames and the frames beyond
    # them (frame by frame would hide each frame's neighbours from FrameText's convolutions, which
    # saw them in training). As in training, the END phone follows the last frame, then padding.
    beyond = max(1, p + max_frames + 1 - planned)
    after = torch.zeros(beyond, dtype=torch.long)
    after[0] = END_ID
    all_phones = torch.cat([frame_phones.long(), after])
    all_position = torch.cat([position.float(), torch.zeros(beyond)])
    text_features = model.frame_text_features(all_phones[None], all_position[None])

    def features(start: int, stop: int) -> torch.Tensor | None:
        return None if text_features is None else text_features[:, start:stop]

    def phone_of(j: int) -> int:
        return int(phone_index[j]) if j < planned else n - 1

    def step_mask(j: int) -> torch.Tensor:
        total = n + j + 1
        allowed = torch.ones(total, dtype=torch.bool)
        if model.config.alignment == "duration":
            allowed[:n] = (torch.arange(n) - phone_of(j)).abs() <= model.config.phone_window
        return allowed[None, None, None]

    def run(h: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block, cache in zip(model.ar_blocks, caches):
            h = block(h, positions, mask=mask, cache=cache)
        return model.ar_head(model.ar_norm(h[:, -1]))[0]

    # Prefill: text and the prompt's frames (each predicting the next), in one pass.
    previous = torch.cat([torch.tensor([model.bos]), prompt_tokens.long()])
    idx = torch.tensor([phone_of(j) for j in range(p + 1)])[None]
    h = torch.cat([model.phone_embed(phones[None]), model.speech_inputs(previous[None], features(0, p + 1))], dim=1)
    mask = model.guided_mask(n, idx, torch.tensor([n]))
    logits = run(h, torch.arange(h.shape[1]), mask)
    j = p
    while True:
        token = int(torch.multinomial(torch.softmax(_filter(logits, temperature, top_k, top_p), -1), 1, generator=gen))
        if token == model.eos:
            return
        if j - p >= max_frames:
            raise NoStop(f"no end-of-speech token within {max_frames} frames ({max_frames / 62.5:.1f} s)")
        yield token
        j += 1
        h = model.speech_inputs(torch.tensor([[token]]), features(j, j + 1))
        logits = run(h, torch.tensor([n + j]), step_mask(j))


@torch.no_grad()
def fill_levels(model: ARModel, level1: torch.Tensor, prompt_tokens: torch.Tensor, frame_phones: torch.Tensor,
                position: torch.Tensor) -> torch.Tensor:
    """Stage 2: levels 2..L of every frame, greedily, level by level. level1 (P + N,) all frames'
    level 1; prompt_tokens (P, levels) -> (P + N, levels)."""
    model.eval()
    total, p = level1.shape[0], prompt_tokens.shape[0]
    tokens = torch.zeros(1, total, model.config.levels, dtype=torch.long)
    tokens[0, :, 0] = level1
    tokens[0, :p] = prompt_tokens
    for level in range(1, model.config.levels):
        logits = model.nar_forward(tokens, level, torch.tensor([p]), frame_phones[None], position[None])
        tokens[0, p:, level] = logits[0, p:].argmax(-1)
    return tokens[0]
