"""moto's standalone S3 server, started as ``moto.server.main`` starts it, with one lookup memoized.

``python pipelines/moto_server.py HOST PORT`` (run by ``pipelines.local_s3``) serves moto's own WSGI dispatcher
with moto's request handler on Werkzeug's threaded server, exactly as ``python -m moto.server -H HOST -p PORT``
does, except that the dispatcher's backend lookup is cached per host. moto 5.2 answers that lookup afresh on
every request by listing its package directory (an ``isdir`` per module) and trying its backends' URL patterns;
the answer for a host never changes while the server runs. Measured here (serial 400-byte PUTs, 2-core AMD
EPYC): the server spent 8.4 ms of CPU per request as moto starts it and 6.3 ms with the lookup cached, and on
these 2 cores that CPU is taken from the steps that the S3 server serves (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class _CachedLookupDispatcher(DomainDispatcherApplication):
    """moto's dispatcher; which backend serves a host is looked up once per host."""

    @functools.cache  # one dispatcher per server process: the cache lives as long as the server
    def get_backend_for_host(self, host: str | None):
        return super().get_backend_for_host(host)


def serve(host: str, port: int) -> None:
    """Serve moto's backends on ``host``:``port`` until the process is stopped (SIGTERM or Ctrl-C)."""
    app = _CachedLookupDispatcher(create_backend_app)
    app.debug = True  # as moto.server.main sets it
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
