"""A bounded load test against a real local model server (or any HTTP endpoint): keep-alive clients on loopback.

Used by the load tests (pass/fail: zero errors, bounded memory, zero failed requests during a deploy)
and by ``make bench`` and the bake-off (p50/p99, throughput). Each client thread keeps its own HTTP/1.1
connection open.
"""

from __future__ import annotations

import contextlib
import http.client
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import psutil

from components.deploy.servers import ModelServer


class LoadTarget(Protocol):
    """What a load needs of a server (every ModelServer is one): where to POST a model's images, and the key."""

    def valid_key(self) -> str: ...
    def predictions_url(self, model_name: str) -> str: ...


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    error_samples: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[98]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def server_rss_bytes(server: ModelServer) -> int:
    """Resident memory of the server: its process (TorchServe's JVM, MLServer's Python) and every worker it
    started."""
    process = psutil.Process(server.pid())
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def run_load(server: LoadTarget, model: str, bodies: list[bytes], total: int | None = None, concurrency: int = 32,
             until: Callable[[], bool] | None = None, content_type: str = "application/octet-stream") -> LoadResult:
    """POST ``bodies`` round-robin to ``model``'s default version from ``concurrency`` threads: ``total``
    requests in all, or until ``until()`` is true. Every non-200 answer counts as an error."""
    headers = {"Authorization": f"Bearer {server.valid_key()}", "Content-Type": content_type}
    return post_load(server.predictions_url(model), headers, bodies, total, concurrency, until)


def post_load(url: str, headers: dict[str, str], bodies: list[bytes], total: int | None = None,
              concurrency: int = 32, until: Callable[[], bool] | None = None) -> LoadResult:
    """``run_load`` against any HTTP endpoint: POST ``bodies`` round-robin to ``url`` with ``headers``, timed from
    when every client is connected (steady state: no connection set-up in the figures)."""
    if (total is None) == (until is None):
        raise ValueError("give either total or until")
    address = urlsplit(url)
    host, port, path = address.hostname, address.port, address.path
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if (total is not None and issued >= total) or (until is not None and until()):
                return None
            issued += 1
            return issued

    def client() -> None:
        # http.client, not requests: a third of the client CPU per request, which on a 2-core machine is
        # CPU the server under test gets back.
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            # Connected before the clock starts: the first request on each of 32 new connections otherwise
            # waits out the others' connects and thread starts (up to 100 ms here), the tail of a short load.
            with contextlib.suppress(OSError):  # counted as the first request's error
                connection.connect()
            ready.wait(timeout=60)
            while (index := next_index()) is not None:
                started = time.perf_counter()
                try:
                    connection.request("POST", path, body=bodies[index % len(bodies)], headers=headers)
                    response = connection.getresponse()
                    text = response.read()
                    failure = None if response.status == 200 else f"{response.status}: {text[:200]!r}"
                except (OSError, http.client.HTTPException) as error:
                    failure = f"{type(error).__name__}: {error}"
                    connection.close()  # reconnects on the next request
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if failure:
                        errors.append(failure)
        finally:
            connection.close()

    started = []
    ready = threading.Barrier(concurrency, action=lambda: started.append(time.perf_counter()))
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    return LoadResult(len(latencies), len(errors), time.perf_counter() - started[0], latencies, errors[:5])
