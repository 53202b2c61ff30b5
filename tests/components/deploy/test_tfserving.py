"""TF Serving artifacts and client, validated offline with tensorflow-serving-api's own protos.

No tensorflow_model_server binary exists for these machines, so requests are checked up to the wire:
they parse with the official protos and match the SavedModel's serving signature.
"""

import json

import numpy as np
import pytest

from components.deploy.tfserving import (TFServingClient, parse_models_config, render_models_config,
                                         servable_version, write_model_base)
from components.data.dataset import load_split


def test_servable_versions_are_monotonic_integers():
    assert servable_version("v0.1.0") == 1000
    assert servable_version("v0.2.0") > servable_version("v0.1.9") > servable_version("v0.1.0")


def test_models_config_parses_with_version_labels():
    text = render_models_config("digits", "/models/digits", {"stable": "v0.1.0", "canary": "v0.2.0"})
    config = parse_models_config(text)
    (model,) = config.model_config_list.config
    assert model.name == "digits" and model.base_path == "/models/digits" and model.model_platform == "tensorflow"
    assert list(model.model_version_policy.specific.versions) == [1000, 2000]
    assert dict(model.version_labels) == {"stable": 1000, "canary": 2000}


def test_bad_models_config_is_rejected():
    from google.protobuf.text_format import ParseError

    with pytest.raises(ParseError):
        parse_models_config('model_config_list { config { name: "x" versions: 3 } }')


def test_model_base_path_layout(keras_run, tmp_path):
    _, _, run = keras_run
    target = write_model_base(run.train / "saved_model", tmp_path / "models", "digits", "v0.2.0")
    assert target == tmp_path / "models" / "digits" / "2000"
    assert (target / "saved_model.pb").is_file() and (target / "variables").is_dir()


def test_rest_bodies_in_row_and_columnar_form():
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    client = TFServingClient("digits", rest_port=18501)
    row = json.loads(json.dumps(client.rest_body(images, "row")))
    columnar = json.loads(json.dumps(client.rest_body(images, "columnar")))
    assert row["signature_name"] == columnar["signature_name"] == "serving_default"
    assert len(row["instances"]) == 3 and np.asarray(row["instances"][0]["image"]).shape == (1, 8, 8)
    assert np.asarray(columnar["inputs"]["image"], dtype=np.float32).shape == (3, 1, 8, 8)
    assert np.allclose(np.asarray(columnar["inputs"]["image"], dtype=np.float32), images)
    assert client.rest_url("canary") == "http://127.0.0.1:18501/v1/models/digits/labels/canary:predict"
    with pytest.raises(ValueError, match="unknown REST form"):
        client.rest_body(images, "rows")


def test_grpc_request_round_trips_and_fits_the_saved_model_signature(keras_run):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    spec, data, run = keras_run
    images, _, _ = load_split(data, "test", spec.dataset.classes)
    request = TFServingClient("digits").grpc_request(images[:5], label="stable")
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert wire.model_spec.name == "digits" and wire.model_spec.version_label == "stable"
    assert wire.model_spec.signature_name == "serving_default"
    tensor = wire.inputs["image"]
    assert tensor.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [5, 1, 8, 8]
    decoded = tf.make_ndarray(tensor)
    assert np.array_equal(decoded, images[:5])

    signature = tf.saved_model.load(str(run.train / "saved_model")).signatures["serving_default"]
    expected = signature.structured_input_signature[1]["image"]
    assert expected.dtype == tf.float32 and expected.shape.is_compatible_with(decoded.shape)
    assert next(iter(signature(image=tf.constant(decoded)).values())).shape == (5, 10)
