"""`make airflow` as the live end-to-end tests run and stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.airflow_api import AirflowClient, generated_password
from tests.conftest import PROJECT, free_ports, make_settings, settings_env

WORKERS = ("worker-1", "worker-2")  # the Celery workers `make airflow EXECUTOR=celery` starts


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


def start_make_airflow(executor: str, env: dict, output: Path, dags: set[str],
                       timeout: float = 240) -> tuple[subprocess.Popen, AirflowClient]:
    """`make airflow EXECUTOR=executor` with ``env`` (its AIRFLOW_HOME and RELAY_AIRFLOW_PORT), its output in
    ``output``; waits until the API answers and the dag-processor has loaded ``dags``. The process and a client."""
    with output.open("w") as log:
        # Its own session: Ctrl-C at the end goes to make and the script, as a terminal would send it. SIGINT as a
        # terminal leaves it: a test run started in the background inherits it ignored, and a shell cannot trap a
        # signal ignored at its start.
        process = subprocess.Popen(["make", "-s", "airflow", f"EXECUTOR={executor}"], cwd=PROJECT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while "Airflow UI:" not in output.read_text():
        assert process.poll() is None, f"make airflow exited: {output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"Airflow did not start: {output.read_text()[-3000:]}"
        time.sleep(1)
    client = AirflowClient(f"http://127.0.0.1:{env['RELAY_AIRFLOW_PORT']}", "admin",
                           generated_password("admin", Path(env["AIRFLOW_HOME"])))
    while dags - {d["dag_id"] for d in client.request("GET", "/dags")["dags"]}:
        assert time.monotonic() < deadline, f"the dag-processor did not load {sorted(dags)}"
        time.sleep(2)
    return process, client


class MakeAirflow:
    """`make airflow EXECUTOR=…` in ``root``: the scheduler's Relay home and Airflow home, a bare git remote for
    the registry, and with ``local_s3`` (moto) the runs, the shards and the DVC remote on S3 under ``prefix``. With the
    celery executor every worker has its own home under ``root/workers`` (the script writes its relay.env)."""

    def __init__(self, root: Path, executor: str = "local", local_s3=None, prefix: str = "airflow"):
        self.root, self.executor, self.prefix = root, executor, prefix
        self.registry_remote = root / "registry.git"
        subprocess.run(["git", "init", "-q", "--bare", str(self.registry_remote)], check=True)
        s3 = {} if local_s3 is None else {"dvc_remote": f"s3://{local_s3.bucket}/{prefix}/dvc"}
        self.settings = make_settings(root / "scheduler" / "relay-home", registry_remote=str(self.registry_remote),
                                      **s3)
        self.port = free_ports(1)[0]
        self.airflow_home = root / "scheduler" / "airflow"
        self.workers_dir = root / "workers"
        self.env = {**os.environ, **settings_env(self.settings), "PYTHONPATH": str(PROJECT),
                    "AIRFLOW_HOME": str(self.airflow_home), "RELAY_AIRFLOW_PORT": str(self.port),
                    "RELAY_WORKERS_DIR": str(self.workers_dir)}
        if local_s3 is not None:
            self.runs_uri = f"s3://{local_s3.bucket}/{prefix}/runs"
            self.shards_uri = f"s3://{local_s3.bucket}/{prefix}/shards"
            self.env.update({**local_s3.env(), "RELAY_RUNS_URI": self.runs_uri, "RELAY_SHARDS_URI": self.shards_uri})
        self.env.pop("RELAY_PROJECT_DIR", None)  # the project is Relay's checkout: the shipped specs
        self.output = root / "make-airflow.log"
        self.process: subprocess.Popen | None = None
        self.client: AirflowClient | None = None

    def start(self, dag_id: str = "relay_digits") -> None:
        """Start the servers and wait until the API answers and ``dag_id`` is loaded."""
        self.process, self.client = start_make_airflow(self.executor, self.env, self.output, {dag_id})

    def run_to_the_end(self, dag_id: str, conf: dict, timeout: float = 900) -> tuple[dict, list[dict]]:
        """Unpause ``dag_id``, trigger it with ``conf`` through the REST API and wait until it ends; the run and
        its task instances."""
        self.client.set_paused(dag_id, False)
        run_id = self.client.trigger(dag_id, conf)["dag_run_id"]
        deadline = time.monotonic() + timeout
        while (run := self.client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))["state"] not in ("success",
                                                                                                      "failed"):
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']}"
            time.sleep(3)
        return run, self.client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def worker_env(self, worker: str) -> dict:
        """What a shell on that Celery worker's machine has (the script writes it to the worker's relay.env)."""
        env = {**self.env, **dict(line.split("=", 1) for line in
                                  (self.workers_dir / worker / "relay.env").read_text().splitlines())}
        env.pop("RELAY_REGISTRY", None)
        return env

    def stop(self) -> None:
        """Stop the model servers a deploy step started (on the scheduler's machine, or on a Celery worker's, while
        its TMPDIR, which holds TorchServe's pid file, still exists), then the servers."""
        homes = [self.worker_env(worker) for worker in WORKERS if (self.workers_dir / worker / "relay.env").is_file()]
        for env in [*homes, self.env]:
            subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "stop"], cwd=PROJECT, env=env,
                           capture_output=True, timeout=120)
        stop_make_airflow(self.process, self.airflow_home)
