"""The task spec: every choice a user makes about one task, validated by pydantic.

A run's parameters (Airflow form, CLI flags) override spec fields one by one and are validated by
the same model, so a wrong value gets the same one-line error wherever it comes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.errors import SpecError
from components.settings import PROJECT_DIR

SPECS_DIR = PROJECT_DIR / "pipelines" / "specs"

Framework = Literal["pytorch", "tensorflow"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_MAX_PIXELS = 50_000_000  # above any phone camera (48 MP); a decompression bomb is far larger


class ImageSpec(_Strict):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    mode: Literal["L"] = "L"
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0,
                            description="Images with more pixels are refused from their header, never decoded "
                                        "(data step and serving handler).")


class DriftSpec(_Strict):
    label_linf: float = Field(default=0.1, gt=0, le=1, description="L-infinity bound on the label distribution.")
    numeric_js: float = Field(default=0.1, gt=0, le=1, description="Jensen-Shannon bound on numeric features.")


class DatasetSpec(_Strict):
    name: str
    path: str = Field(description="Image-folder root, <path>/<label>/<n>.png; relative to the project.")
    source: Literal["sklearn-digits", "dvc"] = Field(
        description="sklearn-digits: created from scikit-learn the first time; dvc: must come from DVC."
    )
    classes: list[str] = Field(min_length=2)
    image: ImageSpec
    min_per_class: int = Field(default=10, ge=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    split_seed: int = 0
    drift: DriftSpec = DriftSpec()


class ModelSpec(_Strict):
    name: Literal["small_cnn"] = "small_cnn"
    conv_channels: list[int] = Field(default=[16, 32], min_length=1)
    hidden_units: int = Field(default=64, gt=0)


class TrainingSpec(_Strict):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    precision: Literal["mixed", "fp32"] = "mixed"
    seed: int = 0
    accelerator: Literal["cpu", "gpu"] = Field(default="cpu", description="gpu: the training pod requests one GPU.")


class OptimizeSpec(_Strict):
    quantize: Literal["none", "int8"] = "none"
    exporter: Literal["torchscript", "dynamo"] = Field(
        default="torchscript",
        description="PyTorch's ONNX exporter. dynamo is the future default but costs ~4 s cold per export "
                    "(docs/benchmarks.md); torchscript is deprecated in torch 2.13 yet exports this model in <1 s.",
    )


class GateSpec(_Strict):
    max_accuracy_drop_pp: float = Field(default=0.5, ge=0, description="Optimized vs original, percentage points.")
    min_agreement: float = Field(default=0.995, ge=0, le=1, description="Top-1 agreement, optimized vs original.")
    min_accuracy: float = Field(default=0.9, ge=0, le=1, description="Accuracy floor of the optimized model.")
    champion_tolerance_pp: float = Field(default=0.5, ge=0, description="Allowed loss vs the production model.")
    latency_runs: int = Field(default=300, ge=10)


class DeploySpec(_Strict):
    target: Literal["local", "kubernetes"] = Field(
        default="local", description="local: the project's TorchServe; kubernetes: pin the version in the "
                                     "GitOps staging overlay (Argo CD deploys it).")
    smoke_samples: int = Field(default=20, ge=1)
    max_request_bytes: int = Field(default=16_000_000, gt=0, le=64_000_000,
                                   description="Larger prediction request bodies get HTTP 413 from the handler.")


class TaskSpec(_Strict):
    """One task: a dataset, a model, how to train, gate and deploy it, and when to retrain."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    dataset: DatasetSpec
    framework: Framework
    model: ModelSpec = ModelSpec()
    training: TrainingSpec
    optimize: OptimizeSpec = OptimizeSpec()
    gate: GateSpec = GateSpec()
    deploy: DeploySpec = DeploySpec()
    schedule: str | None = Field(default=None, description="Airflow schedule (cron or preset); null: manual only.")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        presets = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
        if value is None or value in presets or len(value.split()) == 5:
            return value
        raise ValueError(f"must be a 5-field cron expression or one of {sorted(presets)}")

    @model_validator(mode="after")
    def _classes_unique(self) -> TaskSpec:
        if len(set(self.dataset.classes)) != len(self.dataset.classes):
            raise ValueError("dataset.classes has duplicates")
        return self

    def dataset_dir(self, project_dir: Path = PROJECT_DIR) -> Path:
        path = Path(self.dataset.path)
        return path if path.is_absolute() else project_dir / path


# Run parameters a user may override, mapped to spec fields. The Airflow form and CLI use these names.
OVERRIDABLE = {
    "framework": ("framework",),
    "epochs": ("training", "epochs"),
    "precision": ("training", "precision"),
    "quantize": ("optimize", "quantize"),
    "max_accuracy_drop_pp": ("gate", "max_accuracy_drop_pp"),
    "min_agreement": ("gate", "min_agreement"),
    "min_accuracy": ("gate", "min_accuracy"),
    "champion_tolerance_pp": ("gate", "champion_tolerance_pp"),
}


def _field_name(part: object) -> str:
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _one_line(error: ValidationError, source: str) -> SpecError:
    problems = []
    for item in error.errors():
        field = ".".join(_field_name(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "literal_error":
            message = f"got {item['input']!r}; allowed: {item['ctx']['expected']}"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{field}: {message}")
    message = "; ".join(problems).replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the input
    return SpecError(f"{source}: invalid spec: " + message)


def parse_spec(data: dict[str, Any], source: str = "spec") -> TaskSpec:
    """Validate a spec mapping; raise SpecError naming every bad field."""
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as error:
        raise _one_line(error, source) from None


def spec_path(task: str | Path) -> Path:
    """Resolve a task name (``digits``) or a path to its spec file."""
    candidate = Path(task)
    if candidate.suffix in {".yaml", ".yml"}:
        path = candidate
    else:
        path = SPECS_DIR / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))
        raise SpecError(f"no task spec {path}; known tasks: {', '.join(known) or 'none'}")
    return path


def load_spec(task: str | Path, overrides: dict[str, Any] | None = None) -> TaskSpec:
    """Load a task spec by name or path and apply run overrides (``OVERRIDABLE`` keys)."""
    path = spec_path(task)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start}): save the spec as UTF-8 YAML") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping of fields")
    spec = parse_spec(data, str(path))
    return apply_overrides(spec, overrides or {})


def apply_overrides(spec: TaskSpec, overrides: dict[str, Any]) -> TaskSpec:
    """Return ``spec`` with run parameters applied, validated as the spec itself is."""
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise SpecError(f"unknown run parameter(s) {unknown}; allowed: {sorted(OVERRIDABLE)}")
    data = spec.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = OVERRIDABLE[key]
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_spec(data, "run parameters")


def all_specs() -> list[Path]:
    """Every task spec shipped in pipelines/specs/."""
    return sorted(SPECS_DIR.glob("*.yaml"))
