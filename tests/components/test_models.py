"""Every architecture, built in both frameworks from the same description: same parameters, same ONNX graph."""

from collections import Counter

import pytest

from components.models.architecture import Architecture

# Operators that differ between the exporters only in how they spell the same computation.
EQUIVALENT = {"ReduceMean": "GlobalAveragePool", "MatMul": "Gemm", "Relu6": "Clip"}
# Layout and shape plumbing: the Keras graph converts NCHW to NHWC and back, the PyTorch one flattens.
PLUMBING = {"Transpose", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat",
            "Cast", "Pad", "Constant"}


def _arch(name: str, channels: int = 3) -> Architecture:
    size = 8 if name == "small_cnn" else 32
    return Architecture(name=name, height=size, width=size, channels=channels, num_classes=10, conv_channels=(16, 32),
                        hidden_units=64, widths=(16, 32, 64), blocks_per_stage=2, width_multiplier=0.5).with_blocks()


def _operators(path) -> Counter:
    import onnx

    ops = Counter(EQUIVALENT.get(node.op_type, node.op_type) for node in onnx.load(str(path)).graph.node)
    return Counter({op: n for op, n in ops.items() if op not in PLUMBING})


def _export_torch(arch, tmp_path):
    import torch

    from components.models.torch_cnn import build_torch_model
    from components.optimize.torch_onnx import export_onnx

    model_dir = tmp_path / "torch"
    model_dir.mkdir()
    torch.save(build_torch_model(arch).state_dict(), model_dir / "model.pt")
    arch.save(model_dir)
    return export_onnx(model_dir, tmp_path / "torch.onnx", _Spec())


def _export_keras(arch, tmp_path):
    from components.models.keras_cnn import build_keras_model
    from components.optimize.tf_onnx import export_onnx

    model_dir = tmp_path / "keras"
    model_dir.mkdir()
    build_keras_model(arch, "mixed_bfloat16").save(model_dir / "model.keras")
    arch.save(model_dir)
    return export_onnx(model_dir, tmp_path / "keras.onnx", _Spec())


class _Spec:
    class optimize:  # noqa: N801 - the attribute path the exporter reads
        exporter = "torchscript"


@pytest.mark.parametrize("name", ["small_cnn", "resnet", "mobilenet_v2"])
def test_both_frameworks_build_the_same_model(name, tmp_path):
    from components.models.keras_cnn import build_keras_model
    from components.models.torch_cnn import build_torch_model

    arch = _arch(name)
    torch_params = sum(p.numel() for p in build_torch_model(arch).parameters())
    keras_params = sum(int(w.numpy().size) for w in build_keras_model(arch, "float32").trainable_weights)
    assert torch_params == keras_params

    torch_ops, keras_ops = _operators(_export_torch(arch, tmp_path)), _operators(_export_keras(arch, tmp_path))
    if name == "mobilenet_v2":
        # tf2onnx folds BatchNorm into a regular conv but leaves its scale after a depthwise conv as a Mul
        # (ONNX Runtime's ConvMulFusion folds it at load): one per inverted-residual block.
        assert keras_ops.pop("Mul") == len(arch.blocks)
    assert +torch_ops == +keras_ops, (torch_ops, keras_ops)
    convs = {"small_cnn": 2, "resnet": 1 + 2 * 6 + 2, "mobilenet_v2": 1 + 3 * len(arch.blocks) - 1 + 1}[name]
    assert torch_ops["Conv"] == convs


def test_resnet_and_mobilenet_are_real_architectures():
    resnet = _arch("resnet")
    assert resnet.widths == (16, 32, 64) and resnet.blocks_per_stage == 2
    mobile = _arch("mobilenet_v2")
    assert any(block.residual for block in mobile.blocks) and any(block.stride == 2 for block in mobile.blocks)
    assert all(block.expanded in (block.in_channels, block.in_channels * 6) for block in mobile.blocks)


def test_small_cnn_on_large_colour_input_is_refused_naming_the_fields(digits_spec):
    from components.errors import SpecError
    from tests.conftest import spec_for

    with pytest.raises(SpecError, match=r"model small_cnn on input.size \[224, 224\] with 3 channel\(s\) needs a "
                                        r"25,690,112-weight dense layer .*use model.name resnet or mobilenet_v2"):
        spec_for(digits_spec, digits_spec.dataset_dir(), **{"input.size": [224, 224], "input.channels": 3})
