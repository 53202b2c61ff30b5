"""Supply chain: every locked package carries its sha256, and an install refuses a wheel that does not match.

pip-audit needs a vulnerability database these machines cannot reach; docs/operations.md says how to run it.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

LOCKS = {"main": PROJECT / "requirements" / "main.lock", "tfx": PROJECT / "requirements" / "tfx.lock",
         "tools": PROJECT / "requirements" / "tools.lock", "serve": PROJECT / "requirements" / "serve.lock",
         "kserve": PROJECT / "requirements" / "kserve.lock"}


def _entries(lock) -> dict[str, list[str]]:
    """``name==version`` → its hashes, from a pip/uv lock with continuation lines."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        stripped = line.strip()
        if re.match(r"^[A-Za-z0-9]", line):
            current = stripped.split()[0].split(";")[0]
            entries[current] = []
        elif stripped.startswith("--hash=sha256:") and current:
            entries[current].append(stripped.split(":", 1)[1].split()[0])
    return entries


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_every_locked_package_is_pinned_with_a_hash(name):
    entries = _entries(LOCKS[name])
    assert len(entries) > 50
    unpinned = [req for req in entries if "==" not in req]
    unhashed = [req for req, hashes in entries.items() if not hashes]
    assert unpinned == [] and unhashed == []
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for hashes in entries.values() for h in hashes)


def test_setup_refuses_a_lock_whose_hash_does_not_match(tmp_path):
    """`make setup` itself (scripts/setup-venv.sh, run as is) stops on a wheel that does not match the lock, and
    leaves no environment behind that a later run would take as built."""
    root = tmp_path / "relay"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(PROJECT / "scripts" / "setup-venv.sh", root / "scripts")
    shutil.copytree(PROJECT / "requirements" / "shims", root / "requirements" / "shims")
    shutil.copy(_one_package_lock(tmp_path, "main", "six", corrupt=True), root / "requirements" / "main.lock")
    cache = tmp_path / "cache"
    result = subprocess.run(["bash", str(root / "scripts" / "setup-venv.sh")], cwd=root, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "RELAY_VENV_CACHE": str(cache)})
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stdout + result.stderr
    assert not list(cache.glob("main-*/.relay-complete")) and not (root / ".venv").exists()


def _one_package_lock(tmp_path, lock: str, package: str, corrupt: bool):
    entries = _entries(LOCKS[lock])
    requirement = next(req for req in entries if req.startswith(f"{package}=="))
    digest = entries[requirement][0]
    if corrupt:
        digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    path = tmp_path / f"{lock}-{'bad' if corrupt else 'good'}.lock"
    path.write_text(f"{requirement} \\\n    --hash=sha256:{digest}\n")
    return path


@pytest.mark.parametrize("corrupt", [False, True], ids=["matching hash installs", "wrong hash is refused"])
def test_pip_refuses_a_wheel_whose_hash_does_not_match_the_lock(tmp_path, corrupt):
    lock = _one_package_lock(tmp_path, "main", "six", corrupt)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--require-hashes", "--no-deps",
                             "--disable-pip-version-check", "--target", str(tmp_path / "target"), "-r", str(lock)],
                            capture_output=True, text=True, timeout=300)
    if corrupt:
        assert result.returncode != 0 and "DO NOT MATCH THE HASHES" in result.stdout + result.stderr
        assert not list((tmp_path / "target").glob("six*"))
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert list((tmp_path / "target").glob("six*"))


@pytest.mark.parametrize("corrupt", [False, True], ids=["matching hash installs", "wrong hash is refused"])
def test_uv_refuses_a_wheel_whose_hash_does_not_match_the_lock(tmp_path, corrupt):
    uv = PROJECT / ".venv" / "bin" / "uv"
    lock = _one_package_lock(tmp_path, "tools", "six", corrupt)
    venv = tmp_path / "venv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    result = subprocess.run([str(uv), "pip", "install", "--require-hashes", "--no-deps", "--python",
                             str(venv / "bin" / "python"), "-r", str(lock)], capture_output=True, text=True,
                            timeout=300)
    if corrupt:
        assert result.returncode != 0 and "hash mismatch" in (result.stdout + result.stderr).lower()
    else:
        assert result.returncode == 0, result.stderr[-2000:]
