"""The digits DAG through Airflow's servers on 2 Celery workers that share no disk, against the LocalExecutor.

Run by ``make bench`` (``measure_celery_vs_local``) in a process of its own: it drives `make airflow` as the
end-to-end tests do (``tests.e2e.make_airflow``), whose helpers set the test environment up on import.
``python -m bench.celery_vs_local HOME OUT.json [CONF]`` writes each executor's seconds from the REST API's trigger
to the run's end, triggered with the run parameters CONF (JSON; default none: the spec's defaults): the Celery side with runs and data on a moto S3 server and models through a git
remote, the local side on one disk. Each includes what its executor adds (Redis queueing, S3 transfers, each
worker's own checkout of the dataset version)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _task_seconds(tasks: list[dict]) -> dict[str, float]:
    """Each task's run time, from its instance's start and end (what the executor adds shows per step)."""
    from datetime import datetime

    return {t["task_id"]: round((datetime.fromisoformat(t["end_date"]) - datetime.fromisoformat(t["start_date"]))
                                .total_seconds(), 1) for t in tasks if t.get("start_date") and t.get("end_date")}


def dag_seconds(home: Path, conf: dict) -> dict:
    from pipelines.local_s3 import start_local_s3, stop_local_s3
    from tests.e2e.make_airflow import MakeAirflow

    process, s3 = start_local_s3(home / "moto.log")
    seconds: dict[str, float] = {}
    try:
        for executor, store in (("local", None), ("celery", s3)):
            airflow = MakeAirflow(home / executor, executor, store, prefix="bench")
            try:
                airflow.start()
                started = time.perf_counter()
                run, tasks = airflow.run_to_the_end("relay_digits", conf)
                seconds[executor] = time.perf_counter() - started
                seconds[f"{executor}_tasks"] = _task_seconds(tasks)
                if run["state"] != "success":
                    states = {t["task_id"]: t["state"] for t in tasks}
                    raise RuntimeError(f"relay_digits on the {executor} executor ended {run['state']}: {states}")
            finally:
                airflow.stop()
    finally:
        stop_local_s3(process)
    return seconds


if __name__ == "__main__":
    home, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(dag_seconds(home, json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})))
