"""Git and DVC commands shared by the data, register and promote steps, run through their own CLIs (DVC's remote
config through its own Python API, which is what `dvc remote add` runs, without a process per call)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import RelayError
from components.object_store import is_s3, probe_s3, s3_failure_reason, storage_options
from components.settings import Settings

REMOTE_NAME = "relay"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Relay", "GIT_AUTHOR_EMAIL": "relay@localhost",
                "GIT_COMMITTER_NAME": "Relay", "GIT_COMMITTER_EMAIL": "relay@localhost"}


def git(args: list[str], repo: Path, check: bool = True) -> str:
    """Run git in ``repo`` with Relay's identity; raise RelayError with git's message on failure."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY})
    if check and proc.returncode != 0:
        raise RelayError(f"git {' '.join(args)} failed in {repo}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


class DvcError(RelayError):
    """A DVC command failed; ``reason`` is DVC's own explanation."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def dvc(args: list[str], repo: Path) -> str:
    """Run ``dvc ARGS`` in ``repo`` with this interpreter's DVC; raise DvcError with DVC's own reason
    (its ERROR lines, not the "Having any troubles?" footer)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATE_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        reason = dvc_reason(proc.stderr + proc.stdout)
        raise DvcError(f"dvc {' '.join(args)} failed in {repo}: {reason}", reason)
    return proc.stdout


def fetch_tracked_files(repo: Path, tracked_dir: str, names: list[str], dest: Path) -> None:
    """Download ``names`` (paths inside ``tracked_dir``, a directory DVC tracks in ``repo``, at the version its
    pointer records) to the same paths under ``dest``, from the DVC cache or the default remote: DVC's granular
    access (``DVCFileSystem``), which fetches these files alone, not the directory's others."""
    from dvc.api import DVCFileSystem

    DVCFileSystem(str(repo)).get([f"/{tracked_dir}/{name}" for name in names], [str(dest / name) for name in names])


def dvc_reason(output: str) -> str:
    """DVC's reason for a failure: its ERROR lines, without the "Having any troubles?" footer."""
    s3 = s3_failure_reason(output)
    if s3 is not None:  # S3 tracebacks run to many lines; what is wrong and what to do is one
        return s3
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    useful = [line for line in lines if not line.startswith(("Having any troubles", "+-", "|"))]
    return " ".join(errors) if errors else (useful[-1] if useful else "(no output)")


def remote_failure(url: str, settings: Settings, error: DvcError) -> str:
    """Why a DVC command against the remote ``url`` failed: for S3, what S3 itself says is wrong with the
    bucket when DVC's own words do not say (a missing bucket reads as missing files to DVC)."""
    if is_s3(url):
        return probe_s3(url, settings.s3_endpoint_url) or error.reason
    return error.reason


def remote_url(settings: Settings) -> str:
    """The DVC remote to use. The default directory is created; a configured one must exist."""
    if settings.dvc_remote is None:
        settings.default_dvc_remote.mkdir(parents=True, exist_ok=True)
        return str(settings.default_dvc_remote)
    url = settings.dvc_remote
    if "://" not in url and not Path(url).is_dir():
        raise RelayError(
            f"DVC remote directory {url} does not exist: create it, or set RELAY_DVC_REMOTE to an existing "
            "directory or a URL such as s3://bucket/path"
        )
    return url


def configure_remote(repo: Path, url: str, endpoint_url: str | None = None, committed: bool = False) -> None:
    """Make ``url`` the default remote of ``repo``: in its git-ignored local config, or with
    ``committed`` in ``.dvc/config``, so that every clone of the repo (a pod's `dvc get`) finds it.
    An s3:// remote gets ``endpoint_url`` (an S3-compatible server) as its endpointurl; credentials never
    go into a DVC config: DVC reads them from the AWS environment."""
    config_file = repo / ".dvc" / ("config" if committed else "config.local")
    if "://" not in url:  # a folder: where remote_url found it, whatever directory DVC would resolve it from
        url = str(Path(url).absolute())
    endpoint_url = endpoint_url if is_s3(url) else None
    if _configured_remote(config_file) == (url, endpoint_url):
        return  # already so
    from dvc.config import Config, ConfigError  # DVC's own config API: what `dvc remote add` runs, in-process

    remote = {"url": url, **({"endpointurl": endpoint_url} if endpoint_url else {})}
    try:
        with Config(str(repo / ".dvc")).edit("repo" if committed else "local") as config:
            config["remote"][REMOTE_NAME] = remote
            config["core"]["remote"] = REMOTE_NAME
    except ConfigError as error:
        raise RelayError(f"cannot make {url} the DVC remote of {repo}: {error}") from None


def nowhere_to_pull(repo: Path, url: str, md5: str, settings: Settings) -> bool:
    """True when the object ``md5`` (a pointer's hash) is neither in ``repo``'s DVC cache nor on the remote ``url``,
    so that `dvc pull` is bound to fail: a caller that can make the data spares that process (1 to 3 s). A remote
    that cannot be asked answers False, and the pull reports what is wrong with it."""
    if (repo / ".dvc" / "cache" / _object_key(md5)).exists():
        return False
    return remote_holds(url, md5, settings) is False


def remote_holds(url: str, md5: str, settings: Settings) -> bool | None:
    """Whether the DVC remote ``url`` holds the object ``md5``; None when it cannot be asked. A directory's object
    (its listing) is whole there: DVC uploads it only after every file it lists."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options(url, settings))
        return fs.exists(f"{root.rstrip('/')}/{_object_key(md5)}")
    except Exception:  # noqa: BLE001 - credentials, bucket or endpoint: DVC's own command says which, in one line
        return None


def _object_key(md5: str) -> str:
    """Where DVC 3 keeps the object ``md5``, in its cache and on its remotes alike."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def committed_remote(repo: Path) -> str | None:
    """The URL of Relay's remote when ``repo``'s committed ``.dvc/config`` makes it the default, else None. (Read
    from the file: `dvc remote list` wraps a long URL at the terminal's width.)"""
    configured = _configured_remote(repo / ".dvc" / "config")
    return configured[0] if configured else None


def _configured_remote(config_file: Path) -> tuple[str, str | None] | None:
    """The URL and endpoint of Relay's remote when a DVC config file makes it the default, else None."""
    from configobj import ConfigObj  # DVC's own config parser

    if not config_file.is_file():
        return None
    config = ConfigObj(str(config_file))
    if config.get("core", {}).get("remote") != REMOTE_NAME:
        return None
    remote = config.get(f'remote "{REMOTE_NAME}"', {})
    return remote.get("url"), remote.get("endpointurl")


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Serialize Relay's DVC work on one repo, so concurrent runs queue instead of failing on DVC's lock."""
    lock_path = repo / ".dvc" / "tmp" / "relay.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def remote_locked(settings: Settings) -> Iterator[str]:
    """Hold the project's repo lock with Relay's DVC remote configured as its default; yield the remote's URL."""
    url = remote_url(settings)
    with repo_lock(settings.project_dir):
        configure_remote(settings.project_dir, url, settings.s3_endpoint_url)
        yield url


def pointer_file(tracked: Path) -> Path:
    """The DVC pointer file of a tracked directory (``data/digits`` → ``data/digits.dvc``)."""
    return tracked.with_name(tracked.name + ".dvc")


def pointer_md5(pointer: Path) -> str | None:
    """The md5 recorded in a ``.dvc`` file, or None when there is none."""
    import yaml

    if not pointer.is_file():
        return None
    outs = (yaml.safe_load(pointer.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")
