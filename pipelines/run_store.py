"""Run directories addressed by URI, for steps on machines or pods that share no disk.

`relay step NAME --run-uri URI` (and each Airflow task when RELAY_RUNS_URI is set) downloads the run
(spec.json and earlier steps' outputs) from any fsspec URI (s3://… or file://…), runs the step on the local
copy, uploads what the step wrote, and deletes the local copy. Steps themselves only ever see local paths.

Publishing is all or nothing as far as readers can tell: a step counts as completed by its marker file
(RunDir.completed), which is removed from the store before the step's new files go up and uploaded after
all of them. A step that fails, or an upload that breaks half-way, leaves no marker: the step did not
complete, and its rerun replaces what it left.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec

from components.atomic import is_temp_name
from components.errors import RelayError
from components.object_store import storage_options, store_failures
from components.run_files import STEP_OUTPUTS, RunDir
from components.settings import Settings


class RunStoreError(RelayError):
    """The run store could not be read or written."""


def _snapshot(local: Path) -> dict[str, tuple[int, int]]:
    """Each file's (size, mtime) under ``local``, by its relative POSIX path; killed writers' temps left out."""
    files = {}
    for path in local.rglob("*"):
        relative = path.relative_to(local)
        if path.is_file() and not path.is_symlink() and not any(is_temp_name(part) for part in relative.parts):
            stat = path.stat()
            files[relative.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return files


def _reported(uri: str, doing: str, settings: Settings):
    return store_failures(uri, "run store", doing, settings, RunStoreError)


def is_uri(location: str) -> bool:
    return "://" in location


def airflow_run_location(task: str, airflow_run_id: str, settings: Settings) -> str:
    """Where an Airflow run of ``task`` lives: under RELAY_RUNS_URI when it is set (workers that share no disk),
    else in the local run directory its data task starts."""
    from pipelines.steps import airflow_run_dir

    run_dir = airflow_run_dir(task, airflow_run_id, settings)
    return f"{settings.runs_uri.rstrip('/')}/{task}/{run_dir.name}" if settings.runs_uri else str(run_dir)


def settings_for_run(location: str, settings: Settings) -> Settings:
    """``settings`` for stepping the run at ``location``. A run addressed by URI moves between machines as the runs
    under RELAY_RUNS_URI do, also when `relay step --run-uri` is run by hand without it: its data step must then pack
    the files for the other machines too (components.data.split_files). The URI's folder stands in for RELAY_RUNS_URI;
    the steps only ask whether that is a URL."""
    if settings.runs_uri or not is_uri(location):
        return settings
    return settings.model_copy(update={"runs_uri": location.rstrip("/").rsplit("/", 1)[0]})


@contextmanager
def run_at(location: str, settings: Settings) -> Iterator[Path]:
    """The run at ``location`` as a local directory: the path itself, or a local copy of a URI (see local_run)."""
    if not is_uri(location):
        yield Path(location)
        return
    with local_run(location, settings) as local:
        yield local


@contextmanager
def local_run(uri: str, settings: Settings) -> Iterator[Path]:
    """Yield a local copy of the run at ``uri``; when the block succeeds, publish what it changed back to
    ``uri`` (new and changed files, then the completion markers), and always delete the local copy."""
    root = uri.rstrip("/")
    local = settings.home / "run-cache" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    try:
        with _reported(uri, "download", settings):
            fs, path = fsspec.core.url_to_fs(root, **storage_options(uri, settings))
            _download(fs, path, local)
        before = _snapshot(local)
        yield local
        with _reported(uri, "upload", settings):
            _publish(fs, path, local, before)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _download(fs, root: str, local: Path) -> None:
    # find() lists by prefix: a new run is no files, while a missing bucket or a refused key raises with S3's
    # own words (exists() would say only "Forbidden").
    names = [name for name in fs.find(root) if not any(is_temp_name(part) for part in name.split("/"))]
    targets = [local / name[len(root) + 1:] for name in names]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    if names:
        fs.get(names, [str(target) for target in targets])


def _publish(fs, root: str, local: Path, before: dict[str, tuple[int, int]]) -> None:
    """Upload new and changed files and delete removed ones; a step whose outputs change has its marker taken
    down first and put back last, so no reader sees it completed with half of its files."""
    after = _snapshot(local)
    changed = sorted(name for name, stat in after.items() if before.get(name) != stat)
    removed = sorted(set(before) - set(after))
    step_of_folder = {folder: step for step, folders in STEP_OUTPUTS.items() for folder in folders}
    touched = {step_of_folder.get(name.split("/", 1)[0]) for name in changed + removed} - {None}
    markers = {step: RunDir(Path()).completed(step).as_posix() for step in touched}
    for marker in markers.values():
        if fs.exists(f"{root}/{marker}"):
            fs.rm_file(f"{root}/{marker}")
    outputs = [name for name in changed if name not in markers.values()]
    if outputs:  # in one call: fsspec uploads a list concurrently (S3: batch_size at a time)
        fs.put([str(local / name) for name in outputs], [f"{root}/{name}" for name in outputs])
    for name in removed:
        if fs.exists(f"{root}/{name}"):
            fs.rm_file(f"{root}/{name}")
    for marker in markers.values():
        if marker in after:
            _put(fs, local / marker, f"{root}/{marker}")


def _put(fs, source: Path, target: str) -> None:
    fs.put_file(str(source), target)  # no makedirs: on S3 it would create a missing bucket, hiding the error
