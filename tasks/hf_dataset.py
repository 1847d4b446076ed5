"""hf-dataset: a TTS test set from local data, read with the Hugging Face `datasets` library.

Local only: `path` must exist on this machine; nothing is fetched from the hub. Accepted:
  * a dataset saved with `save_to_disk` (a Dataset or DatasetDict folder): `load_from_disk`;
  * an "audiofolder" layout: a folder with metadata.csv or metadata.jsonl whose `file_name` column
    names audio files relative to it (read here, because datasets >= 4 needs torchcodec, which does
    not install on every machine, to build audiofolders);
  * any other local folder or data file `load_dataset` reads (parquet, arrow, json, csv).
Columns (options): text_column (default "text"), audio_column (default "audio": the recording of
the text, used as the reference; "" for none), prompt_audio_column + prompt_text_column (both or
neither), id_column (default: the row number, "row-000000"), language_column or language (default
"en"), tag_columns (comma-separated columns copied into item tags, e.g. "speaker"),
sampling_rate (for audio columns that hold bare sample lists), split (when there are several).

Audio held inside the dataset (arrays or encoded bytes) is written once to a cache folder as WAV,
named by the sha256 of its content and written atomically, so items carry file paths and a
second load reuses the files. Audio given as a path to an existing local file is used in place.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.audio import Audio, to_mono_float, write_audio_atomic
from bench.contracts import Availability, Prompt, Protocol, Task, TTSItem, module_available
from bench.errors import BenchError, Unavailable
from tasks import check_options, options_aware

OPTIONS = ("path", "split", "text_column", "audio_column", "prompt_audio_column", "prompt_text_column",
           "id_column", "language", "language_column", "tag_columns", "sampling_rate", "cache_dir")
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "speechbench")) / "cache" / "hf-dataset-audio"


class AudioCache:
    """Content-addressed WAV files: <dir>/<sha[:2]>/<sha>.wav, each written once, atomically."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.wav"

    def store_array(self, samples: Any, sampling_rate: int) -> Path:
        audio = Audio(to_mono_float(np.asarray(samples)), int(sampling_rate))
        path = self._path(audio.content_hash())
        if not path.is_file():
            write_audio_atomic(path, audio)
        return path

    def store_encoded(self, data: bytes, where: str) -> Path:
        """Encoded audio (wav/flac/ogg/mp3 bytes): keyed by the bytes' sha256, decoded only once."""
        path = self._path(hashlib.sha256(data).hexdigest())
        if not path.is_file():
            import soundfile as sf

            try:
                samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
            except Exception as exc:  # soundfile raises several types for undecodable input
                raise BenchError(f"{where}: cannot decode the embedded audio bytes ({exc})") from None
            write_audio_atomic(path, Audio(to_mono_float(samples), int(rate)))
        return path


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


class HFDataset(Task):
    name = "hf-dataset"
    version = "1"
    description = "Any local dataset read with `datasets` (save_to_disk folder, audiofolder, parquet/json/csv)"
    protocol = Protocol(metrics=("wer", "utmos"), normalizer="seedtts", language="en",
                        notes="sim is added when the dataset has prompt audio")

    def __init__(self, **options: Any):
        check_options(self.name, options, OPTIONS)
        super().__init__(**options)
        self.path = Path(str(options["path"])).expanduser() if options.get("path") else None
        self.split = options.get("split")
        self.text_column = str(options.get("text_column", "text"))
        self.audio_column = str(options.get("audio_column", "audio"))
        self.prompt_audio_column = options.get("prompt_audio_column") or None
        self.prompt_text_column = options.get("prompt_text_column") or None
        if bool(self.prompt_audio_column) != bool(self.prompt_text_column):
            raise BenchError("hf-dataset: give both prompt_audio_column and prompt_text_column, or neither")
        self.id_column = options.get("id_column") or None
        self.language = str(options.get("language", "en"))
        self.language_column = options.get("language_column") or None
        tags = options.get("tag_columns") or ()
        self.tag_columns = tuple(t.strip() for t in tags.split(",") if t.strip()) if isinstance(tags, str) \
            else tuple(tags)
        rate = options.get("sampling_rate")
        try:
            self.sampling_rate = int(rate) if rate not in (None, "") else None
        except (TypeError, ValueError):
            raise BenchError(f"hf-dataset: sampling_rate={rate!r} is not an integer") from None
        self.cache = AudioCache(Path(options["cache_dir"]) if options.get("cache_dir") else default_cache_dir())
        metrics = ("wer", "sim", "utmos") if self.prompt_audio_column else ("wer", "utmos")
        self.protocol = Protocol(metrics=metrics, normalizer="seedtts", language=self.language,
                                 notes=HFDataset.protocol.notes)

    @options_aware
    def availability(self) -> Availability:
        found = module_available("datasets")
        if not found.ok:
            return Availability.no("Python package 'datasets' is not installed", "pip install speechbench[data]")
        if self.path is None:
            return Availability.no("no dataset given", "pass --task-opt path=<local dataset folder or file>")
        if not self.path.exists():
            return Availability.no(f"{self.path} does not exist (hf-dataset reads local data only)",
                                   "download the dataset first, then pass its local path")
        return Availability.yes()

    # ------------------------------------------------------------------ loading
    def _load(self) -> Any:
        import datasets

        assert self.path is not None
        if self.path.is_dir() and _is_saved_dataset(self.path):
            loaded = datasets.load_from_disk(str(self.path))
        elif self.path.is_dir() and any((self.path / m).is_file() for m in METADATA_FILES):
            meta = next(self.path / m for m in METADATA_FILES if (self.path / m).is_file())
            loaded = datasets.load_dataset("csv" if meta.suffix == ".csv" else "json", data_files=str(meta),
                                           split="train")
            if "file_name" not in loaded.column_names:
                raise BenchError(f"{meta} has no 'file_name' column (audiofolder layout)")
            # As in datasets' audiofolder, the file named by `file_name` is the "audio" column.
            loaded = loaded.rename_column("file_name", "audio") if "audio" not in loaded.column_names else loaded
        else:
            loaded = datasets.load_dataset(str(self.path))
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if self.split is None:
                if len(splits) != 1:
                    raise BenchError(f"hf-dataset: {self.path} has splits {', '.join(splits)}; choose one with "
                                     "--task-opt split=<name>")
                return loaded[splits[0]]
            if self.split not in loaded:
                raise BenchError(f"hf-dataset: no split '{self.split}' in {self.path}; it has {', '.join(splits)}")
            return loaded[self.split]
        return loaded

    def _audio_path(self, value: Any, where: str) -> Path:
        """A file path for one audio cell (a path, {'path','bytes'}, {'array','sampling_rate'}, or samples)."""
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if not path.is_absolute() and self.path is not None and self.path.is_dir():
                path = self.path / path
            if not path.is_file():
                raise BenchError(f"{where}: audio file {path} does not exist")
            return path
        if isinstance(value, dict):
            if value.get("array") is not None:
                rate = value.get("sampling_rate") or self.sampling_rate
                if not rate:
                    raise BenchError(f"{where}: audio array without a sampling rate; pass sampling_rate=<Hz>")
                return self.cache.store_array(value["array"], int(rate))
            if value.get("bytes"):
                return self.cache.store_encoded(bytes(value["bytes"]), where)
            if value.get("path"):
                return self._audio_path(value["path"], where)
            raise BenchError(f"{where}: the audio cell has neither a path, bytes nor an array")
        if isinstance(value, (list, tuple, np.ndarray)):
            if not self.sampling_rate:
                raise BenchError(f"{where}: audio given as bare samples; pass sampling_rate=<Hz>")
            return self.cache.store_array(np.asarray(value, dtype=np.float32), self.sampling_rate)
        raise BenchError(f"{where}: cannot read audio from a {type(value).__name__}")

    def items(self) -> list[TTSItem]:
        avail = self.availability()
        if not avail.ok:
            raise Unavailable(f"hf-dataset: {avail.message()}")
        import datasets

        table = self._load()
        columns = list(table.column_names)
        wanted = [self.text_column] + [c for c in (self.prompt_audio_column, self.prompt_text_column, self.id_column,
                                                   self.language_column) if c] + list(self.tag_columns)
        if self.audio_column and ("audio_column" in self.options or self.audio_column in columns):
            wanted.append(self.audio_column)
        use_audio = self.audio_column in wanted
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise BenchError(f"hf-dataset: {self.path} has no column(s) {', '.join(missing)}; "
                             f"its columns: {', '.join(columns)}")
        # Decoding through datasets needs torchcodec; the cells are read as {'path', 'bytes'} instead.
        for column in (self.audio_column if use_audio else None, self.prompt_audio_column):
            if column and isinstance(table.features.get(column), datasets.Audio):
                table = table.cast_column(column, datasets.Audio(decode=False))
        table = table.select_columns(wanted)

        items: list[TTSItem] = []
        first_row: dict[str, int] = {}
        for index, row in enumerate(table):
            where = f"{self.path}, row {index}"
            item_id = str(row[self.id_column]).strip() if self.id_column else f"row-{index:06d}"
            if not item_id or item_id == "None":
                raise BenchError(f"{where}: empty id in column '{self.id_column}'")
            if item_id in first_row:
                raise BenchError(f"{where}: id '{item_id}' already used by row {first_row[item_id]}; ids must be unique")
            first_row[item_id] = index
            text = row[self.text_column]
            if not isinstance(text, str) or not text.strip():
                raise BenchError(f"{where}: empty or non-text value in column '{self.text_column}'")
            prompt = None
            if self.prompt_audio_column:
                prompt_text = row[self.prompt_text_column]
                if not isinstance(prompt_text, str) or not prompt_text.strip():
                    raise BenchError(f"{where}: empty prompt text in column '{self.prompt_text_column}'")
                prompt = Prompt(self._audio_path(row[self.prompt_audio_column], where), prompt_text.strip())
            reference = self._audio_path(row[self.audio_column], where) if use_audio else None
            language = str(row[self.language_column]) if self.language_column else self.language
            tags = {c: str(row[c]) for c in self.tag_columns}
            items.append(TTSItem(id=item_id, text=text.strip(), prompt=prompt, reference_path=reference,
                                 language=language, tags=tags))
        if not items:
            raise BenchError(f"hf-dataset: {self.path} has no rows")
        return items
