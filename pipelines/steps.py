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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.atomic import write_json
from components.errors import GateFailed, RelayError
from components.run_files import (DATA_INFO, DEPLOYMENT, GATE_COMPARISON_PLOT, GATE_JSON, GATE_PLOT, GATE_REPORT,
                                  LINEAGE_CARD, METRICS, OPTIMIZE_INFO, OPTIMIZED_MODEL, PREPROCESSING, REGISTRATION,
                                  RUN_PARAMS, SPEC)
from components.settings import Settings, get_settings
from components.spec import TaskSpec, load_spec, parse_spec

STEPS = ("data", "validate", "train", "optimize", "gate", "register", "deploy")
# Steps that can fail for passing reasons (a DVC or git remote, the model server): orchestrators retry
# them with backoff. validate and gate fail deterministically: a retry would only repeat the verdict.
RETRYABLE = ("data", "register", "deploy")
RUN_SPEC = SPEC


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
        write_json(run_dir / RUN_SPEC, spec.model_dump(mode="json"))
        write_json(run_dir / RUN_PARAMS, overrides or {})
        return run_dir
    resume = run_id is not None
    run_id = _safe_id(run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    run_dir = settings.runs_dir / spec.name / run_id
    if resume and (run_dir / RUN_SPEC).is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=False)
    write_json(run_dir / RUN_SPEC, spec.model_dump(mode="json"))
    write_json(run_dir / RUN_PARAMS, overrides or {})
    latest = run_dir.parent / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(run_dir.name)
    return run_dir


def airflow_run_dir(task: str, airflow_run_id: str, settings: Settings | None = None) -> Path:
    """The run directory of an Airflow run of ``task`` (its data task starts it under this name)."""
    settings = settings or get_settings()
    return settings.runs_dir / task / _safe_id(f"airflow-{airflow_run_id}")


def run_spec(run_dir: Path) -> TaskSpec:
    path = run_dir / RUN_SPEC
    if not path.is_file():
        raise RelayError(f"{run_dir} is not a Relay run directory (no {RUN_SPEC}); start one with `relay step data`")
    return parse_spec(json.loads(path.read_text()), str(path))


def latest_run(task: str, settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    latest = settings.runs_dir / task / "latest"
    if not latest.exists():
        raise RelayError(f"task {task} has no run yet: start one with `relay run {task}` or `relay step data --task {task}`")
    return latest.resolve()


def _data(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.data.dataset import prepare_data

    result = prepare_data(spec, run / "data", settings)
    return {"images": result.images, "described": result.described, "dataset_md5": result.dataset_md5,
            "manifest": str(result.manifest)}


def _validate(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.validate.expectations import validate_dataset, validate_with_tfx

    result = validate_dataset(spec, run / "data", run / "validate")
    tfx = validate_with_tfx(spec, run / "data", run / "tfx", settings)
    return {"success": result.success and tfx.success, "data_docs": str(result.data_docs),
            "tfx_report": str(tfx.report), "drift_baseline": tfx.baseline}


def _train(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.frameworks import train_model

    result = train_model(spec, run / "data", run / "train")
    return {"framework": result.framework, "test_accuracy": result.test_accuracy,
            "train_seconds": round(result.train_seconds, 2)}


def _optimize(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.frameworks import optimize_model

    result = optimize_model(spec, run / "train", run / "data", run / "optimize")
    return {"model": str(result.model), "conversion_seconds": round(result.conversion_seconds, 3)}


def _gate(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.data.dataset import load_split, split_files
    from components.gate.verdict import Champion, Latency, decide_gate, measure_model_pair, write_gate
    from components.imaging import Preprocessing, preprocess_files
    from components.measurement import Runtime, ThreadSettings, time_runtimes
    from components.onnx_runtime import onnx_predictor
    from components.registry.model_registry import ModelRegistry
    from components.train import model_framework, model_preprocessing

    from components.frameworks import load_predictor
    prep = model_preprocessing(run / "train")
    images, labels, paths = load_split(run / "data", "test", spec.dataset.classes, prep)
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
        timings = time_runtimes([Runtime.native("original", model_framework(run / "train"), run / "train"),
                                 Runtime.onnx("optimized", run / "optimize" / OPTIMIZED_MODEL)],
                                {"b1": images[:1]}, {"b1": spec.gate.latency_runs}, threads)
        latency = Latency(timings.p50("original", "b1"), timings.p50("optimized", "b1"), timings.method())
        measured = measure_model_pair(load_predictor(run / "train"), onnx_predictor(run / "optimize" / OPTIMIZED_MODEL),
                                  images, labels, spec.gate.latency_runs, latency)
        _store_measurements(spec, run, settings, measured)
    gate = decide_gate(spec.gate, measured, images, labels, champion, spec.dataset.classes)
    optimize_info = json.loads((run / "optimize" / OPTIMIZE_INFO).read_text())
    trt = optimize_info["tensorrt"]
    notes = {"tensorrt": f"skipped: {trt['skipped']}" if "skipped" in trt
             else f"converted ({trt['precision']}): {trt['converted']}",
             "measurements": (f"accuracy, agreement and latency of this model pair reused from run {reused_from} "
                              "(same data version, code and model)") if reused_from else "measured in this run"}
    result = write_gate(spec.name, gate, notes, run / "gate")
    return {"passed": result.passed, "failed_checks": result.failed_checks, "report": str(result.report),
            "accuracy": gate["metrics"]["accuracy_optimized"],
            "measurements": f"reused from run {reused_from}" if reused_from else "measured"}


def _measurements_file(spec: TaskSpec, run: Path, settings: Settings) -> Path | None:
    from components.measurement import ThreadSettings
    from pipelines.step_cache import step_key

    if not settings.step_cache:
        return None
    key = step_key("optimize", spec, run).key  # the model pair and the data, as the optimize step saw them
    # ...and how they were timed: latencies taken under other thread settings are other measurements.
    threads = ThreadSettings.serving(spec)
    return (settings.home / "cache" / "gate-measurements" /
            f"{key}-{spec.gate.latency_runs}-t{threads.intra_op}x{threads.inter_op}.json")


def _cached_measurements(spec: TaskSpec, run: Path, settings: Settings) -> tuple[dict | None, str | None]:
    path = _measurements_file(spec, run, settings)
    if path is None or not path.is_file():
        return None, None
    entry = json.loads(path.read_text())
    return entry["measured"], entry["run"]


def _store_measurements(spec: TaskSpec, run: Path, settings: Settings, measured: dict) -> None:
    if path := _measurements_file(spec, run, settings):
        write_json(path, {"run": run.name, "measured": measured})


def _champion_version(spec: TaskSpec, registry, settings: Settings) -> tuple[str, str | None]:
    """Which model a new one must match: for a task served locally, the version served as default;
    otherwise (or when nothing is served yet) the GTO production stage."""
    if spec.deploy.target == "local":
        from components.deploy.local import served_default

        if default := served_default(settings, spec.name):
            return "served default", default
    return "production", registry.stage_version(spec.name, "production")


def gate_passed(run: Path) -> bool:
    path = run / "gate" / GATE_JSON
    return path.is_file() and json.loads(path.read_text())["passed"] is True


def gate_failure(run: Path) -> str:
    """One line on a failed gate: each failed check with its value and threshold, and where the report is."""
    gate = json.loads((run / "gate" / GATE_JSON).read_text())
    failed = [f"{c['name']} {c['value']:.4g}{c['unit']} vs {c['threshold']:.4g}{c['unit']} ({c['rule']})"
              for c in gate["checks"] if not c["passed"]]
    return (f"gate failed: {'; '.join(failed)}. Nothing was registered or deployed; what is served is unchanged. "
            f"Report: {run / 'gate' / GATE_REPORT}")


def _register(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.atomic import copy_file, sha256_file
    from components.data.dataset import read_data_info
    from components.frameworks import backend
    from components.deploy.lineage import write_card
    from components.deploy.package import build_mar
    from components.registry.model_registry import ModelRegistry
    from components.versioning import git
    from components.train import model_framework, model_preprocessing

    if not gate_passed(run):
        raise GateFailed(f"run {run.name} has not passed the gate ({run / 'gate' / GATE_JSON}): refusing to register")
    model = run / "optimize" / OPTIMIZED_MODEL
    framework = model_framework(run / "train")
    registry = ModelRegistry(settings)
    same = registry.version_with_model(spec.name, sha256_file(model), sha256_file(run / "train" / PREPROCESSING))
    if same:
        # A rerun that changed nothing (the step cache gave back the same model): the version exists already.
        tag = f"{spec.name}@{same}"
        summary = {"version": same, "tag": tag, "commit": git(["rev-parse", f"{tag}^{{commit}}"], registry.path)}
        write_json(run / "register" / REGISTRATION, summary)
        write_card(run, settings)
        return {**summary, "reused": True, "why": f"{same} holds these exact model and preprocessing bytes"}

    def build(version: str, dest: Path) -> None:
        copy_file(model, dest / OPTIMIZED_MODEL)
        copy_file(run / "train" / PREPROCESSING, dest / PREPROCESSING)
        build_mar(spec, version, model, model_preprocessing(run / "train"), dest / "model.mar")
        for name in (GATE_JSON, GATE_REPORT, GATE_PLOT, GATE_COMPARISON_PLOT):
            copy_file(run / "gate" / name, dest / name)
        backend(framework).extra_artifacts(spec, version, run / "train", dest,
                                           registry.stage_version(spec.name, "production"))
        write_card(run, settings, dest / LINEAGE_CARD, version=version,
                   serving=f"registered, not yet deployed: `relay report {spec.name} --version {version}` "
                           "shows where it is served now")

    metadata = {"run_id": run.name, "framework": framework,
                "dataset_md5": read_data_info(run / "data")["dataset_md5"], "spec": spec.model_dump(mode="json")}
    registration = registry.register(spec.name, build, metadata)
    summary = {"version": registration.version, "tag": registration.tag, "commit": registration.commit}
    write_json(run / "register" / REGISTRATION, summary)
    write_card(run, settings)
    return {**summary, "reused": registration.reused}


def _deploy(spec: TaskSpec, run: Path, settings: Settings) -> dict:
    from components.deploy.local import deploy_local
    from components.deploy.lineage import write_card

    registration = json.loads((run / "register" / REGISTRATION).read_text())
    if spec.deploy.target == "kubernetes":
        from components.gitops.promote import promote

        promotion = promote(spec.name, registration["version"], "staging", settings)
        summary = {"version": promotion.version, "env": "staging", "previous": promotion.previous,
                   "commit": promotion.commit, "live": promotion.live}
        write_json(run / "deploy" / DEPLOYMENT, summary)
        write_card(run, settings, serving=f"staging overlay pinned by GitOps commit {promotion.commit}: {promotion.live}")
        return summary
    recorded = run / "deploy" / DEPLOYMENT
    if recorded.is_file():
        from components.deploy.local import served_default
        from components.deploy.torchserve import TorchServe

        earlier = json.loads(recorded.read_text())
        if earlier["version"] == registration["version"] and not earlier.get("rolled_back") and \
                served_default(settings, spec.name) == earlier["version"] and TorchServe(settings).pid():
            return earlier  # a retry of a deploy that went through: its record (canary figures included) stands
    result = deploy_local(spec, registration["version"], run / "data", settings)
    summary = {"version": result.version, "previous_default": result.previous_default,
               "smoke_accuracy": result.smoke_accuracy, "url": result.inference_url,
               "rolled_back": result.rolled_back, "why": result.why, "canary": result.canary}
    write_json(run / "deploy" / DEPLOYMENT, summary)
    write_card(run, settings)
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
    spec = run_spec(run_dir)
    _inputs_present(name, run_dir)
    if name != "data":
        _dataset_present(spec, run_dir, settings)
    started = time.perf_counter()
    key = reused = None
    if name in CACHED_STEPS and settings.step_cache:
        from components.registry.model_registry import ModelRegistry

        champion = _champion_version(spec, ModelRegistry(settings), settings)[1] if name == "gate" else None
        key = step_key(name, spec, run_dir, champion)
        reused = StepCache(settings).restore(key, run_dir)
    summary = reused or _STEP_FUNCTIONS[name](spec, run_dir, settings)
    if key is not None and not reused:
        StepCache(settings).store(key, run_dir, summary)
    record(run_dir, name, {"reused": bool(reused), "why": explain(name, key, reused),
                           "seconds": round(time.perf_counter() - started, 3)})
    return summary if reused else {**summary, "cache": {"reused": False, "key": key and key.key}}


# What each step reads from earlier steps; a missing one is a step that did not run (or failed).
_NEEDS = {"validate": (f"data/{DATA_INFO}",), "train": (f"data/{DATA_INFO}",), "optimize": (f"train/{METRICS}",),
          "gate": (f"optimize/{OPTIMIZE_INFO}",), "register": (f"gate/{GATE_JSON}",),
          "deploy": (f"register/{REGISTRATION}",)}


def _inputs_present(name: str, run: Path) -> None:
    for needed in _NEEDS.get(name, ()):
        if not (run / needed).is_file():
            producer = needed.split("/")[0]
            raise RelayError(f"step {name} needs {needed} from step {producer}, which has not completed in {run}: "
                             f"run `relay step {producer} --run-dir {run}` first (or see why it failed)")


def _dataset_present(spec: TaskSpec, run: Path, settings: Settings) -> None:
    """Steps read images through the manifest. A step in a fresh pod fetches the run's dataset
    version first, and refuses a workspace that holds a different version."""
    from components.data.dataset import ensure_dataset, read_data_info

    info_path = run / "data" / DATA_INFO
    if not info_path.is_file():
        return  # the data step has not run: the step itself reports what is missing
    info = read_data_info(run / "data")
    if Path(info["dataset_dir"]).is_dir():
        return
    fetched = ensure_dataset(spec, settings)
    if info["dataset_md5"] and fetched != info["dataset_md5"]:
        raise RelayError(f"this run used dataset version {info['dataset_md5']}, but {fetched} was fetched: "
                         f"check out the matching {spec.dataset.path}.dvc")
