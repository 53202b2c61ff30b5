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

SPECS_DIR = PROJECT_DIR / "pipelines" / "specs"  # the shipped specs; a project's own: specs_dir()


def specs_dir() -> Path:
    """Where the project's task specs live: ``specs/`` of a team's project (``relay init``), ``pipelines/specs``
    of Relay's own checkout (components.settings.find_project_dir, ``RELAY_PROJECT_DIR``)."""
    from components.settings import PROJECT_FILE, get_settings

    project = get_settings().project_dir
    return project / "specs" if (project / PROJECT_FILE).is_file() else project / "pipelines" / "specs"

Framework = Literal["pytorch", "tensorflow"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_MAX_PIXELS = 50_000_000  # above any phone camera (48 MP); a decompression bomb is far larger


class DriftSpec(_Strict):
    label_linf: float = Field(default=0.1, gt=0, le=1, description="L-infinity bound on the label distribution.")
    numeric_js: float = Field(default=0.1, gt=0, le=1, description="Jensen-Shannon bound on numeric features.")


class DatasetSpec(_Strict):
    name: str
    path: str = Field(description="Dataset root, <path>/<label>/<file> (the ImageFolder layout); relative to the "
                                  "project.")
    source: Literal["sklearn-digits", "shapes", "dvc"] = Field(
        description="sklearn-digits, shapes: built-in, generated the first time; dvc: must come from DVC.")
    labels_csv: str | None = Field(default=None, description="A CSV (path,label) inside the dataset root naming "
                                                             "each file's label, instead of label folders.")
    classes: list[str] = Field(min_length=2)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0,
                            description="Images with more pixels are refused from their header, never decoded "
                                        "(data step and serving handler).")
    min_side: int = Field(default=1, ge=1, description="Smallest accepted width or height, in pixels.")
    on_bad_file: Literal["fail", "skip"] = Field(
        default="fail", description="fail: a file that is not a decodable image stops the data step; skip: it is "
                                    "left out and listed in the manifest and the report.")
    min_per_class: int = Field(default=10, ge=1)
    max_imbalance: float = Field(default=10.0, ge=1, description="Largest class count over the smallest.")
    val_fraction: float = Field(default=0.1, gt=0, lt=1, description="Validation split: early stopping, best "
                                                                     "checkpoint.")
    test_fraction: float = Field(default=0.2, gt=0, lt=1, description="Test split: the gate and the reports.")
    split_seed: int = 0
    drift: DriftSpec = DriftSpec()

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DatasetSpec:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9, or nothing is left to train on")
        return self


class Normalization(_Strict):
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _positive_std(self) -> Normalization:
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need one value per channel, and every std must be > 0")
        return self


class InputSpec(_Strict):
    """The model's input contract: applied identically in training, evaluation and serving."""

    size: tuple[int, int] = Field(description="[height, width] the model takes.")
    channels: Literal[1, 3] = Field(description="1: grayscale (L), 3: RGB.")
    resize: Literal["stretch", "center_crop", "pad"] = Field(
        default="stretch", description="stretch: resize to size; center_crop: keep the aspect ratio, crop the "
                                       "overflow; pad: keep the aspect ratio, pad with black.")
    normalization: Literal["auto"] | Normalization = Field(
        default="auto", description="auto: per-channel mean and std of the train split (recorded in the run); "
                                    "or given mean and std on the [0, 1] scale.")

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 1024:
            raise ValueError("height and width must be between 1 and 1024")
        return value

    @model_validator(mode="after")
    def _normalization_channels(self) -> InputSpec:
        if isinstance(self.normalization, Normalization) and len(self.normalization.mean) != self.channels:
            raise ValueError(f"normalization has {len(self.normalization.mean)} value(s) per statistic; "
                             f"input.channels is {self.channels}")
        return self

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]


class ModelSpec(_Strict):
    name: Literal["small_cnn", "resnet", "mobilenet_v2"] = Field(
        default="small_cnn", description="The architecture, built the same in both frameworks.")
    init: Literal["scratch", "checkpoint"] = Field(default="scratch",
                                                   description="checkpoint: fine-tune from `checkpoint`.")
    checkpoint: str | None = Field(default=None, description="A local weights file (the framework's own format: "
                                                             "a state dict .pt, or .keras/.weights.h5).")
    conv_channels: list[int] = Field(default=[16, 32], min_length=1, description="small_cnn: 3x3 convs.")
    hidden_units: int = Field(default=64, gt=0, description="small_cnn: the hidden dense layer.")
    widths: list[int] = Field(default=[32, 64, 128], min_length=1, description="resnet: channels per stage.")
    blocks_per_stage: int = Field(default=1, ge=1, le=8, description="resnet: basic blocks per stage.")
    width_multiplier: float = Field(default=1.0, gt=0, le=4, description="mobilenet_v2: channel multiplier.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Before the classifier.")

    @model_validator(mode="after")
    def _checkpoint_given(self) -> ModelSpec:
        if self.init == "checkpoint" and not self.checkpoint:
            raise ValueError("init: checkpoint needs model.checkpoint, the path of a local weights file")
        return self


class AugmentSpec(_Strict):
    random_resized_crop: bool = Field(default=False, description="Random crop of 70-100% area, resized back.")
    horizontal_flip: bool = Field(default=False, description="Wrong for digits and text.")
    color_jitter: bool = Field(default=False, description="Random brightness, contrast and saturation (±20%).")
    random_shift: float = Field(default=0.0, ge=0, le=0.5, description="Random translation, fraction of the size.")


class DistributedSpec(_Strict):
    """Data-parallel training in the framework's own way (docs/operations.md, "Distributed training")."""

    processes: int = Field(default=1, ge=1, le=64,
                           description="Training processes (ranks); above 1, PyTorch trains under torchrun "
                                       "(DistributedDataParallel) and TensorFlow under MultiWorkerMirroredStrategy, "
                                       "each process taking an equal share of every global batch "
                                       "(training.batch_size).")
    backend: Literal["gloo", "nccl"] = Field(default="gloo", description="The collectives: gloo on CPUs (PyTorch's "
                                                                          "gloo, TensorFlow's ring), nccl on GPUs "
                                                                          "(training.accelerator: gpu).")


class ShardSpec(_Strict):
    """Packed shards (training.cache: shards; docs/operations.md, "Streamed data")."""

    shard_mb: float = Field(default=64, gt=0, le=4096,
                            description="Decoded images per shard, in MB: the data step packs each split into "
                                        "WebDataset tar shards of about this size (the training split into at least "
                                        "one per training process).")
    cache_mb: float = Field(default=1024, gt=0,
                            description="Local disk the streamed shards may take on each machine, in MB, beyond "
                                        "the one being fetched: the first fetched go first.")

    @model_validator(mode="after")
    def _cache_holds_a_shard(self) -> ShardSpec:
        if self.cache_mb < self.shard_mb:
            raise ValueError(f"cache_mb {self.cache_mb:g} must hold at least one shard (shard_mb {self.shard_mb:g})")
        return self


class TrainingSpec(_Strict):
    epochs: int = Field(ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd only.")
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0, description="Linear warm-up before the schedule.")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = Field(default="none",
                                                       description="balanced: weight classes by inverse frequency.")
    augment: AugmentSpec = AugmentSpec()
    early_stopping_patience: int | None = Field(default=None, ge=1,
                                                description="Stop after this many epochs without a better "
                                                            "validation accuracy; null: run every epoch.")
    workers: int = Field(default=1, ge=0, le=16, description="DataLoader worker processes / tf.data parallelism.")
    cache: Literal["decoded", "none", "shards"] = Field(
        default="decoded", description="decoded: decode each image once per data version and input size into a "
                                       "uint8 memmap on this machine; shards: the data step packs the decoded "
                                       "images into shards in the shard store (RELAY_SHARDS_URI), which training "
                                       "streams through a bounded local cache, each process reading its own; "
                                       "none: decode every epoch.")
    shards: ShardSpec = ShardSpec()
    precision: Literal["mixed", "fp32"] = Field(
        default="mixed", description="mixed: bf16 autocast on CPU, fp16 on a GPU; fp32: full precision.")
    seed: int = 0
    accelerator: Literal["cpu", "gpu"] = Field(default="cpu", description="gpu: the training pod requests one GPU.")
    distributed: DistributedSpec = DistributedSpec()

    @model_validator(mode="after")
    def _ranks_share_batches(self) -> TrainingSpec:
        ranks = self.distributed.processes
        if self.batch_size < ranks:
            raise ValueError(f"batch_size {self.batch_size} is the global batch: it must hold at least one image per "
                             f"rank (distributed.processes: {ranks})")
        if self.distributed.backend == "nccl" and self.accelerator != "gpu":
            raise ValueError("distributed.backend nccl runs on GPUs only: set accelerator: gpu, or use gloo on CPUs")
        return self


class OptimizeSpec(_Strict):
    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8: static INT8 quantization of the ONNX model (calibrated on the train split).")
    exporter: Literal["torchscript", "dynamo", "tf2onnx"] | None = Field(
        default=None,
        description="The ONNX exporter; null: the framework's default (pytorch: torchscript, tensorflow: tf2onnx). "
                    "PyTorch's dynamo is the future default but costs ~4 s cold per export (docs/benchmarks.md); "
                    "torchscript is deprecated in torch 2.13 yet exports this model in <1 s.",
    )


class GateSpec(_Strict):
    max_accuracy_drop_pp: float = Field(default=0.5, ge=0, description="Optimized vs original, percentage points.")
    min_agreement: float = Field(default=0.995, ge=0, le=1, description="Top-1 agreement, optimized vs original.")
    min_accuracy: float = Field(default=0.9, ge=0, le=1, description="Accuracy floor of the optimized model.")
    champion_tolerance_pp: float = Field(default=0.5, ge=0, description="Allowed loss vs the production model.")
    latency_runs: int = Field(default=300, ge=10)


class DeploySpec(_Strict):
    target: Literal["local", "kubernetes"] = Field(
        default="local", description="local: the project's model server; kubernetes: pin the version in the "
                                     "GitOps staging overlay (Argo CD deploys it).")
    server: Literal["torchserve", "kserve"] = Field(
        default="kserve", description="kserve (the default): Relay's V2 (Open Inference Protocol) server, MLServer, "
                                      "the runtime KServe runs natively; torchserve: TorchServe.")
    smoke_samples: int = Field(default=20, ge=1, description="Held-out images the new version must classify "
                                                             "with gate.min_accuracy before anything else.")
    canary_requests: int = Field(default=50, ge=0, description="Replayed held-out requests sent to the new version "
                                                               "and to the version serving now, before the switch.")
    canary_max_error_rate: float = Field(default=0.0, ge=0, le=1,
                                         description="Largest share of failed canary requests to the new version.")
    canary_max_p99_ms: float = Field(default=250.0, gt=0,
                                     description="Largest p99 latency of the new version in a canary interval.")
    canary_intervals: int = Field(default=5, ge=1, description="The canary's requests in this many consecutive "
                                                               "intervals, each a measurement of p99 latency (Argo "
                                                               "Rollouts' analysis `count`).")
    canary_failure_limit: int = Field(default=1, ge=0, description="Intervals whose p99 may exceed "
                                                                   "canary_max_p99_ms before the canary fails (Argo "
                                                                   "Rollouts' `failureLimit`): one stall of a busy "
                                                                   "machine is not a slow model. Errors have no limit "
                                                                   "but canary_max_error_rate.")
    max_request_bytes: int = Field(default=16_000_000, gt=0, le=64_000_000,
                                   description="Larger prediction request bodies get HTTP 413 from the handler.")
    # How TorchServe runs the model (the .mar's model-config.yaml). Defaults measured on the 2-core CI
    # machine (docs/benchmarks.md, "Serving at speed").
    workers: int = Field(default=1, ge=1, le=64, description="TorchServe worker processes for the model.")
    threads: int = Field(default=1, ge=1, le=64, description="ONNX Runtime intra-op threads per worker.")
    batch_size: int = Field(default=8, ge=1, le=1024,
                            description="Largest batch TorchServe's batcher hands the handler (one ORT call).")
    max_batch_delay_ms: int = Field(default=1, ge=1, le=10_000,
                                    description="How long TorchServe waits to fill a batch, ms: the latency a "
                                                "lone request may pay for batching.")

    @model_validator(mode="after")
    def _canary_can_fail(self) -> DeploySpec:
        if self.canary_failure_limit >= self.canary_intervals:
            raise ValueError(f"canary_failure_limit ({self.canary_failure_limit}) must be below canary_intervals "
                             f"({self.canary_intervals}), or no latency could fail the canary")
        if 0 < self.canary_requests < self.canary_intervals:
            raise ValueError(f"canary_requests ({self.canary_requests}) must be at least canary_intervals "
                             f"({self.canary_intervals}): each interval needs a request")
        return self


class Priorities(_Strict):
    """How much each criterion weighs in the bake-off's recommendation (normalized to sum to 1)."""

    accuracy: float = Field(default=0.5, ge=0, description="Test accuracy of the optimized model.")
    latency: float = Field(default=0.3, ge=0, description="Served p50 latency, one client.")
    training_cost: float = Field(default=0.2, ge=0, description="Training images/s (mixed precision), from "
                                                                   "alternating rounds.")

    @model_validator(mode="after")
    def _some_weight(self) -> Priorities:
        if self.accuracy + self.latency + self.training_cost <= 0:
            raise ValueError("at least one priority must be above 0")
        return self


class BakeoffSpec(_Strict):
    """`relay bakeoff`: the task trained in both frameworks (and, optionally, several models) and compared."""

    priorities: Priorities = Priorities()
    models: list[Literal["small_cnn", "resnet", "mobilenet_v2"]] | None = Field(
        default=None, min_length=1, description="Architectures to compare; null: the spec's model only.")
    throughput_rounds: int = Field(default=5, ge=3, le=50,
                                   description="Timed rounds of training per candidate and precision (mixed, fp32), "
                                               "taken in turn with the other candidates' after two warm-up rounds.")
    throughput_round_seconds: float = Field(default=3.0, gt=0, le=600,
                                            description="About how long one round trains, s.")
    latency_runs: int = Field(default=200, ge=10, description="Timed calls at batch 1 (batch 64: a tenth, "
                                                               "at least 10), after warm-up calls.")
    serving_requests: int = Field(default=1000, ge=50, description="Requests per concurrency level (1, 8, 32) "
                                                                    "against TorchServe, after a warm-up.")
    bootstrap_samples: int = Field(default=1000, ge=100, description="Resamples for the 95% intervals.")


# The ONNX exporters of each framework, its default first.
EXPORTERS = {"pytorch": ("torchscript", "dynamo"), "tensorflow": ("tf2onnx",)}


class TaskSpec(_Strict):
    """One task: a dataset, a model, how to train, gate and deploy it, and when to retrain."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    dataset: DatasetSpec
    input: InputSpec
    framework: Framework = Field(description="Which framework trains the model.")
    model: ModelSpec = ModelSpec()
    training: TrainingSpec
    optimize: OptimizeSpec = OptimizeSpec()
    gate: GateSpec = GateSpec()
    deploy: DeploySpec = DeploySpec()
    bakeoff: BakeoffSpec = BakeoffSpec()
    schedule: str | None = Field(default=None, description="Airflow schedule (cron or preset); null: manual only.")

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        presets = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
        if value is None or value in presets or len(value.split()) == 5:
            return value
        raise ValueError(f"must be a 5-field cron expression or one of {sorted(presets)}")

    @model_validator(mode="before")
    @classmethod
    def _framework_default_exporter(cls, data: Any) -> Any:
        """An unset optimize.exporter is the framework's own, so the effective spec names what really ran."""
        framework = data.get("framework") if isinstance(data, dict) else None
        if not isinstance(framework, str) or framework not in EXPORTERS:
            return data  # a bad framework gets the field's own error
        optimize = data.get("optimize", {})
        if isinstance(optimize, BaseModel):
            optimize = optimize.model_dump()
        if isinstance(optimize, dict) and optimize.get("exporter") is None:
            return {**data, "optimize": {**optimize, "exporter": EXPORTERS[framework][0]}}
        return data

    @model_validator(mode="after")
    def _exporter_fits_framework(self) -> TaskSpec:
        allowed = EXPORTERS[self.framework]
        if self.optimize.exporter not in allowed:
            raise ValueError(f"optimize.exporter {self.optimize.exporter!r} does not export {self.framework} models; "
                             f"allowed: {', '.join(allowed)} (or leave it unset)")
        return self

    @model_validator(mode="after")
    def _classes_unique(self) -> TaskSpec:
        if len(set(self.dataset.classes)) != len(self.dataset.classes):
            raise ValueError("dataset.classes has duplicates")
        return self

    @model_validator(mode="after")
    def _model_fits_input(self) -> TaskSpec:
        from components.models.architecture import check_fits  # the architecture knows its own limits

        check_fits(self.model, self.input)
        return self

    def dataset_dir(self, project_dir: Path = PROJECT_DIR) -> Path:
        path = Path(self.dataset.path)
        return path if path.is_absolute() else project_dir / path


# Run parameters: the spec fields one run may override, by name. This is the one declaration: their type,
# bounds, choices and description come from the spec fields above, and the CLI options, the Airflow Params
# form and the Kubernetes pods' arguments are generated from it (run_param_schemas).
OVERRIDABLE = {
    "framework": ("framework",),
    "model": ("model", "name"),
    "epochs": ("training", "epochs"),
    "precision": ("training", "precision"),
    "processes": ("training", "distributed", "processes"),
    "cache": ("training", "cache"),
    "quantize": ("optimize", "quantize"),
    "max_accuracy_drop_pp": ("gate", "max_accuracy_drop_pp"),
    "min_agreement": ("gate", "min_agreement"),
    "min_accuracy": ("gate", "min_accuracy"),
    "champion_tolerance_pp": ("gate", "champion_tolerance_pp"),
}


BAKEOFF = "both"  # framework=both: the run is a bake-off (components.bakeoff), not one training


def spec_field(path: tuple[str, ...]):
    """The pydantic field at ``path`` in TaskSpec (``("training", "epochs")``)."""
    model: type[BaseModel] = TaskSpec
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]]


def run_param_schemas(spec: TaskSpec | None = None, bakeoff: bool = True) -> dict[str, dict[str, Any]]:
    """JSON schema of each run parameter (type, bounds, enum, title, description), from its spec field.

    With ``spec``, each schema's ``default`` is that spec's current value. ``bakeoff``: whether framework may be
    ``both`` (a bake-off); where no bake-off can run, the choice is not offered and says so.
    """
    from pydantic import TypeAdapter
    from typing import Annotated

    schemas = {}
    for name, path in OVERRIDABLE.items():
        field = spec_field(path)
        schema = TypeAdapter(Annotated[field.annotation, field]).json_schema()
        schema.pop("default", None)
        schema["title"] = name
        schema["description"] = f"{field.description} (spec field: {'.'.join(path)})"
        if name == "framework" and bakeoff:
            schema["enum"] = [*schema["enum"], BAKEOFF]
            schema["description"] += f"; {BAKEOFF}: a bake-off, trained in each framework, compared, and the " \
                                     "recommended one shipped (`relay bakeoff --ship`)"
        elif name == "framework":
            schema["description"] += f"; {BAKEOFF} (a bake-off) runs only with local execution: run `relay bakeoff`"
        if spec is not None:
            value = spec.model_dump(mode="json")
            for part in path:
                value = value[part]
            schema["default"] = value
        schemas[name] = schema
    return schemas


def parse_run_params(text: str, source: str = "--params") -> dict[str, Any]:
    """Parse the JSON object of run parameters that the Kubernetes pods receive."""
    import json

    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"{source}: not JSON ({error.msg} at char {error.pos}): pass an object like "
                        '{"epochs": 3}') from None
    if not isinstance(params, dict):
        raise SpecError(f"{source}: run parameters must be a JSON object, got {type(params).__name__}")
    return params  # names and values are checked by apply_overrides, as every other source's are


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
        path = specs_dir() / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in specs_dir().glob("*.yaml"))
        hint = "" if known else ("; make one from your images with `relay task new NAME --from DIR` (in a project "
                                 "made by `relay init DIR`, or with RELAY_PROJECT_DIR set to one)")
        raise SpecError(f"no task spec {path}; known tasks: {', '.join(known) or 'none'}{hint}")
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
    if overrides.get("framework") == BAKEOFF:
        raise SpecError(f"framework={BAKEOFF} is a bake-off, not one run: use `relay bakeoff {spec.name}`")
    data = spec.model_dump()
    if overrides.get("framework") is not None and overrides.get("framework") != spec.framework:
        data["optimize"]["exporter"] = None  # the other framework's exporter cannot export this one
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
    """Every task spec of the project (pipelines/specs/)."""
    return sorted(specs_dir().glob("*.yaml"))
