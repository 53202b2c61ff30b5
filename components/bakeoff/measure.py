"""What the bake-off measures of one trained candidate (a framework and a model), each figure the same way
for every candidate so that their ratios are comparable.

Figures with a spread carry a bootstrap 95% interval (``{"value", "low", "high"}``): accuracy over the
test images, latency p50 over the timed calls or requests. The report calls two candidates a tie on a
criterion when their intervals overlap.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from components.deploy.load import LoadTarget, run_load
from components.frameworks import backend
from components.measurement import (SERVING_WARMUP_REQUESTS, Runtime, ThreadSettings, time_runtimes,
                                    with_interval)
from components.spec import TaskSpec

CONCURRENCY = (1, 8, 32)


def accuracy_figures(logits: np.ndarray, labels: np.ndarray, samples: int) -> dict:
    """Test accuracy with its bootstrap interval over the test images."""
    return with_interval((logits.argmax(axis=1) == labels).astype(np.float64), np.mean, samples)


def latency_figures(times_ms: list[float], samples: int) -> dict:
    """p50 (with interval) and p99 of timed calls."""
    times = np.asarray(times_ms)
    return {"p50_ms": with_interval(times, np.median, samples), "p99_ms": float(np.percentile(times, 99)),
            "runs": len(times)}


def inference_figures(runtimes: list[Runtime], images: np.ndarray, runs: int, samples: int,
                      threads: ThreadSettings) -> tuple[dict, dict]:
    """Per runtime, latency at batch 1 and batch 64 (a tenth of the runs, at least 10), all timed in one
    process of their own under ``threads`` (components.measurement); and how they were timed."""
    batches = {"b1": images[:1], "b64": images[np.arange(64) % len(images)]}
    timings = time_runtimes(runtimes, batches, {"b1": runs, "b64": max(10, runs // 10)}, threads)
    figures = {runtime.name: {batch: latency_figures(timings.samples_ms[runtime.name][batch], samples)
                              for batch in batches} for runtime in runtimes}
    return figures, timings.method()


def serving_figures(targets: dict[str, tuple[LoadTarget, str]], bodies: list[bytes], requests: int,
                    samples: int, rounds: int = 2) -> dict[str, dict]:
    """Per target (``targets``: name → the server and the model name it serves the target under): one image
    at a time (p50 with interval, p99), and throughput and latency at each concurrency in CONCURRENCY.

    Each level is a bounded loop of ``requests`` on loopback, split into ``rounds`` that alternate between
    the targets (in reverse order every other round), after a warm-up of each, so that a server warming up
    and drifts in machine load hit every target alike. Every non-200 answer is counted."""
    for server, name in targets.values():
        run_load(server, name, bodies, total=SERVING_WARMUP_REQUESTS, concurrency=8)  # workers, JIT, connections
    loads = {target: {level: [] for level in CONCURRENCY} for target in targets}
    order = list(targets)
    for round_ in range(rounds):
        for level in CONCURRENCY:
            for target in (order if round_ % 2 == 0 else order[::-1]):
                server, name = targets[target]
                loads[target][level].append(
                    run_load(server, name, bodies, total=max(1, requests // rounds), concurrency=level))
    figures = {}
    for target, by_level in loads.items():
        result: dict = {"requests_per_level": requests, "rounds": rounds, "errors": 0, "by_concurrency": {}}
        for level, parts in by_level.items():
            latencies = [ms for part in parts for ms in part.latencies_ms]
            result["errors"] += sum(part.errors for part in parts)
            result["by_concurrency"][str(level)] = {
                "requests_per_s": sum(part.requests for part in parts) / sum(part.seconds for part in parts),
                "p50_ms": float(np.median(latencies)), "p99_ms": float(np.percentile(latencies, 99))}
            if level == 1:
                result["p50_ms"] = with_interval(latencies, np.median, samples)
                result["p99_ms"] = float(np.percentile(latencies, 99))
        figures[target] = result
    return figures


def time_to_best(history: list[dict], best_epoch: int) -> float:
    """Seconds from the start of training to the end of the epoch with the best validation accuracy."""
    return next(row["elapsed_seconds"] for row in history if row["epoch"] == best_epoch)


def train_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "step", "train", "--run-dir", str(run_dir)]


def footprint(framework: str, train_dir: Path, files: dict[str, Path]) -> dict[str, float]:
    """Size in MB of the framework's own model files and of the optimized and served artifacts."""
    sizes = {}
    for name, path in {**backend(framework).model_files(train_dir), **files}.items():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
        sizes[name] = total / 1e6
    return sizes
