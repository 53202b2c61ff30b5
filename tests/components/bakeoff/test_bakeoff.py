"""The bake-off's arithmetic (bootstrap intervals, winners and ties, the weighted recommendation) and its report,
rendered from a document alone."""

from __future__ import annotations

import re

import pytest

from components.bakeoff.measure import time_to_best
from components.bakeoff.report import OTHER, WINNER, bars, judge, recommend, render_html, render_markdown


def _candidate(name: str, accuracy: tuple[float, float, float], served_p50: tuple[float, float, float],
               images_per_s: float, passed: bool = True) -> dict:
    """A measured candidate with the figures the verdicts read (the rest held equal)."""
    interval = lambda v: {"value": v[0], "low": v[1], "high": v[2]}  # noqa: E731
    latency = {"b1": {"p50_ms": interval((0.1, 0.09, 0.11)), "p99_ms": 0.2},
               "b64": {"p50_ms": interval((1.0, 0.9, 1.1)), "p99_ms": 2.0}}
    int8 = {"b1": {"p50_ms": interval((0.05, 0.04, 0.06)), "p99_ms": 0.1},
            "b64": {"p50_ms": interval((0.5, 0.4, 0.6)), "p99_ms": 1.0}}
    return {
        "name": name, "gate": {"passed": passed, "failed_checks": [] if passed else ["accuracy_floor"]},
        "accuracy": {"optimized": interval(accuracy), "original": interval(accuracy)},
        "training": {"images_per_s_mixed": images_per_s, "images_per_s_fp32": images_per_s / 2,
                     "time_to_best_s": 10.0, "peak_rss_mb": 500.0},
        "optimization": {"conversion_s": 1.0, "accuracy_loss_pp": 0.0},
        "inference": {"native: eager torch": latency, "ONNX Runtime": latency, "ONNX Runtime INT8": int8},
        "serving": {"p50_ms": interval(served_p50), "by_concurrency": {"32": {"requests_per_s": 1000.0}}},
        "footprint_mb": {".mar": 1.0},
    }


ACCURATE_SLOW = _candidate("pytorch/resnet", (0.97, 0.96, 0.98), (4.0, 3.9, 4.1), 500.0)
FAST_LESS_ACCURATE = _candidate("tensorflow/resnet", (0.90, 0.89, 0.91), (1.0, 0.95, 1.05), 900.0)


def test_the_recommendation_follows_the_priorities():
    candidates = [ACCURATE_SLOW, FAST_LESS_ACCURATE]
    accuracy_first = recommend(candidates, {"accuracy": 0.8, "latency": 0.1, "training_cost": 0.1})
    latency_first = recommend(candidates, {"accuracy": 0.1, "latency": 0.8, "training_cost": 0.1})
    assert accuracy_first["recommended"] == "pytorch/resnet"
    assert latency_first["recommended"] == "tensorflow/resnet"
    # The arithmetic shown is the arithmetic used: weight × score per priority, summed.
    scores = latency_first["scores"]["pytorch/resnet"]
    assert scores["parts"]["latency"]["score"] == pytest.approx(1.0 / 4.0)
    assert scores["parts"]["training_cost"]["score"] == pytest.approx(500 / 900)
    assert scores["total"] == pytest.approx(0.1 * 1.0 + 0.8 * 0.25 + 0.1 * 500 / 900)
    assert any(line.startswith("pytorch/resnet: 0.10×1.000 (accuracy)") for line in latency_first["arithmetic"])


def test_a_candidate_that_failed_its_gate_is_never_recommended():
    failed = _candidate("pytorch/resnet", (0.99, 0.985, 0.995), (0.5, 0.45, 0.55), 2000.0, passed=False)
    verdict = recommend([failed, FAST_LESS_ACCURATE], {"accuracy": 1, "latency": 1, "training_cost": 1})
    assert verdict["recommended"] == "tensorflow/resnet"
    assert verdict["excluded"] == {"pytorch/resnet": "gate failed: accuracy_floor"}
    nothing = recommend([failed], {"accuracy": 1, "latency": 0, "training_cost": 0})
    assert nothing["recommended"] is None and "no candidate passed" in nothing["why"]


def test_overlapping_intervals_are_a_tie_and_score_alike():
    close = _candidate("tensorflow/resnet", (0.965, 0.955, 0.975), (4.0, 3.9, 4.1), 500.0)
    verdicts = {v["key"]: v for v in judge([ACCURATE_SLOW, close])}
    assert verdicts["accuracy"]["winner"] == "tie"
    assert verdicts["accuracy"]["tied_with_best"] == ["tensorflow/resnet"]
    assert verdicts["served_p50"]["winner"] == "tie"
    # Within noise on accuracy, the tied candidate gets the full accuracy score.
    scores = recommend([ACCURATE_SLOW, close], {"accuracy": 1, "latency": 0, "training_cost": 0})["scores"]
    assert scores["tensorflow/resnet"]["parts"]["accuracy"]["score"] == 1.0
    # No interval (training speed): a tie within 5% only.
    verdicts = {v["key"]: v for v in judge([ACCURATE_SLOW, FAST_LESS_ACCURATE])}
    assert verdicts["train_speed"]["winner"] == "tensorflow/resnet"
    assert verdicts["accuracy"]["winner"] == "pytorch/resnet"


def test_time_to_best_is_the_elapsed_time_at_the_best_epoch():
    history = [{"epoch": 1, "elapsed_seconds": 2.0}, {"epoch": 2, "elapsed_seconds": 4.5},
               {"epoch": 3, "elapsed_seconds": 7.0}]
    assert time_to_best(history, 2) == 4.5


def _document(candidates: list[dict], quantize: str = "none") -> dict:
    """A bake-off document as run_bakeoff writes it, judged, with what the report reads beyond the figures."""
    for candidate in candidates:
        candidate["training"]["history"] = [{"epoch": 1, "elapsed_seconds": 1.0, "val_accuracy": 0.9}]
        candidate["optimization"].update({"conversion_s_onnx": 1.0, "conversion_s_int8": 2.0,
                                          "accuracy_loss_pp_onnx": 0.0, "accuracy_loss_pp_int8": 0.3,
                                          "max_logit_diff_onnx": 1e-6, "max_logit_diff_int8": 0.5})
        candidate["serving"].update({"errors": 0, "by_concurrency": {
            "1": {"requests_per_s": 300.0, "p50_ms": 3.0, "p99_ms": 6.0},
            "32": {"requests_per_s": 1000.0, "p50_ms": 30.0, "p99_ms": 60.0}}})
    candidates[0]["footprint_mb"] = {"ONNX": 0.2, "ONNX INT8": 0.05, ".mar": 1.0}
    candidates[1]["footprint_mb"] = {".mar": 1.2, "SavedModel": 0.9, "ONNX": 0.2}  # another order, another set
    method = {"threads": {"inference": {"intra_op": 1, "inter_op": 1}}, "serving_concurrency": [1, 8, 32],
              "same_for_all": {"epochs": 12, "precision": "mixed", "quantize": quantize}}
    verdicts = judge(candidates, quantize)
    return {"task": "digits", "id": "t1", "created": "2026-11-30T00:00:00+00:00", "candidates": candidates,
            "method": method, "verdicts": verdicts, "recommendation": recommend(candidates, {"accuracy": 1}, verdicts),
            "gpu": {"why": "skipped: no CUDA device"}, "shipped": None,
            "machine": {"cpu": "test CPU", "cores": 2, "flags": {"avx2": True}, "omp_num_threads": "1",
                        "platform": "linux", "python": "3.11", "libraries": {"onnxruntime": "1.31.1"}}}


def test_each_latency_row_names_its_runtime_and_int8_is_an_option_unless_served():
    document = _document([ACCURATE_SLOW, FAST_LESS_ACCURATE])
    verdicts = {v["key"]: v for v in document["verdicts"]}
    served = verdicts["optimized_b1"]["figures"]["pytorch/resnet"]
    assert served["runtime"] == "ONNX Runtime" and served["value"] == 0.1  # not INT8's faster 0.05
    assert verdicts["int8_option_b1"]["figures"]["pytorch/resnet"]["runtime"] == "ONNX Runtime INT8"
    summary = render_markdown(document)
    assert "| served model p50, batch 1 | 0.1 [0.09, 0.11] ms (ONNX Runtime) |" in summary
    assert "| native p50, batch 1 | 0.1 [0.09, 0.11] ms (eager torch) |" in summary
    assert "INT8 option p50, batch 1 (not served)" in summary and "Report:" not in summary

    served_int8 = {v["key"]: v for v in _document([ACCURATE_SLOW, FAST_LESS_ACCURATE], "int8")["verdicts"]}
    assert served_int8["optimized_b1"]["figures"]["pytorch/resnet"]["runtime"] == "ONNX Runtime INT8"
    assert "int8_option_b1" not in served_int8


def test_charts_colour_no_winner_on_a_tie_cap_only_intervals_and_zoom_accuracy():
    close = _candidate("tensorflow/resnet", (0.965, 0.955, 0.975), (4.0, 3.9, 4.1), 500.0)
    names = ["pytorch/resnet", "tensorflow/resnet"]
    verdicts = {v["key"]: v for v in judge([ACCURATE_SLOW, close])}
    accuracy = bars(verdicts["accuracy"], names)
    assert verdicts["accuracy"]["winner"] == "tie" and accuracy.colours == [OTHER, OTHER]
    assert accuracy.errors == [[pytest.approx(0.01), pytest.approx(0.01)], [pytest.approx(0.01), pytest.approx(0.01)]]
    low, high = accuracy.ylim
    assert 0.9 < low < 0.955 and 0.98 < high <= 1.0  # zoomed: the intervals are visible
    speed = bars({v["key"]: v for v in judge([ACCURATE_SLOW, FAST_LESS_ACCURATE])}["train_speed"], names)
    assert speed.errors is None and speed.ylim is None  # no interval, no caps; not a fraction
    assert speed.colours == [OTHER, WINNER]


def test_the_report_leaves_out_empty_charts_and_lines_up_its_tables():
    document = _document([ACCURATE_SLOW, FAST_LESS_ACCURATE])
    page = render_html(document, {})
    footprint = page.split("<h2>Footprint (MB)</h2>", 1)[1].split("</table>", 1)[0]
    header, *rows = [re.findall(r"<t[hd]>([^<]*)</t[hd]>", row) for row in footprint.split("<tr>")[1:]]
    assert header == ["candidate", "ONNX", "ONNX INT8", ".mar", "SavedModel"]  # one column per artifact
    assert rows == [["pytorch/resnet", "0.200", "0.050", "1.000", ""],
                    ["tensorflow/resnet", "0.200", "", "1.200", "0.900"]]
    method = page.split("<h2>Method</h2>", 1)[1].split("</table>", 1)[0]
    assert "<td>threads › inference › intra op</td><td>1</td>" in method and "<td>1, 8, 32</td>" in method
    assert "<pre>" not in page and "{" not in method

    from components.bakeoff.report import _charts, _training_chart
    from components.html_report import pyplot

    charts = _charts(document)
    assert set(charts) == {"criteria.png", "training_curves.png", "serving.png"}
    for candidate in document["candidates"]:
        candidate["training"]["history"] = []
    assert _training_chart(pyplot(), document["candidates"]) is None  # nothing to plot: no chart
