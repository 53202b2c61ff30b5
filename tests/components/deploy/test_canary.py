"""The canary's verdict on the new version's traffic: errors over all requests, p99 latency per interval with a
failure limit (the canary against a live server, and its rollback: tests/components/deploy/test_deploy.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from components.deploy.canary import Traffic, judge
from components.spec import DeploySpec

BOUNDS = DeploySpec()  # 50 requests in 5 intervals, p99 at most 250 ms, one interval may break it


def _traffic(latencies_ms: list[float], errors: int = 0) -> Traffic:
    return Traffic(requests=len(latencies_ms) + errors, errors=errors, correct=len(latencies_ms),
                   latencies_ms=latencies_ms)


def _verdict(traffic: Traffic, bounds: DeploySpec = BOUNDS) -> list[str]:
    return judge(traffic.figures(bounds.canary_intervals), bounds)


def test_one_stall_of_a_busy_machine_does_not_roll_a_healthy_version_back():
    latencies = [2.7] * 50
    # What rolled a deploy back in CI ("p99 latency 296.3 ms", p50 2.7 ms): over all 50 requests, p99 lies between
    # the slowest two, so one request of 580 ms made it.
    latencies[31] = 580.0
    figures = _traffic(latencies).figures(BOUNDS.canary_intervals)
    assert figures["p99_ms"] == 297.123  # the old verdict, over all requests, failed it
    assert figures["interval_p99_ms"][3] > BOUNDS.canary_max_p99_ms and len(figures["interval_p99_ms"]) == 5
    assert judge(figures, BOUNDS) == []


def test_stalls_in_more_intervals_than_the_limit_roll_back_and_say_which():
    latencies = [2.7] * 50
    latencies[3], latencies[45] = 300.0, 410.0
    assert _verdict(_traffic(latencies)) == [
        "p99 latency above 250.0 ms in 2 of 5 intervals (limit 1): 273.2, 373.3 ms"]


def test_stalls_within_one_interval_are_one_failed_measurement():
    latencies = [2.7] * 50
    latencies[10:14] = [300.0] * 4
    assert _verdict(_traffic(latencies)) == []


def test_without_a_failure_limit_any_slow_interval_fails():
    strict = DeploySpec(canary_failure_limit=0)
    latencies = [2.7] * 50
    latencies[31] = 580.0
    assert _verdict(_traffic(latencies), strict) == ["p99 latency above 250.0 ms in 1 of 5 intervals (limit 0): "
                                                     "528.0 ms"]


def test_errors_have_no_interval_limit():
    assert _verdict(_traffic([2.7] * 49, errors=1)) == ["error rate 2.00% above 0.00% (1 of 50 requests failed)"]


@given(st.lists(st.floats(min_value=250.01, max_value=10_000), min_size=5, max_size=200))
def test_a_version_slower_than_the_bound_on_every_request_always_fails(latencies):
    assert any("p99 latency" in problem for problem in _verdict(_traffic(latencies)))


@given(st.lists(st.floats(min_value=0.1, max_value=250), min_size=5, max_size=200))
def test_a_version_within_the_bound_on_every_request_always_passes(latencies):
    assert _verdict(_traffic(latencies)) == []


@pytest.mark.parametrize("fields, message", [
    ({"canary_intervals": 3, "canary_failure_limit": 3}, r"canary_failure_limit \(3\) must be below "
                                                         r"canary_intervals \(3\)"),
    ({"canary_requests": 4}, r"canary_requests \(4\) must be at least canary_intervals \(5\)"),
])
def test_a_canary_that_could_never_fail_or_has_empty_intervals_is_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        DeploySpec(**fields)
