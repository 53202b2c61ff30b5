"""The data step: make sure the versioned dataset is present, then describe it in a manifest.

The manifest has one row per image (path, label, size, mode, bytes, content hash, readable) and the
seeded train/test split, so every later step reads the same held-out set for this data version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from components import versioning
from components.atomic import atomic_dir, write_json
from components.errors import RelayError
from components.imaging import ImageRejected, ImageTooLarge, decode_image, open_checked, to_batch
from components.settings import Settings, get_settings
from pipelines.spec import DEFAULT_MAX_PIXELS, TaskSpec

MANIFEST = "manifest.csv"
IMAGE_SUFFIXES = {".png"}


@dataclass(frozen=True)
class DataResult:
    manifest: Path
    dataset_dir: Path
    dataset_md5: str | None
    images: int


def write_sklearn_digits(dest: Path) -> int:
    """Write scikit-learn's digits as ``dest/<label>/<index>.png``, byte-for-byte reproducibly."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 intensities scaled to 0..255 with integer arithmetic: no float rounding differences.
    pixels = (digits.images.astype(np.int64) * 255 + 8) // 16
    with atomic_dir(dest) as tmp:
        for index, (image, label) in enumerate(zip(pixels.astype(np.uint8), digits.target, strict=True)):
            folder = tmp / str(label)
            folder.mkdir(exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{index:04d}.png", format="PNG", optimize=False)
    return len(digits.target)


def ensure_dataset(spec: TaskSpec, settings: Settings) -> str | None:
    """Bring the DVC-tracked dataset into the workspace; return its DVC md5.

    A fresh clone pulls it from the remote. When the remote does not have it yet and the dataset is
    the built-in one, it is regenerated, checked against the committed hash and pushed.
    """
    dataset_dir = spec.dataset_dir(settings.project_dir)
    pointer = dataset_dir.with_name(dataset_dir.name + ".dvc")
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
    url = versioning.remote_url(settings)
    with versioning.repo_lock(repo):
        versioning.configure_remote(repo, url)
        expected = versioning.pointer_md5(pointer)
        if expected is not None:
            try:
                versioning.dvc(["pull", rel], repo)
                return expected
            except versioning.DvcError as error:
                if spec.dataset.source != "sklearn-digits":
                    raise RelayError(f"cannot fetch {rel} from DVC remote {url}: {error}") from None
        elif spec.dataset.source != "sklearn-digits":
            raise RelayError(f"{rel} does not exist: add the dataset with `dvc add {dataset_dir.relative_to(repo)}`")
        write_sklearn_digits(dataset_dir)
        versioning.dvc(["add", str(dataset_dir.relative_to(repo))], repo)
        actual = versioning.pointer_md5(pointer)
        if expected is not None and actual != expected:
            raise RelayError(
                f"regenerated {dataset_dir.name} hashes to {actual}, but {rel} records {expected}: "
                "the generator changed; restore the committed pointer with `git checkout " + rel + "`"
            )
        try:
            versioning.dvc(["push", rel], repo)
        except versioning.DvcError as error:
            raise RelayError(f"cannot push {rel} to the DVC remote {url}: {error.reason}") from None
        return actual


def _describe_image(path: Path, max_pixels: int) -> dict:
    """One manifest row's facts about an image file. An oversized image raises ImageTooLarge, undecoded."""
    raw = path.read_bytes()
    row = {"bytes": len(raw), "content_hash": hashlib.sha256(raw).hexdigest(), "readable": True}
    try:
        with open_checked(raw, max_pixels, str(path)) as image:
            image.load()
            row.update(width=image.width, height=image.height, mode=image.mode,
                       mean_intensity=float(np.asarray(image.convert("L"), dtype=np.float32).mean() / 255))
    except ImageTooLarge:
        raise
    except (ImageRejected, OSError, SyntaxError, ValueError):
        row.update(width=None, height=None, mode=None, mean_intensity=None, readable=False)
    return row


def split_by_hash(manifest: pd.DataFrame, test_fraction: float, seed: int) -> pd.Series:
    """Assign 'train' or 'test' per content hash, stratified by label and seeded.

    Identical images share a hash and therefore a split, so none leaks from train into test.
    """
    firsts = manifest.drop_duplicates("content_hash").sort_values(["label", "content_hash"])
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for _, group in firsts.groupby("label", sort=True):
        hashes = group["content_hash"].to_numpy()
        order = rng.permutation(len(hashes))
        n_test = math.ceil(len(hashes) * test_fraction) if len(hashes) > 1 else 0
        for rank, position in enumerate(order):
            split_of[hashes[position]] = "test" if rank < n_test else "train"
    return manifest["content_hash"].map(split_of)


def build_manifest(dataset_dir: Path, test_fraction: float, seed: int,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[pd.DataFrame, dict[str, int]]:
    """Describe every image under ``dataset_dir/<label>/``; also count images per label folder.

    Images over ``max_pixels`` stop the step with one error naming them; none of them is decoded.
    """
    if not dataset_dir.is_dir():
        raise RelayError(f"dataset directory {dataset_dir} does not exist")
    rows, counts, oversized = [], {}, []
    for folder in sorted(p for p in dataset_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        counts[folder.name] = len(files)
        for path in files:
            try:
                rows.append({"path": str(path.relative_to(dataset_dir)), "label": folder.name,
                             **_describe_image(path, max_pixels)})
            except ImageTooLarge as error:
                oversized.append(str(error))
    if oversized:
        raise RelayError(f"{len(oversized)} image(s) over the pixel limit, none decoded: {'; '.join(oversized[:3])}"
                         f"{' …' if len(oversized) > 3 else ''}. Remove them, or raise dataset.image.max_pixels "
                         "in the task spec if they are genuine.")
    columns = ["path", "label", "width", "height", "mode", "bytes", "mean_intensity", "content_hash", "readable"]
    manifest = pd.DataFrame(rows, columns=columns)
    manifest["split"] = split_by_hash(manifest, test_fraction, seed) if rows else pd.Series(dtype=str)
    return manifest, counts


def prepare_data(spec: TaskSpec, out_dir: Path, settings: Settings | None = None) -> DataResult:
    """The data step: fetch the dataset version and write its manifest and per-class counts."""
    settings = settings or get_settings()
    md5 = ensure_dataset(spec, settings)
    dataset_dir = spec.dataset_dir(settings.project_dir)
    manifest, counts = build_manifest(dataset_dir, spec.dataset.test_fraction, spec.dataset.split_seed,
                                      spec.dataset.image.max_pixels)
    with atomic_dir(out_dir) as tmp:
        manifest.to_csv(tmp / MANIFEST, index=False)
        # The version id of the data: DVC's md5 when tracked, else a digest of every file's path and hash.
        version = md5 or hashlib.sha256("".join(manifest["path"] + manifest["content_hash"]).encode()).hexdigest()[:32]
        write_json(tmp / "data.json", {
            "dataset_dir": str(dataset_dir), "dataset_md5": md5, "dataset_version": version, "images": len(manifest),
            "max_pixels": spec.dataset.image.max_pixels, "class_counts": counts, "split_counts": manifest["split"].value_counts().to_dict(),
        })
    return DataResult(out_dir / MANIFEST, dataset_dir, md5, len(manifest))


def read_data_info(data_dir: Path) -> dict:
    return json.loads((data_dir / "data.json").read_text())


def load_split(data_dir: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode one split into (NCHW float32 images, int64 class indices, file paths)."""
    info = read_data_info(data_dir)
    manifest = pd.read_csv(data_dir / MANIFEST, dtype={"label": str})
    rows = manifest[manifest["split"] == split]
    root = Path(info["dataset_dir"])
    paths = [root / p for p in rows["path"]]
    index = {name: i for i, name in enumerate(classes)}
    max_pixels = info.get("max_pixels", DEFAULT_MAX_PIXELS)
    images = to_batch([decode_image(p, max_pixels) for p in paths]) if paths else np.zeros((0, 1, 1, 1), np.float32)
    labels = np.array([index[label] for label in rows["label"]], dtype=np.int64)
    return images, labels, paths
