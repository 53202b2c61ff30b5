"""Shared fixtures. Every test gets its own RELAY_HOME, DVC remote and TorchServe ports.

CPU threads are pinned: on two cores, OpenMP spin-waiting makes torch several times slower
whenever anything else runs.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import tempfile

os.environ["OMP_NUM_THREADS"] = "1"
# Airflow writes its config and DB under AIRFLOW_HOME at import: keep tests out of ~/airflow.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="relay-test-airflow-")
# Whatever a step resolves from the environment (the decoded-image cache) stays out of ~/.relay too.
os.environ["RELAY_HOME"] = tempfile.mkdtemp(prefix="relay-test-home-")
# Promotion tests must never reach a developer's real cluster through their kubeconfig.
os.environ["KUBECONFIG"] = os.path.join(os.environ["AIRFLOW_HOME"], "no-kubeconfig")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# gto configures logging when it is first imported (logging.config.dictConfig closes every existing handler).
# absl's handler, which TensorFlow installs, then closes the stream it was made with: under pytest, the
# captured stderr of whichever test first imported TensorFlow, which breaks every later test's capture.
import gto  # noqa: E402,F401
import psutil  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from components.settings import Settings, free_ports, settings_env  # noqa: E402,F401
from components.spec import apply_overrides, load_spec  # noqa: E402,F401

torch.set_num_threads(1)

PROJECT = Path(__file__).resolve().parent.parent


def make_settings(home: Path, **extra) -> Settings:
    """Settings for an isolated Relay home with free TorchServe and V2 server ports and a DVC remote dir."""
    inference, management, metrics, grpc_inference, grpc_management, v2_http, v2_grpc = free_ports(7)
    remote = home / "dvc-remote"
    remote.mkdir(parents=True, exist_ok=True)
    extra.setdefault("dvc_remote", str(remote))
    return Settings(home=home, ts_inference_port=inference, ts_management_port=management,
                    ts_metrics_port=metrics, ts_grpc_inference_port=grpc_inference,
                    ts_grpc_management_port=grpc_management, v2_http_port=v2_http, v2_grpc_port=v2_grpc,
                    ts_heap="256m", **extra)


# The fast tier (`make test-fast`, `pytest -m "not slow"`) leaves out whatever trains a model, starts Airflow,
# TorchServe or another server (S3), or runs TFX: the e2e tests, the tests that use a trained run or a server, and
# those marked.
TRAINING_FIXTURES = {"trained_run", "keras_run"}
SERVER_FIXTURES = {"local_s3"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("e2e") or (TRAINING_FIXTURES | SERVER_FIXTURES) & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    from components.deploy.servers import stop_servers

    settings = make_settings(tmp_path / "relay-home")
    yield settings
    stop_servers(settings)  # what the test's deploys started, on either server, also when the test failed


@pytest.fixture(scope="session", autouse=True)
def no_v2_server_outlives_the_tests(tmp_path_factory):
    """Stop the V2 servers whose repository lies in this session's temp dirs (their Relay homes), which a test
    that failed before its own clean-up leaves running: detached, they outlive pytest."""
    from components.child_processes import stop_tree
    from components.deploy.v2 import SERVER_MODULE

    yield
    base = str(tmp_path_factory.getbasetemp())
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if SERVER_MODULE in command and any(part.startswith(base) for part in command):
            with suppress(psutil.Error):  # it may have exited meanwhile
                stop_tree(process.pid)


@pytest.fixture(scope="session")
def digits_spec():
    return load_spec("digits")


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, digits_spec) -> Path:
    """A 30-images-per-class copy of the digits dataset, written by the real generator."""
    from components.data.builtin import write_sklearn_digits

    full = tmp_path_factory.mktemp("digits-full") / "digits"
    write_sklearn_digits(full)
    small = tmp_path_factory.mktemp("digits-small") / "digits"
    for label_dir in sorted(full.iterdir()):
        (small / label_dir.name).mkdir(parents=True)
        for image in sorted(label_dir.iterdir())[:30]:
            shutil.copy(image, small / label_dir.name / image.name)
    return small


def spec_for(spec, dataset: Path, **changes):
    """``spec`` pointed at ``dataset`` (outside the project, used as is) with nested field changes."""
    from components.spec import parse_spec

    data = spec.model_dump()
    data["dataset"]["path"] = str(dataset)
    data["dataset"]["min_per_class"] = 5
    for dotted, value in changes.items():
        set_nested(data, dotted, value)
    return parse_spec(data)


def set_nested(data: dict, dotted: str, value) -> None:
    """``data["a"]["b"] = value`` for ``dotted`` "a.b"."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, digits_spec, small_dataset):
    """One run of the small dataset through data → validate → train → optimize, shared read-only."""
    from components.data.dataset import prepare_data
    from components.frameworks import optimize_model, train_model
    from components.run_files import RunDir
    from components.validate.expectations import validate_dataset

    home = tmp_path_factory.mktemp("trained-run")
    settings = make_settings(home / "relay-home")
    spec = spec_for(digits_spec, small_dataset, **{"training.epochs": 15})
    run = RunDir(home / "run")
    prepare_data(spec, run.data, settings)
    validate_dataset(spec, run.data, run.validate)
    train_model(spec, run.data, run.train)
    optimize_model(spec, run.train, run.data, run.optimize)
    return spec, run


@pytest.fixture(scope="session")
def keras_run(trained_run, tmp_path_factory):
    """The shared small run, trained again with Keras (mixed_bfloat16 on this CPU): the spec, the shared
    run's data directory, and a RunDir holding only train/ and optimize/."""
    from components.frameworks import optimize_model, train_model
    from components.run_files import RunDir

    spec, source = trained_run
    spec = apply_overrides(spec, {"framework": "tensorflow"})  # validated: its exporter becomes tf2onnx
    run = RunDir(tmp_path_factory.mktemp("keras-run"))
    train_model(spec, source.data, run.train)
    optimize_model(spec, run.train, source.data, run.optimize)
    return spec, source.data, run


def write_gate_report(target: Path, passed: bool = True) -> Path:
    """A gate report written by the real gate: an exact, slower copy passes; wrong labels fail."""
    import numpy as np

    from components.gate.verdict import evaluate_gate, write_gate
    from components.spec import GateSpec

    images = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)

    def optimized(x):
        return x.reshape(len(x), -1)[:, :10]

    def original(x):
        for _ in range(20):
            optimized(x).sum()
        return optimized(x)

    labels = optimized(images).argmax(1)
    gate = evaluate_gate(GateSpec(latency_runs=20), original, optimized, images, labels if passed else (labels + 1) % 10)
    assert gate["passed"] is passed
    write_gate("digits", gate, {}, target)
    return target


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl (for offline `kubectl kustomize`) is not on the PATH")



def register_onnx(settings: Settings, spec, onnx_model: Path, run_id: str | None = None,
                  handler: Path | None = None) -> str:
    """Register ``onnx_model`` in the settings' registry as the real register step does (ONNX, .mar,
    a passing gate report written by the real gate); return the new version. ``handler``: another
    serving handler module (see build_mar)."""
    from components.atomic import copy_file
    from components.atomic import write_json
    from components.data.dataset import unnormalized
    from components.deploy.package import build_mar
    from components.registry.model_registry import ModelRegistry

    gate = write_gate_report(Path(settings.home) / "gate-report")

    def build(version: str, dest: Path) -> None:
        copy_file(onnx_model, dest / "model.onnx")
        build_mar(spec, version, onnx_model, unnormalized(spec), dest / "model.mar",
                  **({"handler": handler} if handler else {}))
        write_json(dest / "preprocessing.json", unnormalized(spec).to_dict())
        for report in gate.iterdir():
            copy_file(report, dest / report.name)

    return ModelRegistry(settings).register(spec.name, build, {"run_id": run_id or str(onnx_model),
                                                               "framework": "pytorch"}).version


def untrained_onnx(spec, target: Path, seed: int = 123) -> Path:
    """An ONNX model of the spec's architecture with random weights: it fails any accuracy check."""
    import torch

    from components.models.architecture import Architecture
    from components.models.torch_cnn import build_torch_model
    from components.optimize.torch_onnx import export_onnx

    train_dir = target.with_suffix(".train")
    train_dir.mkdir(parents=True)
    arch = Architecture.from_spec(spec)
    torch.manual_seed(seed)
    torch.save(build_torch_model(arch).state_dict(), train_dir / "model.pt")
    arch.save(train_dir)
    return export_onnx(train_dir, target, spec)


def copy_run(source, target: Path, spec, steps=("data", "train", "optimize")):
    """A RunDir at ``target`` holding ``steps``' outputs copied from the RunDir ``source`` and ``spec`` as its
    effective spec."""
    import json

    from components.run_files import RunDir

    run = RunDir(target)
    for step in steps:
        shutil.copytree(getattr(source, step), getattr(run, step))
    run.spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
    return run


def dvc_checkout(path, dataset=None):
    """A git and DVC project at ``path``; with ``dataset``, a copy of it added to DVC as data/mine."""
    path.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    if dataset is not None:
        shutil.copytree(dataset, path / "data" / "mine")
        subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data/mine"], cwd=path, check=True)
    return path


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory):
    """A real S3 server (moto's, IAM auth on) on 127.0.0.1 for the whole session; stopped by its pid at the end.
    Tests write under their own prefixes of its bucket."""
    from pipelines.local_s3 import start_local_s3, stop_local_s3

    process, server = start_local_s3(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    stop_local_s3(process)


@pytest.fixture
def s3_env(local_s3, monkeypatch):
    """This process's AWS environment pointed at ``local_s3`` with its key (what a pod's secret would set)."""
    for name, value in local_s3.env().items():
        monkeypatch.setenv(name, value)
    return local_s3.env()


def train_job_of_dag(spec_dir: Path, run_id: str, **spec_changes) -> dict:
    """The TrainJob that the pod-mode DAG of digits (with ``training.distributed.processes: 2`` and the nested
    ``spec_changes``) creates for ``run_id``, rendered as Airflow renders its template."""
    from unittest import mock

    import yaml

    from pipelines.airflow_dag import build_dag

    spec = yaml.safe_load((PROJECT / "pipelines" / "specs" / "digits.yaml").read_text())
    spec["training"]["distributed"] = {"processes": 2}
    for dotted, value in spec_changes.items():
        set_nested(spec, dotted, value)
    path = spec_dir / "digits.yaml"
    path.write_text(yaml.safe_dump(spec))
    environment = {"RELAY_EXECUTION": "kubernetes", "RELAY_RUNS_URI": "s3://relay/runs",
                   "RELAY_WORKER_IMAGE": "registry.example/relay-worker@sha256:" + "ab" * 32}
    with mock.patch.dict(os.environ, environment):
        dag = build_dag(path)
    create = dag.get_task("train")
    return yaml.safe_load(dag.get_template_env().from_string(create.yaml_conf).render(run_id=run_id, params={}))


def training_process(module: str, out_dir: Path, variable: str, matches) -> int | None:
    """The pid of a distributed training's process (``python -m module ... out_dir``) whose environment
    variable ``variable`` has a value that ``matches`` (a predicate), if one runs."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if module.encode() in command and str(out_dir).encode() in command and any(
                name == variable and matches(value) for name, _, value in (e.partition("=") for e in environment)):
            return int(entry.name)
    return None


@contextmanager
def kill_after_epochs(state_file: Path, epochs: int, find_pid, timeout: float = 300):
    """While the block runs, SIGKILL the process ``find_pid()`` names once the training's ``state_file`` says
    ``epochs`` epochs are done. Yields the list of killed pids (empty if it never ran)."""
    import json
    import signal
    import threading
    import time

    killed: list[int] = []
    finished = threading.Event()

    def kill_when_done() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed and not finished.is_set():
            try:
                done = json.loads(state_file.read_text())["epochs_done"] if state_file.is_file() else 0
            except (OSError, ValueError):
                done = 0  # being replaced right now
            pid = find_pid() if done >= epochs else None
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_done, daemon=True)
    killer.start()
    try:
        yield killed
    finally:
        finished.set()
        killer.join()


def is_loopback(ip: str) -> bool:
    """127.0.0.1 and ::1, and 127.0.0.1 as an IPv6 socket sees it (gRPC binds that way)."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def listening_addresses(url: str) -> set[str]:
    """The addresses that the server answering ``url`` (and the processes it started) listen on."""
    port = urlsplit(url).port
    (pid,) = {c.pid for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == port
              and c.status == psutil.CONN_LISTEN}
    root = psutil.Process(pid)
    return {c.laddr.ip for process in [root, *root.children(recursive=True)] for c in process.net_connections("inet")
            if c.status == psutil.CONN_LISTEN}
