"""The S3 server's launcher: moto's own dispatcher, with its per-request backend lookup done once per host."""

from __future__ import annotations

from unittest import mock

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from pipelines.moto_server import _CachedLookupDispatcher

HOSTS = ("s3.us-east-1.amazonaws.com", "iam.amazonaws.com", "sts.amazonaws.com", None)


def test_the_cached_lookup_answers_as_moto_does_and_asks_moto_once_per_host():
    cached, stock = _CachedLookupDispatcher(create_backend_app), DomainDispatcherApplication(create_backend_app)
    assert [cached.get_backend_for_host(host) for host in HOSTS] == [stock.get_backend_for_host(host)
                                                                    for host in HOSTS]
    assert cached.get_backend_for_host("s3.us-east-1.amazonaws.com") == "s3"
    # A spy: moto's own lookup still answers, the mock only counts how often it is asked.
    with mock.patch.object(DomainDispatcherApplication, "get_backend_for_host", autospec=True,
                           side_effect=DomainDispatcherApplication.get_backend_for_host) as lookup:
        fresh = _CachedLookupDispatcher(create_backend_app)
        for _ in range(3):
            for host in HOSTS:
                fresh.get_backend_for_host(host)
    assert lookup.call_count == len(HOSTS)
