"""The PyTorch backend: eager training, the eager predictor, torch.onnx export."""

from __future__ import annotations

from pathlib import Path

NAME = "pytorch"
KUSTOMIZE_COMPONENTS: list[str] = []

# How this backend trains, for the bake-off's Method: chosen by measurement where a figure is named.
TRAINING_SETTINGS = {
    "memory format": "channels_last: oneDNN's convolutions ran about 40% faster on NHWC than NCHW (bf16 and fp32)",
    "graph compilation": "none, eager (torch.compile is not used; not measured)",
    "input pipeline": "DataLoader worker processes (training.workers) reading the decoded cache",
    "mixed precision": "bf16 autocast on a CPU; fp16 autocast with GradScaler on CUDA",
}


def train(spec, data_dir: Path, out_dir: Path):
    if spec.training.distributed.processes > 1:
        from components.train.torchrun import train_distributed

        return train_distributed(spec, data_dir, out_dir)
    from components.train.torch_train import train as train_torch

    return train_torch(spec, data_dir, out_dir)


def training_rounds(spec, data_dir: Path):
    from components.train.torch_train import TrainingRounds

    return TrainingRounds(spec, data_dir)


def load_predictor(model_dir: Path):
    from components.train.torch_train import load_predictor as load

    return load(model_dir)


NATIVE_PREDICTORS = ("eager torch",)


def native_predictors(model_dir: Path) -> dict:
    return dict(zip(NATIVE_PREDICTORS, (load_predictor(model_dir),)))


def model_files(model_dir: Path) -> dict[str, Path]:
    from components.train.torch_train import WEIGHTS

    return {"state dict (.pt)": model_dir / WEIGHTS}


def export_onnx(model_dir: Path, target: Path, spec) -> Path:
    from components.optimize.torch_onnx import export_onnx as export

    return export(model_dir, target, spec)


def accelerated(model_dir: Path, target: Path) -> dict:
    return {"skipped": "TF-TRT applies to TensorFlow models only"}


def extra_artifacts(spec, version: str, model_dir: Path, dest: Path, production: str | None) -> None:
    return None
