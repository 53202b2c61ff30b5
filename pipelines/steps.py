"""The step graph: which steps a run has, in what order, and where each reads and writes.

A run is a directory ``<RELAY_HOME>/runs/<task>/<run_id>/`` holding the run's effective spec
(``spec.json``: the task spec with the run's overrides) and one subdirectory per step. Every
runner (CLI, Airflow, dvc.yaml, a Kubernetes pod) calls ``run_step`` with that directory, so each
step is defined once and steps hand each other paths, not objects.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.atomic import write_json
from components.errors import GateFailed, RelayError
from components.run_files import (GATE_COMPARISON_PLOT, GATE_JSON, GATE_PLOT, GATE_REPORT, LINEAGE_CARD,
                                  OPTIMIZED_MODEL, PREPROCESSING, STEP_NEEDS, STEPS, RunDir)
from components.settings import Settings, get_settings
from components.spec import TaskSpec, load_spec, parse_spec

# Steps that can fail for passing reasons (a DVC or git remote, the model server): orchestrators retry
# them with backoff. validate and gate fail deterministically: a retry would only repeat the verdict.
RETRYABLE = ("data", "register", "deploy")


def _safe_id(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run_id).strip("-")


def start_run(task: str, overrides: dict[str, Any] | None = None, run_id: str | None = None,
              settings: Settings | None = None, run_dir: Path | None = None) -> Path:
    """Create a run directory with the effective spec; return it. Two runs never share one.

    With an explicit ``run_id`` (an Airflow run retrying its first task) an existing run is resumed.
    An explicit ``run_dir`` (dvc.yaml's fixed workspace directory) is (re)initialized in place.
    """
    settings = settings or get_settings()
    spec = load_spec(task, overrides)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_run_files(RunDir(run_dir), spec, overrides)
        return run_dir
    resume = run_id is not None
    run_id = _safe_id(run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    run_dir = settings.runs_dir / spec.name / run_id
    if resume and RunDir(run_dir).spec_file.is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=False)
    _write_run_files(RunDir(run_dir), spec, overrides)
    latest = run_dir.parent / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(run_dir.name)
    return run_dir


def _write_run_files(run: RunDir, spec: TaskSpec, overrides: dict[str, Any] | None) -> None:
    write_json(run.spec_file, spec.model_dump(mode="json"))
    write_json(run.params_file, overrides or {})


def airflow_run_dir(task: str, airflow_run_id: str, settings: Settings | None = None) -> Path:
    """The run directory of an Airflow run of ``task`` (its data task starts it under this name)."""
    settings = settings or get_settings()
    return settings.runs_dir / task / _safe_id(f"airflow-{airflow_run_id}")


def run_spec(run_dir: Path) -> TaskSpec:
    path = RunDir(run_dir).spec_file
    if not path.is_file():
        raise RelayError(f"{run_dir} is not a Relay run directory (no {path.name}); start one with `relay step data`")
    return parse_spec(json.loads(path.read_text()), str(path))


def latest_run(task: str, settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    latest = settings.runs_dir / task / "latest"
    if not latest.exists():
        raise RelayError(f"task {task} has no run yet: start one with `relay run {task}` or `relay step data --task {task}`")
    return latest.resolve()


# What each step returns: typed here, a JSON-able dict (``asdict``) once it leaves ``run_step`` (the CLI prints
# it, Airflow's XCom and the step cache store it).
@dataclass(frozen=True)
class DataSummary:
    images: int
    described: int
    dataset_md5: str | None
    manifest: str


@dataclass(frozen=True)
class ValidateSummary:
    success: bool
    data_docs: str
    tfx_report: str
    drift_baseline: str | None


@dataclass(frozen=True)
class TrainSummary:
    framework: str
    test_accuracy: float
    train_seconds: float


@dataclass(frozen=True)
class OptimizeSummary:
    model: str
    conversion_seconds: float


@dataclass(frozen=True)
class GateSummary:
    passed: bool
    failed_checks: list[str]
    report: str
    accuracy: float
    measurements: str


@dataclass(frozen=True)
class RegisterSummary:
    version: str
    tag: str
    commit: str
    reused: bool = False
    why: str | None = None


@dataclass(frozen=True)
class LocalDeploySummary:
    version: str
    previous_default: str | None
    smoke_accuracy: float | None
    url: str | None
    rolled_back: bool
    why: str | None
    canary: dict | None = None


@dataclass(frozen=True)
class GitOpsDeploySummary:
    version: str
    env: str
    previous: str | None
    commit: str
    live: str


StepSummary = (DataSummary | ValidateSummary | TrainSummary | OptimizeSummary | GateSummary | RegisterSummary
               | LocalDeploySummary | GitOpsDeploySummary)


def _data(spec: TaskSpec, run: RunDir, settings: Settings) -> DataSummary:
    from components.data.dataset import prepare_data
    from components.data.shards import write_shards
    from components.data.split_files import packs_reach_other_machines, write_file_packs

    result = prepare_data(spec, run.data, settings)
    if spec.training.cache == "shards":
        write_shards(spec, run.data, settings)
    if packs_reach_other_machines(settings):
        write_file_packs(spec, run.data, settings)
    return DataSummary(result.images, result.described, result.dataset_md5, str(result.manifest))


def _validate(spec: TaskSpec, run: RunDir, settings: Settings) -> ValidateSummary:
    from components.validate.expectations import validate_data

    result, tfx = validate_data(spec, run.data, run.validate, run.tfx, settings)
    return ValidateSummary(result.success and tfx.success, str(result.data_docs), str(tfx.report), tfx.baseline)


def _train(spec: TaskSpec, run: RunDir, settings: Settings) -> TrainSummary:
    from components.frameworks import train_model

    result = train_model(spec, run.data, run.train)
    return TrainSummary(result.framework, result.test_accuracy, round(result.train_seconds, 2))


def _optimize(spec: TaskSpec, run: RunDir, settings: Settings) -> OptimizeSummary:
    from components.frameworks import optimize_model

    result = optimize_model(spec, run.train, run.data, run.optimize)
    return OptimizeSummary(str(result.model), round(result.conversion_seconds, 3))


def _gate(spec: TaskSpec, run: RunDir, settings: Settings) -> GateSummary:
    from components.data.dataset import load_split
    from components.frameworks import load_predictor
    from components.gate.verdict import Champion, Latency, decide_gate, measure_model_pair, write_gate
    from components.imaging import Preprocessing, preprocess_files
    from components.measurement import Runtime, ThreadSettings, time_runtimes
    from components.onnx_runtime import onnx_predictor
    from components.registry.model_registry import ModelRegistry
    from components.train import model_framework, model_preprocessing

    prep = model_preprocessing(run.train)
    images, labels, paths = load_split(run.data, "test", spec.dataset.classes, prep)
    registry = ModelRegistry(settings)
    champion = None
    role, version = _champion_version(spec, registry, settings)
    if version:
        # The champion is re-scored on this data version's test split, through its own preprocessing.
        theirs = Preprocessing.from_dict(json.loads(registry.artifact_bytes(spec.name, version, PREPROCESSING)))
        champion = Champion(version, onnx_predictor(registry.artifact_bytes(spec.name, version, OPTIMIZED_MODEL)),
                            role, None if theirs == prep else preprocess_files(paths, theirs))
    # The model pair's own figures do not depend on the champion or the thresholds: a rerun reuses them.
    measured, reused_from = _cached_measurements(spec, run, settings)
    if measured is None:
        # Both models are timed under the thread settings they will be served with, in a process of their own,
        # so the verdict is the same in a user's shell, under Airflow and in the tests (components.measurement).
        threads = ThreadSettings.serving(spec)
        timings = time_runtimes([Runtime.native("original", model_framework(run.train), run.train),
                                 Runtime.onnx("optimized", run.optimized_model)],
                                {"b1": images[:1]}, {"b1": spec.gate.latency_runs}, threads)
        latency = Latency(timings.p50("original", "b1"), timings.p50("optimized", "b1"), timings.method())
        measured = measure_model_pair(load_predictor(run.train), onnx_predictor(run.optimized_model),
                                  images, labels, spec.gate.latency_runs, latency)
        _store_measurements(spec, run, settings, measured)
    gate = decide_gate(spec.gate, measured, images, labels, champion, spec.dataset.classes)
    optimize_info = json.loads((run.optimize_info).read_text())
    trt = optimize_info["tensorrt"]
    notes = {"tensorrt": f"skipped: {trt['skipped']}" if "skipped" in trt
             else f"converted ({trt['precision']}): {trt['converted']}",
             "measurements": (f"accuracy, agreement and latency of this model pair reused from run {reused_from} "
                              "(same data version, code and model)") if reused_from else "measured in this run"}
    result = write_gate(spec.name, gate, notes, run.gate)
    return GateSummary(result.passed, result.failed_checks, str(result.report), gate["metrics"]["accuracy_optimized"],
                       f"reused from run {reused_from}" if reused_from else "measured")


def _measurements_file(spec: TaskSpec, run: RunDir, settings: Settings) -> Path | None:
    from components.measurement import ThreadSettings
    from pipelines.step_cache import step_key

    if not settings.step_cache:
        return None
    key = step_key("optimize", spec, run.path).key  # the model pair and the data, as the optimize step saw them
    # ...and how they were timed: latencies taken under other thread settings are other measurements.
    threads = ThreadSettings.serving(spec)
    return (settings.home / "cache" / "gate-measurements" /
            f"{key}-{spec.gate.latency_runs}-t{threads.intra_op}x{threads.inter_op}.json")


def _cached_measurements(spec: TaskSpec, run: RunDir, settings: Settings) -> tuple[dict | None, str | None]:
    path = _measurements_file(spec, run, settings)
    if path is None or not path.is_file():
        return None, None
    entry = json.loads(path.read_text())
    return entry["measured"], entry["run"]


def _store_measurements(spec: TaskSpec, run: RunDir, settings: Settings, measured: dict) -> None:
    if path := _measurements_file(spec, run, settings):
        write_json(path, {"run": run.path.name, "measured": measured})


def _champion_version(spec: TaskSpec, registry, settings: Settings) -> tuple[str, str | None]:
    """Which model a new one must match: for a task served locally, the version served as default;
    otherwise (or when nothing is served yet) the GTO production stage."""
    if spec.deploy.target == "local":
        from components.deploy.local import served_default

        if default := served_default(settings, spec.name):
            return "served default", default
    return "production", registry.stage_version(spec.name, "production")


def gate_passed(run: Path) -> bool:
    path = RunDir(run).gate_json
    return path.is_file() and json.loads(path.read_text())["passed"] is True


def gate_failure(run: Path) -> str:
    """One line on a failed gate: each failed check with its value and threshold, and where the report is."""
    gate = json.loads(RunDir(run).gate_json.read_text())
    failed = [f"{c['name']} {c['value']:.4g}{c['unit']} vs {c['threshold']:.4g}{c['unit']} ({c['rule']})"
              for c in gate["checks"] if not c["passed"]]
    return (f"gate failed: {'; '.join(failed)}. Nothing was registered or deployed; what is served is unchanged. "
            f"Report: {RunDir(run).gate_report}")


def _register(spec: TaskSpec, run: RunDir, settings: Settings) -> RegisterSummary:
    from components.atomic import copy_file, sha256_file
    from components.data.dataset import read_data_info
    from components.deploy.lineage import write_card
    from components.deploy.package import build_mar
    from components.frameworks import backend
    from components.registry.model_registry import ModelRegistry
    from components.train import model_framework, model_preprocessing
    from components.versioning import git

    if not gate_passed(run.path):
        raise GateFailed(f"run {run.path.name} has not passed the gate ({run.gate_json}): refusing to register")
    model = run.optimized_model
    framework = model_framework(run.train)
    registry = ModelRegistry(settings)
    same = registry.version_with_model(spec.name, sha256_file(model), sha256_file(run.preprocessing))
    if same:
        # A rerun that changed nothing (the step cache gave back the same model): the version exists already.
        tag = f"{spec.name}@{same}"
        commit = git(["rev-parse", f"{tag}^{{commit}}"], registry.path)
        write_json(run.registration, {"version": same, "tag": tag, "commit": commit})
        write_card(run.path, settings)
        return RegisterSummary(same, tag, commit, reused=True, why=f"{same} holds these exact model and preprocessing bytes")

    def build(version: str, dest: Path) -> None:
        copy_file(model, dest / OPTIMIZED_MODEL)
        copy_file(run.preprocessing, dest / PREPROCESSING)
        build_mar(spec, version, model, model_preprocessing(run.train), dest / "model.mar")
        for name in (GATE_JSON, GATE_REPORT, GATE_PLOT, GATE_COMPARISON_PLOT):
            copy_file(run.gate / name, dest / name)
        backend(framework).extra_artifacts(spec, version, run.train, dest,
                                           registry.stage_version(spec.name, "production"))
        write_card(run.path, settings, dest / LINEAGE_CARD, version=version,
                   serving=f"registered, not yet deployed: `relay report {spec.name} --version {version}` "
                           "shows where it is served now")

    metadata = {"run_id": run.path.name, "framework": framework,
                "dataset_md5": read_data_info(run.data)["dataset_md5"], "spec": spec.model_dump(mode="json")}
    registration = registry.register(spec.name, build, metadata)
    write_json(run.registration, {"version": registration.version, "tag": registration.tag, "commit": registration.commit})
    write_card(run.path, settings)
    return RegisterSummary(registration.version, registration.tag, registration.commit, reused=registration.reused)


def _deploy(spec: TaskSpec, run: RunDir, settings: Settings) -> LocalDeploySummary | GitOpsDeploySummary:
    from components.deploy.local import deploy_local
    from components.deploy.lineage import write_card

    registration = json.loads((run.registration).read_text())
    if spec.deploy.target == "kubernetes":
        from components.gitops.promote import promote

        promotion = promote(spec.name, registration["version"], "staging", settings)
        summary = GitOpsDeploySummary(promotion.version, "staging", promotion.previous, promotion.commit, promotion.live)
        write_json(run.deployment, asdict(summary))
        write_card(run.path, settings, serving=f"staging overlay pinned by GitOps commit {promotion.commit}: {promotion.live}")
        return summary
    recorded = run.deployment
    if recorded.is_file():
        from components.deploy.local import served_by, served_default

        earlier = json.loads(recorded.read_text())
        if earlier["version"] == registration["version"] and not earlier.get("rolled_back") and \
                served_default(settings, spec.name) == earlier["version"] and served_by(settings, spec.name).pid():
            return LocalDeploySummary(**earlier)  # a retry of a deploy that went through: its record stands
    result = deploy_local(spec, registration["version"], run.data, settings)
    summary = LocalDeploySummary(result.version, result.previous_default, result.smoke_accuracy, result.inference_url,
                                 result.rolled_back, result.why, result.canary)
    write_json(run.deployment, asdict(summary))
    write_card(run.path, settings)
    return summary


_STEP_FUNCTIONS = {"data": _data, "validate": _validate, "train": _train, "optimize": _optimize,
                   "gate": _gate, "register": _register, "deploy": _deploy}


def run_step(name: str, run_dir: Path, settings: Settings | None = None) -> dict:
    """Run one step of the run in ``run_dir``; return a small JSON-able summary.

    validate, train, optimize and gate reuse an earlier run's output when the data version, the code and
    their parameters are the same (pipelines.step_cache); the summary's ``cache`` and the run's
    ``steps.json`` say which happened and why.
    """
    from pipelines.step_cache import CACHED_STEPS, StepCache, explain, record, step_key

    if name not in _STEP_FUNCTIONS:
        raise RelayError(f"unknown step '{name}'; steps: {', '.join(STEPS)}")
    settings = settings or get_settings()
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    spec = run_spec(run_dir)
    _inputs_present(name, run)
    if name != "data" and run.data_info.is_file() and (splits := _splits_read(name, spec)):
        from components.data.split_files import ensure_split_files

        ensure_split_files(spec, run.data, splits, settings)
    started = time.perf_counter()
    key = reused = None
    if name in CACHED_STEPS and settings.step_cache:
        from components.registry.model_registry import ModelRegistry

        champion = _champion_version(spec, ModelRegistry(settings), settings)[1] if name == "gate" else None
        key = step_key(name, spec, run_dir, champion)
        reused = StepCache(settings).restore(key, run_dir)
    summary = reused or asdict(_STEP_FUNCTIONS[name](spec, run, settings))
    if key is not None and not reused:
        StepCache(settings).store(key, run_dir, summary)
    record(run_dir, name, {"reused": bool(reused), "why": explain(name, key, reused),
                           "seconds": round(time.perf_counter() - started, 3)})
    return summary if reused else {**summary, "cache": {"reused": False, "key": key and key.key}}


def _inputs_present(name: str, run: RunDir) -> None:
    """Each step the run layout says ``name`` reads must have completed; a missing one did not run (or failed)."""
    for producer in STEP_NEEDS[name]:
        needed = run.completed(producer)
        if not needed.is_file():
            raise RelayError(f"step {name} needs {needed.relative_to(run.path)} from step {producer}, which has not "
                             f"completed in {run.path}: run `relay step {producer} --run-dir {run.path}` first "
                             "(or see why it failed)")


def _splits_read(name: str, spec: TaskSpec) -> tuple[str, ...]:
    """The dataset splits whose image files step ``name`` opens: a step on a machine without them fetches only
    these. validate reads the data step's manifest, register the run's own files, and training from shards
    streams them from the shard store."""
    from components.data.dataset import SPLITS

    reads = {"train": () if spec.training.cache == "shards" else SPLITS,
             "optimize": ("train",) if spec.optimize.quantize == "int8" else (),  # calibration images
             "gate": ("test",),
             "deploy": ("test",) if spec.deploy.target == "local" else ()}  # the smoke test and the canary
    return reads.get(name, ())
