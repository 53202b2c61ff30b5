"""The canary phase of a local deploy: before a new version becomes the default, replayed held-out requests go
to it and to the version serving now, and its error rate and p99 latency must stay within the spec's bounds.

Latency is judged as canary tools judge a metric (Argo Rollouts' analysis runs, Flagger's checks): measured in
several intervals, failing once more intervals than a failure limit break the bound. Over all of a 50-request
canary, p99 is its slowest request or two, so one stall of a busy machine (in CI, p99 296 ms against a p50 of
2.7 ms: one request of about 580 ms) rolled a healthy version back; a slow version breaks the bound in every
interval."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.deploy.servers import ModelServer
from components.errors import ServingError
from components.spec import DeploySpec


@dataclass
class Traffic:
    """What one version answered during the canary."""

    requests: int = 0
    errors: int = 0
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def figures(self, intervals: int = 1) -> dict:
        """Counts, accuracy, and p50 and p99 latency over all requests, and p99 in each of ``intervals``
        consecutive intervals of the answered requests (``interval_p99_ms``)."""
        latencies = np.array(self.latencies_ms or [0.0])
        return {"requests": self.requests, "errors": self.errors, "error_rate": self.error_rate,
                "accuracy": round(self.correct / max(self.requests, 1), 4),
                "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
                "interval_p99_ms": [_percentile(part, 99) for part in np.array_split(latencies, intervals)
                                    if part.size]}

    @property
    def error_rate(self) -> float:
        return round(self.errors / max(self.requests, 1), 4)


def _percentile(latencies: np.ndarray, q: float) -> float:
    return round(float(np.percentile(latencies, q)), 3)


@dataclass(frozen=True)
class CanaryResult:
    passed: bool
    why: str  # the bound that was broken, or what passed
    new: dict
    current: dict | None


def _send(server: ModelServer, name: str, version: str, path: Path, label: str, traffic: Traffic) -> None:
    traffic.requests += 1
    started = time.perf_counter()
    try:
        answer = server.predict(name, path.read_bytes(), version)
    except ServingError:
        traffic.errors += 1
        return
    traffic.latencies_ms.append((time.perf_counter() - started) * 1000)
    traffic.correct += answer["class"] == label


def run_canary(server: ModelServer, name: str, new: str, current: str | None, paths: list[Path], labels: list[str],
               bounds: DeploySpec) -> CanaryResult:
    """Replay ``bounds.canary_requests`` held-out requests, alternating between ``new`` and ``current`` (when a
    version serves now), and judge ``new`` by the spec's error-rate and p99 bounds."""
    new_traffic, current_traffic = Traffic(), Traffic()
    for i in range(bounds.canary_requests):
        path, label = paths[i % len(paths)], labels[i % len(paths)]
        _send(server, name, new, path, label, new_traffic)
        if current is not None:
            _send(server, name, current, path, label, current_traffic)
    figures = new_traffic.figures(bounds.canary_intervals)
    problems = judge(figures, bounds)
    why = "; ".join(problems) or (f"{new_traffic.requests} requests: error rate {figures['error_rate']:.2%}, "
                                  f"p99 {figures['p99_ms']:.1f} ms, within bounds")
    return CanaryResult(not problems, why, figures,
                        current_traffic.figures(bounds.canary_intervals) if current is not None else None)


def judge(figures: dict, bounds: DeploySpec) -> list[str]:
    """The bounds that the new version's canary ``figures`` (``Traffic.figures``) break, in words; none: it
    passes. Errors over all requests; p99 latency per interval, failing when more than
    ``bounds.canary_failure_limit`` intervals are above ``bounds.canary_max_p99_ms``."""
    problems = []
    if figures["error_rate"] > bounds.canary_max_error_rate:
        problems.append(f"error rate {figures['error_rate']:.2%} above {bounds.canary_max_error_rate:.2%} "
                        f"({figures['errors']} of {figures['requests']} requests failed)")
    slow = [p99 for p99 in figures["interval_p99_ms"] if p99 > bounds.canary_max_p99_ms]
    if len(slow) > bounds.canary_failure_limit:
        problems.append(f"p99 latency above {bounds.canary_max_p99_ms:.1f} ms in {len(slow)} of "
                        f"{len(figures['interval_p99_ms'])} intervals (limit {bounds.canary_failure_limit}): "
                        + ", ".join(f"{p99:.1f}" for p99 in slow) + " ms")
    return problems
