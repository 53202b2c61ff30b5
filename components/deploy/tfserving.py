"""TF Serving: the versioned model base path, the models.config, and a client for its REST and
gRPC APIs built on tensorflow-serving-api's official protos and stubs.

TF Serving's server binary is not available on these machines (not on PyPI, Debian or npm), so
Relay produces and validates everything up to the wire here; the server runs in the
tensorflow/serving image (infra/tfserving/compose.yaml, and Kubernetes in a later issue).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import requests

from components.atomic import atomic_dir
from components.onnx_runtime import INPUT_NAME

SIGNATURE = "serving_default"


def servable_version(version: str) -> int:
    """TF Serving versions are integers: ``v1.2.3`` → 1002003 (monotonic in semver order)."""
    major, minor, patch = (int(part) for part in version.removeprefix("v").split("."))
    return major * 1_000_000 + minor * 1_000 + patch


def write_model_base(saved_model: Path, base: Path, model_name: str, version: str) -> Path:
    """Place ``saved_model`` at ``base/<model_name>/<integer version>/`` (saved_model.pb, variables/)."""
    target = base / model_name / str(servable_version(version))
    with atomic_dir(target) as tmp:
        shutil.copytree(saved_model, tmp, dirs_exist_ok=True)
    return target


def render_models_config(model_name: str, base_path: str, labels: dict[str, str]) -> str:
    """A ModelServerConfig text proto serving the labelled versions (e.g. stable, canary)."""
    versions = sorted({servable_version(v) for v in labels.values()})
    lines = ["model_config_list {", "  config {", f'    name: "{model_name}"', f'    base_path: "{base_path}"',
             '    model_platform: "tensorflow"', "    model_version_policy {", "      specific {"]
    lines += [f"        versions: {v}" for v in versions]
    lines += ["      }", "    }"]
    for label, version in sorted(labels.items()):
        lines += ["    version_labels {", f'      key: "{label}"', f"      value: {servable_version(version)}", "    }"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def parse_models_config(text: str):
    """Parse a models.config with TF Serving's own proto; raises on any schema error."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def write_tfserving_artifacts(name: str, version: str, saved_model: Path, base: Path,
                              production: str | None) -> None:
    """TF Serving's model base path and models.config: the new version is ``canary`` beside the
    production version as ``stable`` (the serving pod fetches both), or ``stable`` when it is the first."""
    from components.atomic import write_text

    write_model_base(saved_model, base, name, version)
    labels = {"stable": production, "canary": version} if production and production != version else {"stable": version}
    config = render_models_config(name, f"/models/tfserving/{name}", labels)
    parse_models_config(config)
    write_text(base / "models.config", config)


class TFServingClient:
    """Predict against a TF Serving model over REST (row or columnar JSON) or gRPC."""

    def __init__(self, model_name: str, host: str = "127.0.0.1", rest_port: int = 8501, grpc_port: int = 8500):
        self.model_name = model_name
        self.rest_base = f"http://{host}:{rest_port}/v1/models/{model_name}"
        self.grpc_target = f"{host}:{grpc_port}"

    def rest_url(self, label: str | None = None) -> str:
        return self.rest_base + (f"/labels/{label}" if label else "") + ":predict"

    @staticmethod
    def rest_body(images: np.ndarray, form: str = "row") -> dict:
        """The JSON body: ``row`` = one instance per image, ``columnar`` = one tensor per input."""
        if form == "row":
            return {"signature_name": SIGNATURE, "instances": [{INPUT_NAME: image.tolist()} for image in images]}
        if form == "columnar":
            return {"signature_name": SIGNATURE, "inputs": {INPUT_NAME: images.tolist()}}
        raise ValueError(f"unknown REST form {form!r}: use 'row' or 'columnar'")

    def predict_rest(self, images: np.ndarray, form: str = "row", label: str | None = None,
                     timeout: float = 10) -> np.ndarray:
        response = requests.post(self.rest_url(label), json=self.rest_body(images, form), timeout=timeout)
        response.raise_for_status()
        payload = response.json()
        outputs = payload["predictions"] if form == "row" else payload["outputs"]
        if isinstance(outputs, dict):  # several named outputs
            outputs = next(iter(outputs.values()))
        return np.asarray(outputs, dtype=np.float32)

    def grpc_request(self, images: np.ndarray, label: str | None = None):
        """A PredictRequest carrying ``images`` as a float32 tensor under the ``image`` key."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = SIGNATURE
        if label:
            request.model_spec.version_label = label
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.asarray(images, dtype=np.float32)))
        return request

    def predict_grpc(self, images: np.ndarray, label: str | None = None, timeout: float = 10) -> np.ndarray:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        with grpc.insecure_channel(self.grpc_target) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                self.grpc_request(images, label), timeout=timeout)
        return tf.make_ndarray(next(iter(response.outputs.values())))
