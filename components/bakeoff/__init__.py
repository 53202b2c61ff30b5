"""The framework bake-off's measuring and reporting: every figure of a trained, optimized candidate, the
serving figures of all candidates on both model servers of the bake-off's own, TorchServe and the V2
server (alternating rounds), how they were measured, and the report with its recommendation (``report``).
Running the candidates' steps and shipping the recommended one is orchestration: ``pipelines.bakeoff``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from components.deploy.load import LoadTarget
from components.settings import Settings
from components.spec import TaskSpec

FRAMEWORKS = ("pytorch", "tensorflow")
SERVING_FILES = 200  # distinct test images replayed by the serving loops
SERVING_VERSION = "v0.0.0"  # the version each candidate's .mar carries

# A reference a bake-off's serving loops measure beside the model servers (the benchmarks' HTTP floor): given a
# candidate's optimized ONNX model and its preprocessing file, a server on it for as long as the block runs.
ReferenceServer = Callable[[Path, Path], AbstractContextManager[LoadTarget]]


def candidates(spec: TaskSpec, models: list[str] | None = None) -> list[tuple[str, str]]:
    """(framework, model) pairs: every framework for each model (``models``, the spec's bakeoff.models, or
    the spec's own model)."""
    chosen = models or spec.bakeoff.models or [spec.model.name]
    return [(framework, model) for model in dict.fromkeys(chosen) for framework in FRAMEWORKS]


def measure_serving(spec: TaskSpec, measured: list[dict], server_settings: Settings,
                    references: dict[str, ReferenceServer] | None = None) -> None:
    """Serve every candidate's .mar from each model server (TorchServe and the V2 server, of the bake-off's own)
    and measure them all in alternating rounds, with each of ``references`` (name → server) serving every
    candidate's model beside them. A candidate's ``serving`` figures are those on the server its spec deploys to
    (deploy.server), which the recommendation weighs; ``serving_by_server`` has every server's and reference's."""
    from components.atomic import copy_file
    from components.bakeoff import measure
    from components.data.dataset import split_files
    from components.deploy.servers import SERVERS, model_server
    from components.registry import model_version
    from components.run_files import RunDir

    servers = {kind: model_server(kind, server_settings) for kind in SERVERS}
    references = references or {}
    with ExitStack() as running:
        targets = {}
        for kind, server in servers.items():
            server.start()
            running.callback(server.stop)
            for candidate in measured:
                name = candidate["serving"]["model_name"]
                copy_file(Path(candidate["serving"]["mar"]), server.mar_path(name, SERVING_VERSION))
                server.install(name, SERVING_VERSION)
                server.set_default(name, model_version.served(SERVING_VERSION))
                targets[f"{candidate['name']} on {kind}"] = (server, name)
        for reference, serve in references.items():
            for candidate in measured:
                run = RunDir(candidate["run"])
                target = running.enter_context(serve(run.optimized_model, run.preprocessing))
                targets[f"{candidate['name']} on {reference}"] = (target, candidate["serving"]["model_name"])
        files, _ = split_files(Path(measured[0]["run"]) / "data", "test", spec.dataset.classes)
        bodies = [path.read_bytes() for path in files[:SERVING_FILES]]
        figures = measure.serving_figures(targets, bodies, spec.bakeoff.serving_requests,
                                          spec.bakeoff.bootstrap_samples)
    for candidate in measured:
        by_server = {kind: figures[f"{candidate['name']} on {kind}"] for kind in [*servers, *references]}
        candidate["serving"].update(by_server[spec.deploy.server], server=spec.deploy.server)
        candidate["serving_by_server"] = by_server


def measure_training(measured: list[dict], specs: dict[str, TaskSpec], work: Path, log=print) -> None:
    """Every candidate's training images/s (``specs``: each candidate's run spec), in mixed precision and
    fp32, from alternating rounds of fresh models in processes of their own
    (``components.bakeoff.throughput``); added to its training figures."""
    from components.bakeoff.throughput import measure_training_rounds
    from components.run_files import RunDir

    cfg = next(iter(specs.values())).bakeoff
    figures = measure_training_rounds({c["name"]: (specs[c["name"]], RunDir(c["run"]).data) for c in measured},
                                      work, cfg.throughput_rounds, cfg.throughput_round_seconds,
                                      bootstrap_samples=cfg.bootstrap_samples, log=log)
    for candidate in measured:
        candidate["training"].update(figures[candidate["name"]])


def measure_candidate(spec: TaskSpec, run: Path, work: Path, log=print) -> dict:
    """Every figure of one trained, optimized candidate run (see components.bakeoff.measure) but serving;
    its .mar for serving is built here."""
    from components.bakeoff import measure
    from components.data.dataset import load_split
    from components.deploy.package import build_mar
    from components.frameworks import backend, load_predictor, optimize_model
    from components.measurement import Runtime, ThreadSettings
    from components.onnx_runtime import onnx_predictor
    from components.run_files import OPTIMIZE_INFO, OPTIMIZED_MODEL, RunDir
    from components.train import model_preprocessing

    layout = RunDir(run)
    work.mkdir(parents=True, exist_ok=True)
    cfg = spec.bakeoff
    prep = model_preprocessing(layout.train)
    images, labels, _ = load_split(layout.data, "test", spec.dataset.classes, prep)
    metrics = json.loads(layout.metrics.read_text())

    # Both optimized forms: the step made the spec's one; the other is made here the same way.
    variants = {}
    for quantize in ("none", "int8"):
        if spec.optimize.quantize == quantize:
            variants[quantize] = layout.optimize
        else:
            other = spec.model_copy(update={"optimize": spec.optimize.model_copy(update={"quantize": quantize})})
            optimize_model(other, layout.train, layout.data, work / f"optimize-{quantize}")
            variants[quantize] = work / f"optimize-{quantize}"
    info = {q: json.loads((d / OPTIMIZE_INFO).read_text()) for q, d in variants.items()}
    onnx = {q: onnx_predictor(d / OPTIMIZED_MODEL) for q, d in variants.items()}

    original_logits = load_predictor(layout.train)(images)
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
    runtimes = [*(Runtime.native(f"native: {name}", spec.framework, layout.train, name) for name in natives),
                Runtime.onnx("ONNX Runtime", variants["none"] / OPTIMIZED_MODEL),
                Runtime.onnx("ONNX Runtime INT8", variants["int8"] / OPTIMIZED_MODEL)]
    inference, timing = measure.inference_figures(runtimes, images, cfg.latency_runs, cfg.bootstrap_samples,
                                                  ThreadSettings.serving(spec))

    training = {"epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
                "best_val_accuracy": metrics["val_accuracy"], "train_seconds": metrics["train_seconds"],
                "time_to_best_s": measure.time_to_best(metrics["history"], metrics["best_epoch"]),
                "history": metrics["history"]}

    model_name = f"{spec.name}-{spec.framework}-{spec.model.name}".replace("_", "-")
    mar = build_mar(spec, SERVING_VERSION, variants[shipped] / OPTIMIZED_MODEL, prep, work / f"{model_name}.mar")
    serving = {"model_name": model_name, "mar": str(mar),
               "config": {"workers": spec.deploy.workers, "batch_size": spec.deploy.batch_size,
                          "max_batch_delay_ms": spec.deploy.max_batch_delay_ms, "ort_threads": spec.deploy.threads}}
    sizes = measure.footprint(spec.framework, layout.train, {
        "ONNX": variants["none"] / OPTIMIZED_MODEL, "ONNX INT8": variants["int8"] / OPTIMIZED_MODEL, ".mar": mar})
    return {"accuracy": accuracy, "training": training, "optimization": optimization, "inference": inference,
            "inference_timing": timing,
            "serving": serving, "footprint_mb": sizes}


def method(spec: TaskSpec, serving_references: list[str] | None = None) -> dict:
    """How every figure was measured, for the report (``serving_references``: what served beside the servers)."""
    from components.bakeoff.measure import CONCURRENCY
    from components.bakeoff.throughput import throughput_method
    from components.frameworks import backend
    from components.measurement import SERVING_WARMUP_REQUESTS, WARMUP_CALLS, ThreadSettings

    cfg = spec.bakeoff
    return {
        # In-process latency: every runtime (native and ONNX) timed in one fresh process under the serving
        # settings, whatever this process's environment (components.measurement).
        "threads": {"inference": ThreadSettings.serving(spec).as_dict(), "torchserve_ort_threads": spec.deploy.threads,
                    "caller_OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)")},
        "warmup_calls": WARMUP_CALLS, "latency_runs_b1": cfg.latency_runs, "latency_runs_b64": max(10, cfg.latency_runs // 10),
        "serving_requests_per_level": cfg.serving_requests, "serving_concurrency": list(CONCURRENCY),
        "serving_warmup_requests": SERVING_WARMUP_REQUESTS, "serving_rounds": 2,
        "serving_order": "candidates on each server alternate within each level, reversed every other round",
        "serving_servers": "TorchServe and the V2 server (MLServer), both measured; the recommendation weighs the "
                           "server the spec deploys to (deploy.server)",
        **({"serving_references": ", ".join(serving_references) + ": each candidate's ONNX model, measured in the "
                                  "same rounds for comparison; not a serving target"} if serving_references else {}),
        "training_throughput": throughput_method(cfg),
        "framework_settings": {framework: backend(framework).TRAINING_SETTINGS for framework in FRAMEWORKS},
        "bootstrap_samples": cfg.bootstrap_samples,
        "interval": "bootstrap 95% (2.5th-97.5th percentile)",
        "tie_rule": "intervals overlap; a figure without an interval: within 5% of the best",
        "same_for_all": {"epochs": spec.training.epochs, "seed": spec.training.seed,
                         "precision": spec.training.precision, "augment": spec.training.augment.model_dump(),
                         "split_seed": spec.dataset.split_seed, "quantize": spec.optimize.quantize},
    }


def gpu_note() -> dict:
    """The bake-off's GPU figures (fp16 AMP, ORT CUDA, TF-TRT) need a CUDA device; say why they are absent."""
    import onnxruntime

    import torch

    if not torch.cuda.is_available():
        return {"measured": False, "why": "skipped: no CUDA device on this machine, so fp16 AMP training, ONNX "
                                          "Runtime's CUDA execution provider and TF-TRT (which also needs "
                                          "TensorRT) were not measured"}
    return {"measured": False, "why": "a CUDA device is present, but this bake-off measures CPU serving; "
                                      f"ORT providers here: {onnxruntime.get_available_providers()}"}
