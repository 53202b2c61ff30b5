"""The digits DAG on workers that share no disk: `make airflow EXECUTOR=celery` starts Airflow with Debian's
redis-server (127.0.0.1, a password) and two Celery workers as real processes. Each worker has its own HOME,
RELAY_HOME, TMPDIR, AIRFLOW_HOME and copy of the project in its own temporary directory; runs move through a
real S3 server (moto, IAM auth on), data through the S3 DVC remote, models through a git remote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.airflow_api import AirflowClient, generated_password
from tests.e2e.make_airflow import stop_make_airflow
from tests.conftest import PROJECT, free_ports, make_settings, settings_env

pytestmark = pytest.mark.e2e
WORKERS = ("worker-1", "worker-2")


class CeleryAirflow:
    def __init__(self, root: Path, local_s3):
        self.root = root
        self.registry_remote = root / "registry.git"
        subprocess.run(["git", "init", "-q", "--bare", str(self.registry_remote)], check=True)
        self.prefix = "celery-e2e"
        self.runs_uri = f"s3://{local_s3.bucket}/{self.prefix}/runs"
        settings = make_settings(root / "scheduler" / "relay-home", registry_remote=str(self.registry_remote),
                                 dvc_remote=f"s3://{local_s3.bucket}/{self.prefix}/dvc")
        self.port = free_ports(1)[0]
        self.airflow_home = root / "scheduler" / "airflow"
        self.workers_dir = root / "workers"
        self.env = {**os.environ, **settings_env(settings), **local_s3.env(), "PYTHONPATH": str(PROJECT),
                    "AIRFLOW_HOME": str(self.airflow_home), "RELAY_AIRFLOW_PORT": str(self.port),
                    "RELAY_RUNS_URI": self.runs_uri, "RELAY_WORKERS_DIR": str(self.workers_dir)}
        self.env.pop("RELAY_PROJECT_DIR", None)  # the project is Relay's checkout: the shipped digits spec
        self.output = root / "make-airflow.log"
        self.process: subprocess.Popen | None = None
        self.client: AirflowClient | None = None

    def start(self) -> None:
        with self.output.open("w") as log:
            self.process = subprocess.Popen(["make", "-s", "airflow", "EXECUTOR=celery"], cwd=PROJECT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while "Airflow UI:" not in self.output.read_text():
            assert self.process.poll() is None, f"make airflow exited: {self.output.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"Airflow did not start: {self.output.read_text()[-3000:]}"
            time.sleep(1)
        self.client = AirflowClient(f"http://127.0.0.1:{self.port}", "admin",
                                    generated_password("admin", self.airflow_home))
        while "relay_digits" not in {d["dag_id"] for d in self.client.request("GET", "/dags")["dags"]}:
            assert time.monotonic() < deadline, "the dag-processor did not load relay_digits"
            time.sleep(2)

    def worker_env(self, worker: str) -> dict:
        """What a shell on that worker's machine has (the script writes it to the worker's relay.env)."""
        env = {**self.env, **dict(line.split("=", 1) for line in
                                  (self.workers_dir / worker / "relay.env").read_text().splitlines())}
        env.pop("RELAY_REGISTRY", None)
        return env

    def stop(self) -> None:
        for worker in WORKERS:  # the deploy step started TorchServe on whichever worker ran it; first, while its
            # TMPDIR (which holds TorchServe's pid file) still exists
            if not (self.workers_dir / worker / "relay.env").is_file():
                continue
            subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "stop"], cwd=PROJECT,
                           env=self.worker_env(worker), capture_output=True, timeout=120)
        stop_make_airflow(self.process, self.airflow_home)


@pytest.fixture
def celery_airflow(tmp_path, local_s3):
    airflow = CeleryAirflow(tmp_path, local_s3)
    try:
        airflow.start()
        yield airflow
    finally:
        airflow.stop()


def _s3_run_files(local_s3, prefix: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=local_s3.endpoint_url, aws_access_key_id=local_s3.access_key_id,
                      aws_secret_access_key=local_s3.secret_access_key, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local_s3.bucket, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key[len(prefix):]: s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() for key in keys}


def test_the_digits_dag_runs_on_two_celery_workers_that_share_no_disk(celery_airflow, local_s3, tmp_path):
    client = celery_airflow.client
    client.set_paused("relay_digits", False)
    # Few epochs, and no floor: what this checks is where the steps ran and what they handed over.
    run = client.trigger("relay_digits", {"epochs": 2, "min_accuracy": 0.0})
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 900
    while (state := client.request("GET", f"/dags/relay_digits/dagRuns/{run_id}")["state"]) not in ("success",
                                                                                                    "failed"):
        assert time.monotonic() < deadline, f"relay_digits {run_id} still {state}"
        time.sleep(3)
    tasks = client.request("GET", f"/dags/relay_digits/dagRuns/{run_id}/taskInstances")["task_instances"]
    states = {t["task_id"]: t["state"] for t in tasks}
    logs = celery_airflow.root / "scheduler" / "airflow" / "logs"
    assert state == "success", f"{states}; worker logs in {logs} and {celery_airflow.workers_dir}"

    steps = ("data", "validate", "train", "optimize", "gate", "register", "deploy")
    ran_on = {t["task_id"]: t["hostname"] for t in tasks if t["task_id"] in steps}
    assert set(ran_on.values()) == set(WORKERS), ran_on  # both workers ran steps, and nothing else did

    # The run lives in S3, complete; no worker kept a local copy, and no file of it names a worker's disk.
    prefix = f"{celery_airflow.prefix}/runs/digits/"
    files = _s3_run_files(local_s3, prefix)
    run_folder = next(iter(files)).split("/", 1)[0]
    for marker in ("data/data.json", "validate/validation.json", "train/metrics.json", "optimize/optimize.json",
                   "gate/gate.json", "register/registration.json", "deploy/deployment.json"):
        assert f"{run_folder}/{marker}" in files, marker
    for worker in WORKERS:
        assert not any((celery_airflow.workers_dir / worker / "relay-home" / "run-cache").iterdir())
    # What the steps hand over names no worker's own path. tfx/ is provenance only, read by no later step: TFX's
    # metadata and report record where the validate step's worker wrote and which schema it read.
    worker_paths = [str(celery_airflow.workers_dir / worker).encode() for worker in WORKERS]
    handed_over = {name: body for name, body in files.items() if name.split("/")[1] != "tfx"}
    assert len(handed_over) > 20
    naming_a_worker = [name for name, body in handed_over.items() if any(path in body for path in worker_paths)]
    assert not naming_a_worker, f"these run files name a worker's own paths: {naming_a_worker}"

    # The model is registered in the git remote, and a fresh machine fetches it through DVC from S3.
    tags = subprocess.run(["git", "ls-remote", "--tags", str(celery_airflow.registry_remote)], capture_output=True,
                          text=True, check=True).stdout
    assert "refs/tags/digits@v0.1.0" in tags
    pod = {key: value for key, value in os.environ.items() if not key.startswith(("RELAY_", "AWS_"))}
    fetched = subprocess.run([sys.executable, "-m", "pipelines.cli", "fetch-model", "digits", "--version", "v0.1.0",
                              "--registry", str(celery_airflow.registry_remote), "--to", str(tmp_path / "pod")],
                             cwd=tmp_path, env={**pod, **local_s3.env(), "PYTHONPATH": str(PROJECT),
                                                "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=300)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert (tmp_path / "pod" / "digits.mar").read_bytes()[:2] == b"PK"
