"""The .mar build: torch-model-archiver stages files in <TMPDIR>/<model name> and deletes that directory
first. Under the system temp dir it wiped whatever lay at /tmp/<task name> (a CI clone at /tmp/fresh,
while the live test served a task called fresh)."""

from __future__ import annotations

import tempfile
import uuid
import zipfile
from pathlib import Path

from components.data.dataset import unnormalized
from components.deploy.package import build_mar


def test_building_a_mar_leaves_the_system_temp_dir_alone(trained_run, tmp_path):
    spec, run = trained_run
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    spec = spec.model_copy(update={"name": name})
    bystander = Path(tempfile.gettempdir()) / name  # someone's directory that shares the task's name
    bystander.mkdir()
    try:
        (bystander / "work.txt").write_text("mine")
        mar = build_mar(spec, "v0.1.0", run.optimized_model, unnormalized(spec), tmp_path / "m.mar")
        assert (bystander / "work.txt").read_text() == "mine"
        assert "model.onnx" in {Path(n).name for n in zipfile.ZipFile(mar).namelist()}
    finally:
        for item in bystander.iterdir():
            item.unlink()
        bystander.rmdir()
