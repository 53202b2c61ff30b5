"""The framework bake-off, orchestrated: one task trained in PyTorch and in TensorFlow (and, optionally, in
several architectures), each candidate through its own train, optimize and gate steps, measured the same way
(``components.bakeoff``), and compared in one report with a recommendation that weighs the spec's priorities.

Every candidate is a normal run (``runs/<task>/<id>``) with the same data version, split, epochs, seed,
augmentation and precision; only ``framework`` and ``model`` differ. Training runs in a child process so
its peak RSS is its own, always computed (the step cache is off for the candidates' train, optimize and
gate: a bake-off measures). ``ship`` registers and deploys the recommended candidate through the normal
steps. ``framework=both`` is decided here (``is_bakeoff``) for the CLI and the DAG.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.bakeoff import (ReferenceServer, candidates, gpu_note, measure, measure_candidate, measure_serving,
                                measure_training, method)
from components.bakeoff.report import write_report
from components.bakeoff.result import BakeoffResult
from components.atomic import write_json
from components.errors import RelayError
from components.machine import LoadMeter, describe_machine
from components.measurement import run_measured
from components.run_files import RunDir
from components.settings import PROJECT_DIR, Settings, get_settings, own_server_settings, settings_env
from components.spec import BAKEOFF, load_spec
from pipelines.steps import airflow_run_dir, run_spec, run_step, start_run


def is_bakeoff(params: dict | None) -> bool:
    """Whether run parameters (the form's, or the CLI's overrides) ask for a bake-off: framework=both."""
    return (params or {}).get("framework") == BAKEOFF


def run_bakeoff(task: str, models: list[str] | None = None, overrides: dict[str, Any] | None = None,
                ship: bool = False, settings: Settings | None = None, log=print,
                serving_references: dict[str, ReferenceServer] | None = None) -> BakeoffResult:
    """Train, optimize, gate and measure every candidate; write bakeoff.json, bakeoff.html and bakeoff.md
    under ``<RELAY_HOME>/bakeoffs/<task>/<id>/``; with ``ship``, register and deploy the recommended one.
    ``serving_references`` are measured beside the model servers (the benchmarks pass their HTTP floor)."""
    settings = settings or get_settings()
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for fixed in ("framework", "model"):
        if fixed in overrides:
            raise RelayError(f"a bake-off chooses {fixed} itself: drop --{fixed} (use --models for architectures)")
    spec = load_spec(task, overrides)
    pairs = candidates(spec, models)
    for _, model in pairs:  # the spec must accept every architecture before anything trains
        load_spec(task, {**overrides, "model": model})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    directory = settings.home / "bakeoffs" / spec.name / stamp
    directory.mkdir(parents=True)
    measured = []
    for index, (framework, model) in enumerate(pairs, 1):
        log(f"[{index}/{len(pairs)}] {framework} {model}")
        measured.append(_candidate(task, framework, model, overrides, settings, directory, log))
    log("training throughput: every candidate in alternating rounds")
    measure_training(measured, {c["name"]: run_spec(Path(c["run"])) for c in measured}, directory / "throughput", log)
    beside = "".join(f", beside {name}" for name in serving_references or {})
    log(f"serving: every candidate on TorchServe and on the V2 server{beside}, in alternating rounds")
    measure_serving(spec, measured, own_server_settings(settings, directory / "servers"), serving_references)
    document = {
        "task": spec.name, "id": stamp, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "directory": str(directory), "overrides": overrides, "machine": describe_machine(),
        "method": method(spec, list(serving_references or {})), "priorities": spec.bakeoff.priorities.model_dump(),
        "gpu": gpu_note(), "candidates": measured, "shipped": None,
    }
    result = write_report(document, directory)
    if ship:
        document["shipped"] = ship_recommended(result.document, settings, log)
        result = write_report(document, directory)
    return result


def ship_recommended(document: dict, settings: Settings, log=print) -> dict:
    """Register and deploy the recommended candidate through the normal register and deploy steps (its gate
    has passed); what was shipped and why."""
    recommendation = document["recommendation"]
    name = recommendation["recommended"]
    if name is None:
        return {"shipped": False, "why": recommendation["why"]}
    candidate = next(c for c in document["candidates"] if c["name"] == name)
    run = Path(candidate["run"])
    log(f"shipping {name} (run {run.name})")
    # Before registering: the lineage card, written at registration, names the bake-off that chose the run.
    training = {key: candidate["training"].get(key) for key in ("images_per_s_mixed", "images_per_s_fp32")}
    write_json(RunDir(run).chosen_by, {"bakeoff": document["id"], "report": document["report"],
                                       "why": recommendation["why"], "training": {
                                           **{key: figure["value"] for key, figure in training.items()},
                                           "mixed_over_fp32": candidate["training"]["mixed_over_fp32"],
                                           "unreliable": "; ".join(f"{key}: {figure['unreliable']}"
                                                                   for key, figure in training.items()
                                                                   if figure.get("unreliable")) or None}})
    registration = run_step("register", run, settings)
    deployment = run_step("deploy", run, settings)
    return {"shipped": not deployment.get("rolled_back", False), "candidate": name, "run": str(run),
            "version": registration["version"], "deployment": {k: deployment.get(k) for k in
                                                              ("version", "url", "rolled_back", "why")},
            "why": recommendation["why"]}


def _candidate(task: str, framework: str, model: str, overrides: dict, settings: Settings, directory: Path,
               log) -> dict:
    run = start_run(task, {**overrides, "framework": framework, "model": model}, settings=settings)
    spec = run_spec(run)
    for step in ("data", "validate"):  # the same data version for every candidate; validate is reused
        summary = run_step(step, run, settings)
        if step == "validate" and not summary["success"]:
            raise RelayError(f"validation failed for {task}: {summary['data_docs']}")
    fresh = Settings(**{**settings.model_dump(), "step_cache": False})
    env = {**os.environ, **settings_env(fresh), "PYTHONPATH": str(PROJECT_DIR)}
    log("  train (child process)")
    meter = LoadMeter()
    usage = run_measured(measure.train_command(run), env, run / "train.log")
    load = meter.stop(usage.cpu_seconds)
    log("  optimize, gate")
    run_step("optimize", run, fresh)
    gate = run_step("gate", run, fresh)
    log("  measure")
    figures = measure_candidate(spec, run, directory / f"{framework}-{model}", log)
    figures["training"].update(peak_rss_mb=usage.peak_rss_mb, load=load)
    return {"name": f"{framework}/{model}", "framework": framework, "model": model, "run": str(run),
            "gate": {"passed": gate["passed"], "failed_checks": gate["failed_checks"]}, **figures}


def bakeoff_for_airflow(spec_file: str, task: str, params: dict, run_id: str | None) -> dict:
    """The DAG's bake-off task: every candidate from the form's parameters, the recommended one shipped, and
    this Airflow run's directory pointing at the shipped candidate's run (the outcome reads it)."""
    params = dict(params)
    model = params.pop("model", None)
    overrides = {k: v for k, v in params.items() if k != "framework"}
    result = run_bakeoff(spec_file, [model] if model else None, overrides, ship=True)
    print(result.summary)
    print(f"bake-off report: {result.report.as_uri()}")
    shipped = result.document["shipped"] or {}
    if shipped.get("run"):
        link = airflow_run_dir(task, run_id)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(shipped["run"])
    if not shipped.get("shipped"):
        raise RuntimeError(f"the bake-off shipped nothing: {shipped.get('why')}; report: {result.report}")
    return {"report": str(result.report), "recommended": result.document["recommendation"]["recommended"],
            "version": shipped.get("version")}
