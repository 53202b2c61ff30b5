"""Worker processes that start without re-running the parent's main script."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """While active, forkserver and spawn children start with a bare ``__main__``.

    Such children re-run the parent's ``__main__`` (by module name or script path) to rebuild its globals.
    Relay's workers run functions of Relay's own modules and need none of them, and some parents cannot be
    re-run: an Airflow task process is the ``airflow`` command, which re-initialises Airflow without its
    database in the child and fails; a user's script without an ``if __name__ == "__main__"`` guard would
    run again. Used as a decorator or a ``with`` block around the code that starts workers.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__file__", None)
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            del main.__spec__
