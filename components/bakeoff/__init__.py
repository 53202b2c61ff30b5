"""The framework bake-off: one task trained in PyTorch and in TensorFlow (and, optionally, in several
architectures), each candidate through its own train, optimize and gate steps, measured the same way, and
compared in one report with a recommendation that weighs the spec's priorities.

Every candidate is a normal run (``runs/<task>/<id>``) with the same data version, split, epochs, seed,
augmentation and precision; only ``framework`` and ``model`` differ. Training runs in a child process so
its peak RSS is its own, always computed (the step cache is off for the candidates' train, optimize and
gate: a bake-off measures). The serving figures come from a TorchServe of the bake-off's own, started and
stopped here, serving every candidate at once so that they are measured in alternating rounds. ``ship``
registers and deploys the recommended candidate through the normal steps.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from components.bakeoff.result import BakeoffResult
from components.errors import RelayError
from components.settings import PROJECT_DIR, Settings, get_settings, own_server_settings, settings_env
from components.spec import TaskSpec, load_spec

FRAMEWORKS = ("pytorch", "tensorflow")
SERVING_FILES = 200  # distinct test images replayed by the serving loops


def candidates(spec: TaskSpec, models: list[str] | None = None) -> list[tuple[str, str]]:
    """(framework, model) pairs: every framework for each model (``models``, the spec's bakeoff.models, or
    the spec's own model)."""
    chosen = models or spec.bakeoff.models or [spec.model.name]
    return [(framework, model) for model in dict.fromkeys(chosen) for framework in FRAMEWORKS]


def run_bakeoff(task: str, models: list[str] | None = None, overrides: dict[str, Any] | None = None,
                ship: bool = False, settings: Settings | None = None, log=print) -> BakeoffResult:
    """Train, optimize, gate and measure every candidate; write bakeoff.json, bakeoff.html and bakeoff.md
    under ``<RELAY_HOME>/bakeoffs/<task>/<id>/``; with ``ship``, register and deploy the recommended one."""
    from components.bakeoff.report import write_report
    from components.machine import describe_machine

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
    log("serving: every candidate on one TorchServe, in alternating rounds")
    _measure_serving(spec, measured, own_server_settings(settings, directory / "torchserve"))
    document = {
        "task": spec.name, "id": stamp, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "directory": str(directory), "overrides": overrides, "machine": describe_machine(),
        "method": _method(spec), "priorities": spec.bakeoff.priorities.model_dump(),
        "gpu": _gpu_note(), "candidates": measured, "shipped": None,
    }
    result = write_report(document, directory)
    if ship:
        document["shipped"] = ship_recommended(result.document, settings, log)
        result = write_report(document, directory)
    return result


def ship_recommended(document: dict, settings: Settings, log=print) -> dict:
    """Register and deploy the recommended candidate through the normal register and deploy steps (its gate
    has passed); what was shipped and why."""
    from pipelines.steps import run_step

    recommendation = document["recommendation"]
    name = recommendation["recommended"]
    if name is None:
        return {"shipped": False, "why": recommendation["why"]}
    run = Path(next(c["run"] for c in document["candidates"] if c["name"] == name))
    log(f"shipping {name} (run {run.name})")
    registration = run_step("register", run, settings)
    deployment = run_step("deploy", run, settings)
    return {"shipped": not deployment.get("rolled_back", False), "candidate": name, "run": str(run),
            "version": registration["version"], "deployment": {k: deployment.get(k) for k in
                                                              ("version", "url", "rolled_back", "why")},
            "why": recommendation["why"]}


def _measure_serving(spec: TaskSpec, measured: list[dict], server_settings: Settings) -> None:
    """Serve every candidate's .mar from one TorchServe of the bake-off's own; add the serving figures."""
    from components.bakeoff import measure
    from components.data import split_files
    from components.deploy.torchserve import TorchServe

    server = TorchServe(server_settings)
    try:
        server.start()
        models = {}
        for candidate in measured:
            name = candidate["serving"]["model_name"]
            shutil.copy(candidate["serving"]["mar"], server.model_store / f"{name}.mar")
            server.register(f"{name}.mar", name)
            models[candidate["name"]] = name
        files, _ = split_files(Path(measured[0]["run"]) / "data", "test", spec.dataset.classes)
        bodies = [path.read_bytes() for path in files[:SERVING_FILES]]
        figures = measure.serving_figures(server, models, bodies, spec.bakeoff.serving_requests,
                                          spec.bakeoff.bootstrap_samples)
    finally:
        server.stop()
    for candidate in measured:
        candidate["serving"].update(figures[candidate["name"]])


def _candidate(task: str, framework: str, model: str, overrides: dict, settings: Settings, directory: Path,
               log) -> dict:
    from components.bakeoff import measure
    from pipelines.steps import run_spec, run_step, start_run

    run = start_run(task, {**overrides, "framework": framework, "model": model}, settings=settings)
    spec = run_spec(run)
    for step in ("data", "validate"):  # the same data version for every candidate; validate is reused
        summary = run_step(step, run, settings)
        if step == "validate" and not summary["success"]:
            raise RelayError(f"validation failed for {task}: {summary['data_docs']}")
    fresh = Settings(**{**settings.model_dump(), "step_cache": False})
    env = {**os.environ, **settings_env(fresh), "PYTHONPATH": str(PROJECT_DIR)}
    log("  train (child process)")
    peak_rss = measure.run_measuring_peak_rss(measure.train_command(run), env, run / "train.log")
    log("  optimize, gate")
    run_step("optimize", run, fresh)
    gate = run_step("gate", run, fresh)
    log("  measure")
    figures = measure_candidate(spec, run, directory / f"{framework}-{model}", log)
    figures["training"]["peak_rss_mb"] = peak_rss
    return {"name": f"{framework}/{model}", "framework": framework, "model": model, "run": str(run),
            "gate": {"passed": gate["passed"], "failed_checks": gate["failed_checks"]}, **figures}


def measure_candidate(spec: TaskSpec, run: Path, work: Path, log=print) -> dict:
    """Every figure of one trained, optimized candidate run (see components.bakeoff.measure) but serving;
    its .mar for serving is built here."""
    from components.bakeoff import measure
    from components.data import load_split
    from components.frameworks import backend
    from components.latency import Runtime, ThreadSettings
    from components.onnx_runtime import onnx_predictor
    from components.optimize import optimize_model
    from components.package import build_mar
    from components.run_files import METRICS, OPTIMIZE_INFO, OPTIMIZED_MODEL
    from components.train import load_predictor, model_preprocessing

    work.mkdir(parents=True, exist_ok=True)
    cfg = spec.bakeoff
    prep = model_preprocessing(run / "train")
    images, labels, _ = load_split(run / "data", "test", spec.dataset.classes, prep)
    metrics = json.loads((run / "train" / METRICS).read_text())

    # Both optimized forms: the step made the spec's one; the other is made here the same way.
    variants = {}
    for quantize in ("none", "int8"):
        if spec.optimize.quantize == quantize:
            variants[quantize] = run / "optimize"
        else:
            other = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"quantize": quantize})})
            optimize_model(other, run / "train", run / "data", work / f"optimize-{quantize}")
            variants[quantize] = work / f"optimize-{quantize}"
    info = {q: json.loads((d / OPTIMIZE_INFO).read_text()) for q, d in variants.items()}
    onnx = {q: onnx_predictor(d / OPTIMIZED_MODEL) for q, d in variants.items()}

    original_logits = load_predictor(run / "train")(images)
    logits = {q: predict(images) for q, predict in onnx.items()}
    shipped = spec.optimize.quantize
    accuracy = {"original": measure.accuracy_figures(original_logits, labels, cfg.bootstrap_samples),
                "onnx": measure.accuracy_figures(logits["none"], labels, cfg.bootstrap_samples),
                "onnx_int8": measure.accuracy_figures(logits["int8"], labels, cfg.bootstrap_samples),
                "test_images": len(labels), "optimized_is": "onnx_int8" if shipped == "int8" else "onnx"}
    accuracy["optimized"] = accuracy[accuracy["optimized_is"]]

    def loss_pp(name: str) -> float:
        return (accuracy["original"]["value"] - accuracy[name]["value"]) * 100

    optimization = {
        "conversion_s": info[shipped]["conversion_seconds"],
        "conversion_s_onnx": info["none"]["conversion_seconds"], "conversion_s_int8": info["int8"]["conversion_seconds"],
        "accuracy_loss_pp": loss_pp(accuracy["optimized_is"]), "accuracy_loss_pp_onnx": loss_pp("onnx"),
        "accuracy_loss_pp_int8": loss_pp("onnx_int8"),
        "max_logit_diff_onnx": float(abs(original_logits.astype("float64") - logits["none"]).max()),
        "max_logit_diff_int8": float(abs(original_logits.astype("float64") - logits["int8"]).max()),
    }

    log("  inference latency")
    natives = backend(spec.framework).NATIVE_PREDICTORS
    runtimes = [*(Runtime.native(f"native: {name}", spec.framework, run / "train", name) for name in natives),
                Runtime.onnx("ONNX Runtime", variants["none"] / OPTIMIZED_MODEL),
                Runtime.onnx("ONNX Runtime INT8", variants["int8"] / OPTIMIZED_MODEL)]
    inference, timing = measure.inference_figures(runtimes, images, cfg.latency_runs, cfg.bootstrap_samples,
                                                  ThreadSettings.serving(spec))

    log("  training throughput (mixed, fp32)")
    training = {"epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
                "best_val_accuracy": metrics["val_accuracy"], "train_seconds": metrics["train_seconds"],
                "time_to_best_s": measure.time_to_best(metrics["history"], metrics["best_epoch"]),
                "history": metrics["history"],
                **measure.training_throughput(spec, run / "data", work / "throughput")}

    model_name = f"{spec.name}-{spec.framework}-{spec.model.name}".replace("_", "-")
    mar = build_mar(spec, "v0.0.0", variants[shipped] / OPTIMIZED_MODEL, prep, work / f"{model_name}.mar")
    serving = {"model_name": model_name, "mar": str(mar),
               "config": {"workers": spec.deploy.workers, "batch_size": spec.deploy.batch_size,
                          "max_batch_delay_ms": spec.deploy.max_batch_delay_ms, "ort_threads": spec.deploy.threads}}
    sizes = measure.footprint(spec.framework, run / "train", {
        "ONNX": variants["none"] / OPTIMIZED_MODEL, "ONNX INT8": variants["int8"] / OPTIMIZED_MODEL, ".mar": mar})
    return {"accuracy": accuracy, "training": training, "optimization": optimization, "inference": inference,
            "inference_timing": timing,
            "serving": serving, "footprint_mb": sizes}


def _method(spec: TaskSpec) -> dict:
    from components.bakeoff.measure import CONCURRENCY, WARMUP_REQUESTS
    from components.latency import WARMUP_CALLS, ThreadSettings

    cfg = spec.bakeoff
    return {
        # In-process latency: every runtime (native and ONNX) timed in one fresh process under the serving
        # settings, whatever this process's environment (components.latency).
        "threads": {"inference": ThreadSettings.serving(spec).as_dict(), "torchserve_ort_threads": spec.deploy.threads,
                    "caller_OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)")},
        "warmup_calls": WARMUP_CALLS, "latency_runs_b1": cfg.latency_runs, "latency_runs_b64": max(10, cfg.latency_runs // 10),
        "serving_requests_per_level": cfg.serving_requests, "serving_concurrency": list(CONCURRENCY),
        "serving_warmup_requests": WARMUP_REQUESTS, "serving_rounds": 2,
        "serving_order": "candidates alternate within each level, reversed every other round",
        "throughput_epochs": cfg.throughput_epochs, "throughput_warmup_epochs": 1,
        "bootstrap_samples": cfg.bootstrap_samples,
        "interval": "bootstrap 95% (2.5th-97.5th percentile)",
        "tie_rule": "intervals overlap; a figure without an interval: within 5% of the best",
        "same_for_all": {"epochs": spec.training.epochs, "seed": spec.training.seed,
                         "precision": spec.training.precision, "augment": spec.training.augment.model_dump(),
                         "split_seed": spec.dataset.split_seed, "quantize": spec.optimize.quantize},
    }


def _gpu_note() -> dict:
    """The bake-off's GPU figures (fp16 AMP, ORT CUDA, TF-TRT) need a CUDA device; say why they are absent."""
    import onnxruntime

    import torch

    if not torch.cuda.is_available():
        return {"measured": False, "why": "skipped: no CUDA device on this machine, so fp16 AMP training, ONNX "
                                          "Runtime's CUDA execution provider and TF-TRT (which also needs "
                                          "TensorRT) were not measured"}
    return {"measured": False, "why": "a CUDA device is present, but this bake-off measures CPU serving; "
                                      f"ORT providers here: {onnxruntime.get_available_providers()}"}
