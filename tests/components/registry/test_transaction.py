"""The registry's all-or-nothing change, against a real bare git remote: pushed whole, or undone whole."""

import subprocess

import pytest

from components.errors import RelayError
from components.registry.transaction import exclusive, git_transaction, head, sync
from components.versioning import git


@pytest.fixture
def clone(tmp_path):
    """A clone of a bare remote with one commit on main."""
    remote = tmp_path / "registry.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(path)], check=True, capture_output=True)
    (path / "README.md").write_text("registry\n")
    git(["add", "-A"], path)
    git(["commit", "-q", "-m", "init"], path)
    git(["push", "-q", "origin", "HEAD:refs/heads/main"], path)
    return path, remote


def _remote_state(remote):
    return git(["rev-parse", "refs/heads/main"], remote), git(["tag", "--list"], remote).split()


def test_commits_and_tags_reach_the_remote_together(clone):
    path, remote = clone
    with exclusive(path):
        sync(path, str(remote))
        with git_transaction(path, str(remote)) as change:
            (path / "model.json").write_text("{}")
            commit = change.commit("register v0.1.0")
            git(["tag", "digits@v0.1.0"], path)
    assert _remote_state(remote) == (commit, ["digits@v0.1.0"])


def test_a_failure_inside_the_change_resets_the_clone_and_leaves_the_remote_alone(clone):
    path, remote = clone
    git(["tag", "digits@v0.0.1"], path)  # made before the change: not the change's to undo
    git(["push", "-q", "origin", "refs/tags/digits@v0.0.1"], path)
    before = _remote_state(remote)
    with pytest.raises(OSError, match="disk full"), git_transaction(path, str(remote)) as change:
        (path / "model.json").write_text("{}")
        change.commit("register v0.1.0")
        git(["tag", "digits@v0.1.0"], path)
        (path / "half-written").write_text("x")
        raise OSError("disk full")
    assert head(path) == before[0] and git(["tag", "--list"], path).split() == ["digits@v0.0.1"]
    assert not (path / "model.json").exists() and not (path / "half-written").exists()
    assert _remote_state(remote) == before


def test_a_refused_push_undoes_everything_and_says_so_in_one_line(clone):
    path, remote = clone
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'registry is read-only' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = _remote_state(remote)
    with pytest.raises(RelayError) as refused, git_transaction(path, str(remote)) as change:
        (path / "k8s.yaml").write_text("version: v0.1.0\n")
        change.commit("promote digits v0.1.0 to staging", "k8s.yaml")
        git(["tag", "digits#staging#1"], path)
    message = str(refused.value)
    assert "\n" not in message and f"the registry remote {remote} refused the push" in message
    assert "nothing was registered or promoted" in message
    assert head(path) == before[0] and not git(["tag", "--list"], path)
    assert _remote_state(remote) == before


def test_an_unreachable_remote_changes_nothing(clone, tmp_path):
    path, _ = clone
    before = head(path)
    gone = tmp_path / "gone.git"
    git(["remote", "set-url", "origin", str(gone)], path)
    with pytest.raises(RelayError) as unreachable:
        sync(path, str(gone))
    message = str(unreachable.value)
    assert "\n" not in message and f"the registry remote {gone} is not reachable: fatal: " in message
    assert message.endswith("nothing was changed")
    assert head(path) == before
