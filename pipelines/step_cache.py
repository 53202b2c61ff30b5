"""Reuse a step's output when nothing it depends on has changed.

A step's key is the content hash of what decides its output:
- the data version: the data step's manifest (every file's content hash, label and split) and data.json;
- the code: the step's own stage and every Relay module it imports (``STEP_CODE``, followed through the
  import graph, so the ground floor is always in), ``pipelines/steps.py``, and the locks that pin the
  libraries. A change elsewhere (deploy, the CLI) leaves the key as it was;
- the effective parameters: the spec sections the step reads;
- the keys of the steps it reads from (optimize reads train's output, the gate also the champion's version).

Entries live in ``<RELAY_HOME>/cache/steps/<key>/``, written whole or not at all. Why not DVC's
run-cache: only ``dvc repro`` consults it, while Airflow, the CLI and the pods all run steps through
``run_step``; one keyed cache serves them all, and it is keyed by the same data version DVC tracks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from components.atomic import atomic_dir, write_json
from components.measurement import ThreadSettings
from components.machine import describe_machine
from components.run_files import STEP_OUTPUTS, STEPS_RECORD, RunDir
from components.settings import PROJECT_DIR, Settings
from components.spec import TaskSpec
from pipelines.import_graph import import_closure

# The spec sections each cached step reads (the run directories it writes: components.run_files.STEP_OUTPUTS).
_READS = {
    "validate": ("dataset", "input"),
    "train": ("dataset", "input", "framework", "model", "training"),
    "optimize": ("dataset", "input", "framework", "model", "training", "optimize"),
    "gate": ("dataset", "input", "framework", "model", "training", "optimize", "gate"),
}
CACHED_STEPS = tuple(_READS)
_UPSTREAM = {"optimize": "train", "gate": "optimize"}
# The modules that make each step's output; each brings what it imports. The entry points load a framework's
# backend by name (importlib), which no import statement shows, so the backends are named here.
STEP_CODE = {
    "validate": ["components.validate.expectations"],
    "train": ["components.frameworks.pytorch", "components.frameworks.tensorflow"],
    "optimize": ["components.frameworks.pytorch", "components.frameworks.tensorflow",
                 "components.optimize.quantize"],
    "gate": ["components.gate.verdict", "components.measurement", "components.frameworks.pytorch",
             "components.frameworks.tensorflow"],
}
RECORD = STEPS_RECORD  # in the run directory: per step, computed or reused, and why
ENTRY = "entry.json"


@lru_cache(maxsize=None)
def code_version(step: str) -> str:
    """Hash of ``step``'s code (its stage and what that imports) and the pinned library versions."""
    digest = hashlib.sha256()
    files = import_closure(STEP_CODE[step]) + [PROJECT_DIR / "pipelines" / "steps.py"]
    files += sorted((PROJECT_DIR / "requirements").glob("*.lock"))  # a checkout's locks (a wheel has none)
    for path in files:
        digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    # The libraries that shape a model, as installed (an installed Relay carries no lock file).
    digest.update(json.dumps(describe_machine()["libraries"], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def data_version(run: Path) -> str:
    """Hash of the data step's output, without where the dataset happens to live on this machine."""
    layout = RunDir(run)
    info = json.loads(layout.data_info.read_text())
    info.pop("dataset_dir", None)
    digest = hashlib.sha256(layout.manifest.read_bytes())
    digest.update(json.dumps(info, sort_keys=True).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class StepKey:
    step: str
    key: str
    inputs: dict  # what went into the key, for the record


def step_key(step: str, spec: TaskSpec, run: Path, champion: str | None = None) -> StepKey:
    """The key of ``step`` in ``run``: data version, code, the spec sections it reads, upstream keys."""
    spec_data = spec.model_dump(mode="json")
    inputs = {"step": step, "data": data_version(run), "code": code_version(step),
              "params": {section: spec_data[section] for section in _READS[step]}}
    if upstream := _UPSTREAM.get(step):
        inputs["upstream"] = step_key(upstream, spec, run).key
    if step == "gate":
        inputs["champion"] = champion
        inputs["latency_threads"] = ThreadSettings.serving(spec).as_dict()  # the settings its latencies are timed in
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    return StepKey(step, key, inputs)


class StepCache:
    """Step outputs by key under ``<RELAY_HOME>/cache/steps``."""

    def __init__(self, settings: Settings):
        self.root = settings.home / "cache" / "steps"

    def restore(self, key: StepKey, run: Path) -> dict | None:
        """Copy a cached output into ``run``; return the summary it was cached with, or None on a miss."""
        entry_dir = self.root / key.key
        entry = entry_dir / ENTRY
        if not entry.is_file():
            return None
        recorded = json.loads(entry.read_text())
        for name in STEP_OUTPUTS[key.step]:
            with atomic_dir(run / name) as tmp:
                shutil.copytree(entry_dir / name, tmp, dirs_exist_ok=True)
        # Paths in the summary name the run that computed it; they now name this one.
        summary = json.loads(json.dumps(recorded["summary"]).replace(recorded["run"], str(run)))
        return {**summary, "cache": {"reused": True, "key": key.key, "from_run": Path(recorded["run"]).name}}

    def store(self, key: StepKey, run: Path, summary: dict) -> None:
        with atomic_dir(self.root / key.key) as tmp:
            for name in STEP_OUTPUTS[key.step]:
                shutil.copytree(run / name, tmp / name)
            write_json(tmp / ENTRY, {"step": key.step, "run": str(run), "inputs": key.inputs, "summary": summary})


def record(run: Path, step: str, entry: dict) -> None:
    """Note in the run's steps.json whether ``step`` was computed or reused, and why."""
    path = RunDir(run).steps_record
    steps = json.loads(path.read_text()) if path.is_file() else {}
    steps[step] = {**entry, "finished_at": round(time.time(), 3)}
    write_json(path, steps)


def explain(step: str, key: StepKey | None, reused: dict | None) -> str:
    """One line for the run's record: why ``step`` was computed or reused."""
    if step not in CACHED_STEPS:
        return ("not cached: this step talks to the world outside the run (the dataset on disk and DVC, the "
                "registry, the model server); it is cheap when nothing changed")
    if key is None:
        return "not cached: the step cache is off (RELAY_STEP_CACHE=false)"
    if reused:
        return (f"reused the output of run {reused['cache']['from_run']}: same data version {key.inputs['data']}, code "
                f"{key.inputs['code']} and parameters (key {key.key})")
    return f"computed: no earlier output with this data version, code and parameters (key {key.key})"
