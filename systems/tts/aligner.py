"""Phone durations for any speech, and the duration predictor that gives them at inference.

Aligner (after RAD-TTS's unsupervised alignment, 'One TTS Alignment to Rule Them All'): a small
convolutional phone encoder and frame encoder; the soft attention of frame t over phones i is a
softmax of -||frame_t - phone_i||^2 plus a beta-binomial prior that favours the diagonal.
Training maximises the probability of all monotonic alignments (the forward-sum loss, computed
with CTC); Flite's own phone timings (`flite -psdur`, Flite voices only) add a cross-entropy
term during the first steps, which seeds the alignment. Hard durations come from monotonic
alignment search (MAS, as Glow-TTS) over the soft attention, so they work for any voice: the
corpus' non-Flite voices, held-out voices and a user's prompt at inference.
Checked against Flite's timings on held-out Flite utterances (boundary error in frames and ms,
recorded in the checkpoint's train_log.json).

Duration predictor: phone embeddings through a convolution stack, conditioned on the speaking
rate (log of frames per phone), predicting log(1 + frames) per phone. At inference the rate is the
prompt's (its frames over its phones), so the generated speech keeps the prompt's tempo.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from systems.tts.features import N_MELS
from systems.tts.text import VOCAB_SIZE, vocab_size


# --------------------------------------------------------------------------- MAS
def monotonic_alignment(log_prob: np.ndarray) -> np.ndarray:
    """Most probable monotonic path through log_prob (N phones, T frames), every phone at least
    one frame, starting at phone 0 and ending at phone N-1 -> frames per phone (N,), sum T."""
    n, t_max = log_prob.shape
    if n > t_max:
        raise BenchError(f"{n} phones cannot be aligned to {t_max} frames")
    value = np.full(n, -np.inf)
    value[0] = log_prob[0, 0]
    moved = np.zeros((n, t_max), dtype=bool)
    for t in range(1, t_max):
        shifted = np.concatenate(([-np.inf], value[:-1]))
        moved[:, t] = shifted > value
        value = np.maximum(value, shifted) + log_prob[:, t]
    durations = np.zeros(n, dtype=np.int64)
    i = n - 1
    for t in range(t_max - 1, -1, -1):
        durations[i] += 1
        if t > 0 and moved[i, t]:
            i -= 1
    if i != 0:
        raise BenchError("monotonic alignment search did not reach the first phone")
    return durations


def beta_binomial_prior(n_phones: int, n_frames: int, scaling: float = 1.0) -> np.ndarray:
    """(T, N) log prior: frame t's phone is beta-binomial(N-1, a=t, b=T+1-t) around the diagonal
    (RAD-TTS), evaluated in closed form for the whole grid at once."""
    from scipy.special import betaln, gammaln

    n = n_phones - 1
    k = np.arange(n_phones, dtype=np.float64)[None, :]
    t = np.arange(1, n_frames + 1, dtype=np.float64)[:, None]
    a, b = scaling * t, scaling * (n_frames + 1 - t)
    log_choose = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return (log_choose + betaln(k + a, n - k + b) - betaln(a, b)).astype(np.float32)


# --------------------------------------------------------------------------- models
def frame_encoder(d: int = 192, d_att: int = 80) -> nn.Sequential:
    """Normalised mel (B, N_MELS, T) -> (B, d_att, T) frame embeddings that the aligner matches to
    phone embeddings; trained that way, they carry what is said more than who says it, which is
    why the speech tokenizer quantises them for its first level."""
    return nn.Sequential(nn.Conv1d(N_MELS, 2 * d, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(2 * d, d, 1), nn.ReLU(), nn.Conv1d(d, d_att, 1))


class Aligner(nn.Module):
    def __init__(self, d: int = 192, d_att: int = 80, vocab: int = VOCAB_SIZE):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.text = nn.Sequential(nn.Conv1d(d, 2 * d, 3, padding=1), nn.ReLU(), nn.Conv1d(2 * d, d_att, 1))
        self.frames = frame_encoder(d, d_att)

    def forward(self, phones: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """phones (B, N), normalised mel (B, T, N_MELS) -> logits (B, T, N): -squared distance."""
        p = self.text(self.embed(phones).transpose(1, 2)).transpose(1, 2)  # (B, N, d_att)
        m = self.frames(mel.transpose(1, 2)).transpose(1, 2)  # (B, T, d_att)
        return -torch.cdist(m, p).pow(2) / math.sqrt(p.shape[-1])


class DurationPredictor(nn.Module):
    def __init__(self, d: int = 192, layers: int = 3, vocab: int = VOCAB_SIZE):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.rate = nn.Linear(1, d)
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 5, padding=2) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.out = nn.Linear(d, 1)

    def forward(self, phones: torch.Tensor, log_rate: torch.Tensor) -> torch.Tensor:
        """phones (B, N), log frames-per-phone (B,) -> predicted log(1 + frames) (B, N)."""
        x = self.embed(phones) + self.rate(log_rate[:, None, None].float())
        for conv, norm in zip(self.convs, self.norms):
            x = x + norm(F.relu(conv(x.transpose(1, 2)).transpose(1, 2)))
        return self.out(x).squeeze(-1)

    @torch.no_grad()
    def predict(self, phones: Sequence[int], log_rate: float) -> np.ndarray:
        self.eval()
        pred = self(torch.tensor([list(phones)]), torch.tensor([log_rate]))[0]
        return np.maximum(1, np.rint(torch.expm1(pred).clamp_min(0).numpy())).astype(np.int64)


def log_rate(n_frames: int, n_phones: int) -> float:
    return math.log(max(n_frames, 1) / max(n_phones, 1))


# --------------------------------------------------------------------------- use
def front_end_of(folder: Path) -> str:
    """The text front end a checkpoint folder's models read: its aligner's (phones when unsaid)."""
    import json

    path = Path(folder) / "aligner" / "config.json"
    if not path.is_file():
        raise BenchError(f"no aligner at {Path(folder) / 'aligner'} -> bench train-tts --family aligner --out {folder}")
    return json.loads(path.read_text(encoding="utf-8")).get("text", "phones")


def load_aligner(folder: Path) -> Aligner:
    """The folder's aligner, built for its front end and loaded with strict checks."""
    from systems.tts.modules import load_weights_strict

    aligner = Aligner(vocab=vocab_size(front_end_of(folder)))
    load_weights_strict(aligner, Path(folder) / "aligner" / "model.safetensors")
    return aligner


@torch.no_grad()
def align(aligner: Aligner, phones: Sequence[int], normalised_mel: np.ndarray) -> np.ndarray:
    """Frames per phone for one utterance (any voice): MAS over the aligner's attention."""
    aligner.eval()
    n, t = len(phones), normalised_mel.shape[0]
    if n > t:
        raise BenchError(f"{n} phones do not fit into {t} frames ({t / 62.5:.2f} s of audio)")
    logits = aligner(torch.tensor([list(phones)]), torch.from_numpy(normalised_mel)[None])[0]
    log_attn = torch.log_softmax(logits + torch.from_numpy(beta_binomial_prior(n, t)), dim=-1)
    return monotonic_alignment(log_attn.T.numpy().astype(np.float64))


@dataclass(frozen=True)
class AlignerConfig:
    seed: int = 0
    steps: int = 2500
    seed_steps: int = 800  # steps with the Flite-timing cross-entropy
    batch: int = 16
    max_frames: int = 400
    lr: float = 1e-3
    duration_steps: int = 3000
    validation_utterances: int = 60  # Flite utterances kept out, to check MAS against Flite's timings
    threads: int = 1
    text: str = "phones"  # the front end; Flite's timings seed and check only the phones

    def to_json(self) -> dict[str, Any]:
        from systems.tts.modules import front_end_json

        return front_end_json(asdict(self))


def _pad(seqs: Sequence[np.ndarray], value: float = 0) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    shape = (len(seqs), width) + tuple(seqs[0].shape[1:])
    out = np.full(shape, value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return torch.from_numpy(out)


def train_aligner(utterances: Sequence[Any], stats: Any, config: AlignerConfig, log: Any) -> tuple[Aligner, dict[str, Any]]:
    """Train the aligner on whole utterances (no crops: the alignment is global)."""
    rng = random.Random(f"aligner:{config.seed}")
    torch.manual_seed(config.seed)
    flite = [u for u in utterances if u.flite_durations is not None]
    held = set(u.id for u in rng.sample(flite, min(config.validation_utterances, len(flite) // 5)))
    train = [u for u in utterances if u.id not in held and u.frames <= config.max_frames]
    model = Aligner(vocab=vocab_size(config.text))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    priors: dict[str, torch.Tensor] = {}
    history = []
    for step in range(config.steps):
        batch = [train[rng.randrange(len(train))] for _ in range(config.batch)]
        phones = _pad([u.phones for u in batch])
        mel = _pad([stats.normalise(u.log_mel) for u in batch])
        logits = model(phones, mel)  # (B, T, N)
        n_len = torch.tensor([len(u.phones) for u in batch])
        t_len = torch.tensor([u.frames for u in batch])
        prior = torch.zeros_like(logits)
        for b, u in enumerate(batch):
            if u.id not in priors:
                priors[u.id] = torch.from_numpy(beta_binomial_prior(len(u.phones), u.frames))
            prior[b, :u.frames, :len(u.phones)] = priors[u.id]
        phone_mask = torch.arange(logits.shape[2])[None, None] < n_len[:, None, None]
        scores = (logits + prior).masked_fill(~phone_mask, -1e4)
        # CTC over phones 1..N with a blank column (logit -1, as the forward-sum paper pads).
        with_blank = F.pad(scores, (1, 0), value=-1.0)
        log_probs = torch.log_softmax(with_blank, dim=-1).transpose(0, 1)  # (T, B, N+1)
        targets = _pad([np.arange(1, len(u.phones) + 1) for u in batch])
        loss = F.ctc_loss(log_probs, targets, t_len, n_len, blank=0, zero_infinity=True, reduction="mean")
        ce_value = 0.0
        if step < config.seed_steps:
            seeded = [b for b, u in enumerate(batch) if u.flite_durations is not None]
            if seeded:
                log_attn = torch.log_softmax(scores, dim=-1)
                ce = []
                for b in seeded:
                    u = batch[b]
                    target = torch.from_numpy(np.repeat(np.arange(len(u.phones)), u.flite_durations))
                    ce.append(F.nll_loss(log_attn[b, :u.frames, :], target))
                ce_term = torch.stack(ce).mean()
                ce_value = float(ce_term.detach())
                loss = loss + ce_term
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == config.steps - 1:
            history.append({"step": step, "loss": round(float(loss.detach()), 4), "seed_ce": round(ce_value, 4)})
            log(f"aligner step {step}: loss {float(loss.detach()):.3f}")
    # Check against Flite's own timings on the held-out Flite utterances.
    errors = []
    for u in (u for u in flite if u.id in held):
        durations = align(model, u.phones, stats.normalise(u.log_mel))
        errors.append(np.abs(np.cumsum(durations)[:-1] - np.cumsum(u.flite_durations)[:-1]))
    check: dict[str, Any] = {"heldout_flite_utterances": len(errors)}
    if errors:  # only the phone front end has Flite's timings to compare with
        flat = np.concatenate(errors)
        check.update({"boundary_error_frames_mean": round(float(flat.mean()), 3),
                      "boundary_error_ms_mean": round(float(flat.mean()) * 1000 / 62.5, 1),
                      "boundaries_within_2_frames": round(float(np.mean(flat <= 2)), 4)})
    log(f"aligner check against Flite timings: {check}")
    return model, {"history": history, "check": check, "heldout_ids": sorted(held)}


def train_duration_predictor(utterances: Sequence[Any], config: AlignerConfig, log: Any) -> tuple[DurationPredictor, dict[str, Any]]:
    """Regress log(1 + frames) per phone on the aligner's durations (all training voices)."""
    rng = random.Random(f"durations:{config.seed}")
    torch.manual_seed(config.seed + 1)
    model = DurationPredictor(vocab=vocab_size(config.text))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    history = []
    held_ids = set(u.id for u in rng.sample(list(utterances), min(100, len(utterances) // 5)))  # a check, not trained on
    held = [u for u in utterances if u.id in held_ids]
    train = [u for u in utterances if u.id not in held_ids]
    for step in range(config.duration_steps):
        batch = [train[rng.randrange(len(train))] for _ in range(config.batch * 2)]
        phones = _pad([u.phones for u in batch])
        target = _pad([np.log1p(u.durations.astype(np.float32)) for u in batch])
        rates = torch.tensor([log_rate(u.frames, len(u.phones)) for u in batch])
        mask = phones != 0
        pred = model(phones, rates)
        loss = ((pred - target) ** 2)[mask].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == config.duration_steps - 1:
            history.append({"step": step, "loss": round(float(loss.detach()), 4)})
            log(f"duration predictor step {step}: loss {float(loss.detach()):.4f}")
    errors = []
    for u in held:
        pred = model.predict(u.phones, log_rate(u.frames, len(u.phones)))
        errors.append(abs(int(pred.sum()) - u.frames) / u.frames)
    check = {"heldout_utterances": len(held), "total_length_error_mean": round(float(np.mean(errors)), 4)}
    log(f"duration predictor check: {check}")
    return model, {"history": history, "check": check}
