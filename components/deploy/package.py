"""Package an ONNX model as a TorchServe .mar with torch-model-archiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

from components import imaging, onnx_runtime
from components.deploy import image_service
from components.registry import model_version
from components.atomic import atomic_dir, copy_file, write_json
from components.errors import RelayError
from components.imaging import Preprocessing
from components.spec import TaskSpec

# Loaded only inside TorchServe, where image_service.py, imaging.py and onnx_runtime.py sit beside it in the model dir.
HANDLER = Path(__file__).with_name("serving_handler.py")


def serving_config(spec: TaskSpec, prep: Preprocessing) -> dict:
    """What the handler must know: the model's preprocessing, the spec's request limit and ORT's threads."""
    return {"preprocessing": prep.to_dict(), "max_request_bytes": spec.deploy.max_request_bytes,
            "threads": spec.deploy.threads}


def model_config(spec: TaskSpec) -> dict:
    """TorchServe's per-model config (the .mar's model-config.yaml): workers and the server-side batcher."""
    deploy = spec.deploy
    return {"minWorkers": deploy.workers, "maxWorkers": deploy.workers, "batchSize": deploy.batch_size,
            "maxBatchDelay": deploy.max_batch_delay_ms, "responseTimeout": 120}


V2_RUNTIME = "components.deploy.v2_runtime.RelayImageClassifier"  # loaded by the V2 server, in .venv-serve


def v2_model_settings(model_name: str, version: str, batch_size: int = 1, batch_time_s: float = 0.0) -> dict:
    """MLServer's model-settings.json for one version: Relay's runtime and the model files beside it.

    MLServer's adaptive batcher holds a lone request for ``max_batch_time`` and a time of 0 turns it off, so it
    cannot batch without making one client wait (docs/benchmarks.md): it is off unless ``batch_time_s`` is given
    (the bench measures it)."""
    batching = {"max_batch_size": batch_size, "max_batch_time": batch_time_s} if batch_time_s else {}
    return {"name": model_name, "implementation": V2_RUNTIME,
            "parameters": {"uri": ".", "version": model_version.served(version)}, **batching}


def build_v2_version(spec: TaskSpec, version: str, onnx_model: Path, prep: Preprocessing, target: Path,
                     batch_time_s: float = 0.0) -> Path:
    """Write ``target``, a folder the V2 server loads as one version of ``spec.name``: its model-settings.json,
    the ONNX model and the same serving config and class names a .mar holds. Published atomically."""
    with atomic_dir(target) as work:
        copy_file(onnx_model, work / image_service.MODEL_FILE)
        (work / image_service.CLASS_NAMES).write_text(json.dumps(_class_names(spec)))
        (work / imaging.SERVING_CONFIG).write_text(json.dumps(serving_config(spec, prep)))
        settings = v2_model_settings(spec.name, version, spec.deploy.batch_size, batch_time_s)
        (work / "model-settings.json").write_text(json.dumps(settings, indent=2))
    return target


V2_DEFAULTS_FILE = "defaults.json"  # {model: default version}; components.deploy.v2_server reads it
V2_POD_PORTS = (8080, 8081)  # REST and gRPC in a pod: KServe's convention for a predictor container


def v2_server_settings(host: str, http_port: int, grpc_port: int) -> dict:
    """MLServer's settings.json for Relay's V2 server."""
    return {"host": host, "http_port": http_port, "grpc_port": grpc_port,
            # Inference in the server's own process: one ORT session per version, no hop to a worker pool.
            "parallel_workers": 0, "load_models_at_startup": True,
            # No Prometheus endpoint yet: it would be a port without the token (monitoring is another issue).
            "metrics_endpoint": None,
            # MLServer's default (debug on) answers a 500 with the server's traceback and logs every request.
            "debug": False}


def v2_repository_from_mar(mar: Path, model_name: str, version: str, repository: Path) -> Path:
    """A whole repository for the V2 server in a pod: ``version`` of ``model_name`` from its .mar, as the default,
    and the server's settings (all addresses, the pod's ports: the pod's network policy is the boundary)."""
    v2_version_from_mar(mar, model_name, version, repository / model_name / model_version.served(version))
    write_json(repository / V2_DEFAULTS_FILE, {model_name: model_version.served(version)})
    write_json(repository / "settings.json", v2_server_settings("0.0.0.0", *V2_POD_PORTS))
    return repository


def v2_version_from_mar(mar: Path, model_name: str, version: str, target: Path) -> Path:
    """Write ``target``, the V2 server's folder for one version, from that version's registered .mar: its model,
    serving config and class names (the same files TorchServe serves), plus MLServer's model-settings.json."""
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        serialized = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["serializedFile"]
        missing = [n for n in (serialized, imaging.SERVING_CONFIG, image_service.CLASS_NAMES) if n not in names]
        if missing:
            raise RelayError(f"{mar} lacks {', '.join(missing)}: register {model_name} {version} again with this "
                             "Relay")
        with atomic_dir(target) as work:
            (work / image_service.MODEL_FILE).write_bytes(archive.read(serialized))
            for name in (imaging.SERVING_CONFIG, image_service.CLASS_NAMES):
                (work / name).write_bytes(archive.read(name))
            (work / "model-settings.json").write_text(json.dumps(v2_model_settings(model_name, version), indent=2))
    return target


def _class_names(spec: TaskSpec) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(spec.dataset.classes)}


def build_mar(spec: TaskSpec, version: str, onnx_model: Path, prep: Preprocessing, target: Path,
              handler: Path = HANDLER) -> Path:
    """Write ``target`` (a .mar) serving ``onnx_model`` as ``spec.name`` through the ONNX Runtime handler,
    with ``prep``, the preprocessing the model was trained with.

    Another ``handler`` (a module wrapping ``serving_handler``, which is then packed beside it) is for tests
    that need a slow or failing server."""
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = work / image_service.CLASS_NAMES
        labels.write_text(json.dumps(_class_names(spec)))
        config = work / imaging.SERVING_CONFIG
        config.write_text(json.dumps(serving_config(spec, prep)))
        server_config = work / "model-config.yaml"
        server_config.write_text(yaml.safe_dump(model_config(spec)))
        extra = [image_service.__file__, imaging.__file__, onnx_runtime.__file__, str(labels), str(config)]
        if handler != HANDLER:
            extra.append(str(HANDLER))
        proc = subprocess.run([
            str(archiver), "--model-name", spec.name, "--version", model_version.served(version),
            "--serialized-file", str(onnx_model), "--handler", str(handler),
            "--extra-files", ",".join(extra), "--config-file", str(server_config), "--export-path", str(work),
            "--force",
        ], capture_output=True, text=True, env={**os.environ, "TMPDIR": str(work)})
        # TMPDIR: the archiver stages files in <TMPDIR>/<model name>, deleting that directory first; under
        # the system's temp dir that wiped whatever was at /tmp/<task name> (a clone called "fresh", once).
        if proc.returncode != 0:
            raise RelayError(f"torch-model-archiver failed for {spec.name}: {proc.stderr.strip().splitlines()[-1:]}")
        copy_file(work / f"{spec.name}.mar", target)
    return target
