"""Every comparison times both sides under the same thread settings, the serving ones, whatever the caller's
environment: in a user's shell OMP_NUM_THREADS is unset, and eager PyTorch then used every core while ONNX
Runtime used one, so the gate failed a good model on latency."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from components.measurement import Runtime, ThreadSettings, bootstrap_interval, time_runtimes, with_interval
from pipelines.steps import _measurements_file
from tests.conftest import PROJECT, copy_run, settings_env


def _images(data_dir, spec):
    from components.data.dataset import load_split

    return load_split(data_dir, "test", spec.dataset.classes)[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_both_sides_run_with_the_settings_asked_for_whatever_the_callers_environment(trained_run, monkeypatch,
                                                                                     threads):
    spec, run = trained_run
    monkeypatch.delenv("OMP_NUM_THREADS")  # a plain shell; this process itself runs torch with 1 thread
    timings = time_runtimes([Runtime.native("eager", "pytorch", run.train),
                             Runtime.onnx("ort", run.optimized_model)],
                            {"b1": _images(run.data, spec)[:1]}, {"b1": 20}, ThreadSettings(threads))
    assert timings.effective == {"torch_intra_op": threads, "torch_inter_op": 1,
                                 "onnxruntime_intra_op": threads, "onnxruntime_inter_op": 1}
    assert [len(timings.samples_ms[name]["b1"]) for name in ("eager", "ort")] == [20, 20]
    assert all(ms > 0 for name in ("eager", "ort") for ms in timings.samples_ms[name]["b1"])


def test_a_keras_model_is_timed_under_the_settings_even_after_tensorflow_started_here(keras_run):
    """keras_run trained in this process, so TensorFlow's thread pools here are fixed at their defaults."""
    spec, data_dir, run = keras_run
    timings = time_runtimes([Runtime.native("keras", "tensorflow", run.train),
                             Runtime.onnx("ort", run.optimized_model)],
                            {"b1": _images(data_dir, spec)[:1]}, {"b1": 10}, ThreadSettings(1))
    assert timings.effective["tensorflow_intra_op"] == 1 and timings.effective["tensorflow_inter_op"] == 1
    assert timings.effective["onnxruntime_intra_op"] == 1


def test_the_gate_in_a_plain_shell_times_both_models_with_the_serving_threads(settings, trained_run, tmp_path):
    """`relay step gate` without OMP_NUM_THREADS: the report states the settings both sides ran with."""
    spec, source = trained_run
    run = copy_run(source, tmp_path / "run", spec)
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "step", "gate", "--run-dir", str(run)], cwd=PROJECT,
                          env={**env, **settings_env(settings), "PYTHONPATH": str(PROJECT)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    gate = json.loads(run.gate_json.read_text())
    method = gate["latency_method"]
    assert method["threads"] == {"intra_op": spec.deploy.threads, "inter_op": 1}
    assert set(method["effective_threads"].values()) == {1} and len(method["effective_threads"]) == 4
    report = run.gate_report.read_text()
    assert "timed under the serving thread settings: 1 intra-op and 1 inter-op thread(s) for both models" in report


def test_cached_measurements_are_keyed_by_the_thread_settings(settings, trained_run, tmp_path):
    """A rerun under other serving threads must measure again, not reuse the other settings' verdict."""
    from components.spec import parse_spec
    from pipelines.step_cache import step_key

    spec, source = trained_run
    run = copy_run(source, tmp_path / "run", spec)
    data = spec.model_dump(mode="json")
    data["deploy"]["threads"] = 2
    two = parse_spec(data)
    assert _measurements_file(spec, run, settings) != _measurements_file(two, run, settings)
    assert step_key("gate", spec, run).key != step_key("gate", two, run).key
    assert step_key("optimize", spec, run).key == step_key("optimize", two, run).key  # the model is the same


def test_a_failing_runtime_says_which_and_why(trained_run, tmp_path):
    from components.errors import RelayError

    spec, run = trained_run
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(RelayError, match="timing broken failed in its own process"):
        time_runtimes([Runtime.onnx("broken", tmp_path / "broken.onnx")], {"b1": np.zeros((1, 1, 8, 8), np.float32)},
                      {"b1": 10}, ThreadSettings(1))


def test_bootstrap_intervals_bracket_the_figure_and_narrow_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.random(100) < 0.9, rng.random(10_000) < 0.9
    low, high = bootstrap_interval(small.astype(float), np.mean, 1000)
    assert low <= small.mean() <= high
    figure = with_interval(large.astype(float), np.mean, 1000)
    assert figure["low"] <= figure["value"] <= figure["high"]
    assert figure["high"] - figure["low"] < (high - low) / 5
    # About the normal approximation's width for a proportion.
    expected = 2 * 1.96 * np.sqrt(0.9 * 0.1 / 10_000)
    assert figure["high"] - figure["low"] == pytest.approx(expected, rel=0.2)
