"""Packed shards per data version, for training that streams its data (``training.cache: shards``).

The data step decodes the run's images once, at the run's input size, and packs each split into WebDataset tar
shards in the shard store (RELAY_SHARDS_URI: s3://… or a folder), ``<store>/<version>/<split>-NNNNNN.tar``, then
``index.json``, which lists each shard's rows and is written last: a store holding no index holds no finished
shards. A data version packed before is not packed again. ``data/shards.json`` records where they are.
Training fetches them through webdataset's file cache, bounded in size (``ShardReader``);
``components.train.loader`` says which process reads which shards.

Why WebDataset tar: a shard is a plain tar (``tar tf`` lists it), read by the webdataset library for both
frameworks (TensorFlow through the same reader inside tf.data); TFRecord would need TensorFlow's reader in
PyTorch. Why decoded pixels (``<row>.npy``, uint8 HWC) rather than the original files: decoding every epoch
dominates training on two cores (the decoded cache's reason), so the shards carry what the data step decoded once
for every machine. ``<row>.cls`` is the class index in the spec's classes (WebDataset's convention).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import webdataset as wds
from rich.progress import Progress
from webdataset.cache import FileCache

from components.atomic import write_json
from components.child_processes import process_pool
from components.data.dataset import SPLITS, data_preprocessing, dataset_root, decoded_version, usable_images
from components.errors import RelayError
from components.imaging import load_pixel_batch
from components.object_store import describe_remote, is_s3, probe_s3, storage_options, store_failures
from components.run_files import SHARDS
from components.settings import Settings, get_settings
from components.spec import TaskSpec

INDEX = "index.json"
_SAMPLE_OVERHEAD = 3 * 512 + 128  # per image beyond its pixels: two tar headers, the padding, the .npy header
_DECODE_CHUNK = 256  # files per process-pool task


def read_shard_index(data_dir: Path) -> dict | None:
    """The run's ``data/shards.json`` (where its shards are and which rows each holds), if the data step packed
    any."""
    path = data_dir / SHARDS
    return json.loads(path.read_text()) if path.is_file() else None


def runs_move_between_machines(settings: Settings) -> bool:
    """Whether runs live at a URL (RELAY_RUNS_URI), so that their steps may run on machines that share no disk."""
    return bool(settings.runs_uri) and "://" in settings.runs_uri


def write_shards(spec: TaskSpec, data_dir: Path, settings: Settings) -> dict:
    """Pack the run's usable images into shards in the shard store (unless this data version and layout are there
    already) and record them in ``data_dir/shards.json``; return that record."""
    if runs_move_between_machines(settings) and "://" not in settings.shard_store:
        raise RelayError(f"training.cache is shards and runs move through {settings.runs_uri}, but the shard store is "
                         f"this machine's {settings.shard_store}, which other workers cannot read: set "
                         "RELAY_SHARDS_URI to a URL such as s3://bucket/shards")
    usable = usable_images(data_dir)
    prep = data_preprocessing(data_dir)
    per_shard = max(1, int(spec.training.shards.shard_mb * 2**20
                           // (prep.height * prep.width * prep.channels + _SAMPLE_OVERHEAD)))
    layout = {"per_shard": per_shard, "train_shards_at_least": spec.training.distributed.processes,
              "classes": spec.dataset.classes}
    version = hashlib.sha256((decoded_version(data_dir, usable) + json.dumps(layout, sort_keys=True)).encode())
    url = f"{settings.shard_store.rstrip('/')}/{version.hexdigest()[:24]}"
    fs, root, index = open_store(url, settings)
    if index is None:
        index = _pack(fs, root, url, data_dir, usable, layout, settings)
    record = {"url": url, **index}
    write_json(data_dir / SHARDS, record)
    return record


def open_store(url: str, settings: Settings) -> tuple[fsspec.AbstractFileSystem, str, dict | None]:
    """The filesystem and root of the shard store's folder ``url``, and its ``index.json`` if a packing finished
    there (else None). S3 is asked first whether the bucket answers, so that a missing bucket, a refused key or
    an unreachable endpoint stops the data step in one line before any packing."""
    if is_s3(url) and (problem := probe_s3(url, settings.s3_endpoint_url)):
        raise RelayError(f"shard store {describe_remote(url, settings)}: {problem}")
    fs, root = fsspec.core.url_to_fs(url, **storage_options(url, settings))
    with store_failures(url, "shard store", f"reading {INDEX}", settings):
        try:
            index = json.loads(fs.cat_file(f"{root}/{INDEX}"))
        except FileNotFoundError:
            index = None
    return fs, root, index


def _pack(fs, root: str, url: str, data_dir: Path, usable, layout: dict, settings: Settings) -> dict:
    """Decode ``usable`` into shards in a scratch folder and upload each to ``url`` (``root`` on ``fs``), then the
    index."""
    prep = data_preprocessing(data_dir)
    images = dataset_root(data_dir, settings.project_dir)  # once: it reads the run's data.json
    files = [str(images / path) for path in usable["path"]]
    class_index = {name: i for i, name in enumerate(layout["classes"])}
    labels = [class_index[label] for label in usable["label"]]
    index: dict = {"shape": [prep.height, prep.width, prep.channels], "splits": {}}
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.home, prefix=".shards-") as scratch, process_pool() as pool, \
            Progress(transient=True) as progress:
        bar = progress.add_task(f"pack {len(usable)} images into shards", total=len(usable))
        for split in SPLITS:
            # Shuffled before packing, as WebDataset asks: the manifest lists images folder by folder, so shards of
            # its order would each hold one class, and training reads a shard at a time.
            rows = np.random.default_rng(0).permutation(np.flatnonzero(usable["split"].to_numpy() == split))
            count = math.ceil(len(rows) / layout["per_shard"])
            if split == "train":
                count = max(count, min(len(rows), layout["train_shards_at_least"]))
            shards = []
            for number, chunk in enumerate(np.array_split(rows, count) if count else []):
                name = f"{split}-{number:06d}.tar"
                parts = [chunk[i:i + _DECODE_CHUNK] for i in range(0, len(chunk), _DECODE_CHUNK)]
                decoded = pool.map(load_pixel_batch, [[files[row] for row in part] for part in parts],
                                   [prep] * len(parts))
                local = Path(scratch) / name
                with wds.TarWriter(str(local)) as sink:
                    for part, pixels in zip(parts, decoded):
                        for row, image in zip(part, pixels):
                            sink.write({"__key__": f"{row:09d}", "npy": image, "cls": labels[row]})
                        progress.advance(bar, len(part))
                with store_failures(url, "shard store", f"uploading {name}", settings):
                    fs.put_file(str(local), f"{root}/{name}")
                local.unlink()
                shards.append({"name": name, "rows": chunk.tolist()})
            index["splits"][split] = shards
        with store_failures(url, "shard store", f"uploading {INDEX}", settings):
            fs.pipe_file(f"{root}/{INDEX}", json.dumps(index).encode())  # last: the shards above are complete
    return index


def _open_with_fsspec(url: str, mode: str = "rb", bufsize: int = 8192):
    """webdataset's opener for s3:// URLs (it has none of its own but an `aws` pipe): fsspec, at Relay's
    S3-compatible endpoint."""
    return fsspec.open(url, mode, **storage_options(url, get_settings())).open()


wds.gopen_schemes.setdefault("s3", _open_with_fsspec)


class ShardReader:
    """The shards in ``record`` (``write_shards``'s), fetched into ``cache_dir`` by webdataset's FileCache: at most
    ``cache_mb`` of shards stay on this machine's disk beyond the one being fetched, the first fetched going
    first. A shard is read whole into memory once fetched, so its file may go as soon as it is read."""

    def __init__(self, record: dict, cache_dir: Path, cache_mb: float):
        self.url = record["url"]
        self.cache_dir, self.cache_bytes = cache_dir, int(cache_mb * 2**20)
        self._cache: FileCache | None = None  # made in the process that reads (DataLoader workers included)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}

    def check(self, names: list[str]) -> None:
        """Refuse, in one line, a store that lacks any of ``names``: before training, not in a loader process."""
        with store_failures(self.url, "shard store", "listing the shards", get_settings()):
            fs, root = fsspec.core.url_to_fs(self.url, **storage_options(self.url, get_settings()))
            present = {Path(name).name for name in fs.find(root)}
        missing = [name for name in names if name not in present]
        if missing:
            raise RelayError(f"shard store {self.url} lacks {len(missing)} of the run's {len(names)} shards "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): rerun the data step")

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``name``'s rows and their uint8 NHWC pixels, in the shard's order."""
        if self._cache is None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._cache = FileCache(str(self.cache_dir), url_to_name=_cache_name, cache_size=self.cache_bytes,
                                    cache_cleanup_interval=0)
        url = f"{self.url}/{name}"
        for _ in range(3):
            with store_failures(url, "shard store", f"fetching {name} (rerun the data step if it is missing)",
                                get_settings()):
                path = self._cache.get_file(url)
            try:  # another process's clean-up may take the file between the fetch and the open: fetch again
                with open(path, "rb") as stream:
                    samples = list(wds.tarfile_samples([{"url": url, "stream": stream}]))
                break
            except FileNotFoundError:
                continue
        else:
            raise RelayError(f"{url}: fetched three times into {self.cache_dir}, and each time gone before it was "
                             "read: raise training.shards.cache_mb")
        rows = np.array([int(sample["__key__"]) for sample in samples], dtype=np.int64)
        pixels = np.stack([np.load(io.BytesIO(sample["npy"])) for sample in samples])
        return rows, pixels


def _cache_name(url: str) -> str:
    """The cache's file for a shard URL: its data version and name (the cache wants no folders)."""
    version, name = url.rsplit("/", 2)[-2:]
    return f"{version}-{name}"
