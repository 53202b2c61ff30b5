"""The model registry: a git repository, separate from the code checkout, holding each model
version's DVC pointer and gate report, with GTO tags for versions and stages.

By default it is a local repository under RELAY_HOME that Relay creates; with RELAY_REGISTRY_REMOTE
set it tracks that git remote and pushes every registration (commit and tag) to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import semver

from components import versioning
from components.versioning import git
from components.atomic import sha256_file, write_json
from components.errors import RelayError
from components.object_store import describe_remote
from components.registry.transaction import GitTransaction, exclusive, git_transaction, sync
from components.run_files import GATE_JSON
from components.settings import Settings, get_settings

LOCAL_BRANCH = "main"  # a registry without a remote; with one, the remote's default branch (its HEAD)
MODEL_JSON = "model.json"


@dataclass(frozen=True)
class Registration:
    task: str
    version: str  # "v1.2.0"
    tag: str  # "digits@v1.2.0"
    commit: str
    artifacts_dir: Path
    reused: bool = False  # True: this run was registered before (a retried step); nothing new was made


class ModelRegistry:
    """The registry repository for one machine (or one remote)."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.path = self.settings.registry_dir
        self.remote = self.settings.registry_remote

    def ensure(self) -> ModelRegistry:
        """Create (or clone) the registry repository and commit its DVC remote to ``.dvc/config``.

        The remote is committed, not kept in the git-ignored ``.dvc/config.local``, so that a plain
        ``git clone`` of the registry (a serving pod's ``relay fetch-model``) can fetch the artifacts.
        """
        if not (self.path / ".git").is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.remote:
                # A clone checks out the remote's HEAD, even an unborn one (`git init --bare` → master).
                proc = subprocess.run(["git", "clone", "-q", self.remote, str(self.path)], capture_output=True,
                                      text=True)
                if proc.returncode != 0:
                    raise RelayError(f"cannot clone the registry remote {self.remote}: {proc.stderr.strip()}")
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                git(["init", "-q", "-b", LOCAL_BRANCH], self.path)
        url = versioning.remote_url(self.settings)
        with self.locked(), self.transaction() as change:
            if not (self.path / ".dvc").is_dir():
                versioning.dvc(["init", "-q"], self.path)
                (self.path / "README.md").write_text(
                    "# Relay model registry\n\nEach model version is a GTO tag `<task>@vX.Y.Z` on a commit holding\n"
                    "`models/<task>/artifacts.dvc` (ONNX model, .mar, gate.json in DVC) and the gate report.\n"
                    "The DVC remote holding the artifacts is in `.dvc/config`.\n")
            versioning.configure_remote(self.path, url, self.settings.s3_endpoint_url, committed=True)
            if git(["status", "--porcelain"], self.path):
                change.commit("Initialize the Relay model registry" if change.before is None else f"DVC remote: {url}")
        return self

    def dvc_remote(self) -> str | None:
        """The DVC remote URL committed in the registry (what a clone of it fetches from)."""
        return versioning.committed_remote(self.path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry lock and bring the clone up to date with its remote."""
        with exclusive(self.path):
            sync(self.path, self.remote)
            yield

    def transaction(self) -> AbstractContextManager[GitTransaction]:
        """One all-or-nothing change (commits and tags pushed together, or undone); inside ``locked()``."""
        return git_transaction(self.path, self.remote)

    def versions(self, task: str) -> list[dict]:
        """Registered versions of ``task``, newest first: ``{version, stages, commit, created_at}``."""
        return [{"version": row["version"], "commit": row["commit_hexsha"], "created_at": row["created_at"],
                 "stages": [stage["stage"] for stage in row.get("stages", []) if stage.get("is_active")]}
                for row in self._gto_versions(task)]

    def _gto_versions(self, task: str) -> list[dict]:
        import gto.api

        if not (self.path / ".git").is_dir():
            return []
        from gto.exceptions import ArtifactNotFound

        try:
            rows = gto.api.show(str(self.path), name=task, table=False)
        except ArtifactNotFound:
            return []
        rows = rows[0] if isinstance(rows, tuple) else rows
        # Registered versions only: GTO also lists the newest commit as an unregistered "version" (named by its
        # hexsha, with no registration) once another task's registration moved HEAD past this task's last one;
        # its registered_only option does not filter this listing.
        return [row for row in rows if row.get("registrations")]

    def next_version(self, task: str) -> str:
        import gto.api

        from gto.exceptions import ArtifactNotFound

        try:
            latest = gto.api.find_latest_version(str(self.path), task)
        except ArtifactNotFound:
            latest = None
        if latest is None:
            return "v0.1.0"
        return "v" + str(semver.Version.parse(latest.version.lstrip("v")).bump_minor())

    def stage_version(self, task: str, stage: str) -> str | None:
        """The version currently assigned to ``stage`` (e.g. production), or None."""
        import gto.api

        if not (self.path / ".git").is_dir():
            return None
        from gto.exceptions import ArtifactNotFound

        try:
            found = gto.api.find_versions_in_stage(str(self.path), task, stage)
        except ArtifactNotFound:
            return None
        if not found:
            return None
        found = found if isinstance(found, list) else [found]
        return found[0].version

    def register(self, task: str, build: Callable[[str, Path], None], metadata: dict) -> Registration:
        """Register a new version of ``task``.

        ``build(version, dir)`` writes the version's artifacts into ``dir``. They are DVC-tracked and
        pushed, the pointer, the gate report and each artifact's sha256 are committed, then GTO tags the
        commit and both are pushed. Everything from choosing the version to the push happens under one
        lock, so registrations never race; if any part fails, the local registry is reset and nothing is
        registered. A run that was registered before (a retried step) gets its earlier version back.
        """
        import gto.api

        self.ensure()
        with self.locked():
            if metadata.get("run_id") and (earlier := self.version_of_run(task, metadata["run_id"])):
                return Registration(task, earlier, f"{task}@{earlier}",
                                    git(["rev-parse", f"{task}@{earlier}^{{commit}}"], self.path),
                                    self.path / "models" / task / "artifacts", reused=True)
            version = self.next_version(task)
            tag = f"{task}@{version}"
            model_dir = self.path / "models" / task
            artifacts = model_dir / "artifacts"
            staging = model_dir / ".artifacts.incoming"
            with self.transaction() as change:
                try:
                    shutil.rmtree(staging, ignore_errors=True)
                    staging.mkdir(parents=True)
                    build(version, staging)
                    digests = {p.relative_to(staging).as_posix(): sha256_file(p)
                               for p in sorted(staging.rglob("*")) if p.is_file()}
                    shutil.rmtree(artifacts, ignore_errors=True)
                    staging.rename(artifacts)
                    for report in artifacts.glob("gate.*"):  # the gate report is readable in git, beside the pointer
                        shutil.copy2(report, model_dir / report.name)
                    write_json(model_dir / MODEL_JSON,
                               {**metadata, "task": task, "version": version, "sha256": digests})
                    self._annotate(task)
                    rel = str(artifacts.relative_to(self.path))
                    versioning.dvc(["add", "-q", rel], self.path)
                    try:
                        versioning.dvc(["push", rel + ".dvc"], self.path)
                    except versioning.DvcError as error:
                        url = self.dvc_remote() or ""
                        raise RelayError(f"cannot push {task} {version} to the DVC remote "
                                         f"{describe_remote(url, self.settings)}: "
                                         f"{versioning.remote_failure(url, self.settings, error)}; "
                                         "nothing was registered") from None
                    commit = change.commit(f"{task} {version}: register (gate passed)")
                    self._after_last_tag_second()
                    gto.api.register(str(self.path), task, ref="HEAD", version=version,
                                     message=f"Register {task} {version}", author="Relay",
                                     author_email="relay@localhost")
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    shutil.rmtree(artifacts, ignore_errors=True)  # restored from DVC for the previous version on use
                    raise
            return Registration(task, version, tag, commit, artifacts)

    def version_of_run(self, task: str, run_id: str) -> str | None:
        """The version registered from run ``run_id``, if any."""
        for row in self.versions(task):
            if self.model_info(task, row["version"]).get("run_id") == run_id:
                return row["version"]
        return None

    def version_with_model(self, task: str, model_sha256: str, preprocessing_sha256: str) -> str | None:
        """The newest version whose ONNX model and preprocessing are these exact bytes, if any."""
        for row in self.versions(task):
            digests = self.model_info(task, row["version"]).get("sha256", {})
            if digests.get("model.onnx") == model_sha256 and digests.get("preprocessing.json") == preprocessing_sha256:
                return row["version"]
        return None

    def model_info(self, task: str, version: str) -> dict:
        """A version's ``model.json``: run, framework, dataset, spec and each artifact's sha256."""
        return json.loads(self.read_file(task, version, MODEL_JSON))

    def _annotate(self, task: str) -> None:
        import yaml

        path = self.path / "artifacts.yaml"
        entries = yaml.safe_load(path.read_text()) if path.exists() else {}
        entries = entries or {}
        entries[task] = {"type": "model", "path": f"models/{task}/artifacts",
                         "description": f"Relay model for task {task}"}
        path.write_text(yaml.safe_dump(entries, sort_keys=True))

    def assign(self, task: str, version: str, stage: str) -> None:
        """Assign ``stage`` to ``version`` with a GTO tag (and push it)."""
        with self.locked(), self.transaction():
            self.assign_unlocked(task, version, stage)

    def _after_last_tag_second(self) -> None:
        # GTO orders events by their tag's timestamp, which has one-second resolution: two stage events
        # in the same second (unassign old, assign new) could be read in either order.
        newest = git(["for-each-ref", "--sort=-creatordate", "--count=1", "--format=%(creatordate:unix)",
                      "refs/tags"], self.path)
        while newest and int(newest) >= int(time.time()):
            time.sleep(0.05)

    def assign_unlocked(self, task: str, version: str, stage: str) -> None:
        """The GTO stage assignment alone, a tag; the caller holds ``locked()`` inside a ``transaction()``."""
        import gto.api

        self._after_last_tag_second()
        # force: a rollback re-assigns a stage the version held before; each event gets its own tag.
        gto.api.assign(str(self.path), task, stage, version=version, force=True, author="Relay",
                       author_email="relay@localhost")

    def unassign_unlocked(self, task: str, version: str, stage: str) -> None:
        """Take ``stage`` away from ``version`` (a GTO unassignment tag); the caller holds ``locked()`` inside a
        ``transaction()``."""
        import gto.api

        self._after_last_tag_second()
        gto.api.unassign(str(self.path), task, version=version, stage=stage, author="Relay",
                         author_email="relay@localhost")

    def was_in_stage(self, task: str, version: str, stage: str) -> bool:
        """Whether ``version`` was ever assigned ``stage`` (GTO tags ``task#stage#N`` on its commit)."""
        commit = git(["rev-parse", f"{task}@{version}^{{commit}}"], self.path)
        return bool(git(["tag", "--list", f"{task}#{stage}#*", "--points-at", commit], self.path))

    def read_file(self, task: str, version: str, name: str) -> str:
        """A git-tracked file of a version (``gate.json``, ``model.json``) as text."""
        return git(["show", f"{task}@{version}:models/{task}/{name}"], self.path)

    def gate(self, task: str, version: str) -> dict:
        return json.loads(self.read_file(task, version, GATE_JSON))

    def artifact_bytes(self, task: str, version: str, name: str) -> bytes:
        """A DVC-tracked artifact of a version (e.g. ``model.onnx``), from the cache or the remote.

        Its sha256 must equal the one committed at registration, so a swapped file in the DVC cache or
        remote is refused.
        """
        import dvc.api

        data = dvc.api.read(f"models/{task}/artifacts/{name}", repo=str(self.path), rev=f"{task}@{version}",
                            mode="rb")
        expected = self.model_info(task, version).get("sha256", {}).get(name)
        if expected is None:
            raise RelayError(f"the registry has no sha256 for {task} {version} {name}: register the model again")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise RelayError(f"{task} {version} {name} from the DVC store has sha256 {actual[:12]}…, but the registry "
                             f"recorded {expected[:12]}…: refusing a swapped artifact")
        return data
