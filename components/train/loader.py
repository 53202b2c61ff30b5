"""Streaming training data: uint8 batches of the run's images, never the whole dataset in memory.

Images come from the decoded cache (``training.cache: decoded``), a uint8 NHWC memmap of every usable image
decoded once per data version and preprocessing on this machine (decoding each JPEG every epoch dominates training
on two cores); from the data step's packed shards (``shards``, components.data.shards), streamed through a bounded
cache; or straight from the files, decoded per batch (``none``). Both frameworks read through the source's
``batch``: PyTorch from DataLoader workers, TensorFlow from tf.data's parallel map, in the batches
``epoch_batches`` plans.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from components.atomic import atomic_file, reclaim_stale
from components.child_processes import process_pool
from components.data.dataset import SPLITS, data_preprocessing, dataset_root, decoded_version, usable_images
from components.data.shards import ShardReader, read_shard_index
from components.errors import RelayError
from components.imaging import Preprocessing, load_pixel_batch
from components.settings import get_settings
from components.spec import TaskSpec


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
        return load_pixel_batch([self.files[r] for r in rows], self.prep)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_memmap": None}


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
            for chunk, pixels in zip(chunks, pool.map(load_pixel_batch, chunks, [prep] * len(chunks))):
                handle.write(np.ascontiguousarray(pixels).tobytes())
                progress.advance(bar, len(chunk))
    return target


class ShardSource:
    """uint8 NHWC batches by row number, from the data step's shards (components.data.shards) fetched through a
    bounded local cache. The two shards last read stay in memory: ``epoch_batches`` reads shards one after
    another."""

    def __init__(self, prep: Preprocessing, record: dict, reader: ShardReader):
        self.prep, self.reader = prep, reader
        shards = [shard for split in SPLITS for shard in record["splits"][split]]
        self.names = [shard["name"] for shard in shards]
        self._rows = [np.asarray(shard["rows"], np.int64) for shard in shards]
        total = sum(len(rows) for rows in self._rows)
        self._shard_of, self._offset = np.full(total, -1, np.int64), np.zeros(total, np.int64)
        for number, rows in enumerate(self._rows):
            self._shard_of[rows], self._offset[rows] = number, np.arange(len(rows))
        self._loaded: dict[int, np.ndarray] = {}
        self._loading = threading.Lock()  # tf.data's parallel map reads from several threads

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loaded": {}, "_loading": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _loading=threading.Lock())

    def shard_groups(self, rows: np.ndarray) -> list[np.ndarray]:
        """The positions in ``rows`` that each shard holds, shard by shard."""
        shard_of = self._shard_of[rows]
        return [np.flatnonzero(shard_of == number) for number in np.unique(shard_of)]

    def batch(self, rows: np.ndarray) -> np.ndarray:
        shard_of = self._shard_of[rows]
        out = np.empty((len(rows), self.prep.height, self.prep.width, self.prep.channels), np.uint8)
        for number in np.unique(shard_of):
            picked = shard_of == number
            out[picked] = self._pixels(int(number))[self._offset[rows[picked]]]
        return out

    def _pixels(self, number: int) -> np.ndarray:
        with self._loading:
            if number not in self._loaded:
                rows, pixels = self.reader.read(self.names[number])
                if not np.array_equal(rows, self._rows[number]):
                    raise RelayError(f"{self.reader.url}/{self.names[number]} does not hold the rows its index "
                                     "lists: the shard store was changed by hand; rerun the data step")
                if len(self._loaded) == 2:
                    self._loaded.pop(next(iter(self._loaded)))
                self._loaded[number] = pixels
            return self._loaded[number]


DataSource = ImageSource | ShardSource  # what training reads batches of rows from


def open_run_data(data_dir: Path, spec: TaskSpec) -> tuple[DataSource, dict[str, Split]]:
    """The run's image source (as ``training.cache`` says) and its train, val and test splits."""
    classes, cache = spec.dataset.classes, spec.training.cache
    prep = data_preprocessing(data_dir)
    usable = usable_images(data_dir)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[label] for label in usable["label"]], dtype=np.int64)
    splits = {name: Split(np.flatnonzero(usable["split"].to_numpy() == name), labels[usable["split"] == name])
              for name in SPLITS}
    if cache == "shards":
        record = read_shard_index(data_dir)
        if record is None:
            raise RelayError(f"training.cache is shards, but the data step packed none into {data_dir}: rerun the "
                             "data step with this spec")
        reader = ShardReader(record, get_settings().home / "cache" / "shards", spec.training.shards.cache_mb)
        source = ShardSource(prep, record, reader)
        reader.check(source.names)
        return source, splits
    root = dataset_root(data_dir)  # once: it reads the run's data.json and the settings
    files = [str(root / p) for p in usable["path"]]
    decoded = None
    if cache == "decoded" and files:
        # this machine's own cache
        decoded = get_settings().home / "cache" / "decoded" / f"{decoded_version(data_dir, usable)}.npy"
        if not decoded.is_file():
            build_cache(files, prep, decoded)
    return ImageSource(prep, files, decoded), splits


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


def epoch_batches(source: DataSource, split: Split, batch_size: int, seed: int | None, epoch: int,
                  rank: int = 0, ranks: int = 1) -> list[np.ndarray]:
    """This rank's batches of one epoch, as positions in ``split``: its share of each global batch. ``seed`` None:
    the split in its own order; otherwise shuffled as a function of (seed, epoch), so a resumed training repeats
    the epoch it stopped in.

    From the decoded cache or the files, the global batches are those of ``epoch_order``, so N ranks take the
    optimizer steps one process takes. From shards, WebDataset's way: the shards in an order drawn from (seed,
    epoch) are dealt to the ranks in turn, each rank reads only its own and shuffles within each; every rank takes
    its share of as many global batches as the split makes, starting its shards over if they run short (with
    several ranks an epoch may then see a few images twice and others not at all; with one, each image once).
    """
    if seed is None or not isinstance(source, ShardSource):
        order = np.arange(len(split)) if seed is None else epoch_order(len(split), seed, epoch)
        return [rank_share(batch, rank, ranks) for batch in shared_batches(order, batch_size, ranks)]
    groups = source.shard_groups(split.rows)
    mine = np.random.default_rng([seed, epoch]).permutation(len(groups))[rank::ranks]
    if not len(mine):
        raise RelayError(f"the training split is packed into {len(groups)} shards, fewer than the {ranks} training "
                         "processes: rerun the data step with this spec (it packs one per process at least)")
    stream = np.concatenate([np.random.default_rng([seed, epoch, int(number)]).permutation(groups[number])
                             for number in mine])
    sizes = [len(rank_share(np.arange(size), rank, ranks)) for size in global_batch_sizes(len(split), batch_size,
                                                                                           ranks)]
    return np.split(np.resize(stream, sum(sizes)), np.cumsum(sizes)[:-1])


def global_batch_sizes(count: int, batch_size: int, ranks: int) -> list[int]:
    """The sizes of the global batches of an epoch of ``count`` images (those of ``shared_batches``)."""
    return [len(batch) for batch in shared_batches(np.arange(count), batch_size, ranks)]


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> np.ndarray:
    """Per-class loss weights: all ones, or inverse frequency scaled to mean 1 (``balanced``)."""
    if mode == "none":
        return np.ones(num_classes, np.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)
