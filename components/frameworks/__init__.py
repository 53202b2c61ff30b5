"""The framework layer: the train and optimize steps' entry points, and one backend per framework.

A backend is a module ``components/frameworks/<name>.py`` providing what ``Backend`` lists, by calling
the stages' implementations below it (``components.train``, ``components.optimize``,
``components.deploy.tfserving``). The steps never branch on a framework's name, so adding a third
framework is one new module (and its name in ``components.spec.Framework``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from components.errors import RelayError
from components.models import Predictor
from components.train import TrainResult, model_framework

if TYPE_CHECKING:  # annotations only: importing these would load pandas, ONNX Runtime and pydantic
    from components.optimize import OptimizeResult
    from components.spec import TaskSpec

__all__ = ["Backend", "Predictor", "backend", "load_predictor", "optimize_model", "train_model"]


class TrainingRounds(Protocol):
    def run(self, batches: int) -> int:
        """Train ``batches`` batches; the number of images they held."""


class Backend(Protocol):
    NAME: str
    TRAINING_SETTINGS: dict[str, str]
    """How it trains (memory format, graph compilation, input pipeline, precision), for reports."""
    KUSTOMIZE_COMPONENTS: list[str]
    """GitOps components (infra/k8s/components/...) a version of this framework deploys beside TorchServe."""

    def train(self, spec, data_dir: Path, out_dir: Path): ...
    def training_rounds(self, spec, data_dir: Path) -> TrainingRounds:
        """A fresh model of ``spec`` on its own input pipeline, trained in rounds of N batches (the bake-off's
        images/s)."""
    def load_predictor(self, model_dir: Path) -> Predictor: ...
    NATIVE_PREDICTORS: tuple[str, ...]
    """The names of native_predictors' entries."""

    def native_predictors(self, model_dir: Path) -> dict[str, Predictor]:
        """Each way the framework itself runs the trained model, by name (the bake-off times them all)."""
    def model_files(self, model_dir: Path) -> dict[str, Path]:
        """The trained model's own files (or directories), by format, for the bake-off's footprint."""
    def export_onnx(self, model_dir: Path, target: Path, spec) -> Path: ...
    def accelerated(self, model_dir: Path, target: Path) -> dict:
        """Framework-native acceleration (TF-TRT): what was made, or why it was skipped."""
    def extra_artifacts(self, spec, version: str, model_dir: Path, dest: Path, production: str | None) -> None:
        """Registry artifacts beside model.onnx and model.mar (a TF Serving model)."""


def backend(framework: str) -> Backend:
    """The backend module of ``framework``."""
    try:
        return importlib.import_module(f"components.frameworks.{framework}")  # type: ignore[return-value]
    except ModuleNotFoundError:
        raise RelayError(f"unknown framework '{framework}': use pytorch or tensorflow") from None


def train_model(spec: TaskSpec, data_dir: Path, out_dir: Path) -> TrainResult:
    """Train ``spec``'s model on the data step's train split; write it and its metrics to ``out_dir``."""
    return backend(spec.framework).train(spec, data_dir, out_dir)


def load_predictor(model_dir: Path) -> Predictor:
    """Load a trained model (either framework) as a numpy predictor for the gate and benchmarks."""
    return backend(model_framework(model_dir)).load_predictor(model_dir)


def optimize_model(spec: TaskSpec, train_dir: Path, data_dir: Path, out_dir: Path) -> OptimizeResult:
    """Write ``out_dir/model.onnx`` (fp32, or INT8 when the spec asks) and ``optimize.json`` with the exporter
    (and TF-TRT) of the framework the model was trained in."""
    from components.optimize import optimize_onnx  # pandas and ONNX Runtime: loaded only to optimize

    tools = backend(model_framework(train_dir))
    return optimize_onnx(spec, train_dir, data_dir, out_dir, tools.export_onnx, tools.accelerated)
