"""Steps in separate processes with separate homes hand the run over by URI, not by a shared path."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT, free_ports, make_settings, settings_env

pytestmark = pytest.mark.slow  # runs steps in separate pods' homes, TFX included


def relay(args, settings):
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_data_and_validate_pods_share_a_run_only_through_its_uri(tmp_path):
    uri = f"file://{tmp_path / 'bucket' / 'runs' / 'digits' / 'r1'}"
    first, second = make_settings(tmp_path / "pod-a"), make_settings(tmp_path / "pod-b")
    data = relay(["step", "data", "--task", "digits", "--run-uri", uri], first)
    assert data.returncode == 0, data.stderr[-2000:]
    stored = tmp_path / "bucket" / "runs" / "digits" / "r1"
    assert (stored / "spec.json").is_file() and (stored / "data" / "manifest.csv").is_file()
    assert not list((tmp_path / "pod-a" / "run-cache").iterdir())  # the local copy is gone after upload

    validate = relay(["step", "validate", "--run-uri", uri], second)
    assert validate.returncode == 0, validate.stderr[-2000:]
    assert json.loads((stored / "validate" / "validation.json").read_text())["success"] is True
    assert (stored / "tfx" / "tfx_report.json").is_file() and (stored / "data" / "manifest.csv").is_file()


def test_a_fresh_pod_validates_a_run_without_fetching_its_images(tmp_path):
    """validate reads the data step's manifest: a checkout without the images (a new pod) validates the run
    without downloading any (steps that open images fetch their splits: tests/components/data/test_dataset.py)."""
    import shutil

    from pipelines.run_store import local_run
    from pipelines.steps import run_step, start_run

    project = tmp_path / "checkout"
    (project / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    shutil.copy(PROJECT / "data" / "digits.dvc", project / "data" / "digits.dvc")
    remote = tmp_path / "dvc-remote"
    remote.mkdir()
    uri = f"file://{tmp_path / 'bucket' / 'r1'}"

    pod_a = make_settings(tmp_path / "pod-a", project_dir=project, dvc_remote=str(remote))
    with local_run(uri, pod_a) as run:
        start_run("digits", run_dir=run, settings=pod_a)
        run_step("data", run, pod_a)  # empty remote: regenerated, hash-checked, pushed
    shutil.rmtree(project / "data" / "digits")

    pod_b = make_settings(tmp_path / "pod-b", project_dir=project, dvc_remote=str(remote))
    with local_run(uri, pod_b) as run:
        summary = run_step("validate", run, pod_b)
    assert summary["success"] and not (project / "data" / "digits").exists()


# --- The same over a real S3 server (moto's, with IAM auth), as steps on machines that share no disk run it ---

def _checkout(path):
    """A project checkout with the digits spec and pointer and no images: a fresh machine's clone."""
    import shutil

    (path / "data").mkdir(parents=True)
    (path / "pipelines" / "specs").mkdir(parents=True)
    shutil.copy(PROJECT / "pipelines" / "specs" / "digits.yaml", path / "pipelines" / "specs" / "digits.yaml")
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    shutil.copy(PROJECT / "data" / "digits.dvc", path / "data" / "digits.dvc")
    return path


def _s3_objects(local_s3, prefix):
    import boto3

    s3 = boto3.client("s3", endpoint_url=local_s3.endpoint_url, aws_access_key_id=local_s3.access_key_id,
                      aws_secret_access_key=local_s3.secret_access_key, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=local_s3.bucket, Prefix=prefix)
    return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}


def test_two_homes_with_their_own_checkouts_hand_a_run_over_through_s3(tmp_path, local_s3, s3_env):
    """data on one machine, train on another: the run goes through the S3 run store, the images through the
    S3 DVC remote, and nothing is left in either machine's run cache."""
    uri = f"s3://{local_s3.bucket}/handover/runs/digits/r1"
    dvc_remote = f"s3://{local_s3.bucket}/handover/dvc"
    first = make_settings(tmp_path / "a" / "home", project_dir=_checkout(tmp_path / "a" / "checkout"),
                          dvc_remote=dvc_remote)
    second = make_settings(tmp_path / "b" / "home", project_dir=_checkout(tmp_path / "b" / "checkout"),
                           dvc_remote=dvc_remote)
    data = relay(["step", "data", "--task", "digits", "--run-uri", uri, "--params", '{"epochs": 1}'], first)
    assert data.returncode == 0, data.stderr[-2000:]
    assert {"spec.json", "data/manifest.csv", "data/data.json"} <= _s3_objects(local_s3, "handover/runs/digits/r1/")
    assert _s3_objects(local_s3, "handover/dvc/")  # the images, pushed by DVC

    train = relay(["step", "train", "--run-uri", uri], second)
    assert train.returncode == 0, train.stderr[-2000:]
    stored = _s3_objects(local_s3, "handover/runs/digits/r1/")
    assert {"train/metrics.json", "train/model.pt"} <= stored
    assert len(list((tmp_path / "b" / "checkout" / "data" / "digits").rglob("*.png"))) == 1797  # from S3
    for home in (first.home, second.home):
        assert not any((home / "run-cache").iterdir())


def test_steps_run_by_hand_through_s3_hand_the_images_over_in_packs_as_under_airflow(tmp_path, local_s3, s3_env):
    """`relay step --run-uri s3://…` by hand, RELAY_RUNS_URI unset: the data step packs the files into the shard store
    as it does under Airflow, so the machine that trains takes its splits from the packs. Its DVC remote is empty
    and stays so: it neither pulled from it nor regenerated the built-in dataset and pushed it there."""
    uri = f"s3://{local_s3.bucket}/by-hand/runs/digits/r1"
    shards = f"s3://{local_s3.bucket}/by-hand/shards"
    first = make_settings(tmp_path / "a" / "home", project_dir=_checkout(tmp_path / "a" / "checkout"),
                          dvc_remote=f"s3://{local_s3.bucket}/by-hand/dvc", shards_uri=shards)
    second = make_settings(tmp_path / "b" / "home", project_dir=_checkout(tmp_path / "b" / "checkout"),
                           dvc_remote=f"s3://{local_s3.bucket}/by-hand/empty-dvc", shards_uri=shards)
    data = relay(["step", "data", "--task", "digits", "--run-uri", uri, "--params", '{"epochs": 1}'], first)
    assert data.returncode == 0, data.stderr[-2000:]
    assert "data/file_packs.json" in _s3_objects(local_s3, "by-hand/runs/digits/r1/")

    train = relay(["step", "train", "--run-uri", uri], second)
    assert train.returncode == 0, train.stderr[-2000:]
    assert len(list((tmp_path / "b" / "checkout" / "data" / "digits").rglob("*.png"))) == 1797  # every split
    assert not _s3_objects(local_s3, "by-hand/empty-dvc/")


def test_a_step_whose_upload_breaks_half_way_is_not_completed_and_its_rerun_publishes_it(tmp_path, local_s3, s3_env,
                                                                                         monkeypatch):
    import s3fs

    from pipelines.run_store import RunStoreError, local_run

    settings = make_settings(tmp_path / "home")
    uri = f"s3://{local_s3.bucket}/half/r1"

    def write_step(run):
        (run / "data").mkdir(exist_ok=True)
        for name in ("manifest.csv", "stats.json", "data.json"):  # data.json: the step's completion marker
            (run / "data" / name).write_text(name)

    real_put, calls = s3fs.S3FileSystem._put_file, []

    async def put_then_break(self, *args, **kwargs):  # each file's upload (a step's outputs go up concurrently)
        calls.append(args)
        if len(calls) == 2:
            raise ConnectionResetError("connection reset by peer")
        return await real_put(self, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put_then_break)
    with pytest.raises(RunStoreError, match=r"run store s3://relay/half/r1 \(endpoint http://127\.0\.0\.1:\d+\): "
                                            r"upload failed: ConnectionResetError"):
        with local_run(uri, settings) as run:
            write_step(run)
    assert len(calls) == 2 and _s3_objects(local_s3, "half/r1/") <= {"data/manifest.csv"}  # no marker: not completed
    assert not any((settings.home / "run-cache").iterdir())

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", real_put)
    with local_run(uri, settings) as run:
        write_step(run)
    assert _s3_objects(local_s3, "half/r1/") == {"data/manifest.csv", "data/stats.json", "data/data.json"}

    with local_run(uri, settings) as run:  # a rerun that writes nothing new uploads nothing
        assert (run / "data" / "data.json").read_text() == "data.json"
        (run / "data" / "stats.json").unlink()  # a step's output it no longer writes is removed from the store
    assert _s3_objects(local_s3, "half/r1/") == {"data/manifest.csv", "data/data.json"}


def test_credentials_renewed_in_the_environment_are_the_ones_the_next_step_uses(tmp_path, local_s3, s3_env,
                                                                                   monkeypatch):
    """A long-lived worker outlives its credentials: each step reads the environment as it is now (s3fs would
    otherwise reuse the client it made with the first step's credentials)."""
    from pipelines.run_store import RunStoreError, local_run

    settings = make_settings(tmp_path / "home")
    uri = f"s3://{local_s3.bucket}/renewed/r1"

    def write_step(run):
        (run / "data").mkdir(exist_ok=True)
        (run / "data" / "data.json").write_text("{}")

    with local_run(uri, settings) as run:
        write_step(run)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "an-expired-secret")
    with pytest.raises(RunStoreError, match="the secret key was refused"):
        with local_run(uri, settings) as run:
            write_step(run)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env["AWS_SECRET_ACCESS_KEY"])
    with local_run(uri, settings) as run:
        assert (run / "data" / "data.json").read_text() == "{}"


@pytest.mark.parametrize("problem", ["wrong secret", "missing bucket", "unreachable endpoint"])
def test_each_s3_problem_is_one_line_naming_the_run_store(tmp_path, local_s3, problem):
    settings = make_settings(tmp_path / "home")
    env = {**local_s3.env(), "RELAY_RUNS_URI": ""}
    bucket = local_s3.bucket
    if problem == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif problem == "missing bucket":
        bucket = "no-such-bucket"
    else:
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{free_ports(1)[0]}"
    uri = f"s3://{bucket}/problems/r1"
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "step", "validate", "--run-uri", uri], cwd=PROJECT,
                          env={**os.environ, **settings_env(settings), **env, "PYTHONPATH": str(PROJECT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"run store {uri} (endpoint {env['AWS_ENDPOINT_URL_S3']})" in message
    assert {"wrong secret": "the secret key was refused", "missing bucket": "the bucket does not exist",
            "unreachable endpoint": "the endpoint is unreachable"}[problem] in message
