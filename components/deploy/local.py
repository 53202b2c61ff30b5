"""The local deploy target: a new model version goes live on the project's model server, the one the task's
``deploy.server`` names (TorchServe or the V2 server; components.deploy.servers).

The new version is registered beside the current one, smoke-tested on held-out images through the
real inference API, then put through a canary (replayed held-out requests to both versions, judged by
the spec's error-rate and p99 bounds), and only then made the default. If the server refuses it
(ServingError), or the smoke test or the canary fails (a rollback, recorded in the result), the new
version is removed and the default is untouched; the previous version stays registered for rollback.

What is served is recorded in ``<serve dir>/served.json`` (per task: its server, the default and the previous
version). Either server is restored from that record, never from what it kept itself: ``start_serving``
re-registers the recorded versions from the registry's .mar (sha256-checked). The served default is also the
gate's champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from components.registry import model_version
from components.atomic import atomic_file, sha256_file, write_json
from components.data.dataset import split_files
from components.deploy.canary import run_canary
from components.deploy.servers import DEFAULT_SERVER, NAMES, ModelServer, model_server
from components.errors import RelayError, ServingError
from components.registry.model_registry import ModelRegistry
from components.settings import Settings
from components.spec import TaskSpec

SERVED_STATE = "served.json"
KEEP_VERSIONS = 2  # the default and the one before it (the rollback target)


@dataclass(frozen=True)
class DeployResult:
    model_name: str
    version: str
    previous_default: str | None  # what served before (and still serves, after a rollback)
    smoke_accuracy: float
    inference_url: str
    rolled_back: bool = False
    why: str = ""  # the canary's verdict
    canary: dict | None = None  # per version: requests, errors, error rate, accuracy, p50 and p99

def served_state(settings: Settings) -> dict[str, dict]:
    """Per task, what the local server should serve:
    ``{"server": "torchserve", "default": "v0.2.0", "versions": [...]}``."""
    path = settings.serve_dir / SERVED_STATE
    state = json.loads(path.read_text()) if path.is_file() else {}
    return {task: {"server": "torchserve", **entry} for task, entry in state.items()}  # recorded before "server"


def served_by(settings: Settings, task: str) -> ModelServer:
    """The local server that serves ``task`` (the default server when it serves nothing yet)."""
    return model_server(served_state(settings).get(task, {}).get("server", DEFAULT_SERVER), settings)


def served_default(settings: Settings, task: str) -> str | None:
    """The version the local server serves as ``task``'s default (the champion a new model must match)."""
    return served_state(settings).get(task, {}).get("default")


def only_served_task(settings: Settings) -> str:
    """The task the local server serves, when it serves exactly one; otherwise say which to choose."""
    tasks = sorted(served_state(settings))
    if len(tasks) == 1:
        return tasks[0]
    if not tasks:
        raise ServingError(f"the local model server ({settings.serve_dir}) serves no task yet: deploy one with "
                           "`relay run TASK`, or pass --task")
    raise ServingError(f"the local model servers serve {len(tasks)} tasks ({', '.join(tasks)}): pass --task")


def _record(settings: Settings, task: str, server: str, default: str, versions: list[str]) -> None:
    state = served_state(settings)
    state[task] = {"server": server, "default": default, "versions": versions}
    write_json(settings.serve_dir / SERVED_STATE, state)


def install_version(server: ModelServer, registry: ModelRegistry, task: str, version: str) -> None:
    """Register ``version`` on ``server`` from the registry's .mar, after checking its sha256."""
    if model_version.served(version) in server.versions(task):
        return
    mar = server.mar_path(task, version)
    with atomic_file(mar, "wb") as handle:
        handle.write(registry.artifact_bytes(task, version, "model.mar"))  # sha256-checked against the record
    # Checked again as the server is about to read it: the file it reads must be the registered one.
    expected = registry.model_info(task, version)["sha256"]["model.mar"]
    if sha256_file(mar) != expected:
        raise ServingError(f"{mar} does not match the sha256 the registry recorded for {task} {version}: "
                           "refusing to register it")
    try:
        server.install(task, version)
    except ServingError as error:
        if model_version.served(version) in server.versions(task):
            server.remove(task, version)
        raise ServingError(f"{NAMES[server.kind]} refused {task} {version}: {error}") from None


def start_serving(settings: Settings, kind: str | None = None) -> tuple[dict[str, ModelServer], dict[str, str]]:
    """Start the local servers that ``served.json`` names (only ``kind``'s, when given; the default server when it
    names none) and make each serve what the record says.

    Returns the servers by kind and, per task, a note of what was restored (or why not).
    """
    state = served_state(settings)
    kinds = [kind] if kind else sorted({entry["server"] for entry in state.values()}) or [DEFAULT_SERVER]
    servers = {k: model_server(k, settings) for k in kinds}
    for server in servers.values():
        server.start()
    notes: dict[str, str] = {}
    registry = ModelRegistry(settings) if state else None
    for task, entry in state.items():
        if entry["server"] not in servers:
            continue
        server = servers[entry["server"]]
        restored, problems = [], []
        for version in reversed(entry["versions"]):  # the previous version first, the default last
            try:
                install_version(server, registry, task, version)
                restored.append(version)
            except RelayError as error:
                problems.append(str(error))
        default = entry["default"]
        if default in restored:
            if server.default_version(task) != model_version.served(default):
                server.set_default(task, model_version.served(default))
            notes[task] = f"serving {', '.join(restored)} (default {default}) on {NAMES[server.kind]}"
        else:
            notes[task] = f"NOT serving default {default}: {'; '.join(problems)}"
    return servers, notes


def smoke_test(server: ModelServer, model: str, version: str, paths: list[Path], labels: list[str]) -> float:
    """Accuracy of ``model``/``version`` as served, on the given image files."""
    hits = sum(server.predict(model, path.read_bytes(), version)["class"] == label for path, label in zip(paths, labels))
    return hits / len(paths)


def deploy_local(spec: TaskSpec, version: str, data_dir: Path, settings: Settings) -> DeployResult:
    """Serve registered ``version`` of ``spec.name`` beside the default; make it the default only after a smoke
    test and a canary (components.deploy.canary) pass. Otherwise it is unregistered and the result says
    ``rolled_back`` and why: what served before is never touched.

    Idempotent: deploying the version that is already the default changes nothing.
    """
    version, kind = model_version.canonical(version), spec.deploy.server
    servers, _ = start_serving(settings, kind)  # a server that died since the last deploy comes back first
    server = servers[kind]
    name, served = spec.name, model_version.served(version)
    recorded = served_state(settings).get(name)
    previous = recorded["default"] if recorded and recorded["server"] == kind else None
    if previous is not None and model_version.served(previous) != server.default_version(name):
        previous = None  # the recorded default could not be restored; nothing older is live
    # ensure(): this machine's clone of the registry brought up to date with its remote, which another machine's
    # register step pushed the version to
    install_version(server, ModelRegistry(settings).ensure(), name, version)

    paths, label_index = split_files(data_dir, "test", spec.dataset.classes)
    labels = [spec.dataset.classes[i] for i in label_index]
    count = min(spec.deploy.smoke_samples, len(paths))
    accuracy, canary = 0.0, None
    try:
        accuracy = smoke_test(server, name, served, paths[:count], labels[:count])
        problem = (None if accuracy >= spec.gate.min_accuracy else
                   f"smoke test: accuracy {accuracy:.3f} on {count} held-out images is below {spec.gate.min_accuracy}")
    except ServingError as error:
        problem = f"smoke test failed ({error})"
    if problem is None and previous != version:
        result = run_canary(server, name, served, previous and model_version.served(previous), paths, labels,
                            spec.deploy)
        canary = {"new": result.new, "current": result.current}
        problem = None if result.passed else f"canary: {result.why}"
    if problem:
        # Rolled back: the new version goes, what served before keeps serving, untouched.
        if previous != version:
            server.remove(name, served)
        return DeployResult(name, version, previous, accuracy, server.predictions_url(name),
                            rolled_back=True, why=f"{problem}; the default stays {previous}", canary=canary)
    server.set_default(name, served)
    if previous == version:  # a retried deploy: keep what it kept
        keep = served_state(settings)[name]["versions"]
    else:
        keep = [version] + ([previous] if previous else [])
    for other in server.versions(name):
        if model_version.canonical(other) not in keep:
            server.remove(name, other)
    _record(settings, name, kind, version, keep[:KEEP_VERSIONS])
    if recorded and recorded["server"] != kind:
        _stop_serving_elsewhere(settings, name, recorded["server"])
    return DeployResult(name, version, previous if previous != version else None, accuracy,
                        server.predictions_url(name), why="smoke test and canary passed", canary=canary)


def _stop_serving_elsewhere(settings: Settings, task: str, kind: str) -> None:
    """``task`` moved to another server (its spec's deploy.server changed): the old server stops serving it."""
    old = model_server(kind, settings)
    if old.pid():
        default = old.default_version(task)
        # The default last: TorchServe refuses to remove a model's default version while it has others.
        for version in sorted(old.versions(task), key=lambda served: served == default):
            old.remove(task, version)
