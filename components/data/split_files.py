"""How a machine that did not run the data step gets the image files a step opens: from packs, else from DVC.

From the DVC remote each image is one object, and two round trips (an existence check, then the GET): a worker
that trains on digits without its files fetches 1,797 objects. So when runs move between machines (RELAY_RUNS_URI
is a URL) and the shard store is one every worker reaches (RELAY_SHARDS_URI), the data step also packs each split's
original files, byte for byte, into WebDataset tars in the shard store: ``<store>/files/<key>/<split>-NNNNNN.tar``
(``<row>.file``; rows number the manifest's usable images, as in the decoded shards), then ``index.json``, written
last. ``<key>`` digests the usable rows' paths, splits and content hashes, so every run of one data version and
split shares the packs. A step fetches only the packs holding files it lacks, checks each file against the
manifest's content hash and renames it into this machine's checkout of the dataset.

The DVC remote stays the record of every version: the data step pushes it as before, and a run without packs (a
shard store on one machine's disk, packs deleted) gets its files from DVC. Packs are one more copy of the data per
version (DVC stores each file once across versions): what fewer, larger objects cost.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import webdataset as wds

from components import versioning
from components.atomic import scratch_beside, write_json
from components.data.dataset import (SPLITS, dataset_root, ensure_dataset, read_data_info, read_manifest,
                                     usable_images)
from components.data.shards import INDEX, open_store, runs_move_between_machines
from components.errors import RelayError
from components.object_store import store_failures
from components.run_files import FILE_PACKS
from components.settings import Settings
from components.spec import TaskSpec

log = logging.getLogger(__name__)
# Above this share of a version's files, one `dvc pull` of the whole version is quicker than fetching each file.
_WHOLE_VERSION_ABOVE = 0.5


def packs_reach_other_machines(settings: Settings) -> bool:
    """Whether the data step packs the original files: runs move between machines, through a shard store they
    all reach."""
    return runs_move_between_machines(settings) and "://" in settings.shard_store


def write_file_packs(spec: TaskSpec, data_dir: Path, settings: Settings) -> dict:
    """Pack the usable images' files of the run in ``data_dir`` into the shard store (unless packs of the same rows
    are there) and record where in ``data_dir/file_packs.json``; return that record."""
    usable = usable_images(data_dir)
    rows = "".join(usable["path"] + "|" + usable["split"] + "|" + usable["content_hash"] + "\n")
    url = f"{settings.shard_store.rstrip('/')}/files/{hashlib.sha256(rows.encode()).hexdigest()[:24]}"
    fs, root, index = open_store(url, settings)
    if index is None:
        index = _pack(fs, root, url, dataset_root(data_dir, settings.project_dir), usable,
                      int(spec.training.shards.shard_mb * 2**20), settings)
    record = {"url": url, **index}
    write_json(data_dir / FILE_PACKS, record)
    return record


def _pack(fs, root: str, url: str, images: Path, usable: pd.DataFrame, pack_bytes: int, settings: Settings) -> dict:
    """Each split's files into tars of about ``pack_bytes``, uploaded to ``url`` one by one, then the index."""
    index: dict = {"splits": {}}
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.home, prefix=".packs-") as scratch:
        for split in SPLITS:
            members = usable.index[usable["split"] == split]
            index["splits"][split] = []
            for rows in _groups([int(row) for row in members], usable.loc[members, "bytes"].astype(int), pack_bytes):
                name = f"{split}-{len(index['splits'][split]):06d}.tar"
                local = Path(scratch) / name
                with wds.TarWriter(str(local)) as sink:
                    for row in rows:
                        sink.write({"__key__": f"{row:09d}", "file": _described(images, usable, row)})
                with store_failures(url, "shard store", f"uploading {name}", settings):
                    fs.put_file(str(local), f"{root}/{name}")
                local.unlink()
                index["splits"][split].append({"name": name, "rows": rows})
        with store_failures(url, "shard store", f"uploading {INDEX}", settings):
            fs.pipe_file(f"{root}/{INDEX}", json.dumps(index).encode())  # last: the packs are whole
    return index


def _groups(rows: list[int], sizes: Iterable[int], pack_bytes: int) -> Iterator[list[int]]:
    """``rows`` in order, cut into groups whose files add up to ``pack_bytes`` or just over (the last: less)."""
    group, size = [], 0
    for row, file_size in zip(rows, sizes):
        group.append(row)
        size += file_size
        if size >= pack_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


def _described(images: Path, usable: pd.DataFrame, row: int) -> bytes:
    """Row ``row``'s file as the manifest describes it: a file changed since is refused, not packed."""
    path = images / usable.at[row, "path"]
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != usable.at[row, "content_hash"]:
        raise RelayError(f"{path} changed while the data step ran (its content no longer matches the manifest): "
                         "rerun the data step")
    return content


def ensure_split_files(spec: TaskSpec, data_dir: Path, splits: tuple[str, ...], settings: Settings) -> None:
    """Make sure this machine's checkout holds the files of ``splits`` that the run in ``data_dir`` reads, of the
    run's dataset version: from the run's packs when it has them, else from the DVC remote (only those files, or
    the whole version when they are most of it). A step that reads the test split never downloads the training
    images."""
    root = dataset_root(data_dir, settings.project_dir)
    manifest = read_manifest(data_dir)
    missing = [path for path in manifest.loc[manifest["split"].isin(splits), "path"] if not (root / path).is_file()]
    if missing and (data_dir / FILE_PACKS).is_file():
        missing = _unpack(data_dir, root, set(missing), settings)
    if not missing:
        return
    expected = read_data_info(data_dir)["dataset_md5"]
    if expected is None or len(missing) > _WHOLE_VERSION_ABOVE * len(manifest):
        _same_version(spec, expected, ensure_dataset(spec, settings))
        return
    repo = settings.project_dir
    pointer = versioning.pointer_file(root)
    with versioning.remote_locked(settings) as url:
        _same_version(spec, expected, versioning.pointer_md5(pointer))
        # Fetched beside the dataset and renamed into place: a fetch cut short leaves no truncated image behind.
        with scratch_beside(root) as scratch:
            with store_failures(url, "DVC remote", f"fetching {len(missing)} files of {pointer.name}", settings):
                versioning.fetch_tracked_files(repo, root.relative_to(repo).as_posix(), missing, scratch)
            for path in missing:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(scratch / path, root / path)


def _unpack(data_dir: Path, root: Path, missing: set[str], settings: Settings) -> list[str]:
    """Fetch the packs that hold any of ``missing`` (paths under ``root``) and put those files in place, each
    checked against its content hash; return the paths still missing (a pack no longer in the store)."""
    record = json.loads((data_dir / FILE_PACKS).read_text())
    usable = usable_images(data_dir)
    wanted = {int(row): path for row, path in zip(usable.index, usable["path"]) if path in missing}
    fs, store = open_store(record["url"], settings)[:2]
    with scratch_beside(root) as scratch:
        for pack in (pack for packs in record["splits"].values() for pack in packs):
            if not wanted.keys() & set(pack["rows"]):
                continue
            url = f"{record['url']}/{pack['name']}"
            with store_failures(url, "shard store", f"fetching {pack['name']}", settings):
                try:
                    data = fs.cat_file(f"{store}/{pack['name']}")
                except FileNotFoundError:
                    log.warning("%s is gone from the shard store: its files come from the DVC remote", url)
                    continue
            for sample in wds.tarfile_samples([{"url": url, "stream": io.BytesIO(data)}]):
                row = int(sample["__key__"])
                if row not in wanted:
                    continue
                path, content = wanted.pop(row), sample["file"]
                if hashlib.sha256(content).hexdigest() != usable.at[row, "content_hash"]:
                    raise RelayError(f"{url} holds {path} with another content than the run's manifest records: the "
                                     "shard store was changed by hand; delete that pack's folder and rerun the data "
                                     "step")
                (scratch / path).parent.mkdir(parents=True, exist_ok=True)
                (scratch / path).write_bytes(content)
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                os.replace(scratch / path, root / path)
    return sorted(wanted.values())


def _same_version(spec: TaskSpec, expected: str | None, actual: str | None) -> None:
    if expected and actual != expected:
        raise RelayError(f"this run used dataset version {expected}, but this checkout's {spec.dataset.path}.dvc "
                         f"records {actual}: check out the matching {spec.dataset.path}.dvc")
