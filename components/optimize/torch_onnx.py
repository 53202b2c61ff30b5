"""PyTorch → ONNX with a dynamic batch axis, in a single file, with the exporter the spec picks."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from components.models.architecture import Architecture
from components.onnx_runtime import INPUT_NAME, OUTPUT_NAME
from components.train.torch_train import load_model
from components.spec import TaskSpec


def export_onnx(train_dir: Path, target: Path, spec: TaskSpec) -> Path:
    """Export the trained PyTorch model to ``target`` (opset 18, dynamic batch, one file)."""
    model = load_model(train_dir)
    arch = Architecture.load(train_dir)
    example = torch.zeros(2, arch.channels, arch.height, arch.width)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        if spec.optimize.exporter == "dynamo":
            torch.onnx.export(model, (example,), str(target), **names, dynamo=True, optimize=True, verbose=False,
                              dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, external_data=False)
        else:
            torch.onnx.export(model, (example,), str(target), **names, dynamo=False, opset_version=18,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return target
