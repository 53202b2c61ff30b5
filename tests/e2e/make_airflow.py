"""`make airflow` as the live end-to-end tests run and stop it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def stop_make_airflow(process: subprocess.Popen | None, airflow_home: Path) -> None:
    """Ctrl-C to `make airflow`'s process group, as a terminal sends it; then, if the script could not stop them,
    the process groups of the servers it started (each leads its own, with its workers), by their recorded pids."""
    if process and process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    pid_file = airflow_home / "airflow-servers.pids"
    for pid in (pid_file.read_text().split() if pid_file.is_file() else []):
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
