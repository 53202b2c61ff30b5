"""Package an ONNX model as a TorchServe .mar with torch-model-archiver."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from components import imaging, onnx_runtime
from components.atomic import copy_file
from components.errors import RelayError

# Loaded only inside TorchServe, where imaging.py and onnx_runtime.py sit beside it in the model dir.
HANDLER = Path(__file__).with_name("serving_handler.py")


def mar_version(version: str) -> str:
    """TorchServe's version string for a registry version: ``v0.3.0`` → ``0.3.0``."""
    return version.removeprefix("v")


def build_mar(model_name: str, version: str, onnx_model: Path, classes: list[str], target: Path) -> Path:
    """Write ``target`` (a .mar) serving ``onnx_model`` through the ONNX Runtime handler."""
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = work / "index_to_name.json"
        labels.write_text(json.dumps({str(i): name for i, name in enumerate(classes)}))
        extra = [imaging.__file__, onnx_runtime.__file__, str(labels)]
        proc = subprocess.run([
            str(archiver), "--model-name", model_name, "--version", mar_version(version),
            "--serialized-file", str(onnx_model), "--handler", str(HANDLER),
            "--extra-files", ",".join(extra), "--export-path", str(work), "--force",
        ], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RelayError(f"torch-model-archiver failed for {model_name}: {proc.stderr.strip().splitlines()[-1:]}")
        copy_file(work / f"{model_name}.mar", target)
    return target
