"""The data step: make sure the versioned dataset is present, then describe it in a manifest.

The manifest has one row per file found (path, label, format, size, mode, bytes, content hash,
whether it decodes and why not, per-channel statistics of the preprocessed image) and a seeded,
stratified three-way split by content hash (train, val, test), so every later step reads the same
held-out sets for this data version. Rows are cached by content hash (and file stat), so adding 100
images to 50,000 describes only the 100; new files are described in a process pool.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import Progress

from components import versioning
from components.atomic import atomic_dir, write_json
from components.child_processes import process_pool
from components.data.builtin import GENERATORS
from components.errors import RelayError
from components.imaging import ImageRejected, Preprocessing, load_pixels, open_checked, preprocess_files
from components.run_files import DATA_INFO, MANIFEST
from components.object_store import describe_remote
from components.settings import Settings, get_settings
from components.spec import Normalization, TaskSpec

SPLITS = ("train", "val", "test")
SKIPPED = "skipped"  # split of an unusable file under on_bad_file: skip
UNUSABLE = "none"    # split of an unusable file under on_bad_file: fail (validation then stops the run)
CHANNEL_COLUMNS = [f"channel_mean_{c}" for c in range(3)]
_SQUARE_COLUMNS = [f"channel_sq_{c}" for c in range(3)]
COLUMNS = ["path", "label", "format", "width", "height", "mode", "bytes", "content_hash", "readable", "problem",
           "mean_intensity", *CHANNEL_COLUMNS, *_SQUARE_COLUMNS]
# Below this many new files a process pool costs more to start than it saves.
_POOL_THRESHOLD = 64


@dataclass(frozen=True)
class DataResult:
    manifest: Path
    dataset_dir: Path
    dataset_md5: str | None
    images: int
    described: int  # files described now; the others came from the row cache


@dataclass
class Discovery:
    """What the data step found under a dataset root before describing any file."""

    files: list[tuple[str, str]] = field(default_factory=list)          # (relative path, label)
    problems: dict[str, str] = field(default_factory=dict)              # relative path → why it is refused
    ignored: dict[str, list[str]] = field(default_factory=dict)         # reason → relative paths

    def ignore(self, reason: str, rel: str) -> None:
        self.ignored.setdefault(reason, []).append(rel)


def ensure_dataset(spec: TaskSpec, settings: Settings) -> str | None:
    """Bring the DVC-tracked dataset into the workspace; return its DVC md5.

    A fresh clone pulls it from the remote. When the remote does not have it yet and the dataset is
    a built-in one, it is regenerated, checked against the committed hash and pushed.
    """
    dataset_dir = spec.dataset_dir(settings.project_dir)
    pointer = versioning.pointer_file(dataset_dir)
    repo = settings.project_dir
    if not (repo / ".dvc").is_dir() or not dataset_dir.is_relative_to(repo):
        # A dataset outside the project (tests, ad-hoc folders) is used as it is.
        if not dataset_dir.is_dir():
            raise RelayError(f"dataset directory {dataset_dir} does not exist")
        return None
    rel = str(pointer.relative_to(repo))
    if os.environ.get("DVC_ROOT"):
        # Inside `dvc repro` DVC holds the repo lock and has checked the dataset out already.
        if not dataset_dir.is_dir():
            raise RelayError(f"{dataset_dir} is missing: run `dvc pull {rel}` before `dvc repro`")
        return versioning.pointer_md5(pointer)
    generator = GENERATORS.get(spec.dataset.source)
    with versioning.remote_locked(settings) as url:
        expected = versioning.pointer_md5(pointer)
        checked = _CheckedOut(settings, dataset_dir)
        if expected is not None and checked.matches(expected):
            return expected  # pulled (or generated) before, and no file changed since
        if expected is not None and not (generator and versioning.nowhere_to_pull(repo, url, expected, settings)):
            try:
                versioning.dvc(["pull", rel], repo)
            except versioning.DvcError as error:
                if generator is None:
                    raise RelayError(f"cannot fetch {rel} from DVC remote {describe_remote(url, settings)}: "
                                     f"{versioning.remote_failure(url, settings, error)}") from None
            else:
                if versioning.remote_holds(url, expected, settings) is False:
                    # Only this machine's cache holds the version (a `dvc add` never pushed, a remote switched):
                    # what a run trains on must be on the remote, for other workers and whoever reproduces it.
                    _push(rel, repo, url, settings)
                checked.record(expected)
                return expected
        elif generator is None:
            raise RelayError(f"{rel} does not exist: bring the dataset under DVC with "
                             f"`relay task new {spec.name} --from DIR` or `dvc add {dataset_dir.relative_to(repo)}`")
        generator(dataset_dir)
        versioning.dvc(["add", str(dataset_dir.relative_to(repo))], repo)
        actual = versioning.pointer_md5(pointer)
        if expected is not None and actual != expected:
            raise RelayError(
                f"regenerated {dataset_dir.name} hashes to {actual}, but {rel} records {expected}: "
                "the generator changed; restore the committed pointer with `git checkout " + rel + "`"
            )
        _push(rel, repo, url, settings)
        checked.record(actual)
        return actual


def _push(rel: str, repo: Path, url: str, settings: Settings) -> None:
    """`dvc push` the pointer ``rel`` to the remote ``url``; one line naming the remote when it fails."""
    try:
        versioning.dvc(["push", rel], repo)
    except versioning.DvcError as error:
        raise RelayError(f"cannot push {rel} to the DVC remote {describe_remote(url, settings)}: "
                         f"{versioning.remote_failure(url, settings, error)}") from None


def tree_fingerprint(directory: Path) -> str | None:
    """A digest of every file's path, size, mtime and inode under ``directory`` (None if it is missing):
    it changes when any file is added, removed or touched, and costs one stat per file."""
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            digest.update(f"{folder}/{name}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}\n".encode())
    return digest.hexdigest()


class _CheckedOut:
    """That a dataset directory holds the DVC version ``md5``, as of its files' stat: after a pull, a
    rerun skips ``dvc pull`` (a second of DVC start-up) while no file was added, removed or touched."""

    def __init__(self, settings: Settings, dataset_dir: Path):
        key = hashlib.sha256(str(dataset_dir.resolve()).encode()).hexdigest()[:16]
        self.path = settings.home / "cache" / "checked-out" / f"{key}.json"
        self.dataset_dir = dataset_dir

    def matches(self, md5: str) -> bool:
        if not self.path.is_file():
            return False
        recorded = json.loads(self.path.read_text())
        return recorded.get("md5") == md5 and recorded.get("fingerprint") == tree_fingerprint(self.dataset_dir)

    def record(self, md5: str) -> None:
        write_json(self.path, {"md5": md5, "fingerprint": tree_fingerprint(self.dataset_dir)})


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _accept(root: Path, path: Path, rel: str, label: str, found: Discovery) -> None:
    """Add one file to the listing: hidden ones are ignored (and counted), symlinks out are refused."""
    if path.name.startswith("."):
        found.ignore("hidden file", rel)
        return
    found.files.append((rel, label))
    if path.is_symlink() and not _inside(path, root):
        found.problems[rel] = "a symlink pointing outside the dataset (refused)"


def _walk_label(root: Path, folder: str, label: str, found: Discovery) -> None:
    """Every file under one label folder, any depth, with os.scandir (one stat-free pass per folder)."""
    prefix = len(str(root)) + 1
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    for entry in entries:
        rel = entry.path[prefix:]
        if entry.is_dir(follow_symlinks=False):
            if entry.name.startswith("."):
                found.ignore("hidden folder", rel)
            else:
                _walk_label(root, entry.path, label, found)
        else:
            _accept(root, Path(entry.path), rel, label, found)


def discover(root: Path, labels_csv: str | None = None) -> Discovery:
    """List the dataset's files and their labels: ``root/<label>/...`` (any depth), or the rows of
    ``labels_csv`` (``path,label``). Hidden files and folders are ignored, and counted."""
    if not root.is_dir():
        raise RelayError(f"dataset directory {root} does not exist")
    found = Discovery()
    if labels_csv:
        return _discover_csv(root, root / labels_csv, found)
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            found.ignore("hidden file" if entry.is_file() else "hidden folder", entry.name)
        elif entry.is_dir():
            _walk_label(root, str(entry), entry.name, found)
        else:
            found.ignore("file outside the label folders", entry.name)
    return found


def _discover_csv(root: Path, csv_path: Path, found: Discovery) -> Discovery:
    if not csv_path.is_file():
        raise RelayError(f"dataset.labels_csv: {csv_path} does not exist")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise RelayError(f"{csv_path}: needs a header with the columns path,label (found {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            rel, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            if not rel or not label:
                raise RelayError(f"{csv_path}:{line}: empty path or label")
            path = root / rel
            if not _inside(path, root):
                found.files.append((rel, label))
                found.problems[rel] = f"{csv_path.name} line {line} points outside the dataset (refused)"
            elif not path.is_file():
                found.files.append((rel, label))
                found.problems[rel] = f"{csv_path.name} line {line} names a file that does not exist"
            else:
                _accept(root, path, path.relative_to(root).as_posix(), label, found)
    return found


def describe_file(path: str, prep: Preprocessing) -> dict:
    """One manifest row's facts about a file: hash, format, size, and the per-channel mean and mean
    square of its preprocessed pixels. An image over ``max_pixels`` is refused from its header."""
    raw = Path(path).read_bytes()
    row: dict = {"bytes": len(raw), "content_hash": hashlib.sha256(raw).hexdigest(), "readable": True,
                 "problem": "", "format": None, "width": None, "height": None, "mode": None}
    try:
        if not raw:
            raise ImageRejected(f"{path}: an empty file")
        with open_checked(raw, prep.max_pixels, path) as image:
            row.update(format=image.format, width=image.width, height=image.height, mode=image.mode)
        pixels = load_pixels(raw, prep, path).astype(np.float64) / 255.0
    except ImageRejected as error:
        reason = str(error).removeprefix(f"{path}: ")
        return {**row, "readable": False, "problem": reason or "not an image"}
    means = pixels.mean(axis=(0, 1))
    squares = (pixels ** 2).mean(axis=(0, 1))
    for c in range(3):
        row[CHANNEL_COLUMNS[c]] = float(means[c]) if c < len(means) else None
        row[_SQUARE_COLUMNS[c]] = float(squares[c]) if c < len(squares) else None
    row["mean_intensity"] = float(means.mean())
    return row


def _describe_batch(paths: list[str], prep: Preprocessing) -> list[dict]:
    return [describe_file(path, prep) for path in paths]


class _RowCache:
    """Described rows by content hash, and content hashes by file stat, per preprocessing setting."""

    def __init__(self, directory: Path, key: str):
        self.path = directory / f"{key}.json"
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.hashes: dict[str, str] = data.get("hashes", {})
        self.rows: dict[str, dict] = data.get("rows", {})
        self.added = 0

    @staticmethod
    def stat_key(path: Path) -> str:
        stat = os.stat(path)  # paths are absolute (dataset root / relative path): no resolve() per file
        return f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"

    def lookup(self, path: Path) -> dict | None:
        digest = self.hashes.get(self.stat_key(path))
        return self.rows.get(digest) if digest else None

    def store(self, path: Path, row: dict) -> None:
        self.hashes[self.stat_key(path)] = row["content_hash"]
        if row["readable"]:  # unreadable files are re-examined next time: they may have been fixed
            self.rows[row["content_hash"]] = row
        self.added += 1

    def save(self) -> None:
        if self.added:
            write_json(self.path, {"hashes": self.hashes, "rows": self.rows})


def describe_files(paths: list[Path], prep: Preprocessing, cache: _RowCache | None = None,
                   label: str = "describe images") -> list[dict]:
    """Describe ``paths`` (reusing cached rows); new files go through a process pool with a progress bar."""
    rows: list[dict | None] = [cache.lookup(p) if cache else None for p in paths]
    todo = [i for i, row in enumerate(rows) if row is None]
    if todo:
        chunks = [todo[i:i + 32] for i in range(0, len(todo), 32)]
        with Progress(transient=True) as progress:
            bar = progress.add_task(f"{label} ({len(todo)} new, {len(paths) - len(todo)} cached)", total=len(todo))
            if len(todo) < _POOL_THRESHOLD:
                results = (_describe_batch([str(paths[i]) for i in chunk], prep) for chunk in chunks)
                for chunk, described in zip(chunks, results):
                    _fill(rows, chunk, described, paths, cache)
                    progress.advance(bar, len(chunk))
            else:
                with process_pool() as pool:
                    futures = [pool.submit(_describe_batch, [str(paths[i]) for i in chunk], prep) for chunk in chunks]
                    for chunk, future in zip(chunks, futures):
                        _fill(rows, chunk, future.result(), paths, cache)
                        progress.advance(bar, len(chunk))
    return rows  # type: ignore[return-value]


def _fill(rows: list, chunk: list[int], described: list[dict], paths: list[Path], cache: _RowCache | None) -> None:
    for i, row in zip(chunk, described):
        rows[i] = row
        if cache:
            cache.store(paths[i], row)


def split_by_hash(manifest: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Assign train, val or test per content hash, stratified by label and seeded; unusable rows get none.

    Identical images share a hash and therefore a split, so none leaks from train into val or test.
    """
    usable = manifest[manifest["readable"].astype(bool)]
    firsts = usable.sort_values(["content_hash", "label"]).drop_duplicates("content_hash").sort_values(
        ["label", "content_hash"])
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for _, group in firsts.groupby("label", sort=True):
        hashes = group["content_hash"].to_numpy()
        order = rng.permutation(len(hashes))
        n_test = math.ceil(len(hashes) * test_fraction) if len(hashes) > 1 else 0
        n_val = math.ceil(len(hashes) * val_fraction) if len(hashes) > 2 else 0
        for rank, position in enumerate(order):
            split_of[hashes[position]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return manifest["content_hash"].map(split_of).where(manifest["readable"].astype(bool), UNUSABLE)


def unnormalized(spec: TaskSpec) -> Preprocessing:
    """The spec's preprocessing up to normalization (what the manifest's statistics describe)."""
    channels = spec.input.channels
    return Preprocessing(height=spec.input.height, width=spec.input.width, channels=channels,
                         resize=spec.input.resize, mean=(0.0,) * channels, std=(1.0,) * channels,
                         max_pixels=spec.dataset.max_pixels)


def _normalization(spec: TaskSpec, manifest: pd.DataFrame) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    if isinstance(spec.input.normalization, Normalization):
        return tuple(spec.input.normalization.mean), tuple(spec.input.normalization.std), "spec"
    train = manifest[manifest["split"] == "train"]
    if train.empty:
        return (0.0,) * spec.input.channels, (1.0,) * spec.input.channels, "none: the train split is empty"
    means = train[CHANNEL_COLUMNS[:spec.input.channels]].to_numpy(np.float64).mean(axis=0)
    squares = train[_SQUARE_COLUMNS[:spec.input.channels]].to_numpy(np.float64).mean(axis=0)
    std = np.sqrt(np.maximum(squares - means ** 2, 0.0))
    return (tuple(round(float(m), 6) for m in means), tuple(round(max(float(s), 1e-3), 6) for s in std),
            "auto: the train split")


def build_manifest(spec: TaskSpec, dataset_dir: Path, cache_dir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """Describe every file of the dataset and split it; return the manifest and a summary for data.json."""
    found = discover(dataset_dir, spec.dataset.labels_csv)
    prep = unnormalized(spec)
    key = hashlib.sha256(json.dumps(prep.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    cache = _RowCache(cache_dir, key) if cache_dir else None
    good = [(rel, label) for rel, label in found.files if rel not in found.problems]
    root = dataset_dir.resolve()  # absolute paths key the row cache
    described = describe_files([root / rel for rel, _ in good], prep, cache)
    rows = [{"path": rel, "label": label, **row} for (rel, label), row in zip(good, described)]
    rows += [{"path": rel, "label": label, "readable": False, "problem": found.problems[rel]}
             for rel, label in found.files if rel in found.problems]
    manifest = pd.DataFrame(rows, columns=COLUMNS).sort_values("path", ignore_index=True)
    manifest["readable"] = manifest["readable"].astype(bool)
    manifest["problem"] = manifest["problem"].fillna("")
    manifest["split"] = split_by_hash(manifest, spec.dataset.val_fraction, spec.dataset.test_fraction,
                                      spec.dataset.split_seed)
    if spec.dataset.on_bad_file == "skip":
        manifest.loc[~manifest["readable"], "split"] = SKIPPED
    if cache:
        cache.save()
    usable = manifest[manifest["readable"]]
    counts = {label: int((usable["label"] == label).sum()) for label in spec.dataset.classes}
    counts.update({label: int(n) for label, n in usable["label"].value_counts().items() if label not in counts})
    mean, std, source = _normalization(spec, manifest)
    hash_labels = usable.groupby("content_hash")["label"].nunique()
    summary = {
        "files": len(manifest), "images": len(usable), "class_counts": counts,
        "split_counts": {split: int((manifest["split"] == split).sum()) for split in (*SPLITS, SKIPPED, UNUSABLE)},
        "formats": {str(k): int(v) for k, v in usable["format"].value_counts().items()},
        "modes": {str(k): int(v) for k, v in usable["mode"].value_counts().items()},
        "sizes": {"min": [int(usable["width"].min()), int(usable["height"].min())] if len(usable) else None,
                  "max": [int(usable["width"].max()), int(usable["height"].max())] if len(usable) else None},
        "unusable": manifest.loc[~manifest["readable"], ["path", "problem"]].to_dict("records"),
        "ignored": {reason: {"count": len(paths), "examples": paths[:5]} for reason, paths in found.ignored.items()},
        "duplicates_within_label": int(usable.duplicated(["content_hash", "label"]).sum()),
        "label_conflicts": int((hash_labels > 1).sum()),
        "preprocessing": {**prep.to_dict(), "mean": list(mean), "std": list(std)},
        "normalization_source": source,
    }
    return manifest, {**summary, "described": cache.added if cache else len(good)}


def prepare_data(spec: TaskSpec, out_dir: Path, settings: Settings | None = None) -> DataResult:
    """The data step: fetch the dataset version and write its manifest and summary (data.json)."""
    settings = settings or get_settings()
    md5 = ensure_dataset(spec, settings)
    dataset_dir = spec.dataset_dir(settings.project_dir)
    # Nothing changed (the same files, as of their stat, and the same data and input settings): the
    # previous manifest is this one. Otherwise new files are described, known ones come from the row cache.
    settings_key = json.dumps({"tree": tree_fingerprint(dataset_dir), "dir": str(dataset_dir.resolve()),
                               "dataset": spec.dataset.model_dump(mode="json"),
                               "input": spec.input.model_dump(mode="json")}, sort_keys=True)
    reuse = settings.home / "cache" / "manifests" / hashlib.sha256(settings_key.encode()).hexdigest()[:24]
    if (reuse / "summary.json").is_file():
        summary, described = json.loads((reuse / "summary.json").read_text()), 0
    else:
        manifest, summary = build_manifest(spec, dataset_dir, settings.home / "cache" / "manifest")
        described = summary.pop("described")  # not in data.json: it depends on the cache, not on the data
        with atomic_dir(reuse) as tmp:
            manifest.to_csv(tmp / MANIFEST, index=False)
            write_json(tmp / "summary.json", summary)
    with atomic_dir(out_dir) as tmp:
        shutil.copyfile(reuse / MANIFEST, tmp / MANIFEST)
        # The version id of the data: DVC's md5 when tracked, else a digest of every file's path and hash.
        manifest = read_manifest(tmp)
        digest = "".join(manifest["path"] + manifest["content_hash"].replace("", "-"))
        version = md5 or hashlib.sha256(digest.encode()).hexdigest()[:32]
        write_json(tmp / DATA_INFO, {
            "dataset_dir": _portable(dataset_dir, settings.project_dir), "dataset_md5": md5,
            "dataset_version": version, "max_pixels": spec.dataset.max_pixels, **summary,
        })
    return DataResult(out_dir / MANIFEST, dataset_dir, md5, summary["images"], described)


def _portable(dataset_dir: Path, project_dir: Path) -> str:
    """The dataset's place as data.json records it: relative to the project when inside it (every machine has
    its own checkout, at its own path), else absolute (a dataset outside the project is used where it is)."""
    if dataset_dir.is_relative_to(project_dir):
        return dataset_dir.relative_to(project_dir).as_posix()
    return str(dataset_dir)


def read_data_info(data_dir: Path) -> dict:
    return json.loads((data_dir / DATA_INFO).read_text())


def dataset_root(data_dir: Path, project_dir: Path | None = None) -> Path:
    """Where this machine holds the run's dataset: in its own project checkout (``project_dir``, default the
    configured one), never at a path another machine recorded."""
    recorded = Path(read_data_info(data_dir)["dataset_dir"])
    return recorded if recorded.is_absolute() else (project_dir or get_settings().project_dir) / recorded


def read_manifest(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / MANIFEST, dtype={"label": str, "problem": str}, keep_default_na=False,
                       na_values={"width": [""], "height": [""], "bytes": [""]})


def data_preprocessing(data_dir: Path) -> Preprocessing:
    """The run's preprocessing, normalization resolved (what the trained model is given)."""
    return Preprocessing.from_dict(read_data_info(data_dir)["preprocessing"])


def usable_images(data_dir: Path) -> pd.DataFrame:
    """The manifest's rows that are in a split, numbered from 0: the row numbers the decoded cache, the shards and
    training share."""
    manifest = read_manifest(data_dir)
    return manifest[manifest["split"].isin(SPLITS)].reset_index(drop=True)


def decoded_version(data_dir: Path, usable: pd.DataFrame) -> str:
    """What the decoded pixels of ``usable`` depend on, as a digest: the data version, the input size, channels
    and resize policy (not the normalization, applied later), and each file's content."""
    shape = json.dumps({**data_preprocessing(data_dir).to_dict(), "mean": None, "std": None}, sort_keys=True)
    text = read_data_info(data_dir)["dataset_version"] + shape + "".join(usable["content_hash"])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def split_files(data_dir: Path, split: str, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """One split's files and int64 class indices."""
    root = dataset_root(data_dir)
    rows = read_manifest(data_dir)
    rows = rows[rows["split"] == split]
    index = {name: i for i, name in enumerate(classes)}
    return [root / p for p in rows["path"]], np.array([index[label] for label in rows["label"]], dtype=np.int64)


def load_split(data_dir: Path, split: str, classes: list[str], prep: Preprocessing | None = None,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode one split (its first ``limit`` files) into (normalized NCHW float32 images, int64 class
    indices, file paths), with ``prep`` (default: the run's preprocessing). Training streams instead."""
    paths, labels = split_files(data_dir, split, classes)
    paths, labels = paths[:limit], labels[:limit]
    return preprocess_files(paths, prep or data_preprocessing(data_dir)), labels, paths

