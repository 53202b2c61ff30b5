"""A whole bake-off on digits through the CLI: both frameworks trained, gated, measured on both real model servers
(started and stopped by the bake-off), reported, and the recommended one shipped to the spec's server."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from components.bakeoff.report import _format
from components.deploy.servers import model_server, stop_servers
from components.settings import Settings
from tests.conftest import settings_env, spec_for

pytestmark = pytest.mark.e2e


def _positive_figures(node, path=""):
    """Every number in a figures tree, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _positive_figures(value, f"{path}.{key}")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def test_bakeoff_on_digits_measures_reports_and_ships(tmp_path, digits_spec, small_dataset, settings):
    from pipelines.cli import app

    # A tiny epoch count: the gate floor is lowered so that the candidates can pass it and one can ship.
    spec = spec_for(digits_spec, small_dataset, **{"training.epochs": 3, "gate.min_accuracy": 0.3,
                                                   "bakeoff.latency_runs": 30,
                                                   "bakeoff.serving_requests": 100,
                                                   "bakeoff.bootstrap_samples": 200,
                                                   "bakeoff.throughput_rounds": 3,
                                                   "bakeoff.throughput_round_seconds": 1.0})
    spec_file = tmp_path / "digits.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["bakeoff", str(spec_file), "--ship"], env=settings_env(settings))
    server = model_server(spec.deploy.server, settings)
    try:
        assert result.exit_code == 0, result.output
        report = Path(result.output.strip().splitlines()[-1].removeprefix("Report: "))
        assert result.output.count(str(report)) == 1  # the path, printed once
        document = json.loads((report.parent / "bakeoff.json").read_text())
        candidates = {c["name"]: c for c in document["candidates"]}
        assert set(candidates) == {"pytorch/small_cnn", "tensorflow/small_cnn"}

        for name, candidate in candidates.items():
            # The same split, epochs and seed for both: the same test images, as many epochs.
            assert candidate["accuracy"]["test_images"] == candidates["pytorch/small_cnn"]["accuracy"]["test_images"]
            assert candidate["training"]["epochs"] == 3
            for key in ("original", "onnx", "onnx_int8", "optimized"):
                figure = candidate["accuracy"][key]
                assert 0 < figure["low"] <= figure["value"] <= figure["high"] <= 1, (name, key)
            training = candidate["training"]
            for key in ("time_to_best_s", "peak_rss_mb", "train_seconds"):
                assert training[key] > 0, (name, key)
            for precision in ("mixed", "fp32"):  # alternating rounds, each with the machine's load
                figure = training[f"images_per_s_{precision}"]
                assert 0 < figure["low"] <= figure["value"] <= figure["high"], (name, precision)
                assert len(figure["rounds"]) == document["method"]["training_throughput"]["rounds"]
                assert all(0 <= r["others_cpu_share"] <= 1 for r in figure["rounds"])
            assert 0 <= training["load"]["others_cpu_share"] <= 1  # what the training run was taken under
            assert training["time_to_best_s"] <= training["train_seconds"] + 1e-6
            assert training["peak_rss_mb"] > 100  # a real training process: torch or TF alone is more
            optimization = candidate["optimization"]
            assert optimization["conversion_s_onnx"] > 0 and optimization["conversion_s_int8"] > 0
            # fp32 ONNX matches the original (both frameworks' original is the fp32 model) to float rounding;
            # INT8 changes the logits.
            assert optimization["max_logit_diff_onnx"] < 1e-3 and optimization["max_logit_diff_int8"] > 0
            expected_native = {"pytorch": {"native: eager torch"},
                               "tensorflow": {"native: keras model(x)", "native: SavedModel signature"}}
            assert set(candidate["inference"]) == expected_native[candidate["framework"]] | {
                "ONNX Runtime", "ONNX Runtime INT8"}
            for runtime, batches in candidate["inference"].items():
                for batch in ("b1", "b64"):
                    p50 = batches[batch]["p50_ms"]
                    assert 0 < p50["low"] <= p50["value"] <= p50["high"], (name, runtime, batch)
                    assert batches[batch]["p99_ms"] >= p50["value"], (name, runtime, batch)
            assert set(candidate["serving_by_server"]) == {"torchserve", "kserve"}  # both servers measured
            for serving in candidate["serving_by_server"].values():
                assert serving["errors"] == 0
                assert set(serving["by_concurrency"]) == {"1", "8", "32"}
                for level in serving["by_concurrency"].values():
                    assert level["requests_per_s"] > 0 and level["p99_ms"] >= level["p50_ms"] > 0
                assert serving["p99_ms"] >= serving["p50_ms"]["value"] > 0
            # What the recommendation weighs: the figures on the server the spec deploys to.
            assert candidate["serving"]["server"] == spec.deploy.server == "kserve"  # Relay's default
            weighed = candidate["serving_by_server"]["kserve"]["by_concurrency"]
            assert candidate["serving"]["by_concurrency"] == weighed
            assert set(candidate["footprint_mb"]) >= {"ONNX", "ONNX INT8", ".mar"}
            assert all(size > 0 for size in candidate["footprint_mb"].values())
            negative = [(path, value) for path, value in _positive_figures(candidate)
                        if value < 0 and "loss_pp" not in path]
            assert not negative, negative

        # The report: charts as embedded images, the machine, the method, and the JSON's figures and verdicts.
        page = report.read_text()
        assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) >= 3
        assert "src=\"http" not in page and "<script" not in page
        for verdict in document["verdicts"]:
            assert verdict["title"] in page
            for name in candidates:
                assert _format(verdict["figures"][name], verdict["unit"]) in page
        recommendation = document["recommendation"]
        assert recommendation["recommended"] in candidates
        for line in recommendation["arithmetic"]:
            assert line in page
        assert document["machine"]["cpu"] in page and document["machine"]["libraries"]["onnxruntime"] in page
        assert "no CUDA device" in document["gpu"]["why"] and html.escape(document["gpu"]["why"]) in page
        assert "Recommendation:" in result.output and str(report) in result.output

        # The bake-off's own servers are gone; the recommended candidate is served by the project's.
        for kind in ("torchserve", "kserve"):
            bakeoff_server = model_server(kind, Settings(home=report.parent / "servers"))
            assert bakeoff_server.pid() is None and not bakeoff_server.pid_file.exists()
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if str(report.parent / "servers") in " ".join(p.info["cmdline"] or [])]
        shipped = document["shipped"]
        assert shipped["shipped"] and shipped["candidate"] == recommendation["recommended"]
        assert server.default_version(spec.name) == shipped["version"].removeprefix("v")
        assert f"{shipped['candidate']} as {shipped['version']}" in page
    finally:
        stop_servers(settings)
