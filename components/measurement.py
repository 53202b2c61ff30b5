"""Relay's one measurement toolkit: latency timed under stated thread settings, warm-ups, bootstrap intervals
and peak RSS. The gate, the bake-off and the bench all measure with it.

Latency of models is timed under the thread settings they are served with, whatever the caller's
environment. Every comparison Relay makes (the gate, the bake-off, the bench) times both sides here. The timing runs in a
fresh Python process whose thread settings are set before any framework starts: in a user's shell
``OMP_NUM_THREADS`` is unset, so an in-process eager PyTorch model would use every core while ONNX Runtime
used one, and TensorFlow fixes its thread pools the first time it runs, so a process that has trained with
TensorFlow cannot time a Keras model under other settings. The child records the thread counts each
runtime really had, and the callers put them in their reports.

The child is this module (``python -m components.measurement REQUEST.json``). It runs only Relay's own code,
never the caller's main script.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.child_processes import relay_python_path
from components.errors import RelayError
from components.models import Predictor
from components.settings import PROJECT_DIR

WARMUP_CALLS = 30  # in-process calls before timing: allocators, ORT's and oneDNN's first-call kernel choice
ROUNDS = 5  # timed calls are split into rounds that alternate between runtimes, so drift hits them alike
# Requests to a served model before its timed loops: TorchServe's workers and connections start, and the
# frontend's JVM compiles its request path. The bench's 10,000 (it had the larger of two values; the bake-off
# used 2,000) is kept for all, so that the bench's figures stay comparable with earlier runs.
SERVING_WARMUP_REQUESTS = 10_000


def bootstrap_interval(values: np.ndarray, statistic: Callable, samples: int, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``statistic`` over ``samples`` resamples of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    resampled = statistic(values[rng.integers(0, len(values), (samples, len(values)))], axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(low), float(high)


def with_interval(values, statistic: Callable, samples: int) -> dict:
    low, high = bootstrap_interval(values, statistic, samples)
    return {"value": float(statistic(np.asarray(values, dtype=np.float64))), "low": low, "high": high}


def latency_samples_ms(predict: Predictor, sample: np.ndarray, runs: int, warmup: int = WARMUP_CALLS) -> list[float]:
    """Wall time of each of ``runs`` calls on ``sample`` after ``warmup`` calls, in milliseconds."""
    for _ in range(warmup):
        predict(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predict(sample)
        times.append((time.perf_counter() - start) * 1000)
    return times


def p50_latency_ms(predict: Predictor, sample: np.ndarray, runs: int, warmup: int = WARMUP_CALLS) -> float:
    """Median wall time of one call on ``sample`` after ``warmup`` calls, in milliseconds."""
    return statistics.median(latency_samples_ms(predict, sample, runs, warmup))


@dataclass(frozen=True)
class ChildUsage:
    """What a finished child process used, from ``wait4``'s rusage (its own waited-for children included)."""

    peak_rss_mb: float
    cpu_seconds: float


def run_measured(command: list[str], env: dict, log: Path) -> ChildUsage:
    """Run ``command`` (its output to ``log``); return its peak RSS and CPU time. Raise with the log's tail if
    it fails.

    The CPU time counts the child's whole process tree: rusage holds only the children it waited for, so its
    descendants (a DataLoader's forkserver and workers) are also read while they live, twice a second."""
    import threading

    from components.machine import tree_cpu_seconds

    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_DIR)
        tree, done = [0.0], threading.Event()

        def watch() -> None:
            while not done.wait(0.5):
                tree[0] = max(tree[0], tree_cpu_seconds(process.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        watcher.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}); {log}:\n{tail}")
    return ChildUsage(usage.ru_maxrss / 1024, max(usage.ru_utime + usage.ru_stime, tree[0]))


def run_measuring_peak_rss(command: list[str], env: dict, log: Path) -> float:
    """Run ``command`` (see ``run_measured``); return its peak RSS in MB."""
    return run_measured(command, env, log).peak_rss_mb


@dataclass(frozen=True)
class ThreadSettings:
    """How many threads a model runs with: intra-op (one operator) and inter-op (operators in parallel)."""

    intra_op: int
    inter_op: int = 1

    @classmethod
    def serving(cls, spec) -> ThreadSettings:
        """What TorchServe's handler gives ONNX Runtime for ``spec`` (deploy.threads; one inter-op thread)."""
        return cls(intra_op=spec.deploy.threads)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def environment(self) -> dict[str, str]:
        """The variables that set these counts in a new process before torch, TensorFlow or OpenMP start."""
        intra, inter = str(self.intra_op), str(self.inter_op)
        return {"OMP_NUM_THREADS": intra, "MKL_NUM_THREADS": intra, "OPENBLAS_NUM_THREADS": intra,
                "TF_NUM_INTRAOP_THREADS": intra, "TF_NUM_INTEROP_THREADS": inter}


@dataclass(frozen=True)
class Runtime:
    """How the child rebuilds one way of running a model: an ONNX file through ONNX Runtime, or one of a
    framework backend's native predictors (``components.frameworks``) over a trained model directory."""

    name: str
    path: str
    framework: str | None = None  # None: ``path`` is an ONNX model
    predictor: str | None = None  # a key of the backend's native_predictors; None: its load_predictor

    @classmethod
    def onnx(cls, name: str, model: Path) -> Runtime:
        return cls(name, str(model))

    @classmethod
    def native(cls, name: str, framework: str, model_dir: Path, predictor: str | None = None) -> Runtime:
        return cls(name, str(model_dir), framework, predictor)


@dataclass(frozen=True)
class Timings:
    """Per runtime and batch name, each timed call in ms; the settings asked for and the ones in effect."""

    samples_ms: dict[str, dict[str, list[float]]]
    threads: ThreadSettings
    effective: dict[str, int]

    def p50(self, runtime: str, batch: str) -> float:
        return float(np.median(self.samples_ms[runtime][batch]))

    def method(self) -> dict:
        """What a report states of how the latencies were taken."""
        return {"threads": self.threads.as_dict(), "effective_threads": self.effective,
                "process": "a fresh process with these thread settings, whatever the caller's environment",
                "warmup_calls": WARMUP_CALLS, "rounds": ROUNDS}


def time_runtimes(runtimes: list[Runtime], batches: dict[str, np.ndarray], runs: dict[str, int],
                  threads: ThreadSettings, timeout: float = 1800) -> Timings:
    """Time each runtime on each batch (``runs[batch]`` calls after WARMUP_CALLS) in a fresh process with
    ``threads``. Calls alternate between runtimes in ROUNDS rounds (reversed every other round)."""
    with tempfile.TemporaryDirectory(prefix="relay-latency-") as work:
        work = Path(work)
        for name, batch in batches.items():
            np.save(work / f"{name}.npy", np.ascontiguousarray(batch, dtype=np.float32))
        request = {"runtimes": [asdict(r) for r in runtimes], "batches": list(batches), "runs": runs,
                   "threads": threads.as_dict()}
        (work / "request.json").write_text(json.dumps(request))
        env = {**os.environ, **threads.environment(), "PYTHONPATH": relay_python_path(), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([sys.executable, "-m", "components.measurement", str(work / "request.json")],
                              env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RelayError(f"timing {', '.join(r.name for r in runtimes)} failed in its own process "
                             f"(exit {done.returncode}): {done.stderr.strip()[-1500:]}")
        result = json.loads((work / "result.json").read_text())
    return Timings(result["samples_ms"], threads, result["effective"])


# -- the child ------------------------------------------------------------------------------------------
def pin_threads(threads: ThreadSettings, frameworks: set[str]) -> dict[str, int]:
    """Set every runtime's thread counts before it runs; return the counts in effect."""
    effective = {}
    if "tensorflow" in frameworks:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(threads.inter_op)
        effective["tensorflow_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        effective["tensorflow_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    if "pytorch" in frameworks:
        import torch

        torch.set_num_threads(threads.intra_op)
        torch.set_num_interop_threads(threads.inter_op)
        effective["torch_intra_op"] = torch.get_num_threads()
        effective["torch_inter_op"] = torch.get_num_interop_threads()
    return effective


def _load(runtime: Runtime, threads: ThreadSettings, effective: dict[str, int]):
    if runtime.framework is None:
        from components.onnx_runtime import make_session

        session = make_session(Path(runtime.path), threads.intra_op, threads.inter_op)
        options = session.get_session_options()
        effective["onnxruntime_intra_op"] = options.intra_op_num_threads
        effective["onnxruntime_inter_op"] = options.inter_op_num_threads
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda images: session.run([output_name], {input_name: images})[0]
    from components.frameworks import backend

    chosen = backend(runtime.framework)
    if runtime.predictor is None:
        return chosen.load_predictor(Path(runtime.path))
    return chosen.native_predictors(Path(runtime.path))[runtime.predictor]


def _child(request_file: Path) -> None:
    request = json.loads(request_file.read_text())
    threads = ThreadSettings(**request["threads"])
    runtimes = [Runtime(**r) for r in request["runtimes"]]
    effective = pin_threads(threads, {r.framework for r in runtimes if r.framework})
    predictors = {r.name: _load(r, threads, effective) for r in runtimes}
    batches = {name: np.load(request_file.with_name(f"{name}.npy")) for name in request["batches"]}
    samples: dict[str, dict[str, list[float]]] = {r.name: {b: [] for b in batches} for r in runtimes}
    for batch_name, batch in batches.items():
        for predict in predictors.values():
            for _ in range(WARMUP_CALLS):
                predict(batch)
        runs = request["runs"][batch_name]
        order = list(predictors)
        for round_ in range(ROUNDS):
            count = runs // ROUNDS + (1 if round_ < runs % ROUNDS else 0)
            for name in (order if round_ % 2 == 0 else order[::-1]):
                predict, times = predictors[name], samples[name][batch_name]
                for _ in range(count):
                    started = time.perf_counter()
                    predict(batch)
                    times.append((time.perf_counter() - started) * 1000)
    request_file.with_name("result.json").write_text(json.dumps({"samples_ms": samples, "effective": effective}))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
