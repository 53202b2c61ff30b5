"""Run a task's DAG for real on this machine with Airflow's ``dag.test()`` (SQLite metadata DB).

Airflow's state lives under ``<RELAY_HOME>/airflow`` unless AIRFLOW_HOME is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from components.settings import get_settings


def configure_airflow_env() -> Path:
    """Set Airflow's environment defaults for a local run (before Airflow is imported); return AIRFLOW_HOME."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(get_settings().home / "airflow")))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(get_settings().dags_dir))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "2")
    home.mkdir(parents=True, exist_ok=True)
    return home


def migrate_db() -> None:
    """``airflow db migrate``: creates or upgrades the metadata DB (a no-op when current)."""
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {proc.stderr.strip()[-2000:]}")


def run_dag_test(task: str, conf: dict) -> tuple[str, str, dict[str, str]]:
    """Run relay_<task> once with ``conf`` as its params; return the DAG id, run state and task states."""
    configure_airflow_env()
    migrate_db()
    from pipelines.airflow_dag import build_dag
    from components.spec import spec_path

    dag = build_dag(spec_path(task))
    dag_run = dag.test(run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return dag.dag_id, str(dag_run.state), states


def worker_hostname() -> str:
    """Airflow's hostname_callable for `make airflow EXECUTOR=celery`: each Celery worker's own name
    (RELAY_WORKER_NAME), so the task instances say which worker ran them even when both run on one machine."""
    import socket

    return os.environ.get("RELAY_WORKER_NAME") or socket.getfqdn()
