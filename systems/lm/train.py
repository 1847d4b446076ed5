"""Train the tiny Llama family on synthetic long-context data, on CPU, deterministically.

`bench train-lm` (-> `main(argv)`) trains the sizes one after another (never in parallel: the
machine's cores are shared) and writes, into the checkpoint folder (default
systems/lm/checkpoints): <size>/{config.json, model.safetensors, tokenizer.json, train_log.json},
train_config.json (every size's recipe) and MANIFEST.sha256 (`sha256sum -c` format).
`bench train-lm --check` verifies the committed files against the manifest without training.

The data are samples of the long-context tasks themselves (systems.lm.data.training_batch), at
training seeds no evaluation uses. The recipe (`default_recipe`; measured reasons in
systems/lm/checkpoints/README.md):
- loss: next-token cross-entropy on the target (+ <eos>), plus `prompt_loss_weight` x the mean
  next-token loss on the prompt (the repeated haystack and the question repeating the needle's key
  are copying practice: that is how induction heads form);
- curriculum: single needles in short haystacks until the model has left its copying plateau
  (answer-token accuracy over the last 100 batches >= `until_accuracy`), then the task mix with
  haystacks growing phase by phase;
- AdamW (betas 0.9/0.95, weight decay 0.05 except norms), linear warm-up, constant learning rate
  through the first phase (whose length varies), cosine decay over the rest; gradient clipping at
  1; one CPU thread (3-4x faster than two on this shared machine).
Determinism: data come from random.Random(seed strings), weights from torch.Generator(seed); with
the same torch version and thread count a retrain reproduces the checkpoint bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.errors import BenchError
from bench.hardware import training_environment
from systems.lm.data import TaskDraw

NOISE = (("haystack", "noise"),)
EVAL_SEED = 999  # the held-out check after training (sweeps default to seed 0)
# Phase 1: single needles only (the copy circuit forms on them first). Then the evaluated mix.
WARMUP_MIX = (TaskDraw("niah_single", 1.0),)
FULL_MIX = (TaskDraw("niah_single", 0.3), TaskDraw("niah_multikey", 0.2, NOISE),
            TaskDraw("niah_multikey", 0.2, NOISE + (("num_keys", 2),)), TaskDraw("niah_multivalue", 0.3, NOISE))
# The held-out check after training: the three tasks the sweep in the README evaluates.
EVAL_MIX = (TaskDraw("niah_single", 1.0), TaskDraw("niah_multikey", 1.0, NOISE), TaskDraw("niah_multivalue", 1.0, NOISE))


@dataclass(frozen=True)
class Phase:
    """`steps` batches of `batch` samples of the `mix`, with prompt lengths log-uniform in
    [min_tokens, max_tokens] (raised to each task's minimum).

    With until_accuracy > 0 the phase goes on after `steps`, up to max_steps, until the
    answer-token accuracy of its last 100 batches reaches until_accuracy: when a small model
    leaves its copying plateau varies from run to run (400 to 1,200+ steps measured), and moving on
    before it has would leave it with nothing to build on."""

    steps: int
    batch: int
    min_tokens: int
    max_tokens: int
    mix: tuple[TaskDraw, ...] = FULL_MIX
    until_accuracy: float = 0.0
    max_steps: int = 0

    def __post_init__(self) -> None:
        from systems.lm.data import check_mix

        check_mix(self.mix)
        if not 0 < self.min_tokens <= self.max_tokens or self.steps < 1 or self.batch < 1:
            raise BenchError(f"bad phase: need steps, batch >= 1 and 0 < min_tokens <= max_tokens; got {self}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "mix": [d.to_json() for d in self.mix]}


@dataclass(frozen=True)
class TrainConfig:
    size: str
    phases: tuple[Phase, ...]
    seed: int = 0
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.05
    clip: float = 1.0
    prompt_loss_weight: float = 0.5
    max_position_embeddings: int = 2048
    eval_lengths: tuple[int, ...] = (256, 512)
    eval_samples: int = 24
    threads: int = 1

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "phases": [p.to_json() for p in self.phases]}


def default_recipe(size: str, seed: int = 0, scale: float = 1.0) -> TrainConfig:
    """The committed checkpoints' recipe. `scale` multiplies every phase's steps (quick tries).

    Phase 1: single needles at 90-160 tokens until answer-token accuracy 0.9 (at least `steps`, at
    most 6x, 12x for l). Then the mix of the three evaluated needle tasks with haystacks growing to
    400 and then 700 tokens (the sweep's lengths are 256 and 512). Learning rate 3e-3 for every size (the
    sizes share widths <= 64; systems/lm/checkpoints/README.md has the trials behind both)."""
    from systems.lm.model import SIZES

    if size not in SIZES:
        raise BenchError(f"unknown model size {size!r}; sizes: {', '.join(SIZES)}")
    lr = 3e-3
    # The first phase may run to this many times its steps; l gets longer (its 4x wider MLP left
    # the plateau later in trial runs: the first digit at ~2,850 steps, whole numbers not by 3,600).
    longest = {"xs": 6, "s": 6, "m": 6, "l": 12}[size]
    p1, p2, p3 = (max(1, round(n * scale)) for n in (600, 1000, 600))
    phases = (Phase(p1, 8, 90, 160, WARMUP_MIX, until_accuracy=0.9, max_steps=longest * p1),
              Phase(p2, 8, 160, 400, FULL_MIX),
              Phase(p3, 8, 300, 700, FULL_MIX))
    return TrainConfig(size=size, phases=phases, seed=seed, lr=lr)


def learning_rate(config: TrainConfig, step: int, decay_from: int | None) -> float:
    """Linear warm-up, constant until `decay_from` (the end of the first phase, which may run long),
    then cosine decay to min_lr_fraction over the remaining phases' steps."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if decay_from is None:
        return config.lr
    remaining = max(1, sum(p.steps for p in config.phases[1:]))
    progress = (step - decay_from) / remaining
    floor = config.lr * config.min_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_batch(rng: random.Random, tokenizer, phase: Phase):
    """One batch at a shared prompt length (little padding): ids (B, T) right-padded, and the
    supervised next-token targets as masks over positions 0..T-2: `is_answer` (target tokens and
    <eos>) and `is_prompt` (the rest of the prompt)."""
    import torch

    from systems.lm.data import training_batch

    length = int(round(math.exp(rng.uniform(math.log(phase.min_tokens), math.log(phase.max_tokens)))))
    encoded = training_batch(rng, phase.mix, length, phase.batch, tokenizer)
    width = max(len(seq) for seq, _ in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_id, dtype=torch.long)
    is_answer = torch.zeros((len(encoded), width - 1), dtype=torch.bool)
    is_prompt = torch.zeros_like(is_answer)
    for row, (seq, answer_start) in enumerate(encoded):
        ids[row, :len(seq)] = torch.tensor(seq)
        # position p predicts token p + 1: prompt tokens 1..answer_start-1, then the answer
        is_prompt[row, :answer_start - 1] = True
        is_answer[row, answer_start - 1:len(seq) - 1] = True
    return ids, is_answer, is_prompt


def batch_loss(params, config, prompt_weight: float, ids, is_answer, is_prompt):
    """mean answer-token loss + prompt_weight x mean prompt-token loss (answers keep full weight
    however long the prompt is). Returns the loss and the answer tokens' logits and labels.
    Padding comes after every real token of its row, so causal attention never lets a real token
    see it, and no loss is taken on it."""
    import torch.nn.functional as F

    from systems.lm.model import hidden_states, logits

    h = hidden_states(params, config, ids)[:, :-1]
    labels = ids[:, 1:]
    keep = is_answer | is_prompt if prompt_weight else is_answer
    out = logits(params, config, h[keep])
    losses = F.cross_entropy(out, labels[keep], reduction="none")
    answer = is_answer[keep]
    loss = losses[answer].mean()
    if prompt_weight:
        loss = loss + prompt_weight * losses[~answer].mean()
    return loss, out[answer], labels[keep][answer]


def evaluate(params, config, tokenizer, lengths: Sequence[int], n: int, seed: int,
             mix: Sequence[TaskDraw] = EVAL_MIX) -> dict[str, Any]:
    """Teacher-forced exact match (every target token and <eos> argmax-correct) per length and
    task, on n samples of each task of `mix` at evaluation seed `seed` (never a training seed)."""
    import torch

    from systems.lm.data import encode_sample
    from systems.lm.model import hidden_states, logits
    from tasks.longctx import generate

    report: dict[str, Any] = {}
    with torch.no_grad():
        for length in lengths:
            row: dict[str, float] = {}
            for draw in mix:
                samples = generate(draw.task, length, seed=seed, n_samples=n, tokenizer=tokenizer, **dict(draw.options))
                correct = 0
                for sample in samples:
                    seq, start = encode_sample(sample, tokenizer)
                    ids = torch.tensor([seq])
                    out = logits(params, config, hidden_states(params, config, ids)[0, start - 1:-1])
                    correct += int(bool((out.argmax(-1) == ids[0, start:]).all()))
                row[draw.task] = round(correct / n, 3)
            report[str(length)] = row
    return report


def train(config: TrainConfig, log: Callable[[str], None] = print) -> tuple[dict, Any, Any, dict[str, Any]]:
    """Train one model; returns (params, model config, tokenizer, training record)."""
    import torch

    from systems.lm.data import WordTokenizer
    from systems.lm.model import init_params, param_count, size_config

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        tokenizer = WordTokenizer.default()
        model_config = size_config(config.size, tokenizer.vocab_size, config.max_position_embeddings)
        params = init_params(model_config, config.seed)
        for tensor in params.values():
            tensor.requires_grad_(True)
        decay = [t for name, t in params.items() if not name.endswith("norm.weight")]
        no_decay = [t for name, t in params.items() if name.endswith("norm.weight")]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=config.lr, betas=(0.9, 0.95), eps=1e-8)
        rng = random.Random(f"train|{config.seed}")
        log(f"[{config.size}] {param_count(model_config):,} parameters, at least {config.total_steps} steps")
        started = time.perf_counter()
        step, history, phase_steps, decay_from = 0, [], [], None
        for index, phase in enumerate(config.phases):
            recent: list[float] = []  # answer-token accuracy of the phase's last 100 batches
            done = 0
            while done < phase.steps or (done < phase.max_steps
                                         and sum(recent) / len(recent) < phase.until_accuracy):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, decay_from)
                loss, out, labels = batch_loss(params, model_config, config.prompt_loss_weight,
                                               *make_batch(rng, tokenizer, phase))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params.values()), config.clip)
                optimizer.step()
                step, done = step + 1, done + 1
                recent = (recent + [float((out.argmax(-1) == labels).float().mean())])[-100:]
                if step % 50 == 0 or done == phase.steps:
                    elapsed = time.perf_counter() - started
                    history.append({"step": step, "phase": index + 1, "loss": round(float(loss.detach()), 4),
                                    "answer_token_accuracy": round(sum(recent) / len(recent), 3),
                                    "seconds": round(elapsed, 1)})
                    log(f"[{config.size}] phase {index + 1} step {step} loss {float(loss.detach()):.3f} "
                        f"answer-token acc (last 100) {sum(recent) / len(recent):.3f} ({elapsed:.0f}s)")
            phase_steps.append(done)
            if index == 0:
                decay_from = step
        seconds = time.perf_counter() - started
        for tensor in params.values():
            tensor.requires_grad_(False)
        evaluation = evaluate(params, model_config, tokenizer, config.eval_lengths, config.eval_samples,
                              EVAL_SEED)
    finally:
        torch.set_num_threads(previous_threads)
    log(f"[{config.size}] trained in {seconds:.0f}s ({phase_steps} steps per phase); held-out exact match "
        f"{json.dumps(evaluation)}")
    return params, model_config, tokenizer, {"train_seconds": round(seconds, 1), "phase_steps": phase_steps,
                                             "history": history,
                                             "heldout_exact_match": evaluation,
                                             "n_params": param_count(model_config)}


# --------------------------------------------------------------------------- the family on disk
MANIFEST = "MANIFEST.sha256"
TRAIN_CONFIG = "train_config.json"


def manifest_lines(folder: Path) -> list[str]:
    from bench.evaluators import sha256_file

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and p.suffix != ".md")
    return [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in files]


def write_manifest(folder: Path) -> Path:
    path = folder / MANIFEST
    path.write_text("\n".join(manifest_lines(folder)) + "\n")
    return path


def verify_manifest(folder: Path) -> list[str]:
    """Problems found (empty when every listed file exists with its sha256 and nothing is unlisted)."""
    from bench.evaluators import sha256_file

    path = folder / MANIFEST
    if not path.is_file():
        return [f"{path} is missing"]
    problems, listed = [], set()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        listed.add(name)
        target = folder / name
        if not target.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(target) != digest:
            problems.append(f"{name}: sha256 differs from the manifest")
    for line in manifest_lines(folder):
        name = line.partition("  ")[2]
        if name not in listed:
            problems.append(f"{name}: not in the manifest")
    return problems


def train_family(out: Path, configs: Sequence[TrainConfig], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train each config in turn, write its checkpoint, then the family's config and manifest.

    train_config.json keeps the entries of sizes trained earlier into the same folder (whose
    checkpoints are still there), so sizes can be trained one command at a time."""
    from bench.jsonio import write_text_atomic
    from systems.lm.model import WEIGHTS_FILE, save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for config in configs:
        params, model_config, tokenizer, record = train(config, log)
        folder = out / config.size
        save_checkpoint(folder, params, model_config, tokenizer,
                        metadata={"recipe": json.dumps(config.to_json(), sort_keys=True)})
        (folder / "train_log.json").write_text(json.dumps({"config": config.to_json(), **record}, indent=1) + "\n")
        summary[config.size] = {"n_params": record["n_params"], "train_seconds": record["train_seconds"],
                                "phase_steps": record["phase_steps"],
                                "heldout_exact_match": record["heldout_exact_match"]}
    previous = json.loads((out / TRAIN_CONFIG).read_text()) if (out / TRAIN_CONFIG).is_file() else {}
    kept = [size for size in previous.get("results", {})
            if size not in summary and (out / size / WEIGHTS_FILE).is_file()]
    environment = training_environment()
    record = {"recipes": {**{k: previous["recipes"][k] for k in kept}, **{c.size: c.to_json() for c in configs}},
              "results": {**{k: previous["results"][k] for k in kept}, **summary},
              "environment": {**{k: previous.get("environment", {}).get(k, {}) for k in kept},
                              **{size: environment for size in summary}}}
    write_text_atomic(out / TRAIN_CONFIG, json.dumps(record, indent=1) + "\n")
    write_manifest(out)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from systems.lm.model import CHECKPOINT_DIR, SIZES

    parser = argparse.ArgumentParser(prog="bench train-lm", description=(
        "Train the tiny Llama family on synthetic long-context data (CPU, one size after another) and "
        "write checkpoints, train_config.json and MANIFEST.sha256."))
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated sizes (default: {','.join(SIZES)})")
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's steps (e.g. 0.1 for a try)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a shared CPU)")
    parser.add_argument("--check", action="store_true", help="only verify the folder against its manifest")
    args = parser.parse_args(argv)
    if args.check:
        problems = verify_manifest(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        print("manifest OK" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        raise BenchError(f"unknown size(s) {unknown}; sizes: {', '.join(SIZES)}")
    if not 0 < args.scale <= 10 or args.threads < 1:
        raise BenchError("--scale must be in (0, 10] and --threads >= 1")
    configs = [replace(default_recipe(size, args.seed, args.scale), threads=args.threads) for size in sizes]
    summary = train_family(args.out, configs)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
