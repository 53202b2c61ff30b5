"""Package a trained PyTorch model the way a user would without Relay: TorchScript + bench/stock_handler.py."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from components.train import model_preprocessing
from components.train.torch_train import load_model

HANDLER = Path(__file__).with_name("stock_handler.py")


def build_stock_mar(train_dir: Path, name: str, target_dir: Path) -> Path:
    """Write ``target_dir/<name>.mar``: the traced model, the stock handler and its preprocessing constants."""
    prep = model_preprocessing(train_dir)
    model = load_model(train_dir).eval()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        example = torch.zeros(1, prep.channels, prep.height, prep.width)
        with torch.inference_mode():
            torch.jit.trace(model, example).save(str(work / "model.pt"))
        (work / "stock_config.json").write_text(json.dumps(
            {"height": prep.height, "width": prep.width, "channels": prep.channels, "mean": list(prep.mean),
             "std": list(prep.std)}))
        subprocess.run([str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", name,
                        "--version", "1.0", "--serialized-file", str(work / "model.pt"), "--handler", str(HANDLER),
                        "--extra-files", str(work / "stock_config.json"), "--export-path", str(target_dir),
                        "--force"], check=True, capture_output=True)
    return target_dir / f"{name}.mar"
