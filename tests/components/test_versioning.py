import subprocess
import sys

from components.versioning import REMOTE_NAME, committed_remote, configure_remote


def _dvc_config(repo, *args):
    """What DVC itself reads from the repo's config (its own CLI, not Relay's parser)."""
    return subprocess.run([sys.executable, "-m", "dvc", "config", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_remote_is_what_dvc_itself_reads_in_the_scope_asked(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)

    configure_remote(repo, "s3://bucket/dvc", "http://127.0.0.1:9000")
    assert _dvc_config(repo, "core.remote") == REMOTE_NAME
    assert _dvc_config(repo, "--local", f"remote.{REMOTE_NAME}.url") == "s3://bucket/dvc"
    assert _dvc_config(repo, "--local", f"remote.{REMOTE_NAME}.endpointurl") == "http://127.0.0.1:9000"
    assert committed_remote(repo) is None  # the git-ignored local config only

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared-remote").mkdir()
    configure_remote(repo, "shared-remote", "http://127.0.0.1:9000", committed=True)
    # a folder is where the caller found it (this directory), not relative to wherever DVC resolves it from
    assert committed_remote(repo) == str(tmp_path / "shared-remote")
    assert _dvc_config(repo, "--project", f"remote.{REMOTE_NAME}.url") == str(tmp_path / "shared-remote")
    assert "endpointurl" not in (repo / ".dvc" / "config").read_text()  # an endpoint is for s3:// only
