"""Our small Llama-style decoder family, written functionally in pure PyTorch.

Architecture (the Llama recipe, same tensor names and maths as Hugging Face's LlamaForCausalLM, so
a checkpoint also loads there): token embedding; per layer RMSNorm -> grouped-query attention with
rotary position embeddings (RoPE, rotate-half convention) -> residual, RMSNorm -> SwiGLU MLP ->
residual; final RMSNorm; output head tied to the embedding (at these sizes the embedding is a large
share of the parameters, and tying is what SmolLM2 does too).

The model is a dict of named tensors plus functions rather than an nn.Module: the same functions
serve training (`hidden_states`, dense causal SDPA, with autograd) and evaluation (runtime.py calls
`embed`, `attention_inputs`, `attention_output`, `final_norm`, `logits` per layer so any prefill or
decode attention method can be plugged between them). Nothing here imports torch at module import
time (`bench systems list` stays fast); torch is imported inside the functions.

Checkpoints are folders with config.json (Hugging Face LlamaConfig field names, read by
bench.sparse.costmodel.ModelShape.from_hf_config), model.safetensors (float16 storage, float32
compute) and tokenizer.json (systems.lm.data.WordTokenizer). Loading checks names, shapes and
dtypes exactly; no pickle anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from bench.evaluators import sha256_file
from bench.contracts import Availability, LMScore, LMSystem, module_available
from bench.errors import BenchError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


class CheckpointError(BenchError, ValueError):
    """A checkpoint folder that is missing, incomplete or does not match its config."""


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LlamaConfig:
    """Hugging Face LlamaConfig field names (the subset this model uses)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    model_type: str = "llama"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CheckpointError(f"config: {name} must be a positive integer; got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(f"config: num_key_value_heads ({self.num_key_value_heads}) must divide "
                                  f"num_attention_heads ({self.num_attention_heads})")
        if self.head_dim % 2:
            raise CheckpointError(f"config: head_dim must be even for RoPE; got {self.head_dim}")
        if self.model_type != "llama":
            raise CheckpointError(f"config: model_type must be 'llama'; got {self.model_type!r}")

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["architectures"] = ["LlamaForCausalLM"]
        record["hidden_act"] = "silu"
        record["attention_bias"] = False
        record["mlp_bias"] = False
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "LlamaConfig":
        if not isinstance(record, dict):
            raise CheckpointError("config.json must hold a JSON object")
        names = {f.name for f in fields(cls)}
        informational = {"architectures", "hidden_act", "attention_bias", "mlp_bias", "torch_dtype"}
        unknown = sorted(set(record) - names - informational)
        if unknown:
            raise CheckpointError(f"config.json has fields this model does not implement: {unknown}")
        if record.get("hidden_act", "silu") != "silu" or record.get("attention_bias") or record.get("mlp_bias"):
            raise CheckpointError("config.json: only silu activation without attention/MLP biases is supported")
        try:
            return cls(**{k: v for k, v in record.items() if k in names})
        except TypeError as exc:
            raise CheckpointError(f"config.json: {exc}") from None


# The family: ~23x in parameters from smallest to largest (`param_count`; README has the numbers).
# Width stays <= 64: in trial runs on this CPU, models of width 80-160 (and width 64 with 7
# layers) learnt to copy the first digit of a needle and then stayed there for 1,000-2,000+ steps
# at every learning rate tried, while widths 40-64 with 2-3 layers learnt whole numbers. So l is
# m with a 4x wider MLP. Grouped-query attention (2 KV heads) from s up; xs is too narrow for it.
SIZES: dict[str, dict[str, int]] = {
    "xs": dict(hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2, head_dim=8),
    "s": dict(hidden_size=40, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=10),
    "m": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16),
    "l": dict(hidden_size=64, intermediate_size=704, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16),
}
# Llama's RoPE base. (1e6, as in Qwen2.5, made no measurable difference in trial runs here.)
ROPE_THETA = 1e4


def size_config(size: str, vocab_size: int, max_position_embeddings: int = 3072) -> LlamaConfig:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; sizes: {', '.join(SIZES)}")
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                       rope_theta=ROPE_THETA, **SIZES[size])


# --------------------------------------------------------------------------- parameters
def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    d, f, hd = config.hidden_size, config.intermediate_size, config.head_dim
    h, kv = config.num_attention_heads, config.num_key_value_heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, d)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (h * hd, d),
            p + "self_attn.k_proj.weight": (kv * hd, d),
            p + "self_attn.v_proj.weight": (kv * hd, d),
            p + "self_attn.o_proj.weight": (d, h * hd),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        })
    shapes["model.norm.weight"] = (d,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, d)
    return shapes


def param_count(config: LlamaConfig) -> int:
    return sum(math.prod(shape) for shape in param_shapes(config).values())


def init_params(config: LlamaConfig, seed: int) -> dict[str, Any]:
    """Normal(0, 0.02) weights (output projections scaled by 1/sqrt(2 layers), GPT-2 style, so the
    residual stream does not grow with depth), unit norms; deterministic by seed."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = torch.ones(shape)
            continue
        std = 0.02
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            std /= math.sqrt(2 * config.num_hidden_layers)
        params[name] = torch.randn(shape, generator=generator) * std
    return params


# --------------------------------------------------------------------------- the forward pieces
def rms_norm(x, weight, eps: float):
    import torch

    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rope_tables(config: LlamaConfig, positions):
    """cos, sin for integer positions, as Hugging Face's Llama builds them: (T, head_dim) for
    positions (T,), or (B, 1, T, head_dim) for per-row positions (B, T)."""
    import torch

    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[..., None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)
    if positions.dim() == 2:
        angles = angles[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x (B, heads, T, D) rotated by position: x*cos + rotate_half(x)*sin."""
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def embed(params, ids):
    return params["model.embed_tokens.weight"][ids]


def attention_inputs(params, config: LlamaConfig, layer: int, h, cos, sin):
    """RMSNorm then q, k, v for one layer: (B, heads, T, D), (B, kv_heads, T, D) x2, RoPE applied."""
    p = f"model.layers.{layer}."
    x = rms_norm(h, params[p + "input_layernorm.weight"], config.rms_norm_eps)
    batch, length, _ = x.shape
    hd = config.head_dim
    q = (x @ params[p + "self_attn.q_proj.weight"].T).view(batch, length, -1, hd).transpose(1, 2)
    k = (x @ params[p + "self_attn.k_proj.weight"].T).view(batch, length, -1, hd).transpose(1, 2)
    v = (x @ params[p + "self_attn.v_proj.weight"].T).view(batch, length, -1, hd).transpose(1, 2)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention_output(params, config: LlamaConfig, layer: int, h, attn):
    """Residual update with the attention output attn (B, heads, T, D), then the SwiGLU MLP block."""
    import torch.nn.functional as F

    p = f"model.layers.{layer}."
    batch, _, length, _ = attn.shape
    h = h + attn.transpose(1, 2).reshape(batch, length, -1) @ params[p + "self_attn.o_proj.weight"].T
    x = rms_norm(h, params[p + "post_attention_layernorm.weight"], config.rms_norm_eps)
    gate = F.silu(x @ params[p + "mlp.gate_proj.weight"].T)
    return h + (gate * (x @ params[p + "mlp.up_proj.weight"].T)) @ params[p + "mlp.down_proj.weight"].T


def final_norm(params, config: LlamaConfig, h):
    return rms_norm(h, params["model.norm.weight"], config.rms_norm_eps)


def logits(params, config: LlamaConfig, h_normed):
    head = params["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]
    return h_normed @ head.T


def hidden_states(params, config: LlamaConfig, ids, positions=None):
    """Dense causal forward (torch SDPA, GQA): final-normed hidden states (B, T, d). Used in training
    (optionally with per-row position ids (B, T)) and as the reference for the pluggable path."""
    import torch
    import torch.nn.functional as F

    if positions is None:
        positions = torch.arange(ids.shape[1])
    if int(positions.max()) >= config.max_position_embeddings:
        raise ValueError(f"position {int(positions.max())} is beyond the model's context "
                         f"{config.max_position_embeddings}")
    cos, sin = rope_tables(config, positions)
    h = embed(params, ids)
    group = config.num_attention_heads // config.num_key_value_heads
    for layer in range(config.num_hidden_layers):
        q, k, v = attention_inputs(params, config, layer, h, cos, sin)
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = attention_output(params, config, layer, h, attn)
    return final_norm(params, config, h)


# --------------------------------------------------------------------------- checkpoints
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


def save_checkpoint(folder: str | Path, params: dict, config: LlamaConfig, tokenizer,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write config.json, model.safetensors (float16) and tokenizer.json into `folder`."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = param_shapes(config)
    if set(params) != set(expected):
        raise CheckpointError(f"parameters do not match the config: missing {sorted(set(expected) - set(params))}, "
                              f"unexpected {sorted(set(params) - set(expected))}")
    tensors = {name: params[name].detach().to(torch.float16).contiguous() for name in sorted(params)}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={k: str(v) for k, v in (metadata or {}).items()})
    (folder / CONFIG_FILE).write_text(json.dumps({**config.to_json(), "torch_dtype": "float16"}, indent=1) + "\n")
    (folder / TOKENIZER_FILE).write_text(json.dumps(tokenizer.to_json()) + "\n")
    return folder


def load_checkpoint(folder: str | Path):
    """(params in float32, config, tokenizer) from a checkpoint folder, keys and shapes checked exactly."""
    import torch
    from safetensors import safe_open

    from systems.lm.data import WordTokenizer

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint folder {folder} lacks {', '.join(missing)}; "
                              "train it with `bench train-lm` (see systems/lm/checkpoints/README.md)")
    try:
        config = LlamaConfig.from_json(json.loads((folder / CONFIG_FILE).read_text()))
        tokenizer = WordTokenizer.from_json(json.loads((folder / TOKENIZER_FILE).read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder}: a JSON file does not parse: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens, config says "
                              f"{config.vocab_size}")
    expected = param_shapes(config)
    params = {}
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
        names = set(fh.keys())
        if names != set(expected):
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: tensor names do not match config.json: missing "
                                  f"{sorted(set(expected) - names)}, unexpected {sorted(names - set(expected))}")
        for name in sorted(names):
            tensor = fh.get_tensor(name)
            if tuple(tensor.shape) != expected[name]:
                raise CheckpointError(f"{folder / WEIGHTS_FILE}: {name} has shape {tuple(tensor.shape)}, "
                                      f"config.json implies {expected[name]}")
            if not tensor.is_floating_point():
                raise CheckpointError(f"{folder / WEIGHTS_FILE}: {name} is {tensor.dtype}, not floating point")
            params[name] = tensor.to(torch.float32)
    for name, tensor in params.items():
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{folder / WEIGHTS_FILE}: {name} holds NaN or infinite values")
    return params, config, tokenizer


# --------------------------------------------------------------------------- the system
class TinyLlama(LMSystem):
    """One of our trained checkpoints (option size=xs|s|m|l, or checkpoint=<folder>) as an LMSystem.

    Answers in teacher-forced mode are scored up to and including <eos>: the models were trained to
    stop after the answer, and greedy generation stops at <eos>, so both modes ask the same thing.
    """

    name = "tiny-llama"
    license = "Apache-2.0"
    uses_torch = True
    description = "Our Llama-style decoder (RoPE, GQA, SwiGLU) trained on synthetic long-context tasks"
    default_size: ClassVar[str] = "m"

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - {"size", "checkpoint"})
        if unknown:
            raise BenchError(f"system '{self.name}' has no option(s) {', '.join(unknown)}; options: size, checkpoint")
        if "size" in options and "checkpoint" in options:
            raise BenchError(f"system '{self.name}': give size or checkpoint, not both")
        size = options.get("size", self.default_size)
        if "checkpoint" not in options and size not in SIZES:
            raise BenchError(f"system '{self.name}': size must be one of {', '.join(SIZES)}; got {size!r}")
        super().__init__(**options)
        self.folder = Path(options["checkpoint"]) if "checkpoint" in options else CHECKPOINT_DIR / size
        self.params = self.config = self.tokenizer = None
        self._decoder = self._prompt_cache = None

    @classmethod
    def attention_methods(cls) -> dict[str, Any]:
        """The sparse attention methods and options this model runs (checked by `bench sweep`)."""
        from systems.lm.attention import catalogue

        return catalogue()

    @classmethod
    def availability(cls) -> Availability:
        for module, pip_name in (("torch", "torch"), ("safetensors", "safetensors")):
            found = module_available(module, pip_name)
            if not found.ok:
                return found
        return Availability.yes()

    def load(self) -> None:
        if self.params is None:
            self.params, self.config, self.tokenizer = load_checkpoint(self.folder)

    def _loaded(self):
        self.load()
        return self.params, self.config, self.tokenizer

    def identity(self) -> dict[str, Any]:
        record = super().identity()
        weights = self.folder / WEIGHTS_FILE
        # The weights' hash pins the model; the folder path is left out so a spec hashes the same on
        # every machine (a custom checkpoint folder still shows in `options`).
        record["revision"] = f"sha256:{sha256_file(weights)}" if weights.is_file() else "missing"
        return record

    def max_context(self) -> int:
        return self._loaded()[1].max_position_embeddings

    def shape(self) -> dict[str, Any]:
        _, config, _ = self._loaded()
        return {**config.to_json(), "n_params": param_count(config)}

    def count_tokens(self, text: str) -> int:
        return self._loaded()[2].count_tokens(text)

    def decoder(self):
        from systems.lm.runtime import DensePromptCache, FunctionalDecoder

        params, config, tokenizer = self._loaded()
        if self._decoder is None:
            self._decoder, self._prompt_cache = FunctionalDecoder(params, config), DensePromptCache()
        return self._decoder

    def score_sample(self, sample, *, method: str, phase: str, budget: dict[str, Any],
                     mode: str = "teacher-forced") -> LMScore:
        from systems.lm.runtime import score_sample

        _, config, tokenizer = self._loaded()
        return score_sample(self.decoder(), sample, encode=tokenizer.encode, decode=tokenizer.decode,
                            bos=[tokenizer.bos_id], answer_suffix=[tokenizer.eos_id], eos_ids={tokenizer.eos_id},
                            max_context=config.max_position_embeddings, method=method, phase=phase,
                            budget=budget, mode=mode, prompt_cache=self._prompt_cache)


def _sized(size: str) -> type:
    class Sized(TinyLlama):
        default_size = size

        @classmethod
        def availability(cls) -> Availability:
            found = TinyLlama.availability()
            if found.ok and not (CHECKPOINT_DIR / size / WEIGHTS_FILE).is_file():
                return Availability.no(f"no trained checkpoint in {CHECKPOINT_DIR / size}",
                                       f"bench train-lm --sizes {size} (or pass checkpoint=<folder>)")
            return found

        def __init__(self, **options: Any):
            if "size" in options and options["size"] != size:
                raise BenchError(f"system 'tiny-llama-{size}' is size {size}; use 'tiny-llama' with size=... instead")
            super().__init__(**options)

    Sized.__name__ = Sized.__qualname__ = f"TinyLlama{size.upper()}"
    Sized.name = f"tiny-llama-{size}"
    return Sized


TinyLlamaXS, TinyLlamaS, TinyLlamaM, TinyLlamaL = (_sized(s) for s in ("xs", "s", "m", "l"))
