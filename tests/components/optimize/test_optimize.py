import json

import numpy as np
import onnx
import pytest

from components.data.dataset import load_split
from components.onnx_runtime import onnx_predictor
from components.frameworks import load_predictor, optimize_model


def test_onnx_export_matches_eager_model_at_batch_1_and_64(trained_run):
    spec, run = trained_run
    model_path = run.optimized_model
    onnx.checker.check_model(str(model_path))
    assert not list(model_path.parent.glob("*.data"))  # a single file, no external data
    images, _, _ = load_split(run.data, "train", spec.dataset.classes)
    eager, optimized = load_predictor(run.train), onnx_predictor(model_path)
    for batch in (images[:1], images[:64]):
        assert np.abs(eager(batch) - optimized(batch)).max() < 1e-4
    info = json.loads(run.optimize_info.read_text())
    assert info["quantize"] == "none" and info["conversion_seconds"] > 0
    assert info["tensorrt"]["skipped"]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_give_a_dynamic_batch_model(trained_run, tmp_path, exporter):
    spec, run = trained_run
    chosen = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"exporter": exporter})})
    result = optimize_model(chosen, run.train, run.data, tmp_path / exporter)
    images, _, _ = load_split(run.data, "train", spec.dataset.classes)
    eager, optimized = load_predictor(run.train), onnx_predictor(result.model)
    for batch in (images[:1], images[:64]):
        assert np.abs(eager(batch) - optimized(batch)).max() < 1e-4


def test_int8_quantization_keeps_predictions(trained_run, tmp_path):
    spec, run = trained_run
    int8_spec = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"quantize": "int8"})})
    result = optimize_model(int8_spec, run.train, run.data, tmp_path / "int8")
    assert result.quantized
    graph_ops = {node.op_type for node in onnx.load(str(result.model)).graph.node}
    assert "QuantizeLinear" in graph_ops and "DequantizeLinear" in graph_ops
    images, _, _ = load_split(run.data, "test", spec.dataset.classes)
    agreement = (onnx_predictor(result.model)(images).argmax(1) == load_predictor(run.train)(images).argmax(1))
    assert agreement.mean() >= 0.9
