"""A run's layout, in one place: the names of its files, and ``RunDir``, which names every step's outputs.
A run directory holds one subdirectory per step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPEC = "spec.json"                       # the run's effective spec (task spec + overrides)
RUN_PARAMS = "params.json"               # the run parameters (overrides) it started with
LINEAGE_CARD = "lineage.html"            # the run's and the registered version's lineage card
CHOSEN_BY = "chosen_by_bakeoff.json"     # a bake-off's recommended candidate: which bake-off chose it, and why

MANIFEST = "manifest.csv"                # data/: one row per file
DATA_INFO = "data.json"                  # data/: dataset version, counts, resolved preprocessing
SHARDS = "shards.json"                   # data/: where the packed shards are, and which rows each holds
FILE_PACKS = "file_packs.json"           # data/: where the packs of the original files are, and which rows each holds

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
# The earlier step whose completion each step needs before it starts (what it reads beyond that, such as
# data/ for the gate's test split, that step's own predecessors have read).
STEP_NEEDS = {"data": (), "validate": ("data",), "train": ("data",), "optimize": ("train",), "gate": ("optimize",),
              "register": ("gate",), "deploy": ("register",)}


def _at(*parts: str) -> property:
    """A RunDir property: the path ``parts`` under the run directory."""
    return property(lambda run: run.path.joinpath(*parts), doc="/".join(parts))


@dataclass(frozen=True)
class RunDir:
    """One run's directory, ``<RELAY_HOME>/runs/<task>/<run_id>/``: its effective spec and every step's
    outputs, by name. Steps take and return plain paths; this is where those paths come from."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:  # a RunDir goes wherever a run directory's path does (CLI args, Path())
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    spec_file = _at(SPEC)
    params_file = _at(RUN_PARAMS)
    steps_record = _at(STEPS_RECORD)
    lineage_card = _at(LINEAGE_CARD)
    chosen_by = _at(CHOSEN_BY)
    checkpoints = _at(CHECKPOINTS)

    data, validate, tfx, train = _at("data"), _at("validate"), _at("tfx"), _at("train")
    optimize, gate, register, deploy = _at("optimize"), _at("gate"), _at("register"), _at("deploy")

    data_info = _at("data", DATA_INFO)
    manifest = _at("data", MANIFEST)
    validation = _at("validate", VALIDATION)
    metrics = _at("train", METRICS)
    preprocessing = _at("train", PREPROCESSING)
    optimized_model = _at("optimize", OPTIMIZED_MODEL)
    optimize_info = _at("optimize", OPTIMIZE_INFO)
    gate_json = _at("gate", GATE_JSON)
    gate_report = _at("gate", GATE_REPORT)
    registration = _at("register", REGISTRATION)
    deployment = _at("deploy", DEPLOYMENT)

    def completed(self, step: str) -> Path:
        """The file a step publishes with its directory: present means the step completed."""
        return {"data": self.data_info, "validate": self.validation, "train": self.metrics,
                "optimize": self.optimize_info, "gate": self.gate_json, "register": self.registration,
                "deploy": self.deployment}[step]
