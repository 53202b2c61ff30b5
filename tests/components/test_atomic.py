import pytest

from components.atomic import atomic_dir, write_json


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
