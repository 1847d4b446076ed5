"""Discrete speech tokens without pretrained weights: residual k-means on normalised log-mel frames,
with a first level that says what is said.

Each level quantises the residual the previous levels left, so a frame is `levels` codes and
decodes as the sum of their mel centroids. Measured here through Griffin-Lim (Whisper WER on 45
held-out synthetic utterances; unquantised 16.8 %): 1 x 1024 codes 61.8 %, 4 x 256 37.9 %, 8 x 256
27.1 %, 8 x 1024 20.3 %. One codebook is not enough, which is why the AR family predicts level 1
autoregressively and the rest non-autoregressively (VALL-E's split).

Level 1 (`content="aligner"`, the committed tokenizer): k-means on the aligner's frame encoder,
whose embeddings were trained to match phones (the role CosyVoice's supervised S3 tokens play);
its mel centroid is the mean frame of its code, the finer levels quantise what that leaves. Level 1
of plain mel k-means (`content="mel"`) is a speaker code: a token -> phone map fitted on 5 voices
labels 2 other voices' frames 9.1 % right, against 76.0 % for the aligner's embeddings
(benchmarks/tts_token_content.py).

Fitted by `bench train-tts --family tokenizer` (Lloyd iterations from a seeded sample of frames;
deterministic), stored as safetensors (codebooks (levels, codes, N_MELS), and for aligner content
the frame encoder's weights and the content centroids) with config.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.errors import BenchError

CONTENT_SOURCES = ("aligner", "mel")


@dataclass(frozen=True)
class TokenizerConfig:
    levels: int = 8
    codes: int = 1024
    sample_frames: int = 160_000
    iterations: int = 16
    seed: int = 0
    content: str = "aligner"  # level 1 from: "aligner" (its frame encoder's embeddings) or "mel"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ResidualKMeans:
    def __init__(self, codebooks: torch.Tensor):
        if codebooks.dim() != 3:
            raise BenchError(f"codebooks must be (levels, codes, dim); got {tuple(codebooks.shape)}")
        self.codebooks = codebooks.float()

    @property
    def levels(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def codes(self) -> int:
        return int(self.codebooks.shape[1])

    @staticmethod
    def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        out = []
        c_sq = (centroids ** 2).sum(-1)
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            out.append((c_sq[None] - 2 * part @ centroids.T).argmin(-1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def encode(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """(T, dim) normalised frames -> (T, levels) int64 codes."""
        return self.encode_residual(frames, start=0)

    def encode_residual(self, frames: np.ndarray | torch.Tensor, start: int) -> np.ndarray:
        """Codes of levels start.. for what levels ..start-1 left -> (T, levels - start)."""
        residual = torch.as_tensor(np.asarray(frames, dtype=np.float32)).clone()
        codes = []
        for level in range(start, self.levels):
            idx = self._nearest(residual, self.codebooks[level])
            residual -= self.codebooks[level][idx]
            codes.append(idx)
        if not codes:
            return np.zeros((len(residual), 0), np.int64)
        return torch.stack(codes, dim=-1).numpy().astype(np.int64)

    def decode(self, codes: np.ndarray | torch.Tensor, levels: int | None = None) -> np.ndarray:
        """(T, levels) codes -> (T, dim) normalised frames (sum of the first `levels` centroids)."""
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        used = self.levels if levels is None else levels
        if codes.dim() != 2 or codes.shape[1] < used:
            raise BenchError(f"codes must be (T, >= {used}); got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codes):
            raise BenchError(f"codes outside 0..{self.codes - 1}")
        out = torch.zeros(codes.shape[0], self.codebooks.shape[2])
        for level in range(used):
            out += self.codebooks[level][codes[:, level]]
        return out.numpy()

    @classmethod
    def fit(cls, frames: np.ndarray, config: TokenizerConfig, log: Callable[[str], None] = print) -> tuple["ResidualKMeans", dict[str, Any]]:
        gen = torch.Generator().manual_seed(config.seed)
        x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
        if len(x) > config.sample_frames:
            x = x[torch.randperm(len(x), generator=gen)[:config.sample_frames]]
        if len(x) < config.codes:
            raise BenchError(f"{len(x)} frames cannot fit {config.codes} codes")
        residual = x.clone()
        books, history = [], []
        for level in range(config.levels):
            centroids = residual[torch.randperm(len(residual), generator=gen)[:config.codes]].clone()
            for _ in range(config.iterations):
                idx = cls._nearest(residual, centroids)
                sums = torch.zeros_like(centroids).index_add_(0, idx, residual)
                counts = torch.bincount(idx, minlength=config.codes).float()
                empty = counts == 0
                centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
                if empty.any():  # re-seed empty codes on random frames
                    centroids[empty] = residual[torch.randint(len(residual), (int(empty.sum()),), generator=gen)]
            idx = cls._nearest(residual, centroids)
            residual = residual - centroids[idx]
            mse = float((residual ** 2).mean())
            history.append({"level": level + 1, "residual_mse": round(mse, 5)})
            log(f"tokenizer level {level + 1}: residual mean square {mse:.4f}")
            books.append(centroids)
        return cls(torch.stack(books)), {"history": history, "frames": len(x)}


class SpeechTokenizer:
    """Normalised log-mel frames <-> (T, levels) codes. `content`: the frame encoder and its
    k-means centroids that choose level 1 (None: level 1 is the nearest mel centroid)."""

    def __init__(self, mel: ResidualKMeans, content: tuple[torch.nn.Module, torch.Tensor] | None = None):
        self.mel, self.content = mel, content
        if content is not None and content[1].shape[0] != mel.codes:
            raise BenchError(f"{content[1].shape[0]} content codes for {mel.codes} mel codes")

    @property
    def levels(self) -> int:
        return self.mel.levels

    @property
    def codes(self) -> int:
        return self.mel.codes

    @staticmethod
    def embed(encoder: torch.nn.Module, frames: np.ndarray) -> torch.Tensor:
        """(T, N_MELS) normalised frames of one utterance -> (T, dim) content embeddings."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
            return encoder(x.T[None])[0].T.contiguous()

    def encode(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """(T, N_MELS) normalised frames of one utterance (contiguous: level 1 reads neighbours)."""
        x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
        if self.content is None:
            return self.mel.encode(x)
        encoder, centroids = self.content
        first = ResidualKMeans._nearest(self.embed(encoder, x), centroids)
        rest = self.mel.encode_residual(x - self.mel.codebooks[0][first], start=1)
        return np.concatenate([first.numpy()[:, None].astype(np.int64), rest], axis=1)

    def decode(self, codes: np.ndarray | torch.Tensor, levels: int | None = None) -> np.ndarray:
        return self.mel.decode(codes, levels)

    @classmethod
    def fit(cls, utterances: list[np.ndarray], config: TokenizerConfig, encoder: torch.nn.Module | None = None,
            log: Callable[[str], None] = print) -> tuple["SpeechTokenizer", dict[str, Any]]:
        """`utterances`: normalised (T, N_MELS) frames each; `encoder`: the aligner's frame encoder
        (needed for content="aligner")."""
        from dataclasses import replace

        if config.content not in CONTENT_SOURCES:
            raise BenchError(f"tokenizer content {config.content!r}: use one of {', '.join(CONTENT_SOURCES)}")
        frames = np.concatenate(utterances)
        if config.content == "mel":
            mel, fit_log = ResidualKMeans.fit(frames, config, log)
            return cls(mel), fit_log
        if encoder is None:
            raise BenchError("content='aligner' needs the aligner's frame encoder -> bench train-tts --family aligner first")
        encoder.eval()
        embedded = torch.cat([cls.embed(encoder, u) for u in utterances])
        content, _ = ResidualKMeans.fit(embedded.numpy(), replace(config, levels=1), log=lambda _: None)
        first = ResidualKMeans._nearest(embedded, content.codebooks[0])
        x = torch.as_tensor(frames)
        # a content code's mel centroid is the mean of its frames (an unused code: of all frames)
        sums = torch.zeros(config.codes, x.shape[1]).index_add_(0, first, x)
        counts = torch.bincount(first, minlength=config.codes).float()
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], x.mean(0))
        residual = x - centroids[first]
        mse = float((residual ** 2).mean())
        log(f"tokenizer level 1 (aligner content, {int((counts > 0).sum())} codes used): residual mean square {mse:.4f}")
        history = [{"level": 1, "residual_mse": round(mse, 5)}]
        if config.levels > 1:
            rest, rest_log = ResidualKMeans.fit(residual.numpy(), replace(config, levels=config.levels - 1), log=lambda _: None)
            for h in rest_log["history"]:
                history.append({"level": h["level"] + 1, "residual_mse": h["residual_mse"]})
                log(f"tokenizer level {h['level'] + 1}: residual mean square {h['residual_mse']:.4f}")
            books = torch.cat([centroids[None], rest.codebooks])
        else:
            books = centroids[None]
        return cls(ResidualKMeans(books), (encoder, content.codebooks[0])), {"history": history, "frames": len(x)}

    def save(self, folder: Path, config: TokenizerConfig, extra: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from bench.jsonio import write_json_atomic

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"codebooks": self.mel.codebooks.contiguous()}
        if self.content is not None:
            encoder, centroids = self.content
            extra = {**extra, "content_encoder": {"d": encoder[0].out_channels // 2, "d_att": encoder[-1].out_channels}}
            tensors["content_centroids"] = centroids.contiguous()
            tensors.update({f"content_encoder.{k}": v.detach().float().contiguous() for k, v in encoder.state_dict().items()})
        tmp = folder / ".model.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(folder / "model.safetensors")
        write_json_atomic(folder / "config.json", {"kind": "speech-tokenizer", **config.to_json(), **extra})

    @classmethod
    def load(cls, folder: Path) -> "SpeechTokenizer":
        from safetensors.torch import load_file

        from systems.tts.modules import read_config

        config = read_config(folder)
        content = config.get("content", "mel")
        if content not in CONTENT_SOURCES:
            raise BenchError(f"{folder}: tokenizer content {content!r} is not one of {', '.join(CONTENT_SOURCES)}")
        state = load_file(str(Path(folder) / "model.safetensors"))
        books = state.pop("codebooks", None)
        if books is None or tuple(books.shape[:2]) != (config["levels"], config["codes"]):
            raise BenchError(f"{folder}: codebooks {None if books is None else tuple(books.shape)} do not match "
                             f"config {config['levels']}x{config['codes']}")
        if content == "mel":
            if state:
                raise BenchError(f"{folder}: a mel tokenizer holds only 'codebooks'; also got {sorted(state)}")
            return cls(ResidualKMeans(books))
        from systems.tts.aligner import frame_encoder
        from systems.tts.modules import load_state_strict

        centroids = state.pop("content_centroids", None)
        if centroids is None:
            raise BenchError(f"{folder}: an aligner-content tokenizer needs 'content_centroids'")
        encoder = frame_encoder(**config.get("content_encoder", {}))
        load_state_strict(encoder, {k.removeprefix("content_encoder."): v for k, v in state.items()}, f"{folder} content encoder")
        encoder.eval()
        return cls(ResidualKMeans(books), (encoder, centroids.float()))
