"""A run's layout, in one place: the names of its files, and ``RunDir``, which names every step's outputs.
A run directory holds one subdirectory per step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPEC = "spec.json"                       # the run's effective spec (task spec + overrides)
RUN_PARAMS = "params.json"               # the run parameters (overrides) it started with
LINEAGE_CARD = "lineage.html"            # the run's and the registered version's lineage card

MANIFEST = "manifest.csv"                # data/: one row per file
DATA_INFO = "data.json"                  # data/: dataset version, counts, resolved preprocessing

VALIDATION = "validation.json"           # validate/: GX results

METRICS = "metrics.json"                 # train/: framework, accuracies, timings
ARCHITECTURE = "architecture.json"       # train/: the framework-neutral model description
PREPROCESSING = "preprocessing.json"     # train/: how files become this model's input
CHECKPOINTS = "train.checkpoints"        # beside train/: per-epoch checkpoints of an unfinished training

OPTIMIZED_MODEL = "model.onnx"           # optimize/ and the registry
OPTIMIZE_INFO = "optimize.json"          # optimize/

GATE_JSON = "gate.json"                  # gate/
GATE_REPORT = "gate.md"                  # gate/
GATE_PLOT = "gate.png"                   # gate/
GATE_COMPARISON_PLOT = "champion_vs_challenger.png"  # gate/: confusion matrices and per-class recall

REGISTRATION = "registration.json"       # register/
DEPLOYMENT = "deployment.json"           # deploy/
STEPS_RECORD = "steps.json"              # per step: computed or reused, and why

STEPS = ("data", "validate", "train", "optimize", "gate", "register", "deploy")
# The directories each step writes (validate also runs TFX, into tfx/).
STEP_OUTPUTS = {step: (step,) for step in STEPS} | {"validate": ("validate", "tfx")}
# The earlier steps whose outputs each step reads.
STEP_READS = {"data": (), "validate": ("data",), "train": ("data",), "optimize": ("train", "data"),
              "gate": ("optimize", "train", "data"), "register": ("gate", "optimize", "train", "data"),
              "deploy": ("register", "data")}


@dataclass(frozen=True)
class RunDir:
    """One run's directory, ``<RELAY_HOME>/runs/<task>/<run_id>/``: its effective spec and every step's
    outputs, by name. Steps take and return plain paths; this is where those paths come from."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def spec_file(self) -> Path:
        return self.path / SPEC

    @property
    def params_file(self) -> Path:
        return self.path / RUN_PARAMS

    @property
    def steps_record(self) -> Path:
        return self.path / STEPS_RECORD

    @property
    def lineage_card(self) -> Path:
        return self.path / LINEAGE_CARD

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def validate(self) -> Path:
        return self.path / "validate"

    @property
    def tfx(self) -> Path:
        return self.path / "tfx"

    @property
    def train(self) -> Path:
        return self.path / "train"

    @property
    def optimize(self) -> Path:
        return self.path / "optimize"

    @property
    def gate(self) -> Path:
        return self.path / "gate"

    @property
    def register(self) -> Path:
        return self.path / "register"

    @property
    def deploy(self) -> Path:
        return self.path / "deploy"

    @property
    def data_info(self) -> Path:
        return self.data / DATA_INFO

    @property
    def manifest(self) -> Path:
        return self.data / MANIFEST

    @property
    def validation(self) -> Path:
        return self.validate / VALIDATION

    @property
    def metrics(self) -> Path:
        return self.train / METRICS

    @property
    def preprocessing(self) -> Path:
        return self.train / PREPROCESSING

    @property
    def optimized_model(self) -> Path:
        return self.optimize / OPTIMIZED_MODEL

    @property
    def optimize_info(self) -> Path:
        return self.optimize / OPTIMIZE_INFO

    @property
    def gate_json(self) -> Path:
        return self.gate / GATE_JSON

    @property
    def gate_report(self) -> Path:
        return self.gate / GATE_REPORT

    @property
    def registration(self) -> Path:
        return self.register / REGISTRATION

    @property
    def deployment(self) -> Path:
        return self.deploy / DEPLOYMENT

    def completed(self, step: str) -> Path:
        """The file a step writes last-but-atomically with its directory: present means the step completed."""
        return {"data": self.data_info, "validate": self.validation, "train": self.metrics,
                "optimize": self.optimize_info, "gate": self.gate_json, "register": self.registration,
                "deploy": self.deployment}[step]

    def outputs(self, step: str) -> list[Path]:
        return [self.path / name for name in STEP_OUTPUTS[step]]
