"""The one serving interface (components.deploy.servers), on TorchServe and on Relay's V2 server alike: a new
version goes live beside the old after a smoke test and a canary; a refused, failing or swapped model never
replaces the default; the default and the previous version survive a restart or a crash, served again from the
registry; bad requests get the same 4xx with the reason. Each test runs against both servers."""

import json
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from components.data.dataset import load_split
from components.deploy.local import deploy_local, served_state, start_serving
from components.deploy.servers import DEFAULT_SERVER, NAMES, ModelServer, model_server
from components.errors import RelayError, ServingError
from components.registry.model_registry import ModelRegistry
from tests.conftest import register_onnx, untrained_onnx

pytestmark = pytest.mark.slow  # starts the servers


@pytest.fixture(params=["torchserve", "kserve"])
def served(request, settings):
    server = model_server(request.param, settings)
    yield server
    server.stop()


@pytest.fixture
def spec(trained_run, served):
    spec, _ = trained_run
    return spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.7}),
                                   "deploy": spec.deploy.model_copy(update={"server": served.kind})})


@pytest.fixture
def two_versions(spec, trained_run, settings, served):
    """v0.1.0 then v0.2.0 (the same trained model, registered twice) deployed one after the other."""
    _, run = trained_run
    model = run.optimized_model
    first = deploy_local(spec, register_onnx(settings, spec, model, "run-1"), run.data, settings)
    second = deploy_local(spec, register_onnx(settings, spec, model, "run-2"), run.data, settings)
    return first, second


def _versions(server: ModelServer) -> set[str]:
    return set(server.versions("digits"))


def _accuracy(server, run, spec, count=10) -> float:
    _, labels, paths = load_split(run.data, "test", spec.dataset.classes)
    answers = [server.predict("digits", p.read_bytes())["class"] for p in paths[:count]]
    return sum(a == spec.dataset.classes[y] for a, y in zip(answers, labels[:count])) / count


def test_new_version_goes_live_beside_the_old_one(spec, trained_run, served, two_versions):
    first, second = two_versions
    assert first.previous_default is None and first.smoke_accuracy >= 0.7
    assert second.previous_default == "v0.1.0"
    assert served.default_version("digits") == "0.2.0"
    assert _versions(served) == {"0.1.0", "0.2.0"}  # rollback target kept
    assert served_state(served.settings)["digits"] == {"server": served.kind, "default": "v0.2.0",
                                                       "versions": ["v0.2.0", "v0.1.0"]}
    assert _accuracy(served, trained_run[1], spec) >= 0.7


def test_redeploying_the_default_changes_nothing(spec, trained_run, served, settings, two_versions):
    again = deploy_local(spec, "0.2.0", trained_run[1].data, settings)  # either version form
    assert again.version == "v0.2.0" and again.previous_default is None
    assert served.default_version("digits") == "0.2.0" and _versions(served) == {"0.1.0", "0.2.0"}


def test_only_the_default_and_the_previous_version_stay_served(spec, trained_run, served, settings, two_versions):
    _, run = trained_run
    third = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-3"),
                         run.data, settings)
    assert third.previous_default == "v0.2.0" and _versions(served) == {"0.2.0", "0.3.0"}


def test_failed_smoke_test_rolls_back_and_leaves_the_default_untouched(spec, trained_run, served, settings,
                                                                        tmp_path):
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    bad = register_onnx(settings, spec, untrained_onnx(spec, tmp_path / "untrained.onnx"))
    result = deploy_local(spec, bad, run.data, settings)
    assert result.rolled_back and result.version == "v0.2.0" and result.previous_default == "v0.1.0"
    assert "smoke test: accuracy" in result.why and "the default stays v0.1.0" in result.why
    assert result.canary is None  # never got that far
    assert served.default_version("digits") == "0.1.0"
    assert _versions(served) == {"0.1.0"}
    assert served_state(settings)["digits"]["default"] == "v0.1.0"


def test_a_healthy_canary_goes_live_and_no_client_request_fails_during_the_change(spec, trained_run, served,
                                                                                    settings):
    """A steady client loop against the default endpoint while v0.2.0 is registered, canaried and switched to."""
    import threading

    _, run = trained_run
    model = run.optimized_model
    deploy_local(spec, register_onnx(settings, spec, model, "run-1"), run.data, settings)
    second = register_onnx(settings, spec, model, "run-2")
    image = next(iter(load_split(run.data, "test", spec.dataset.classes)[2])).read_bytes()
    answered, failures, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                served.predict("digits", image)
                answered.append(1)
            except Exception as error:  # every failure counts, whatever its kind
                failures.append(repr(error))

    loop = threading.Thread(target=client)
    loop.start()
    try:
        result = deploy_local(spec, second, run.data, settings)
        time.sleep(0.5)
    finally:
        stop.set()
        loop.join()
    assert not result.rolled_back and result.why == "smoke test and canary passed"
    assert result.canary["new"]["requests"] == spec.deploy.canary_requests and result.canary["new"]["errors"] == 0
    assert result.canary["current"]["requests"] == spec.deploy.canary_requests
    assert served.default_version("digits") == "0.2.0"
    assert failures == [] and len(answered) > 50


def test_a_model_the_server_refuses_is_removed_and_the_default_keeps_serving(spec, trained_run, served, settings,
                                                                             tmp_path):
    """The handler (the runtime) raises as it loads the model (the ONNX file is not a model): registration fails."""
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    version = register_onnx(settings, spec, broken)
    with pytest.raises(ServingError, match=re.escape(f"{NAMES[served.kind]} refused digits v0.2.0")) as refused:
        deploy_local(spec, version, run.data, settings)
    assert "Traceback" not in str(refused.value) and len(str(refused.value)) < 1000, refused.value  # one reason
    assert served.default_version("digits") == "0.1.0" and _versions(served) == {"0.1.0"}
    assert _accuracy(served, run, spec) >= 0.7


def test_a_restart_serves_the_default_and_the_previous_version_again(spec, trained_run, served, settings,
                                                                     two_versions):
    for leftover in served.dir.rglob("*.mar"):  # served again from the registry, not from leftovers
        leftover.unlink()
    assert served.stop() is True
    assert served.pid() is None
    servers, notes = start_serving(settings)
    server = servers[served.kind]
    assert notes == {"digits": f"serving v0.1.0, v0.2.0 (default v0.2.0) on {NAMES[served.kind]}"}
    assert server.default_version("digits") == "0.2.0" and _versions(server) == {"0.1.0", "0.2.0"}
    assert _accuracy(server, trained_run[1], spec) >= 0.7


def test_a_server_killed_between_deploys_comes_back_with_the_next_deploy(spec, trained_run, served, settings,
                                                                         two_versions):
    _, run = trained_run
    process = psutil.Process(served.pid())
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    third = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-3"),
                         run.data, settings)
    assert third.previous_default == "v0.2.0"
    assert served.default_version("digits") == "0.3.0" and _versions(served) == {"0.2.0", "0.3.0"}


def test_a_swapped_artifact_is_refused_when_serving_again(spec, trained_run, served, settings, two_versions):
    """The .mar in the DVC cache is replaced: its sha256 no longer matches the registry's record."""
    registry = ModelRegistry(settings)
    digest = registry.model_info("digits", "v0.2.0")["sha256"]["model.mar"]
    swapped = 0
    for blob in (registry.path / ".dvc" / "cache").rglob("*"):
        if blob.is_file() and blob.read_bytes()[:2] == b"PK":  # the .mar zips in DVC's cache
            blob.chmod(0o644)
            blob.write_bytes(blob.read_bytes() + b"tampered")
            swapped += 1
    assert swapped >= 1 and digest
    served.stop()
    servers, notes = start_serving(settings)
    server = servers[served.kind]
    assert "NOT serving default v0.2.0" in notes["digits"] and "refusing a swapped artifact" in notes["digits"]
    assert "0.2.0" not in _versions(server)


BAD_REQUESTS = {  # body, content type → status, a phrase of the reason
    "empty": (b"", "image/png", 400, "the request body is empty"),
    "random bytes": (bytes(range(256)) * 4, "application/octet-stream", 400, "not a decodable image"),
    "truncated png": (None, "image/png", 400, "not a decodable image"),
    "json body": (b'{"image": [1, 2, 3]}', "application/json", 415, "is not an image"),
    "text body": (b"hello", "text/plain", 415, "is not an image"),
    "too many bytes": (b"\0" * 16_000_001, "image/png", 413, "over the limit of 16000000"),
    "too many pixels": (None, "image/png", 413, "over the limit of 50.0 MP"),
}


def _body(kind: str, sample: Path) -> bytes:
    import io

    from PIL import Image

    if kind == "truncated png":
        return sample.read_bytes()[:40]
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_requests_get_a_4xx_with_the_reason_and_serving_goes_on(spec, trained_run, served, settings):
    _, run = trained_run
    deploy_local(spec, register_onnx(settings, spec, run.optimized_model), run.data, settings)
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    answers = {}
    for kind, (body, content_type, status, reason) in BAD_REQUESTS.items():
        with pytest.raises(ServingError) as refused:
            served.predict("digits", _body(kind, paths[0]) if body is None else body, content_type=content_type)
        answers[kind] = (refused.value.status, reason in str(refused.value), str(refused.value))
    assert {kind: answer[:2] for kind, answer in answers.items()} == {
        kind: (status, True) for kind, (_, _, status, _) in BAD_REQUESTS.items()}, answers
    assert _accuracy(served, run, spec, count=5) >= 0.6  # and it keeps serving
    import io

    from PIL import Image

    larger = io.BytesIO()  # another size and format: resized by the model's preprocessing, not refused
    Image.open(paths[0]).convert("RGB").resize((32, 32)).save(larger, format="JPEG")
    assert served.predict("digits", larger.getvalue(), content_type="image/jpeg")["class"] in spec.dataset.classes

    image = paths[0].read_bytes()  # either version form reaches the same model
    assert served.predict("digits", image, "v0.1.0") == served.predict("digits", image, "0.1.0")
    with pytest.raises(RelayError, match="'latest' is not a model version"):
        served.predict("digits", image, "latest")




def test_a_tensorflow_model_is_served_through_its_onnx_model(keras_run, served, settings):
    """A Keras-trained version (tf2onnx's ONNX in the .mar, as the register step builds it) on either server
    answers what ONNX Runtime answers for it."""
    from components.data.dataset import unnormalized
    from components.imaging import preprocess_files
    from components.onnx_runtime import onnx_predictor

    spec, data, run = keras_run
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.5}),
                                   "deploy": spec.deploy.model_copy(update={"server": served.kind})})
    deployed = deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "keras"), data, settings)
    assert not deployed.rolled_back, deployed.why
    _, _, paths = load_split(data, "test", spec.dataset.classes)
    # register_onnx packs the .mar with unnormalized(spec)
    expected = onnx_predictor(run.optimized_model)(preprocess_files(paths[:20], unnormalized(spec)))
    answers = [served.predict("digits", p.read_bytes())["index"] for p in paths[:20]]
    assert answers == expected.argmax(1).tolist()


def test_a_task_served_by_torchserve_moves_to_the_default_server_on_its_next_deploy(trained_run, settings):
    """Upgrading from a Relay whose default was TorchServe. Its record, written before records named a server, still
    means TorchServe, which `relay serve start` restores. The next deploy of a spec that names no server puts the new
    version on the V2 server after a smoke test and a canary there; then TorchServe stops serving the task, whatever
    it served (here after a manual rollback: its default is the older of two versions)."""
    base, run = trained_run
    gate = base.gate.model_copy(update={"min_accuracy": 0.7})
    old = base.model_copy(update={"gate": gate, "deploy": base.deploy.model_copy(update={"server": "torchserve"})})
    new = base.model_copy(update={"gate": gate})
    assert new.deploy.server == DEFAULT_SERVER == "kserve"
    torchserve, v2 = model_server("torchserve", settings), model_server("kserve", settings)
    for run_id in ("run-1", "run-2"):
        deploy_local(old, register_onnx(settings, old, run.optimized_model, run_id), run.data, settings)
    torchserve.set_default("digits", "0.1.0")  # the manual rollback docs/operations.md shows
    record = settings.serve_dir / "served.json"
    legacy = {task: {"default": "v0.1.0", "versions": entry["versions"]}
              for task, entry in json.loads(record.read_text()).items()}
    record.write_text(json.dumps(legacy))
    torchserve.stop()
    servers, notes = start_serving(settings)
    assert set(servers) == {"torchserve"} and notes["digits"].endswith("(default v0.1.0) on TorchServe")

    moved = deploy_local(new, register_onnx(settings, new, run.optimized_model, "run-3"), run.data, settings)
    assert not moved.rolled_back and moved.previous_default is None  # the V2 server served nothing of it before
    assert moved.canary is not None and v2.default_version("digits") == "0.3.0"
    assert torchserve.pid() and torchserve.versions("digits") == []
    assert served_state(settings)["digits"] == {"server": "kserve", "default": "v0.3.0", "versions": ["v0.3.0"]}
