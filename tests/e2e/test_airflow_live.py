"""Relay under a real Airflow: `make airflow` (api-server, scheduler, dag-processor, triggerer; LocalExecutor,
SQLite) on 127.0.0.1 and free ports, driven the way a user drives it: REST calls with a JWT, the UI in
headless Chromium, `relay data add`, the scheduler's own clock, and Ctrl-C at the end. Tasks outlive their
execution-API token, and the metadata database's lock is held for 40 s.

The project is a temporary one with three tasks made by `relay task new` from scikit-learn's digits:
``tiny`` (no cron: it runs when triggered or when its dataset Asset gets an event), ``ticker`` (cron
every minute) and ``fresh`` (other images, trained with TensorFlow from the form), plus the shipped ``digits`` spec, whose form the browser reads. The tests run in file order and share the servers; each says what it needs from the ones
before it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import yaml

from components.data.builtin import write_sklearn_digits
from components.deploy.local import served_by, served_default
from components.deploy.servers import stop_servers
from components.run_files import RunDir
from pipelines.airflow_api import AirflowApiError, AirflowClient, generated_password
from tests.e2e.make_airflow import start_make_airflow, stop_make_airflow
from tests.conftest import PROJECT, free_ports, make_settings, settings_env

pytestmark = pytest.mark.e2e
RUN_TIMEOUT = 600


def _digits_folder(full: Path, dest: Path, first: int, count: int) -> Path:
    for label_dir in sorted(full.iterdir()):
        (dest / label_dir.name).mkdir(parents=True)
        for image in sorted(label_dir.iterdir())[first:first + count]:
            shutil.copy(image, dest / label_dir.name / image.name)
    return dest


def relay(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _edit_spec(project: Path, task: str, **changes) -> None:
    path = project / "pipelines" / "specs" / f"{task}.yaml"
    spec = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


class Live:
    """The running Airflow and what the tests share."""

    def __init__(self, root: Path):
        self.root = root
        self.project = root / "project"
        self.settings = make_settings(root / "relay-home")
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.airflow_home = root / "airflow"
        self.env = {**os.environ, **settings_env(self.settings), "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1",
                    "AIRFLOW_HOME": str(self.airflow_home), "RELAY_PROJECT_DIR": str(self.project),
                    "RELAY_AIRFLOW_PORT": str(self.port), "RELAY_AIRFLOW_URL": self.url,
                    # A task's token for Airflow's execution API expires after 600 s by default, and training runs
                    # for hours: here it expires after 15 s, so validate and train outlive theirs, and a run
                    # succeeds only while Airflow reissues it (its JWTReissueMiddleware, on the task's heartbeats).
                    "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": "15"}
        self.process: subprocess.Popen | None = None
        self.output = root / "make-airflow.log"
        self.client: AirflowClient | None = None
        self.served_after_trigger: str | None = None

    def start(self) -> None:
        self.process, self.client = start_make_airflow(
            "local", self.env, self.output, {"relay_tiny", "relay_ticker", "relay_fresh", "relay_digits"}, timeout=180)
        self.env["RELAY_AIRFLOW_PASSWORD"] = generated_password("admin", self.airflow_home)

    def stop(self) -> None:
        stop_make_airflow(self.process, self.airflow_home)

    def wait_for_run(self, dag_id: str, run_id: str) -> dict:
        """Wait for the run to finish; fail unless it succeeded."""
        run = _finished(self, dag_id, run_id)
        states = _task_states(self, dag_id, run_id)
        assert run["state"] == "success", f"{dag_id} {run_id}: {states}; logs in {self.airflow_home / 'logs'}"
        return run

    def wait_for_new_run(self, dag_id: str, known: set[str], timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while not (new := [r for r in self.client.runs(dag_id) if r["dag_run_id"] not in known]):
            assert time.monotonic() < deadline, f"no new run of {dag_id} within {timeout} s"
            time.sleep(1)
        return new[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live-airflow")
    live = Live(root)
    project = live.project
    (project / "pipelines" / "specs").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    full = root / "digits-full"
    write_sklearn_digits(full)
    _digits_folder(full, root / "photos", 0, 30)
    _digits_folder(full, root / "new-photos", 30, 10)
    _digits_folder(full, root / "fresh-photos", 40, 30)  # images no other task has: a data version never decoded
    for task, photos in (("tiny", "photos"), ("ticker", "photos"), ("fresh", "fresh-photos")):
        made = relay(["task", "new", task, "--from", str(root / photos)], live.env)
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    # Small data and one or two epochs: the floor and the champion tolerance are not what these tests check.
    _edit_spec(project, "tiny", **{"training.epochs": 2, "gate.min_accuracy": 0.0,
                                   "gate.champion_tolerance_pp": 100.0})
    _edit_spec(project, "ticker", **{"training.epochs": 1, "gate.min_accuracy": 0.0, "schedule": "* * * * *"})
    _edit_spec(project, "fresh", **{"training.epochs": 1, "gate.min_accuracy": 0.0})
    # The shipped digits spec too, for the browser test's form (it is never run here: its DAG stays paused).
    shutil.copy(PROJECT / "pipelines" / "specs" / "digits.yaml", project / "pipelines" / "specs" / "digits.yaml")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tasks"], cwd=project,
                   check=True)
    try:
        live.start()
        yield live
    finally:
        live.stop()
        stop_servers(live.settings)


def test_a_bad_param_gets_http_400_and_starts_nothing(live):
    client = live.client
    client.set_paused("relay_tiny", False)  # scheduled on its Asset only: unpausing starts nothing
    for conf, field in (({"framework": "jax"}, "framework"), ({"epochs": 0}, "epochs"),
                        ({"min_agreement": 2}, "min_agreement")):
        with pytest.raises(AirflowApiError) as refused:
            client.trigger("relay_tiny", conf)
        assert refused.value.status == 400 and field in str(refused.value)
    time.sleep(3)
    assert client.runs("relay_tiny") == []


def _task_states(live, dag_id: str, run_id: str) -> dict[str, str]:
    tasks = live.client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {t["task_id"]: t["state"] for t in tasks}


def _finished(live, dag_id: str, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT
    while (run := live.client.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{dag_id} {run_id} still {run['state']}"
        time.sleep(2)
    return run


def test_unpausing_trains_nothing_until_the_cron_fires_then_the_scheduled_run_succeeds(live):
    """ticker's cron fires every minute. Airflow creates the run for the fire time that passed while the DAG
    was paused as soon as it is unpaused; that catch-up must train nothing. The next on-time run trains."""
    client = live.client
    while not 15 <= datetime.now(timezone.utc).second <= 40:
        time.sleep(1)  # well clear of a fire time, so the catch-up is unmistakably late
    unpaused_at = datetime.now(timezone.utc)
    client.set_paused("relay_ticker", False)
    known: set[str] = set()
    trained = None
    while trained is None:
        live.wait_for_new_run("relay_ticker", known, timeout=90)
        run = min((r for r in client.runs("relay_ticker") if r["dag_run_id"] not in known),
                  key=lambda r: r["logical_date"])  # the oldest first: the catch-up, if any
        known.add(run["dag_run_id"])
        assert run["run_type"] == "scheduled", run
        fire_time = datetime.fromisoformat(run["logical_date"])
        # A paused DAG's runs stop where they are: the DAG stays unpaused until the on-time run is done.
        finished = _finished(live, "relay_ticker", run["dag_run_id"])
        states = _task_states(live, "relay_ticker", run["dag_run_id"])
        assert finished["state"] == "success" and states["on_time"] == "success", states
        if states["data"] == "skipped":  # the catch-up for a fire time that passed while paused
            assert fire_time < unpaused_at and {states[s] for s in ("train", "deploy")} == {"skipped"}, states
        else:
            client.set_paused("relay_ticker", True)  # one scheduled training is the test, not one a minute
            assert fire_time >= unpaused_at - timedelta(seconds=1), (run, states)
            assert states["deploy"] == "success", states
            trained = run
    assert served_default(live.settings, "ticker") == "v0.1.0"
    assert len(list((live.settings.runs_dir / "ticker").glob("airflow-scheduled*"))) == 1  # catch-ups made none


def test_a_run_triggered_through_the_api_with_conf_serves_a_new_version(live):
    client = live.client
    before = served_default(live.settings, "tiny")
    run = client.trigger("relay_tiny", {"epochs": 1, "precision": "fp32"})
    assert run["conf"] == {"epochs": 1, "precision": "fp32"}
    live.wait_for_run("relay_tiny", run["dag_run_id"])
    after = served_default(live.settings, "tiny")
    assert after is not None and after != before
    spec = json.loads(next((live.settings.runs_dir / "tiny").glob("airflow-manual*/spec.json")).read_text())
    assert spec["training"]["epochs"] == 1 and spec["training"]["precision"] == "fp32"
    image = next((live.root / "photos" / "3").iterdir())
    assert served_by(live.settings, "tiny").predict("tiny", image.read_bytes())["class"] in [str(i) for i in range(10)]
    live.served_after_trigger = after


def test_a_tensorflow_run_from_the_form_trains_on_a_data_version_never_decoded(live):
    """framework=tensorflow, as a user picks it in the form, on data that no run has decoded yet: the train task
    decodes it into the cache in a process pool, under the `airflow` task command. Its workers once re-ran that
    command and the task died with BrokenProcessPool; runs after a PyTorch run never saw it."""
    client = live.client
    decoded = live.settings.home / "cache" / "decoded"
    before = set(decoded.glob("*.npy")) if decoded.is_dir() else set()
    client.set_paused("relay_fresh", False)
    run = client.trigger("relay_fresh", {"framework": "tensorflow", "epochs": 1})
    live.wait_for_run("relay_fresh", run["dag_run_id"])
    run_dir = RunDir(next((live.settings.runs_dir / "fresh").glob("airflow-manual*")))
    metrics = json.loads(run_dir.metrics.read_text())
    assert metrics["framework"] == "tensorflow" and metrics["train_loop_images_per_second"] > 0
    assert len(set(decoded.glob("*.npy")) - before) == 1  # this run built the cache for the new data version
    assert served_default(live.settings, "fresh") == "v0.1.0"


def test_relay_data_add_commits_pushes_and_its_asset_event_retrains(live):
    """Needs the previous test's served version, to see the retrained one replace it."""
    known = {r["dag_run_id"] for r in live.client.runs("relay_tiny")}
    added = relay(["data", "add", "tiny", str(live.root / "new-photos")], live.env)
    assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
    out = " ".join(added.stdout.split())
    assert "100 image(s) added" in out and "asset event for relay://datasets/tiny" in out
    log = subprocess.run(["git", "log", "-1", "--format=%s", "--", "data/tiny.dvc"], cwd=live.project,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert log == "data: add 100 image(s) to tiny"
    assert len(list((live.project / "data" / "tiny" / "3").iterdir())) == 40
    run = live.wait_for_new_run("relay_tiny", known)
    assert run["run_type"] == "asset_triggered"
    live.wait_for_run("relay_tiny", run["dag_run_id"])
    data = json.loads(next((live.settings.runs_dir / "tiny").glob("airflow-asset_triggered*/data/data.json"))
                      .read_text())
    assert sum(data["split_counts"][split] for split in ("train", "val", "test")) == 400
    assert served_default(live.settings, "tiny") not in (None, live.served_after_trigger)


def test_the_ui_trigger_form_shows_every_run_parameter_in_chromium(live):
    """Headless Chromium logs into the UI, opens relay_digits' trigger form, reads its fields, and types epochs=0."""
    script = PROJECT / "tests" / "e2e" / "ui_trigger_form.py"
    result = subprocess.run([str(PROJECT / ".venv-tools" / "bin" / "python"), str(script), live.url, "admin",
                             live.env["RELAY_AIRFLOW_PASSWORD"], "relay_digits"], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    form = json.loads(result.stdout)
    assert form["framework_choices"] == ["pytorch", "tensorflow", "both"]  # both: a bake-off
    from components.spec import OVERRIDABLE

    for name, path in OVERRIDABLE.items():
        assert name in form["form_text"] and f"(spec field: {'.'.join(path)})" in form["form_text"]
    # docs/operations.md says so: the form clamps a number out of bounds to its nearest bound.
    assert (form["epochs_typed"], form["epochs_after_leaving"]) == ("0", "1")


def test_a_write_lock_held_for_40_seconds_takes_no_server_down(live):
    """SQLite admits one writer. A slow disk, or a backup tool, can hold its lock for long: Python's sqlite3 gave up
    after 5 s, a server's write failed past Airflow's retries, and its exit stopped every server (a 40 s lock did,
    before the script set the database's timeout). Afterwards every server runs and reports itself healthy."""
    database = sqlite3.connect(live.airflow_home / "airflow.db", timeout=60, isolation_level=None)
    try:
        database.execute("BEGIN EXCLUSIVE")
        time.sleep(40)
        database.execute("COMMIT")
    finally:
        database.close()
    deadline = time.monotonic() + 90
    while True:
        assert live.process.poll() is None, f"make airflow exited: {live.output.read_text()[-2000:]}"
        health = requests.get(f"{live.url}/api/v2/monitor/health", timeout=30).json()
        if all(part["status"] == "healthy" for part in health.values()):
            break
        assert time.monotonic() < deadline, health
        time.sleep(2)
    assert set(health) == {"metadatabase", "scheduler", "triggerer", "dag_processor"}, health
    pids = (live.airflow_home / "airflow-servers.pids").read_text().split()
    assert len(pids) == 4 and all(Path(f"/proc/{pid}").exists() for pid in pids), live.output.read_text()[-2000:]


def test_ctrl_c_stops_make_airflow_without_a_make_error(live):
    """Ctrl-C reaches make and the script, as from a terminal. The script stops its four processes and exits 0,
    so make reports no error; make itself then ends by the SIGINT it received, as any interrupted command."""
    os.killpg(live.process.pid, signal.SIGINT)
    assert live.process.wait(60) in (0, -signal.SIGINT)
    output = live.output.read_text()
    assert output.rstrip().endswith("Airflow stopped.") and "make: ***" not in output, output[-2000:]
    assert not (live.airflow_home / "airflow-servers.pids").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{live.url}/api/v2/monitor/health", timeout=5)
