"""Building blocks the three families share: rotary attention with an optional KV cache,
pre-norm transformer blocks (with DiT's adaptive layer norm when a conditioning vector is given),
ConvNeXt blocks (F5-TTS refines its text embeddings with them), a sinusoidal time embedding, and
strict safetensors checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of x (B, H, T, D) at integer positions (T,) or (B, T)."""
    d = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.to(torch.float32)[..., None] * inv  # (T, D/2) or (B, T, D/2)
    if angles.dim() == 3:
        angles = angles[:, None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise BenchError(f"width {d} is not divisible by {heads} heads")
        self.heads, self.d_head = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """mask: bool (B or 1, 1, Tq, Tk), True = may attend. cache: {'k','v'} appended in place."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, positions), rotary(k, positions)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if causal and mask is None and cache is not None and t == 1:
            causal = False  # one new query attends to everything cached
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    """Pre-norm transformer block. With `cond_dim`, DiT's adaLN-Zero: the conditioning vector
    sets each norm's scale and shift and gates each residual branch (gates start at zero)."""

    def __init__(self, d: int, heads: int, mlp_ratio: float = 4.0, cond_dim: int | None = None):
        super().__init__()
        self.attn = Attention(d, heads)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.adaptive = cond_dim is not None
        self.norm1 = nn.LayerNorm(d, elementwise_affine=not self.adaptive)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=not self.adaptive)
        if self.adaptive:
            self.modulation = nn.Linear(cond_dim, 6 * d)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, *, mask: torch.Tensor | None = None,
                causal: bool = False, cond: torch.Tensor | None = None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if self.adaptive:
            shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(6, dim=-1)
            h = self.norm1(x) * (1 + scale1) + shift1
            x = x + gate1 * self.attn(h, positions, mask, causal, cache)
            h = self.norm2(x) * (1 + scale2) + shift2
            return x + gate2 * self.mlp(h)
        x = x + self.attn(self.norm1(x), positions, mask, causal, cache)
        return x + self.mlp(self.norm2(x))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt V2-style 1-D block (depthwise conv, LayerNorm, pointwise MLP), as F5-TTS uses to
    refine text embeddings before they meet the audio."""

    def __init__(self, d: int, kernel: int = 7, mlp_ratio: float = 2.0):
        super().__init__()
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, int(d * mlp_ratio))
        self.pw2 = nn.Linear(int(d * mlp_ratio), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        h = self.dw(x.transpose(1, 2)).transpose(1, 2)
        return x + self.pw2(F.gelu(self.pw1(self.norm(h))))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def check_alignment(value: str, allowed: tuple[str, ...]) -> None:
    """A family config's text alignment must be one that family implements."""
    if value not in allowed:
        raise BenchError(f"alignment {value!r} is not one of {', '.join(allowed)} for this family")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: Path, model: nn.Module, config: dict[str, Any], extra: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """folder/model.safetensors (weights only: data, never code) and folder/config.json.
    half=True stores float16 (the families: half the size in git; loading casts back to float32)."""
    from safetensors.torch import save_file

    from bench.jsonio import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().clone()
               for k, v in model.state_dict().items()}
    tmp = folder / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / "model.safetensors")
    write_json_atomic(folder / "config.json", {**config, **(extra or {})})


def load_weights_strict(model: nn.Module, path: Path) -> None:
    """Load safetensors into `model`; every key and shape must match (never strict=False)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise BenchError(f"no weights at {path}")
    load_state_strict(model, load_file(str(path)), f"checkpoint {path}")


def load_state_strict(model: nn.Module, state: dict[str, Any], what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise BenchError(f"{what} does not match the model: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {wrong[:4]}")
    dtypes = {k: v.dtype for k, v in expected.items()}
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()}, strict=True)


def front_end_json(data: dict[str, Any]) -> dict[str, Any]:
    """A model config's JSON without `text` when it is the default phones, so configs of phone
    models read (and their bytes rebuild) as they did before the front end was a choice."""
    if data.get("text") == "phones":
        del data["text"]
    return data


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise BenchError(f"no config.json in {folder}")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- text conditioning
class FrameText(nn.Module):
    """Frame-aligned phones (each frame carries its phone, as Voicebox and FastSpeech's length
    regulator do) -> (B, T, d): phone embedding + where in its phone the frame is, refined by
    ConvNeXt blocks (F5-TTS). Id 0 is padding / 'no text' (classifier-free guidance's null), id 1
    marks frames after the last phone."""

    def __init__(self, vocab: int, d: int, blocks: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.where = nn.Linear(1, d)
        self.blocks = nn.ModuleList(ConvNeXtBlock(d) for _ in range(blocks))

    def forward(self, frame_phones: torch.Tensor, position_in_phone: torch.Tensor) -> torch.Tensor:
        x = self.embed(frame_phones) + self.where(position_in_phone[..., None]) * (frame_phones != 0)[..., None]
        for block in self.blocks:
            x = block(x)
        return x


def frame_alignment(phones, durations):
    """Per-frame phone ids and position in phone (0 at its first frame, towards 1 at its last)."""
    import numpy as np

    phones = np.asarray(phones, dtype=np.int64)
    durations = np.asarray(durations, dtype=np.int64)
    frame_phones = np.repeat(phones, durations)
    starts = np.repeat(np.cumsum(durations) - durations, durations)
    position = (np.arange(len(frame_phones)) - starts) / np.repeat(durations, durations)
    return frame_phones, position.astype(np.float32)


def filler_alignment(phones, n_frames: int, filler_id: int):
    """E2/F5's duration-free text layout: the phones, then filler tokens up to n_frames; no
    position-in-phone information (zeros). The model must find the alignment itself."""
    import numpy as np

    phones = np.asarray(phones, dtype=np.int64)
    if len(phones) > n_frames:
        phones = phones[:n_frames]
    out = np.full(n_frames, filler_id, dtype=np.int64)
    out[:len(phones)] = phones
    return out, np.zeros(n_frames, dtype=np.float32)
