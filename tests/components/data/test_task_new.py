"""`relay task new`: the scan, the proposed spec, and the refusals (the whole path is in tests/e2e)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components.errors import RelayError
from components.spec import load_spec
from components.data.task_new import create_task, propose_spec, scan
from tests.conftest import make_settings


def _folder(root, classes=("cat", "dog"), count=12, size=(120, 90), mode="RGB"):
    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / label / f"{index}.jpg" if mode != "L" else
                                                       root / label / f"{index}.png")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "pipelines" / "specs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    monkeypatch.setenv("RELAY_PROJECT_DIR", str(root))
    return root


def test_the_proposed_spec_follows_the_data(tmp_path):
    found = scan(_folder(tmp_path / "photos"))
    spec = propose_spec("pets", found, None)
    assert found.classes == ["cat", "dog"] and found.formats == {"JPEG": 24}
    assert spec["input"] == {"size": [64, 64], "channels": 3, "resize": "stretch", "normalization": "auto"}
    _folder(tmp_path / "mixed" / "wide", classes=("cat",), size=(120, 90))
    _folder(tmp_path / "mixed" / "tall", classes=("dog",), size=(90, 120))
    mixed = propose_spec("mixed", scan(tmp_path / "mixed"), None)
    assert mixed["input"]["resize"] == "center_crop"  # aspect ratios vary: keep them, crop the overflow
    assert spec["model"]["name"] == "resnet" and spec["dataset"]["on_bad_file"] == "fail"
    grey = propose_spec("scans", scan(_folder(tmp_path / "scans", size=(24, 24), mode="L")), None)
    assert grey["input"]["channels"] == 1 and grey["input"]["size"] == [24, 24]
    assert grey["input"]["resize"] == "stretch"


@pytest.mark.slow  # DVC push
def test_create_task_writes_a_loadable_spec_and_pushes_the_data(tmp_path, project):
    settings = make_settings(tmp_path / "home", project_dir=project)
    spec_file = create_task("pets", _folder(tmp_path / "photos"), settings=settings)
    spec = load_spec("pets")
    assert spec_file == project / "pipelines" / "specs" / "pets.yaml" and spec.dataset.classes == ["cat", "dog"]
    assert (project / "data" / "pets.dvc").is_file() and len(list((project / "data" / "pets").rglob("*.jpg"))) == 24
    assert any(p.is_file() for p in (tmp_path / "home" / "dvc-remote").rglob("*"))
    assert spec_file.read_text().startswith("# Written by `relay task new pets")
    with pytest.raises(RelayError, match="task pets exists"):
        create_task("pets", tmp_path / "photos", settings=settings)


@pytest.mark.slow  # DVC and git repositories
def test_refusals_name_the_problem(tmp_path, project):
    settings = make_settings(tmp_path / "home", project_dir=project)
    with pytest.raises(RelayError, match="only one class"):
        create_task("solo", _folder(tmp_path / "one", classes=("cat",)), settings=settings)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(RelayError, match=r"no readable image found.*\(1 unreadable file\(s\)\)"):
        create_task("empty", tmp_path / "empty", settings=settings)
    with pytest.raises(RelayError, match="invalid spec: name"):
        create_task("Bad Name", _folder(tmp_path / "photos"), settings=settings)
    assert not (project / "data" / "Bad Name").exists()
