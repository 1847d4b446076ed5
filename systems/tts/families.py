"""Training of the three families on the aligned corpus (called by `bench train-tts --family F`).

One loop for all: random crops of whole utterances (frames, their phones from the aligner's
durations, their tokens), AdamW with linear warm-up and cosine decay, gradient clipping, bf16
autocast on CPU, fixed steps (the recipe, `RECIPES`), a loss curve in train_log.json.
Held-out: the corpus holds training sentences only; evaluation sentences and voices come from
other streams (tasks.tts_eval), so nothing evaluated is ever trained on.
"""

from __future__ import annotations

import os
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.errors import BenchError


@dataclass(frozen=True)
class Recipe:
    family: str
    steps: int
    batch: int = 16
    max_frames: int = 400  # most utterances whole (mean 202 frames): inference runs prompt + target
    lr: float = 5e-4
    warmup: int = 200
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    bf16: bool = True
    init: str | None = None  # start from this family's committed weights (keys it lacks start as built)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["init"] is None:  # recipes that start from scratch read as they always did
            del data["init"]
        return data


RECIPES = {
    "flow": Recipe("flow", steps=2600),
    "nar": Recipe("nar", steps=2000),
    "ar": Recipe("ar", steps=1700),
    # CosyVoice's token-to-features flow decoder for the token families: the flow model plus a
    # level-1 token table, fine-tuned from the flow model's weights.
    "decoder": Recipe("decoder", steps=2000, lr=3e-4, warmup=100, init="flow"),
}
# Half its examples chunk-shaped (CosyVoice 2's chunk-aware decoder), chosen on tts-dev (run
# tts-dev-251af71cd7ff): tiny-ar streamed 57.5 -> 49.3 % WER, offline 47.1 -> 45.7 %, tiny-nar 39.8 -> 36.5 %.
DECODER_MODEL = {"tokens": 1024, "phones": False, "p_stream": 0.5}


def learning_rate(recipe: Recipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    floor = recipe.lr * recipe.min_lr_fraction
    return floor + (recipe.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_batch(rng: random.Random, utterances: Sequence[Any], stats: Any, recipe: Recipe,
               with_tokens: bool, filler_id: int | None = None) -> dict[str, torch.Tensor]:
    """Crops padded to the longest: mel (B, T, N_MELS) normalised, frame_phones, position,
    phone_index (frame -> index into the utterance's phones), pad_mask, tokens (B, T, levels),
    and per crop the phone ids it covers (for the AR family's text prefix)."""
    from systems.tts.dataset import crop_batch
    from systems.tts.modules import frame_alignment

    crops = crop_batch(rng, utterances, recipe.batch, recipe.max_frames)
    width = max(e - s for _, s, e in crops)
    b = len(crops)
    from systems.tts.features import N_MELS

    mel = np.zeros((b, width, N_MELS), np.float32)
    phones = np.zeros((b, width), np.int64)
    position = np.zeros((b, width), np.float32)
    pad = np.zeros((b, width), bool)
    levels = utterances[0].tokens.shape[1] if with_tokens else 0
    tokens = np.zeros((b, width, max(levels, 1)), np.int64)
    texts, ends = [], []
    for i, (utt, s, e) in enumerate(crops):
        ends.append(e == utt.frames)
        n = e - s
        mel[i, :n] = stats.normalise(utt.log_mel[s:e])
        fp, pos = frame_alignment(utt.phones, utt.durations)
        phones[i, :n], position[i, :n] = fp[s:e], pos[s:e]
        index = np.repeat(np.arange(len(utt.phones)), utt.durations)[s:e]
        texts.append((utt.phones[index[0]:index[-1] + 1], index - index[0]))
        if filler_id is not None:
            from systems.tts.modules import filler_alignment

            phones[i, :n], position[i, :n] = filler_alignment(texts[-1][0], n, filler_id)
        pad[i, :n] = True
        if with_tokens:
            tokens[i, :n] = utt.tokens[s:e]
    return {"mel": torch.from_numpy(mel), "frame_phones": torch.from_numpy(phones),
            "position": torch.from_numpy(position), "pad_mask": torch.from_numpy(pad),
            "tokens": torch.from_numpy(tokens), "texts": texts, "ends": ends,
            "lengths": [e - s for _, s, e in crops]}


def filler_token(family: str, model_config: Any) -> int | None:
    """The filler id when the flow family trains in its duration-free form (E2/F5 filler padding)."""
    if family == "flow" and model_config.alignment == "filler":
        return model_config.filler_id
    return None


def build_model(family: str, config: dict[str, Any] | None = None):
    if family in ("flow", "decoder"):
        from systems.tts.flow import FlowConfig, FlowModel

        cfg = FlowConfig(**{**(DECODER_MODEL if family == "decoder" else {}), **(config or {})})
        return FlowModel(cfg), cfg
    if family == "nar":
        from systems.tts.nar import NARConfig, MaskedModel

        cfg = NARConfig(**(config or {}))
        return MaskedModel(cfg), cfg
    if family == "ar":
        from systems.tts.ar import ARConfig, ARModel

        cfg = ARConfig(**(config or {}))
        return ARModel(cfg), cfg
    raise BenchError(f"unknown family {family!r}; families: flow, nar, ar, decoder")


def initialise_from(model, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Load another family's committed weights into `model` (the recipe's `init`): every key both
    have must agree in shape; the model's extra keys keep their initial values, and stored keys
    the model has no place for (a part it leaves out) are listed, not loaded."""
    from safetensors.torch import load_file

    from bench.evaluators import sha256_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise BenchError(f"the recipe starts from {path}, which does not exist -> bench train-tts --family {folder.name}")
    state = load_file(str(path))
    own = model.state_dict()
    left_out = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    if wrong:
        raise BenchError(f"{path} does not fit the model: wrong shapes {wrong[:4]}")
    shared = set(state) & set(own)
    if not shared:
        raise BenchError(f"{path} shares no weights with the model")
    fresh = sorted(set(own) - set(state))
    model.load_state_dict({**own, **{k: state[k].to(own[k].dtype) for k in shared}}, strict=True)
    log(f"initialised from {path} ({len(shared)} tensors); new: {', '.join(fresh) or 'none'}; "
        f"left out: {len(left_out)}")
    return {"from": f"{folder.name}/model.safetensors", "sha256": sha256_file(path), "new_keys": fresh,
            "left_out_keys": left_out}


BF16_SLOW = 3.0  # a bf16/fp32 matmul time ratio above this means bf16 is emulated (AVX2 EPYC: 33x)


def bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """How many times slower a bfloat16 matrix product is than a float32 one on this CPU (median
    of a few; about 1 or below where the CPU has bf16 instructions, tens where torch emulates them)."""
    a = torch.randn(size, size)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # first call: kernel selection, not timed
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ x
            runs.append(time.perf_counter() - t0)
        times[dtype] = sorted(runs)[repeats // 2]
    return times[torch.bfloat16] / max(times[torch.float32], 1e-9)


DEVICE_FAMILIES = ("flow", "decoder")  # the families whose training runs on a GPU (device="cuda")
LOG_EVERY = 50  # steps per train_log.json entry (the mean loss over them)


def train_family(family: str, corpus: Path, out: Path, log: Callable[[str], None], threads: int,
                 steps: int | None = None, model_overrides: dict[str, Any] | None = None, *,
                 device: str = "cpu", batch: int | None = None, minutes: float | None = None,
                 stop_after: int | None = None, precision: str | None = None) -> dict[str, Any]:
    """Train `family` into out/<family>. device: where the model trains (the random draws stay on
    CPU generators, so the batches and draws are the same on any device); batch: override the
    recipe's batch size; minutes: stop after this long and save (the schedule stays the recipe's,
    so a run cut short ends at a higher learning rate; the step reached is recorded); stop_after:
    stop after that many steps, likewise on the recipe's schedule (a prefix of the whole run);
    precision: "bf16" (autocast, the committed recipes) or "fp32", recorded in the recipe."""
    from bench.jsonio import write_json_atomic
    from systems.tts.modules import count_parameters, save_checkpoint
    from systems.tts.aligner import front_end_of
    from systems.tts.train import load_aligned_corpus

    if device != "cpu" and family not in DEVICE_FAMILIES:
        raise BenchError(f"--device {device}: only the {' and '.join(DEVICE_FAMILIES)} families train off the CPU so far")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {device}: this machine's torch sees no CUDA device -> --device cpu")
    torch.set_num_threads(threads)
    recipe = RECIPES[family] if steps is None else replace(RECIPES[family], steps=steps)
    if batch is not None:
        recipe = replace(recipe, batch=batch)
    if precision is not None:
        recipe = replace(recipe, bf16=precision == "bf16")
    if recipe.bf16 and device == "cpu":
        slowdown = bf16_slowdown()
        if slowdown > BF16_SLOW:
            log(f"warning: this CPU multiplies bfloat16 matrices {slowdown:.0f}x slower than float32 (torch's CPU "
                f"capability: {torch.backends.cpu.get_cpu_capability()}; no native bf16), so this bf16 recipe "
                f"runs many times slower than on a CPU with bf16 instructions, and its emulation rounds "
                f"differently (a rebuild of committed weights will not match them). --precision fp32 trains "
                f"at float32 speed: a different recipe, recorded as such")
    text = front_end_of(out)
    if text != "phones":  # the family reads the folder's front end (phone configs stay as they were)
        model_overrides = {**(model_overrides or {}), "text": text}
    utterances, stats = load_aligned_corpus(corpus, out, log)
    needs_tokens = family in ("nar", "ar", "decoder")
    if needs_tokens:
        attach_tokens(utterances, stats, out, corpus, log)
    torch.manual_seed(recipe.seed)
    model, model_config = build_model(family, model_overrides)
    initialised = initialise_from(model, out / recipe.init, log) if recipe.init else None
    model.to(device)
    filler = filler_token(family, model_config)
    log(f"{family}: {count_parameters(model):,} parameters, {recipe.steps} steps of {recipe.batch} x <= {recipe.max_frames} frames")
    loss_fn = _loss_function(family)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "norm" in name or "embed" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
    rng = random.Random(f"{family}-batches:{recipe.seed}")
    np_rng = np.random.default_rng(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    history, window = [], []
    start = time.time()
    stopped_at = None
    model.train()
    for step in range(recipe.steps):
        if minutes is not None and time.time() - start > 60 * minutes:
            stopped_at = step
            log(f"{family}: stopped by the {minutes} min limit at step {step} of {recipe.steps}")
            break
        if stop_after is not None and step >= stop_after:
            stopped_at = step
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(recipe, step)
        batch = make_batch(rng, utterances, stats, recipe, needs_tokens, filler)
        if device != "cpu":
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=recipe.bf16):
            loss, parts = loss_fn(model, batch, gen, np_rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
        window.append(loss.detach())  # read every 50 steps: a read each step would stall a GPU
        if (step + 1) % LOG_EVERY == 0 or step == recipe.steps - 1 or step + 1 == stop_after:
            entry = {"step": step + 1, "loss": round(float(np.mean([float(x) for x in window])), 4), "lr": round(learning_rate(recipe, step), 7),
                     "seconds": round(time.time() - start, 1), **{k: round(v, 4) for k, v in parts.items()}}
            history.append(entry)
            window = []
            log(f"{family} step {step + 1}: loss {entry['loss']:.4f} ({(time.time() - start) / (step + 1):.2f} s/step)")
    model.eval()
    model.to("cpu")
    folder = out / family
    save_checkpoint(folder, model, {"kind": family, "model": model_config.to_json(),
                                    "parameters": count_parameters(model), "stored_as": "float16"}, half=True)
    write_json_atomic(folder / "train_log.json", {"history": history, "recipe": recipe.to_json()})
    result = {"recipe": recipe.to_json(), "model": model_config.to_json(), "threads": threads}
    if device != "cpu":
        result["device"] = device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(device)})"
    if stopped_at is not None:
        result["stopped_at_step"] = stopped_at
    if initialised:
        result["initialised_from"] = initialised
    return result


def _loss_function(family: str):
    if family in ("flow", "decoder"):
        from systems.tts.flow import training_loss

        def flow_loss(model, batch, gen, rng):
            loss = training_loss(model, batch, gen, rng)
            return loss, {}

        return flow_loss
    if family == "nar":
        from systems.tts.nar import training_loss as nar_loss

        return nar_loss
    from systems.tts.ar import training_loss as ar_loss

    return ar_loss


def attach_tokens(utterances, stats, out: Path, corpus: Path, log) -> None:
    """Tokens for every utterance (cached beside the corpus by the tokenizer's digest)."""
    from systems.tts.tokenizer import SpeechTokenizer
    from systems.tts.train import sha256_file

    folder = out / "tokenizer"
    if not (folder / "model.safetensors").is_file():
        raise BenchError(f"no tokenizer at {folder} -> bench train-tts --family tokenizer")
    cache = corpus / "cache" / f"tokens-{sha256_file(folder / 'model.safetensors')[:16]}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            for u in utterances:
                u.tokens = data[u.id]
        return
    tokenizer = SpeechTokenizer.load(folder)
    start = time.time()
    for u in utterances:
        u.tokens = tokenizer.encode(stats.normalise(u.log_mel))
    log(f"tokenised {len(utterances)} utterances in {time.time() - start:.0f} s")
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent trainings each write their own
    np.savez(tmp, **{u.id: u.tokens for u in utterances})
    tmp.replace(cache)
