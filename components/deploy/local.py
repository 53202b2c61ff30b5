"""The local deploy target: a new model version goes live on the project's TorchServe.

The new version is registered beside the current one, smoke-tested on held-out images through the
real inference API, and only then made the default. If the smoke test fails the new version is
removed and the default is untouched; the previous version stays registered for rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.atomic import copy_file
from components.data import load_split
from components.deploy.torchserve import TorchServe
from components.errors import ServingError
from components.package import mar_version
from components.settings import Settings
from pipelines.spec import TaskSpec


@dataclass(frozen=True)
class DeployResult:
    model_name: str
    version: str
    previous_default: str | None
    smoke_accuracy: float
    inference_url: str


def smoke_test(server: TorchServe, model: str, version: str, paths: list[Path], labels: list[str]) -> float:
    """Accuracy of ``model``/``version`` as served, on the given image files."""
    hits = sum(server.predict(model, path.read_bytes(), version)["class"] == label for path, label in zip(paths, labels))
    return hits / len(paths)


def deploy_local(spec: TaskSpec, version: str, mar: Path, data_dir: Path, settings: Settings) -> DeployResult:
    """Serve ``mar`` as ``spec.name`` version ``version`` and make it the default after a smoke test."""
    server = TorchServe(settings)
    server.start()
    name, served_version = spec.name, mar_version(version)
    mar_file = f"{name}-{served_version}.mar"
    copy_file(mar, server.model_store / mar_file)
    previous = server.default_version(name)
    if served_version not in {entry["modelVersion"] for entry in server.describe(name)}:
        server.register(mar_file, name)

    _, label_index, paths = load_split(data_dir, "test", spec.dataset.classes)
    count = min(spec.deploy.smoke_samples, len(paths))
    labels = [spec.dataset.classes[i] for i in label_index[:count]]
    accuracy = smoke_test(server, name, served_version, paths[:count], labels)
    if accuracy < spec.gate.min_accuracy:
        if previous is not None and previous != served_version:
            server.unregister(name, served_version)
        raise ServingError(f"smoke test of {name} {version} on TorchServe: accuracy {accuracy:.3f} on {count} "
                           f"held-out images is below {spec.gate.min_accuracy}; the default stays {previous}")
    server.set_default(name, served_version)
    return DeployResult(name, version, previous, accuracy, f"{server.inference_url}/predictions/{name}")
