"""Streaming training data: uint8 batches of the run's images, never the whole dataset in memory.

Images come either from the decoded cache (``training.cache: decoded``), a uint8 NHWC memmap of
every usable image decoded once per data version and preprocessing (decoding each JPEG every epoch
dominates training on two cores), or straight from the files, decoded per batch. Both frameworks
read through ``ImageSource.batch``: PyTorch from DataLoader workers, TensorFlow from tf.data's
parallel map.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from components.atomic import atomic_file, reclaim_stale
from components.child_processes import process_pool
from components.data.dataset import SPLITS, data_preprocessing, dataset_root, read_data_info, read_manifest
from components.settings import get_settings
from components.imaging import Preprocessing, load_pixels


@dataclass(frozen=True)
class Split:
    """One split: row numbers into the source, and int64 class indices."""

    rows: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


class ImageSource:
    """uint8 NHWC batches by row number, from the decoded cache or from the files."""

    def __init__(self, prep: Preprocessing, files: list[str], cache: Path | None):
        self.prep, self.files, self.cache = prep, files, cache
        self._memmap = None  # opened lazily, so each DataLoader worker maps the file itself

    def batch(self, rows: np.ndarray) -> np.ndarray:
        if self.cache is not None:
            if self._memmap is None:
                self._memmap = np.load(self.cache, mmap_mode="r")
            order = np.argsort(rows)  # sorted reads are sequential on disk; the batch keeps its own order
            out = np.empty((len(rows), *self._memmap.shape[1:]), np.uint8)
            out[order] = self._memmap[rows[order]]
            return out
        return np.stack([load_pixels(self.files[r], self.prep) for r in rows])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memmap": None}


def _decode_chunk(files: list[str], prep: Preprocessing) -> np.ndarray:
    return np.stack([load_pixels(path, prep) for path in files])


def build_cache(files: list[str], prep: Preprocessing, target: Path) -> Path:
    """Decode ``files`` once into a uint8 memmap at ``target`` (written atomically), in a process pool."""
    reclaim_stale(target)
    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]
    shape = (len(files), prep.height, prep.width, prep.channels)
    with atomic_file(target, "wb") as handle, Progress(transient=True) as progress:
        header = np.lib.format.header_data_from_array_1_0(np.empty((0, *shape[1:]), np.uint8))
        header["shape"] = shape
        np.lib.format.write_array_header_1_0(handle, header)
        bar = progress.add_task(f"decode {len(files)} images once into the cache", total=len(files))
        with process_pool() as pool:
            for chunk, pixels in zip(chunks, pool.map(_decode_chunk, chunks, [prep] * len(chunks))):
                handle.write(np.ascontiguousarray(pixels).tobytes())
                progress.advance(bar, len(chunk))
    return target


def open_run_data(data_dir: Path, classes: list[str], cached: bool) -> tuple[ImageSource, dict[str, Split]]:
    """The run's image source and its train, val and test splits."""
    info = read_data_info(data_dir)
    prep = data_preprocessing(data_dir)
    manifest = read_manifest(data_dir)
    usable = manifest[manifest["split"].isin(SPLITS)].reset_index(drop=True)
    root = dataset_root(data_dir)
    files = [str(root / p) for p in usable["path"]]
    cache = None
    if cached and files:
        shape_key = json.dumps({**prep.to_dict(), "mean": None, "std": None}, sort_keys=True)
        key = hashlib.sha256((info["dataset_version"] + shape_key + "".join(usable["content_hash"])).encode())
        cache = get_settings().home / "cache" / "decoded" / f"{key.hexdigest()[:24]}.npy"  # this machine's
        if not cache.is_file():
            build_cache(files, prep, cache)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[label] for label in usable["label"]], dtype=np.int64)
    splits = {name: Split(np.flatnonzero(usable["split"].to_numpy() == name), labels[usable["split"] == name])
              for name in SPLITS}
    return ImageSource(prep, files, cache), splits


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch: a function of (seed, epoch), so a resumed training repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def shared_batches(order: np.ndarray, batch_size: int, ranks: int) -> list[np.ndarray]:
    """The global batches of ``order`` that each of ``ranks`` processes takes an equal share of (``rank_share``),
    so that together they take the optimizer steps one process takes. A last batch with fewer images than ranks is
    left out."""
    batches = (order[i:i + batch_size] for i in range(0, len(order), batch_size))
    return [batch for batch in batches if len(batch) >= ranks]


def shared_batch_count(count: int, batch_size: int, ranks: int) -> int:
    """How many batches ``shared_batches`` gives for ``count`` images: the optimizer steps of an epoch."""
    return count // batch_size + (count % batch_size >= ranks)


def rank_share(batch: np.ndarray, rank: int, ranks: int) -> np.ndarray:
    """Rank ``rank``'s part of a global batch split between ``ranks`` processes."""
    return np.array_split(batch, ranks)[rank]


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: all ones, or inverse frequency scaled to mean 1 (``balanced``)."""
    if mode == "none":
        return np.ones(num_classes, np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)
