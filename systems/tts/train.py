"""`bench train-tts`: train our TTS pieces on CPU, deterministically, into the checkpoint folder.

  bench train-tts --family aligner     feature statistics, the aligner and the duration predictor
                                       (--text phones|chars|ipa: the front end the folder's models read)
  bench train-tts --family tokenizer   the residual k-means speech tokenizer (needs: aligner's stats)
  bench train-tts --family flow|nar|ar the model families (need: aligner; nar and ar: tokenizer)
  bench train-tts --family decoder     the token families' features decoder (needs: tokenizer, flow)
  bench train-tts --check              verify the committed checkpoints against MANIFEST.sha256
  bench train-tts --curves FILE.png     the loss curves of every stage in the folder, one panel each
  bench train-tts --family F --verify-steps N
                                       retrain F's recorded recipe for its first N steps in a scratch
                                       copy and compare the training log (whole recipe: also the bytes)

Each stage writes <out>/<family>/{config.json, model.safetensors, train_log.json}, records its recipe
in <out>/train_config.json and rewrites <out>/MANIFEST.sha256 (`sha256sum -c` format). The corpus
comes from `bench tts-corpus` (default data/tts-corpus). Data order comes from random.Random(seed
strings) and weights from torch.manual_seed, so with the same torch version, corpus and thread
count a retrain reproduces the checkpoint bytes.
"""

from __future__ import annotations

import os
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.errors import BenchError
from bench.evaluators import sha256_file
from bench.hardware import training_environment

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
FAMILIES = ("aligner", "tokenizer", "flow", "nar", "ar", "decoder")


def _log_to(path: Path | None):
    start = time.time()

    def log(message: str) -> None:
        line = f"[{time.time() - start:7.1f}s] {message}"
        print(line, flush=True)

    return log


def write_manifest(out: Path) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("MANIFEST.sha256", "README.md")
                   and not p.name.startswith("."))
    lines = [f"{sha256_file(p)}  {p.relative_to(out).as_posix()}" for p in files]
    (out / "MANIFEST.sha256").write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_manifest(out: Path) -> int:
    from systems.tts.corpus import manifest_mismatches

    manifest, bad = manifest_mismatches(out, "bench train-tts --family aligner (then the others)")
    if bad:
        print(f"{len(bad)} checkpoint file(s) differ from {manifest}: {', '.join(bad)}")
        return 1
    print(f"all checkpoint files match {manifest}")
    return 0


def record_recipe(out: Path, family: str, recipe: dict[str, Any]) -> None:
    from bench.jsonio import write_json_atomic

    path = out / "train_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"recipes": {}}
    data["recipes"][family] = recipe
    write_json_atomic(path, data)


def corpus_digest(corpus: Path) -> str:
    manifest = corpus / "MANIFEST.sha256"
    if not manifest.is_file():
        raise BenchError(f"no corpus manifest at {manifest} -> bench tts-corpus --out {corpus}")
    return sha256_file(manifest)


# --------------------------------------------------------------------------- shared stages
def load_stats(out: Path):
    from systems.tts.features import FeatureStats

    path = out / "aligner" / "feature_stats.json"
    if not path.is_file():
        raise BenchError(f"no feature statistics at {path} -> bench train-tts --family aligner")
    return FeatureStats.from_json(json.loads(path.read_text(encoding="utf-8")))


def train_aligner_stage(corpus: Path, out: Path, log, threads: int, steps: int | None = None,
                        text: str = "phones") -> dict[str, Any]:
    import torch

    from bench.jsonio import write_json_atomic
    from systems.tts.aligner import AlignerConfig, train_aligner, train_duration_predictor
    from systems.tts.dataset import load_corpus
    from systems.tts.features import FEATURES_REVISION, FeatureStats
    from systems.tts.modules import save_checkpoint

    torch.set_num_threads(threads)
    config = AlignerConfig(threads=threads, text=text)
    if steps is not None:  # quick tries and tests, not the committed recipe
        config = AlignerConfig(threads=threads, steps=steps, seed_steps=steps // 3, duration_steps=steps, text=text)
    utterances = load_corpus(corpus, text=text)
    stats = FeatureStats.fit(np.concatenate([u.log_mel for u in utterances]))
    folder = out / "aligner"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "feature_stats.json", {**stats.to_json(), "features": FEATURES_REVISION})
    aligner, aligner_log = train_aligner(utterances, stats, config, log)
    utterances = attach_durations(utterances, stats, aligner, log)
    predictor, duration_log = train_duration_predictor(utterances, config, log)
    front = {} if text == "phones" else {"text": text}  # phone folders' configs read as before
    save_checkpoint(folder, aligner, {"kind": "aligner", "features": FEATURES_REVISION, **front})
    save_checkpoint(out / "duration", predictor, {"kind": "duration-predictor", **front})
    write_json_atomic(folder / "train_log.json", aligner_log)
    write_json_atomic(out / "duration" / "train_log.json", duration_log)
    return config.to_json()


def attach_durations(utterances, stats, aligner, log, cache_dir: Path | None = None):
    """Aligner durations for every utterance (MAS), with a cache keyed by the aligner's weights."""
    from systems.tts.aligner import align

    start = time.time()
    for u in utterances:
        u.durations = align(aligner, u.phones, stats.normalise(u.log_mel))
    log(f"aligned {len(utterances)} utterances in {time.time() - start:.0f} s")
    return utterances


def durations_cache_path(corpus: Path, checkpoints: Path) -> Path:
    """Where the durations of the aligner in `checkpoints` are cached beside the corpus (keyed by its weights)."""
    return Path(corpus) / "cache" / f"durations-{sha256_file(Path(checkpoints) / 'aligner' / 'model.safetensors')[:16]}.npz"


def load_aligned_corpus(corpus: Path, out: Path, log):
    """The corpus with features and aligner durations (cached beside the corpus by aligner digest)."""
    from systems.tts.aligner import front_end_of, load_aligner
    from systems.tts.dataset import load_corpus

    stats = load_stats(out)
    utterances = load_corpus(corpus, text=front_end_of(out))
    cache = durations_cache_path(corpus, out)
    if cache.is_file():
        with np.load(cache) as data:
            for u in utterances:
                u.durations = data[u.id]
    else:
        attach_durations(utterances, stats, load_aligner(out), log)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent trainings each write their own
        np.savez(tmp, **{u.id: u.durations for u in utterances})
        tmp.replace(cache)
    return utterances, stats


def train_tokenizer_stage(corpus: Path, out: Path, log, threads: int, steps: int | None = None) -> dict[str, Any]:
    import torch

    from bench.jsonio import write_json_atomic
    from systems.tts.aligner import load_aligner
    from systems.tts.dataset import load_corpus
    from systems.tts.tokenizer import SpeechTokenizer, TokenizerConfig

    torch.set_num_threads(threads)
    stats = load_stats(out)
    config = TokenizerConfig() if steps is None else TokenizerConfig(iterations=steps)
    extra: dict[str, Any] = {}
    encoder = None
    if config.content == "aligner":
        weights = out / "aligner" / "model.safetensors"
        encoder = load_aligner(out).frames
        # the encoder's weights are copied into the tokenizer; this says where they came from
        extra = {"content_encoder_from": {"aligner_sha256": sha256_file(weights)}}
    utterances = [stats.normalise(u.log_mel) for u in load_corpus(corpus)]
    tokenizer, fit_log = SpeechTokenizer.fit(utterances, config, encoder, log)
    tokenizer.save(out / "tokenizer", config, extra)
    write_json_atomic(out / "tokenizer" / "train_log.json", fit_log)
    # The thread count changes the k-means' float sums, so the bytes: a rebuild must use the same.
    return {**config.to_json(), "threads": threads}


VERIFIABLE = ("flow", "nar", "ar", "decoder")
CURVE_STAGES = ("aligner", "duration", "flow", "nar", "ar", "decoder")  # stages whose logs are by step


def plot_curves(out: Path, dest: Path) -> list[str]:
    """One panel per trained stage of the folder: its logged loss by step, with the parts it logs
    beside it (the AR's two stages, the NAR's level 1, the aligner's seed term). Returns the
    stages drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {}
    for stage in CURVE_STAGES:
        path = out / stage / "train_log.json"
        if path.is_file():
            history = json.loads(path.read_text(encoding="utf-8")).get("history", [])
            if history and all("step" in e and "loss" in e for e in history):
                logs[stage] = history
    if not logs:
        raise BenchError(f"no training logs in {out} -> bench train-tts --family aligner --out {out} (then the others)")
    columns = min(3, len(logs))
    rows = -(-len(logs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (stage, history) in zip(axes.flat, logs.items()):
        steps = [e["step"] for e in history]
        parts = sorted({k for e in history for k, v in e.items()
                        if k not in ("step", "lr", "seconds") and isinstance(v, (int, float))}, key=lambda k: k != "loss")
        for key in parts:
            ax.plot(steps, [e.get(key, float("nan")) for e in history], label=key.replace("_", " "),
                    linewidth=2.0 if key == "loss" else 1.2)
        minutes = history[-1].get("seconds")
        ax.set_title(f"{stage}: {steps[-1]:,} steps" + (f", {minutes / 60:.0f} min" if minutes else ""), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(parts) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(logs):]:
        ax.axis("off")
    shown = os.path.relpath(out) if out.resolve().is_relative_to(Path.cwd()) else str(out)
    fig.suptitle(f"training loss: {shown}", fontsize=10)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return list(logs)


def verify_steps(family: str, corpus: Path, out: Path, steps: int, log) -> int:
    """Retrain the folder's recorded `family` recipe (same model configuration, threads and corpus)
    for its first `steps` steps in a scratch copy of the folder, and compare its training log with
    the recorded one, every field but the wall time; when `steps` is the whole recipe, also the
    weights' bytes. A prefix costs minutes where a whole rebuild costs an hour: the same code, data
    and seeds give the same losses to the last logged digit, so a prefix that matches says the
    trainer still reproduces the run (it cannot say so of the steps after it)."""
    import shutil
    import tempfile
    from dataclasses import replace

    from systems.tts.families import RECIPES, train_family

    log_path, config_path = out / family / "train_log.json", out / family / "config.json"
    if not log_path.is_file() or not config_path.is_file():
        raise BenchError(f"no trained {family} in {out} to verify -> bench train-tts --family {family} --out {out}")
    recorded_log = json.loads(log_path.read_text(encoding="utf-8"))
    recipe = recorded_log["recipe"]
    logged = {entry["step"]: entry for entry in recorded_log["history"]}
    if steps not in logged:
        at = sorted(logged)
        shown = ", ".join(map(str, at)) if len(at) <= 4 else f"{at[0]}, {at[1]}, ..., {at[-1]}"
        raise BenchError(f"--verify-steps {steps}: {log_path} has entries at steps {shown}; give one of them")
    bf16 = recipe.get("bf16", True)
    trainer_recipe = replace(RECIPES[family], steps=recipe["steps"], batch=recipe["batch"], bf16=bf16).to_json()
    if trainer_recipe != recipe:
        differing = sorted(k for k in set(recipe) | set(trainer_recipe) if recipe.get(k) != trainer_recipe.get(k))
        raise BenchError(f"the {family} recipe recorded in {log_path} differs from the trainer's in "
                         f"{', '.join(differing)}: this code cannot reproduce it")
    train_config = out / "train_config.json"
    recorded = json.loads(train_config.read_text(encoding="utf-8"))["recipes"].get(family, {}) \
        if train_config.is_file() else {}
    wanted_corpus = recorded.get("corpus_manifest_sha256")
    if wanted_corpus and wanted_corpus != corpus_digest(corpus):
        raise BenchError(f"the corpus at {corpus} is not the one {family} was trained on (its MANIFEST.sha256 "
                         f"differs) -> bench tts-corpus --out {corpus} builds the committed one")
    threads = int(recorded.get("threads", 1))  # the thread count changes float sums, so the losses
    model_config = json.loads(config_path.read_text(encoding="utf-8"))["model"]
    whole = steps == recipe["steps"]
    span = "the whole recipe" if whole else f"the first {steps} of {recipe['steps']} steps"
    log(f"verify {family}: {span} on {threads} thread(s), against {log_path}")
    with tempfile.TemporaryDirectory(prefix=f"verify-{family}-") as tmp:
        scratch = Path(tmp) / out.name
        shutil.copytree(out, scratch, ignore=shutil.ignore_patterns(".lock"))
        train_family(family, corpus, scratch, log, threads, recipe["steps"], model_config, batch=recipe["batch"],
                     stop_after=None if whole else steps, precision="bf16" if bf16 else "fp32")
        ours = {e["step"]: e for e in json.loads((scratch / family / "train_log.json").read_text())["history"]}
        differences = []
        for step in sorted(s for s in logged if s <= steps):
            fields = sorted((set(logged[step]) | set(ours.get(step, {}))) - {"seconds"})
            same = step in ours and all(logged[step].get(k) == ours[step].get(k) for k in fields)
            mine = ours.get(step, {})
            log(f"  step {step}: loss {mine.get('loss')} (recorded {logged[step]['loss']}) "
                f"{'same' if same else 'DIFFERENT'}")
            if not same:
                differences.append(step)
        if whole:
            weights = "model.safetensors"
            same_bytes = (scratch / family / weights).read_bytes() == (out / family / weights).read_bytes()
            log(f"  {weights}: {'the same bytes' if same_bytes else 'DIFFERENT bytes'}")
            if not same_bytes:
                differences.append(weights)
    if differences:
        print(f"{family}: not reproduced (first difference: {differences[0]}). A different torch version or "
              f"CPU can change float sums; `pip freeze` and the recipe's threads ({threads}) are where to look.")
        return 1
    print(f"{family}: reproduced ({'bytes and log' if whole else f'the log of the first {steps} steps'})")
    return 0


# --------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench train-tts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=FAMILIES, help="what to train")
    parser.add_argument("--corpus", type=Path, default=Path("data/tts-corpus"), help="corpus folder (bench tts-corpus)")
    parser.add_argument("--out", type=Path, default=CHECKPOINTS, help="checkpoint folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one per training on 2 cores)")
    parser.add_argument("--steps", type=int, help="override the recipe's steps (aligner: its steps; tokenizer: "
                        "k-means iterations; quick tries and tests, not the committed recipe)")
    parser.add_argument("--alignment", choices=("duration", "filler", "none", "prefix"),
                        help="the family's text alignment: duration (the committed recipe), or the duration-free "
                             "form: filler (flow: E2/F5 filler padding), none (ar: plain VALL-E attention), "
                             "prefix (nar: MaskGCT's phones-as-prefix)")
    parser.add_argument("--text", choices=("phones", "chars", "ipa"), default="phones",
                        help="aligner only: the text front end of this checkpoint folder (Flite phones, the "
                             "committed models; characters; eSpeak NG IPA); the families read the aligner's")
    parser.add_argument("--device", default="cpu",
                        help="where the flow and decoder families train: cpu (the committed recipes) or cuda[:N] "
                             "(long runs of the duration-free forms; train from a corpus --pack on a GPU box)")
    parser.add_argument("--batch", type=int, help="override the recipe's batch size (bigger on a GPU)")
    parser.add_argument("--precision", choices=("bf16", "fp32"),
                        help="the families' arithmetic: bf16 autocast (the committed recipes) or fp32 (for CPUs "
                             "without bf16 instructions, where bf16 is emulated many times slower; a different "
                             "recipe, recorded as such)")
    parser.add_argument("--minutes", type=float, help="stop after this many minutes and save (the step reached "
                                                       "is recorded)")
    parser.add_argument("--check", action="store_true", help="verify the checkpoints against their manifest")
    parser.add_argument("--curves", type=Path, metavar="FILE.png",
                        help="draw the loss curves of every stage trained in --out into this PNG")
    parser.add_argument("--verify-steps", type=int, metavar="N",
                        help="retrain the folder's recorded recipe of --family (flow, nar, ar, decoder) for its "
                             "first N steps in a scratch copy and compare the training log with the recorded one "
                             "(N = the whole recipe: also the weights' bytes); nothing in --out changes")
    args = parser.parse_args(argv)
    if args.check:
        return check_manifest(args.out)
    if args.curves:
        stages = plot_curves(args.out, args.curves)
        print(f"loss curves of {', '.join(stages)} -> {args.curves}")
        return 0
    if not args.family:
        parser.error("give --family or --check")
    if args.batch is not None and args.batch < 1 or args.minutes is not None and args.minutes <= 0:
        parser.error("--batch must be at least 1 and --minutes above 0")
    if args.verify_steps is not None:
        if args.family not in VERIFIABLE:
            parser.error(f"--verify-steps applies to {', '.join(VERIFIABLE)} (the aligner and tokenizer retrain "
                         "in minutes: compare a whole retrain's bytes)")
        if args.steps or args.batch or args.minutes or args.alignment or args.precision or args.device != "cpu":
            parser.error("--verify-steps replays the recorded recipe: it takes no --steps, --batch, --minutes, "
                         "--alignment, --precision or --device")
        return verify_steps(args.family, args.corpus, args.out, args.verify_steps, _log_to(None))
    if args.family in ("aligner", "tokenizer") and (args.device != "cpu" or args.batch or args.minutes
                                                     or args.precision):
        parser.error("--device, --batch, --minutes and --precision apply to the families (flow, decoder; --batch, "
                     "--minutes and --precision also nar, ar), not to the aligner or tokenizer")
    if args.text != "phones" and args.family != "aligner":
        parser.error("--text sets the front end of a new folder: give it with --family aligner; the other "
                     "stages read the aligner's")
    log = _log_to(None)
    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.family == "aligner":
        recipe = train_aligner_stage(args.corpus, args.out, log, args.threads, args.steps, args.text)
    elif args.family == "tokenizer":
        recipe = train_tokenizer_stage(args.corpus, args.out, log, args.threads, args.steps)
    else:
        from systems.tts.families import train_family

        overrides = {"alignment": args.alignment} if args.alignment else None
        recipe = train_family(args.family, args.corpus, args.out, log, args.threads, args.steps, overrides,
                              device=args.device, batch=args.batch, minutes=args.minutes,
                              precision=args.precision)
    minutes = (time.time() - start) / 60
    import fcntl

    # Two trainings may finish together: one at a time rewrites the shared recipe file and manifest.
    with open(args.out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record_recipe(args.out, args.family, {**recipe, "corpus_manifest_sha256": corpus_digest(args.corpus),
                                              "minutes": round(minutes, 1), "environment": training_environment()})
        write_manifest(args.out)
    log(f"{args.family}: done in {minutes:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
