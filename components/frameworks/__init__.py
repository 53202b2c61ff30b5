"""One backend per framework: everything framework-specific that Relay's steps call.

A backend is a module ``components/frameworks/<name>.py`` providing what ``Backend`` lists. The
steps never branch on a framework's name, so adding a third framework is one new module (and its
name in ``components.spec.Framework``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from components.errors import RelayError

Predictor = Callable[[np.ndarray], np.ndarray]
"""NCHW float32 images in, float32 logits out."""


class Backend(Protocol):
    NAME: str
    KUSTOMIZE_COMPONENTS: list[str]
    """GitOps components (infra/k8s/components/...) a version of this framework deploys beside TorchServe."""

    def train(self, spec, data_dir: Path, out_dir: Path): ...
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
