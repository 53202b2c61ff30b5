"""Child processes: workers that start without re-running the parent's main script, and servers waited on until
they listen and stopped with their children."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """A pool with one process per core (at most 8), whose workers start without the parent's main script:
    it is hidden for the pool's whole life, since workers start at the first submit, not at creation.
    forkserver: a forked child of a process with running threads (Airflow, torch) can deadlock."""
    with main_script_hidden(), ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 8),
                                                   mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield pool


def relay_python_path() -> str:
    """PYTHONPATH for a child ``python -m components.…``: Relay's own source root first (it may not be
    installed), then the caller's."""
    from components.settings import PROJECT_DIR

    return os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))


def wait_listening(process: subprocess.Popen, host: str, port: int, timeout_s: float) -> str | None:
    """Wait until the server ``process`` accepts TCP connections on ``host``:``port`` (a connect, not a request:
    a request may count against the server's setup). None once it does; otherwise why not, as words that follow
    the server's name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode} before listening"
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return None
        time.sleep(0.1)  # a server takes seconds to start; checking ten times a second costs nothing
    return f"did not listen on {host}:{port} within {timeout_s:.0f} s"


def stop_server(pid: int | None, pid_file: Path, timeout_s: float = 30) -> bool:
    """Stop the server ``pid`` that Relay started (None: none runs) with its children, and remove its pid file.
    Returns whether one was running."""
    if pid is not None:
        stop_tree(pid, timeout_s)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def stop_session(session_id: int, timeout_s: float = 30) -> None:
    """SIGTERM every process left in the session ``session_id``, wait for them, kill what is left.

    A child started with ``start_new_session=True`` leads a session whose id is its pid, and what it starts stays
    in it after it exits. So a launcher that exits once its server is spawned (TorchServe's) leaves a handle on the
    server that needs no pid file, and the kernel does not reuse the id while a member runs."""
    import psutil

    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id:
                members.append(process)
        except OSError:
            continue  # gone meanwhile
    for member in members:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass  # ended meanwhile
    _wait_or_kill(members, timeout_s)


def stop_tree(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM the process ``pid`` and wait for it and its children; kill what is left."""
    import psutil

    process = psutil.Process(pid)
    children = process.children(recursive=True)
    process.send_signal(signal.SIGTERM)
    _wait_or_kill([process, *children], timeout_s)


def _wait_or_kill(processes: list, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``processes`` (psutil's, signalled to stop) to end; kill what is left."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for straggler in alive:
        straggler.kill()
