import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.atomic import atomic_dir, is_temp_name, reclaim_stale, scratch_beside, write_json
from tests.conftest import PROJECT


def test_atomic_dir_replaces_target_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp leftovers

    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"


def test_write_json_leaves_old_file_when_serialization_fails(tmp_path):
    path = write_json(tmp_path / "gate.json", {"passed": True})
    with pytest.raises(TypeError):
        write_json(path, {1j: "complex keys cannot be JSON"})
    assert path.read_text().strip().startswith("{")
    assert '"passed": true' in path.read_text()


def _python(code: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env={**os.environ,
                            "PYTHONPATH": str(PROJECT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_writer_leaves_a_temp_that_the_next_writer_reclaims(tmp_path):
    target = tmp_path / "train"
    writer = _python(f"""
        import time
        from components.atomic import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "weights").write_text("half")
            print("writing", flush=True)
            time.sleep(60)
    """, tmp_path)
    assert writer.stdout.readline().strip() == "writing"
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".train.tmp-")]
    assert reclaim_stale(target) == []  # the writer still runs: its temp is not touched
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert leftover.exists() and not target.exists()  # SIGKILL runs no cleanup: nothing published

    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert (target / "weights").read_text() == "whole"


def test_a_full_disk_publishes_nothing_and_says_so(tmp_path):
    """RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails with ENOSPC."""
    target = tmp_path / "optimize"
    with atomic_dir(target) as tmp:
        (tmp / "model.onnx").write_bytes(b"old model")
    writer = _python(f"""
        import resource, signal, sys
        from components.atomic import atomic_dir, write_json
        from components.errors import RelayError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            with atomic_dir({str(target)!r}) as tmp:
                write_json(tmp / "optimize.json", {{"ok": True}})
                with open(tmp / "model.onnx", "wb") as handle:
                    handle.write(b"x" * 1024 * 1024)
        except RelayError as error:
            print(error)
            sys.exit(3)
    """, tmp_path)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 3, err
    assert f"writing {target} failed: the file size limit was reached" in out and "nothing was published" in out
    assert (target / "model.onnx").read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimize"]


def test_temp_names_are_recognised():
    assert is_temp_name(".train.tmp-123-abc") and is_temp_name(".model.onnx.old-5-x")
    assert not is_temp_name("model.onnx") and not is_temp_name(".dvc")


def test_a_scratch_dir_beside_a_target_is_gone_however_its_block_ends(tmp_path):
    """Files fetched into the scratch dir leave it by rename (same filesystem); what stays is removed."""
    target = tmp_path / "dataset"
    with scratch_beside(target) as scratch:
        assert scratch.parent == tmp_path and is_temp_name(scratch.name)
        (scratch / "kept.png").write_bytes(b"x")
        os.replace(scratch / "kept.png", tmp_path / "kept.png")
        (scratch / "left.png").write_bytes(b"y")
    with pytest.raises(RuntimeError), scratch_beside(target) as scratch:
        (scratch / "half.png").write_bytes(b"z")
        raise RuntimeError("fetch cut short")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png"]
