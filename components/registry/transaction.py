"""All-or-nothing changes to the registry repository.

Registering a version, assigning a stage and pinning a version in a GitOps overlay each make commits
and GTO tags in a local clone, then push them. Either the remote takes all of them in one atomic push,
or the clone is reset to what it was, so nothing is ever half-registered or half-promoted.
"""

from __future__ import annotations

import fcntl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import RelayError
from components.versioning import git


def head(repo: Path) -> str | None:
    """The commit HEAD points at, or None in a repository without commits."""
    return git(["rev-parse", "--verify", "-q", "HEAD"], repo, check=False) or None


@contextmanager
def exclusive(repo: Path) -> Iterator[None]:
    """Hold the clone's lock: transactions on one machine queue here; across machines the remote
    rejects a stale push."""
    with open(repo / ".git" / "relay-registry.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync(repo: Path, remote: str | None) -> None:
    """Bring the clone up to date with its remote (tags included), if it has one."""
    if not remote:
        return
    proc = subprocess.run(["git", "fetch", "-q", "--tags", "origin"], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = next((line.strip() for line in proc.stderr.splitlines() if line.strip()), "(no output)")
        raise RelayError(f"the registry remote {remote} is not reachable: {reason}; nothing was changed")
    branch = _branch(repo)
    if git(["ls-remote", "--heads", "origin", branch], repo):
        git(["merge", "-q", "--ff-only", f"origin/{branch}"], repo)


def _branch(repo: Path) -> str:
    """The branch the clone checked out: the remote's default branch."""
    return git(["symbolic-ref", "--short", "HEAD"], repo)


def _tags(repo: Path) -> set[str]:
    return set(git(["tag", "--list"], repo).split())


class GitTransaction:
    """The commits and tags made in one change; see ``git_transaction``."""

    def __init__(self, repo: Path, remote: str | None):
        self.repo = repo
        self.remote = remote
        self.before = head(repo)
        self._tags_before = _tags(repo)

    @property
    def new_tags(self) -> list[str]:
        """The tags made since the change began (GTO's version and stage tags)."""
        return sorted(_tags(self.repo) - self._tags_before)

    def commit(self, message: str, *paths: str) -> str:
        """Stage ``paths`` (everything when none are named), commit them and return the new commit."""
        git(["add", "-A", *paths], self.repo)
        git(["commit", "-q", "-m", message], self.repo)
        return git(["rev-parse", "HEAD"], self.repo)

    def publish(self) -> None:
        """Push the branch and the new tags in one atomic push; when the remote refuses, undo and raise."""
        tags = self.new_tags
        if not self.remote or (head(self.repo) == self.before and not tags):
            return
        branch = _branch(self.repo)
        try:
            git(["push", "-q", "--atomic", "origin", f"HEAD:refs/heads/{branch}",
                 *[f"refs/tags/{tag}" for tag in tags]], self.repo)
        except RelayError as error:
            self.undo()
            reason = " ".join(str(error).split(": ", 1)[-1].split())  # one line
            raise RelayError(f"the registry remote {self.remote} refused the push ({reason}); nothing was "
                             "registered or promoted: the local registry was reset to match the remote. "
                             "Fix the remote and run the step again.") from None

    def undo(self) -> None:
        """Delete the new tags and reset the clone to where the transaction began."""
        for tag in self.new_tags:
            git(["tag", "-d", tag], self.repo, check=False)
        if self.before is not None:
            git(["reset", "-q", "--hard", self.before], self.repo)
            git(["clean", "-q", "-fd"], self.repo)


@contextmanager
def git_transaction(repo: Path, remote: str | None) -> Iterator[GitTransaction]:
    """One all-or-nothing change to ``repo``: the commits and tags the block makes are pushed when it ends,
    or undone when it raises or the remote refuses. The caller holds ``exclusive(repo)`` and has run ``sync``,
    so every tag that appears meanwhile is the block's own."""
    transaction = GitTransaction(repo, remote)
    try:
        yield transaction
    except BaseException:
        transaction.undo()
        raise
    transaction.publish()
