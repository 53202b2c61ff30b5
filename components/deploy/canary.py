"""The canary phase of a local deploy: before a new version becomes the default, replayed held-out requests go
to it and to the version serving now, and its error rate and p99 latency must stay within the spec's bounds."""

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

    def figures(self) -> dict:
        latencies = np.array(self.latencies_ms or [0.0])
        return {"requests": self.requests, "errors": self.errors, "error_rate": self.error_rate,
                "accuracy": round(self.correct / max(self.requests, 1), 4),
                "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                "p99_ms": round(float(np.percentile(latencies, 99)), 3)}

    @property
    def error_rate(self) -> float:
        return round(self.errors / max(self.requests, 1), 4)


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
    figures = new_traffic.figures()
    problems = []
    if figures["error_rate"] > bounds.canary_max_error_rate:
        problems.append(f"error rate {figures['error_rate']:.2%} above {bounds.canary_max_error_rate:.2%} "
                        f"({new_traffic.errors} of {new_traffic.requests} requests failed)")
    if figures["p99_ms"] > bounds.canary_max_p99_ms:
        problems.append(f"p99 latency {figures['p99_ms']:.1f} ms above {bounds.canary_max_p99_ms:.1f} ms")
    why = "; ".join(problems) or (f"{new_traffic.requests} requests: error rate {figures['error_rate']:.2%}, "
                                  f"p99 {figures['p99_ms']:.1f} ms, within bounds")
    return CanaryResult(not problems, why, figures, current_traffic.figures() if current is not None else None)
