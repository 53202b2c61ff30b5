"""The whole project, for real: the relay_digits DAG through Airflow's dag.test(), a real DVC remote,
a registry pushed to a bare git remote, and Relay's default model server (the V2 server) serving the result on
127.0.0.1. What the model server does is reached through the serving interface (components.deploy.servers)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from components.data.dataset import load_split
from components.deploy.servers import ModelServer, model_server, stop_servers
from components.registry.model_registry import ModelRegistry
from components.run_files import RunDir
from components.spec import load_spec
from components.versioning import git
from tests.conftest import PROJECT, make_settings, settings_env

pytestmark = pytest.mark.e2e


def relay(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def webhook():
    """A local HTTP endpoint that keeps every JSON body posted to it (RELAY_WEBHOOK_URL of the runs below)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/relay", received
    server.shutdown()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, webhook):
    root = tmp_path_factory.mktemp("e2e")
    remote = root / "registry.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    settings = make_settings(root / "relay-home", registry_remote=str(remote))
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1",
           "AIRFLOW_HOME": str(root / "airflow"), "RELAY_WEBHOOK_URL": webhook[0]}
    result = relay(["dag-test", "digits"], env)
    run = RunDir((settings.runs_dir / "digits" / "latest").resolve())  # later runs move "latest"
    yield settings, env, result, root, run
    stop_servers(settings)


def _server(settings) -> ModelServer:
    """The server the digits spec deploys to (Relay's default)."""
    return model_server(load_spec("digits").deploy.server, settings)


def _posts(webhook, outcome: str) -> list[dict]:
    return [post for post in webhook[1] if post["outcome"] == outcome]


def _heldout(run: RunDir, count: int):
    spec = json.loads(run.spec_file.read_text())
    _, labels, paths = load_split(run.data, "test", spec["dataset"]["classes"])
    return [(p, spec["dataset"]["classes"][y]) for p, y in list(zip(paths, labels))[:count]]


def _served_accuracy(settings, samples) -> float:
    server = _server(settings)
    return sum(server.predict("digits", p.read_bytes())["class"] == label for p, label in samples) / len(samples)


def test_dag_run_succeeds(deployed):
    _, _, result, _, _ = deployed
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "relay_digits: success" in result.stdout
    for step in ("data", "validate", "train", "optimize", "gate", "register", "deploy"):
        assert f"│ {step}" in result.stdout


def test_gate_passed(deployed):
    *_, run = deployed
    assert run.path.name.startswith("airflow-manual")
    gate = json.loads(run.gate_json.read_text())
    assert gate["passed"] is True and gate["metrics"]["accuracy_optimized"] >= 0.9


def test_the_deployed_run_posted_its_version_and_url(deployed, webhook):
    settings, _, _, _, run = deployed
    [post] = [p for p in _posts(webhook, "deployed") if p["run_dir"] == str(run)]
    assert post["version"] == "v0.1.0" and post["dag_id"] == "relay_digits"
    assert post["url"] == _server(settings).predictions_url("digits")
    assert post["url"] == f"http://127.0.0.1:{settings.v2_http_port}/predictions/digits"


def test_the_lineage_card_renders_offline_with_its_plots(deployed):
    """The card in the run and in the registry: data and code versions, spec, curves, gate, serving, stages."""
    import base64
    import io

    settings, env, _, _, run = deployed
    card = run.lineage_card.read_text()
    data = json.loads(run.data_info.read_text())
    assert data["dataset_md5"] in card and "digits v0.1.0" in card and "default of digits" in card
    assert "max_accuracy_drop_pp" in card and "digits@v0.1.0" in card and "registry commit" in card
    assert not re.search(r"""(src|href)=["']?(https?:|//|/)""", card)  # nothing fetched from anywhere
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', card)
    assert len(images) >= 5  # curves, confusion matrix, per-class, gate, champion vs challenger
    for encoded in images:
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size[0] > 100
    stored = ModelRegistry(settings).artifact_bytes("digits", "v0.1.0", "lineage.html").decode()
    assert data["dataset_md5"] in stored and "registered, not yet deployed" in stored
    printed = relay(["report", "digits", "--version", "v0.1.0"], env, timeout=120)
    assert printed.returncode == 0 and printed.stdout.strip() == str(run.lineage_card)


def test_a_failed_gate_posts_its_checks_and_reuses_training(deployed, webhook):
    """Only the gate's thresholds changed: train and optimize come from the step cache; the gate fails."""
    settings, env, result, root, run = deployed
    failed = relay(["dag-test", "digits", "--conf", '{"min_accuracy": 1.0}'], env)
    # Nothing shipped shows in the run itself: the gate task fails (with the checks that failed), register and
    # deploy never run, and the run is failed, not a green success with skipped steps.
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert "relay_digits: failed" in failed.stdout
    assert re.search(r"gate\s+│\s+failed", failed.stdout) and re.search(r"deploy\s+│\s+upstream_failed", failed.stdout)
    assert re.search(r"gate failed: accuracy_floor \S+ vs 1 \(", failed.stdout + failed.stderr)
    gate_run = RunDir((settings.runs_dir / "digits" / "latest").resolve())
    steps = json.loads(gate_run.steps_record.read_text())
    assert steps["train"]["reused"] and steps["optimize"]["reused"] and not steps["gate"]["reused"]
    assert f"reused the output of run {run.path.name}" in steps["train"]["why"]
    [post] = [p for p in _posts(webhook, "gate_failed") if p["run_dir"] == str(gate_run)]
    assert post["failed_checks"] == ["accuracy_floor"]
    assert _server(settings).default_version("digits") == "0.1.0"


def test_a_gto_version_exists_in_the_registry_and_its_remote(deployed):
    settings, *_ = deployed
    versions = ModelRegistry(settings).versions("digits")
    assert [v["version"] for v in versions] == ["v0.1.0"]
    assert "digits@v0.1.0" in git(["tag", "--list"], Path(settings.registry_remote)).split()


def test_served_model_answers_correctly_on_heldout_images(deployed):
    settings, env, _, _, run = deployed
    samples = _heldout(run, 40)
    assert _served_accuracy(settings, samples) >= 0.9
    predicted = relay(["predict", str(samples[0][0])], env, timeout=60)
    assert predicted.returncode == 0 and f"class {samples[0][1]}" in predicted.stdout


def _broken_spec(root: Path, breakage: str, name: str) -> Path:
    dataset = root / name
    shutil.copytree(PROJECT / "data" / "digits", dataset)
    if breakage == "corrupt-png":
        (dataset / "6" / "0006.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    elif breakage == "extra-label":
        shutil.copytree(dataset / "0", dataset / "ten")
    elif breakage == "empty-class":
        for image in (dataset / "8").iterdir():
            image.unlink()
    elif breakage == "inverted":  # same files, sizes and labels; white-on-black: the intensity distribution drifts
        for image in dataset.rglob("*.png"):
            Image.fromarray((255 - np.asarray(Image.open(image))).astype(np.uint8), mode="L").save(image)
    spec = yaml.safe_load((PROJECT / "pipelines" / "specs" / "digits.yaml").read_text())
    spec["dataset"]["path"] = str(dataset)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


EXPECTED = {"corrupt-png": "every file is a decodable image: 1 file(s) fail: 6/0006.png",
            "extra-label": "label(s) not in the spec ['ten']",
            "empty-class": "'8' has 0"}


@pytest.mark.parametrize("breakage", sorted(EXPECTED))
def test_broken_data_fails_validation_and_serving_stays(deployed, breakage):
    settings, env, result, root, run = deployed
    assert result.returncode == 0
    server = _server(settings)
    default_before = server.default_version("digits")
    versions_before = [v["version"] for v in ModelRegistry(settings).versions("digits")]
    broken = relay(["run", str(_broken_spec(root, breakage, f"cli-{breakage}"))], env)
    assert broken.returncode == 2
    assert "failed validation" in broken.stderr and EXPECTED[breakage] in " ".join(broken.stderr.split())
    assert "── train" not in broken.stdout  # stopped before training
    assert server.default_version("digits") == default_before is not None
    assert [v["version"] for v in ModelRegistry(settings).versions("digits")] == versions_before
    assert _served_accuracy(settings, _heldout(run, 20)) >= 0.9


def test_broken_data_through_the_dag_stops_before_training(deployed, webhook):
    settings, env, result, root, run = deployed
    broken = relay(["dag-test", str(_broken_spec(root, "corrupt-png", "dag-corrupt-png"))], env)
    assert broken.returncode == 1
    assert "relay_digits: failed" in broken.stdout
    states = dict(re.findall(r"│ (\w+)\s+│ (\w+)\s+│", broken.stdout))
    assert states["data"] == "success" and states["validate"] == "failed"
    assert states["train"] == states["deploy"] == "upstream_failed"
    assert _server(settings).default_version("digits") == "0.1.0"
    assert [v["version"] for v in ModelRegistry(settings).versions("digits")] == ["v0.1.0"]
    failed_run = (settings.runs_dir / "digits" / "latest").resolve()
    [post] = [p for p in _posts(webhook, "validation_failed") if p["run_dir"] == str(failed_run)]
    assert "every file is a decodable image: 1 file(s) fail: 6/0006.png" in post["first_failure"]


def test_tfx_drift_stops_the_run_and_serving_stays(deployed):
    settings, env, result, root, run = deployed
    server = _server(settings)
    default_before = server.default_version("digits")
    drifted = relay(["run", str(_broken_spec(root, "inverted", "cli-inverted"))], env)
    message = " ".join(drifted.stderr.split())
    assert drifted.returncode == 2, drifted.stdout[-2000:]
    assert "failed TFX validation" in message and "drift vs previous version: mean_intensity" in message
    assert "── train" not in drifted.stdout
    assert server.default_version("digits") == default_before


def test_tensorflow_run_through_the_same_dag_is_served(deployed):
    """framework=tensorflow as a run param: the same DAG trains Keras, gates, registers and serves it."""
    settings, env, result, root, run = deployed
    tf_run = relay(["dag-test", "digits", "--conf", '{"framework": "tensorflow"}'], env, timeout=900)
    assert tf_run.returncode == 0, tf_run.stdout[-3000:] + tf_run.stderr[-3000:]
    tf_dir = RunDir((settings.runs_dir / "digits" / "latest").resolve())
    assert json.loads(tf_dir.metrics.read_text())["framework"] == "tensorflow"
    gate = json.loads(tf_dir.gate_json.read_text())
    assert gate["passed"] and gate["notes"]["tensorrt"].startswith("skipped: ")

    registry = ModelRegistry(settings)
    newest = registry.versions("digits")[0]["version"]
    assert json.loads(registry.read_file("digits", newest, "model.json"))["framework"] == "tensorflow"
    artifacts = registry.path / "models" / "digits" / "artifacts" / "tfserving"
    assert (artifacts / "models.config").is_file() and list(artifacts.glob("digits/*/saved_model.pb"))

    assert _server(settings).default_version("digits") == newest.removeprefix("v")
    assert _served_accuracy(settings, _heldout(tf_dir, 40)) >= 0.9

    # Its lineage card names what ran: TensorFlow's exporter (not the PyTorch default) and its training speed.
    card = tf_dir.lineage_card.read_text()
    assert '&quot;exporter&quot;: &quot;tf2onnx&quot;' in card and "torchscript" not in card
    speed = re.search(r"<td>training images/s</td><td>([^<]+)</td>", card)
    assert speed and float(speed.group(1).replace(",", "")) > 0, speed  # rounded, thousands separated
    listed = relay(["models", "digits"], env, timeout=120)
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert "tensorflow" in rows[newest] and "pytorch" in rows["v0.1.0"], listed.stdout


def test_a_restart_serves_the_same_versions_again(deployed):
    settings, env, result, root, run = deployed
    server = _server(settings)
    before = (server.default_version("digits"), server.versions("digits"))
    assert relay(["serve", "stop"], env, timeout=120).returncode == 0
    stopped = relay(["serve", "status"], env, timeout=60)
    assert "not running" in stopped.stdout and "relay serve start` serves them again" in stopped.stdout
    started = relay(["serve", "start"], env, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    assert f"digits: serving" in started.stdout and f"(default v{before[0]})" in started.stdout
    assert (server.default_version("digits"), server.versions("digits")) == before
    status = relay(["serve", "status"], env, timeout=60)
    assert f"default v{before[0]}" in status.stdout
    assert _served_accuracy(settings, _heldout(run, 20)) >= 0.9


def test_predict_accepts_either_version_form_and_names_the_file_it_refuses(deployed, tmp_path):
    settings, env, _, _, run = deployed
    sample, label = _heldout(run, 1)[0]
    for version in ("v0.1.0", "0.1.0"):
        answer = relay(["predict", str(sample), "--version", version], env, timeout=60)
        assert answer.returncode == 0 and f"class {label}" in answer.stdout, answer.stderr
    listing = relay(["models", "digits"], env, timeout=120)
    assert "v0.1.0" in listing.stdout and "is a local path: it is valid only on this machine" in " ".join(
        listing.stdout.split())
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image at all")
    refused = relay(["predict", str(not_an_image)], env, timeout=60)
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) <= 2
    assert f"{not_an_image}: HTTP 400, the request was refused" in message and "not a decodable image" in message


def test_framework_both_runs_a_bakeoff_through_the_dag_and_ships_the_recommended_one(deployed, webhook):
    """framework=both routes the run to the bake-off task: both frameworks trained, gated and measured, the
    report written, the recommended candidate registered and served; the run's outcome is its deployment.
    It runs after the tests that expect v0.1.0 served and a well-trained default."""
    settings, env, result, root, run = deployed
    bakeoffs = settings.home / "bakeoffs" / "digits"
    before = set(bakeoffs.iterdir()) if bakeoffs.is_dir() else set()
    # A short training: the floor and the champion tolerance are opened so that a candidate can ship.
    conf = {"framework": "both", "epochs": 3, "min_accuracy": 0.5, "champion_tolerance_pp": 100}
    both = relay(["dag-test", "digits", "--conf", json.dumps(conf)], env, timeout=900)
    assert both.returncode == 0, both.stdout[-3000:] + both.stderr[-3000:]
    assert re.search(r"bakeoff\s+.*success", both.stdout) and re.search(r"data\s+.*skipped", both.stdout)
    [new] = set(bakeoffs.iterdir()) - before
    document = json.loads((new / "bakeoff.json").read_text())
    assert {c["framework"] for c in document["candidates"]} == {"pytorch", "tensorflow"}
    assert all(c["training"]["epochs"] == 3 for c in document["candidates"])
    shipped = document["shipped"]
    assert shipped["shipped"] and shipped["candidate"] == document["recommendation"]["recommended"]
    assert (new / "bakeoff.html").is_file()
    card = RunDir(shipped["run"]).lineage_card.read_text()  # the shipped version's card links its bake-off
    assert f'<a href="{(new / "bakeoff.html").as_uri()}">{document["id"]}</a>' in card
    assert _server(settings).default_version("digits") == shipped["version"].removeprefix("v")
    deployed_posts = [p for p in _posts(webhook, "deployed") if p["version"] == shipped["version"]]
    # The Airflow run's directory is the shipped candidate's run, so the outcome is its deployment.
    assert deployed_posts and Path(deployed_posts[-1]["run_dir"]).name.startswith("airflow-")
    assert Path(deployed_posts[-1]["run_dir"]).resolve() == Path(shipped["run"]).resolve()


def test_no_token_or_password_appears_in_logs_or_run_reports(deployed):
    """After every run above: no model server token and no Airflow password in any log, report or registry file
    (dag.test() runs no api-server, so there is an Airflow password file only if one was made)."""
    settings, env, result, root, run = deployed
    server = _server(settings)
    token = server.valid_key()
    secrets = {token}
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    if passwords.is_file():
        secrets |= set(json.loads(passwords.read_text()).values())
    assert len(token) >= 32 and all(len(secret) >= 8 for secret in secrets)
    kept_secret = {passwords, getattr(server, "token_file", None), getattr(server, "key_file", None)}
    places = [settings.runs_dir, settings.serve_dir, settings.registry_dir, Path(env["AIRFLOW_HOME"])]
    scanned = 0
    for place in places:
        for path in place.rglob("*"):
            if not path.is_file() or path in kept_secret or path.suffix in {".mar", ".onnx", ".pt", ".pb", ".db"}:
                continue
            text = path.read_bytes().decode("utf-8", errors="ignore")
            scanned += 1
            leaked = [secret[:4] + "…" for secret in secrets if secret in text]
            assert not leaked, f"{path} contains secrets {leaked}"
    assert scanned > 50
    for output in (result.stdout, result.stderr):
        assert not any(secret in output for secret in secrets)
