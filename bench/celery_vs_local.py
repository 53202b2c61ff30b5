"""The digits DAG through Airflow's servers on 2 Celery workers that share no disk, against the LocalExecutor.

Run by ``make bench`` (``measure_celery_vs_local``) in a process of its own: it drives `make airflow` as the
end-to-end tests do (``tests.e2e.make_airflow``), whose helpers set the test environment up on import.
``python -m bench.celery_vs_local HOME OUT.json [CONF]`` writes each executor's seconds from the REST API's trigger
to the run's end, in the order ``ORDER``, triggered with the run parameters CONF (JSON; default none:
the spec's defaults): the Celery side with runs and data on a moto S3 server and models through a git remote, the
local side on one disk. Each includes what its executor adds (Redis queueing, S3 transfers, each
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


def _task_hosts(tasks: list[dict]) -> dict[str, str]:
    """Which worker ran each task: a step's transfers depend on what its worker fetched before."""
    return {t["task_id"]: t.get("hostname") or "" for t in tasks}


# The executors' order after the warm-up: three runs each, whose median drops one run slowed by the machine on
# either side (with two, a median is their mean: one local run of 81 s, its validate step 33 s against 22 in the
# other's 62 s, made a ratio of 1.18). Their positions are as even as three each allow (local 1, 4, 5; Celery 2, 3,
# 6).
ORDER = ("local", "celery", "celery", "local", "local", "celery")
# An untimed run before them: the first DAG run on a machine reads TensorFlow, TFX, torch and the model server from
# disk, and whichever executor went first paid for it (the LocalExecutor's first run here took 101 s against 75 s
# for its second, its deploy 29 s against 7). A Celery run reads what a LocalExecutor run reads, and Celery's parts.
WARM_UP = "celery"


def dag_seconds(home: Path, conf: dict) -> dict:
    """An untimed warm-up run (``WARM_UP``), then each executor's DAG runs in ``ORDER``, each on Airflow's servers
    started afresh and, for Celery, on workers with empty homes and an empty S3 prefix: its seconds per run (a list,
    in its order), its steps' seconds (``<executor>_tasks``, a list of dicts) and where each step ran
    (``<executor>_hosts``); the warm-up's seconds as ``warm_up``."""
    from pipelines.local_s3 import start_local_s3, stop_local_s3
    from tests.e2e.make_airflow import MakeAirflow

    process, s3 = start_local_s3(home / "moto.log")
    seconds: dict[str, list] = {}
    try:
        for number, executor in enumerate((WARM_UP, *ORDER)):
            airflow = MakeAirflow(home / f"{number}-{executor}", executor, s3 if executor == "celery" else None,
                                  prefix=f"bench-{number}")
            try:
                airflow.start()
                started = time.perf_counter()
                run, tasks = airflow.run_to_the_end("relay_digits", conf)
                elapsed = time.perf_counter() - started
                if run["state"] != "success":
                    states = {t["task_id"]: t["state"] for t in tasks}
                    raise RuntimeError(f"relay_digits on the {executor} executor ended {run['state']}: {states}")
                if number == 0:
                    seconds["warm_up"] = [elapsed]
                    continue
                seconds.setdefault(executor, []).append(elapsed)
                seconds.setdefault(f"{executor}_tasks", []).append(_task_seconds(tasks))
                seconds.setdefault(f"{executor}_hosts", []).append(_task_hosts(tasks))
            finally:
                airflow.stop()
    finally:
        stop_local_s3(process)
    return seconds


if __name__ == "__main__":
    home, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(dag_seconds(home, json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})))
