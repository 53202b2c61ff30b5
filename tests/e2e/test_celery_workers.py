"""The digits DAG on workers that share no disk: `make airflow EXECUTOR=celery` starts Airflow with Debian's
redis-server (127.0.0.1, a password) and two Celery workers as real processes. Each worker has its own HOME,
RELAY_HOME, TMPDIR, AIRFLOW_HOME and copy of the project in its own temporary directory; runs move through a
real S3 server (moto, IAM auth on), data through the S3 DVC remote, models through a git remote. worker-2 alone
consumes the training queue, worker-1 the default one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT
from tests.e2e.make_airflow import WORKERS, MakeAirflow

pytestmark = pytest.mark.e2e


@pytest.fixture
def celery_airflow(tmp_path, local_s3):
    airflow = MakeAirflow(tmp_path, "celery", local_s3, prefix="celery-e2e")
    try:
        airflow.start()
        yield airflow
    finally:
        airflow.stop()


def _s3_keys(local_s3, prefix: str):
    """The keys under ``prefix`` in the server's bucket, and a client to read them."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=local_s3.endpoint_url, aws_access_key_id=local_s3.access_key_id,
                      aws_secret_access_key=local_s3.secret_access_key, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local_s3.bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])], s3


def _s3_run_files(local_s3, prefix: str) -> dict[str, bytes]:
    keys, s3 = _s3_keys(local_s3, prefix)
    return {key[len(prefix):]: s3.get_object(Bucket=local_s3.bucket, Key=key)["Body"].read() for key in keys}


def test_the_digits_dag_runs_on_two_celery_workers_that_share_no_disk(celery_airflow, local_s3, tmp_path):
    # Few epochs, and no floor: what this checks is where the steps ran and what they handed over. Training streams
    # the data step's shards from S3.
    run, tasks = celery_airflow.run_to_the_end("relay_digits", {"epochs": 2, "min_accuracy": 0.0, "cache": "shards"})
    states = {t["task_id"]: t["state"] for t in tasks}
    logs = celery_airflow.root / "scheduler" / "airflow" / "logs"
    assert run["state"] == "success", f"{states}; worker logs in {logs} and {celery_airflow.workers_dir}"

    steps = ("data", "validate", "train", "optimize", "gate", "register", "deploy")
    ran_on = {t["task_id"]: t["hostname"] for t in tasks if t["task_id"] in steps}
    # Both workers ran steps, and nothing else did: the last worker alone consumes the training queue, the other
    # Airflow's default queue.
    trainer = WORKERS[-1]
    assert ran_on == {step: trainer if step == "train" else WORKERS[0] for step in steps}, ran_on

    # The run lives in S3, complete; no worker kept a local copy, and no file of it names a worker's disk.
    prefix = f"{celery_airflow.prefix}/runs/digits/"
    files = _s3_run_files(local_s3, prefix)
    run_folder = next(iter(files)).split("/", 1)[0]
    for marker in ("data/data.json", "validate/validation.json", "train/metrics.json", "optimize/optimize.json",
                   "gate/gate.json", "register/registration.json", "deploy/deployment.json"):
        assert f"{run_folder}/{marker}" in files, marker
    for worker in WORKERS:
        assert not any((celery_airflow.workers_dir / worker / "relay-home" / "run-cache").iterdir())
    # The data step packed the shards into S3; the train step's worker streamed them (no worker decoded the dataset
    # into a cache of its own).
    shards = json.loads(files[f"{run_folder}/data/shards.json"])
    assert shards["url"].startswith(f"{celery_airflow.shards_uri}/") and shards["splits"]["train"]
    packed = shards["url"][len(f"s3://{local_s3.bucket}/"):]
    assert f"{packed}/index.json" in _s3_keys(local_s3, packed)[0]
    assert any((celery_airflow.workers_dir / trainer / "relay-home" / "cache" / "shards").iterdir())
    assert not any((celery_airflow.workers_dir / worker / "relay-home" / "cache" / "decoded").exists()
                   for worker in WORKERS)
    # It packed each split's original files there too, for the steps that open them on the other worker.
    packs = json.loads(files[f"{run_folder}/data/file_packs.json"])
    assert packs["url"].startswith(f"{celery_airflow.shards_uri}/files/") and packs["splits"]["test"]
    packed = packs["url"][len(f"s3://{local_s3.bucket}/"):]
    assert f"{packed}/index.json" in _s3_keys(local_s3, packed)[0]
    # The trainer holds none of the dataset's images: training streamed the shards, and no step fetches a split it
    # does not open (tests/components/data/test_split_files.py has the steps that fetch the test split).
    manifest = list(csv.DictReader(io.StringIO(files[f"{run_folder}/data/manifest.csv"].decode())))
    dataset = celery_airflow.workers_dir / trainer / "project" / "data" / "digits"
    held = [p for p in dataset.rglob("*") if p.is_file()]
    assert manifest and not held, f"the trainer holds {len(held)} of the dataset's {len(manifest)} images"
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
