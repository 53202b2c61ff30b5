"""The bake-off's arithmetic: bootstrap intervals, winners and ties, and the weighted recommendation."""

from __future__ import annotations

import pytest

from components.bakeoff.measure import time_to_best
from components.bakeoff.report import judge, recommend


def _candidate(name: str, accuracy: tuple[float, float, float], served_p50: tuple[float, float, float],
               images_per_s: float, passed: bool = True) -> dict:
    """A measured candidate with the figures the verdicts read (the rest held equal)."""
    interval = lambda v: {"value": v[0], "low": v[1], "high": v[2]}  # noqa: E731
    latency = {"b1": {"p50_ms": interval((0.1, 0.09, 0.11)), "p99_ms": 0.2},
               "b64": {"p50_ms": interval((1.0, 0.9, 1.1)), "p99_ms": 2.0}}
    return {
        "name": name, "gate": {"passed": passed, "failed_checks": [] if passed else ["accuracy_floor"]},
        "accuracy": {"optimized": interval(accuracy), "original": interval(accuracy)},
        "training": {"images_per_s_mixed": images_per_s, "images_per_s_fp32": images_per_s / 2,
                     "time_to_best_s": 10.0, "peak_rss_mb": 500.0},
        "optimization": {"conversion_s": 1.0, "accuracy_loss_pp": 0.0},
        "inference": {"native: eager torch": latency, "ONNX Runtime": latency},
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
