"""The names of a run's files, in one place. A run directory holds one subdirectory per step."""

from __future__ import annotations

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
