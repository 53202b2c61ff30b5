"""PyTorch training with mixed precision: bf16 autocast on CPU, fp16 autocast + GradScaler on CUDA."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.atomic import atomic_dir, write_json
from components.data import load_split
from components.models.architecture import Architecture
from components.models.torch_cnn import build_torch_model
from components.train.tracking import epoch_log
from pipelines.spec import TaskSpec

WEIGHTS = "model.pt"


def _autocast(device: torch.device, precision: str):
    if precision != "mixed":
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return float((model(images).argmax(dim=1) == labels).float().mean())


def train(spec: TaskSpec, data_dir: Path, out_dir: Path):
    """Train the small CNN; write weights, architecture, metrics and dvclive logs to ``out_dir``."""
    from components.train import TrainResult

    cfg = spec.training
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = Architecture.from_spec(spec)
    x_train, y_train, _ = load_split(data_dir, "train", spec.dataset.classes)
    x_test, y_test, _ = load_split(data_dir, "test", spec.dataset.classes)
    x_train, y_train = torch.from_numpy(x_train).to(device), torch.from_numpy(y_train).to(device)
    x_test, y_test = torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device)

    model = build_torch_model(arch).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    # GradScaler guards fp16 gradients against underflow; bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "mixed" and device.type == "cuda")
    generator = torch.Generator().manual_seed(cfg.seed)

    with atomic_dir(out_dir) as tmp:
        started = time.perf_counter()
        params = {"framework": "pytorch", "precision": cfg.precision, "device": device.type, **cfg.model_dump()}
        with epoch_log(tmp, f"train {spec.name} (pytorch, {cfg.precision})", cfg.epochs, params) as log:
            for epoch in range(cfg.epochs):
                model.train()
                order = torch.randperm(len(x_train), generator=generator).to(device)
                total_loss = 0.0
                for start in range(0, len(order), cfg.batch_size):
                    batch = order[start:start + cfg.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    with _autocast(device, cfg.precision):
                        loss = loss_fn(model(x_train[batch]), y_train[batch])
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total_loss += float(loss.detach()) * len(batch)
                log.epoch(epoch, total_loss / len(order), _accuracy(model, x_train, y_train),
                          _accuracy(model, x_test, y_test))
        seconds = time.perf_counter() - started
        test_accuracy = _accuracy(model, x_test, y_test)
        torch.save(model.cpu().state_dict(), tmp / WEIGHTS)
        arch.save(tmp)
        write_json(tmp / "metrics.json", {
            "framework": "pytorch", "device": device.type, "precision": cfg.precision,
            "epochs": cfg.epochs, "train_seconds": seconds, "samples_per_second": cfg.epochs * len(x_train) / seconds,
            "test_accuracy": test_accuracy, "train_images": len(x_train), "test_images": len(x_test),
        })
    return TrainResult(out_dir, "pytorch", test_accuracy, seconds)


def load_model(model_dir: Path) -> nn.Module:
    """Rebuild the trained model on the CPU in eval mode."""
    model = build_torch_model(Architecture.load(model_dir))
    model.load_state_dict(torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


def load_predictor(model_dir: Path):
    """The eager model as a numpy predictor (inference mode, fp32)."""
    model = load_model(model_dir)

    @torch.inference_mode()
    def predict(images: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(images)).numpy()

    return predict
