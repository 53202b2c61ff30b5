"""What a serving pod's initContainer does, run here against a real registry repo and DVC remote:
fetch the pinned version's artifacts, and for TF Serving the stable version labelled beside a canary."""

import subprocess
import time
from pathlib import Path

import pytest

from components.deploy.fetch import fetch_model, version_from_servable
from components.deploy.tfserving import parse_models_config, servable_version, write_tfserving_artifacts
from components.errors import RelayError
from components.registry.model_registry import ModelRegistry
from tests.conftest import make_settings, needs_kubectl, write_gate_report


def test_servable_version_round_trip():
    for version in ("v0.1.0", "v1.2.3", "v12.0.999"):
        assert version_from_servable(servable_version(version)) == version


@pytest.fixture
def tf_registry(tmp_path, keras_run):
    _, _, run = keras_run
    settings = make_settings(tmp_path / "home")
    registry = ModelRegistry(settings)
    gate = write_gate_report(tmp_path / "gate")

    def build(version, dest):
        (dest / "model.mar").write_bytes(b"mar " + version.encode())
        for report in gate.iterdir():
            (dest / report.name).write_bytes(report.read_bytes())
        write_tfserving_artifacts("digits", version, run.train / "saved_model", dest / "tfserving",
                                  registry.stage_version("digits", "production"))

    registry.register("digits", build, {"framework": "tensorflow"})
    registry.assign("digits", "v0.1.0", "production")
    registry.register("digits", build, {"framework": "tensorflow"})  # canary beside stable v0.1.0
    return registry


def test_torchserve_fetch_gets_the_pinned_mar(tf_registry, tmp_path):
    (mar,) = fetch_model(str(tf_registry.path), "digits", "v0.2.0", tmp_path / "store")
    assert mar == tmp_path / "store" / "digits.mar" and mar.read_bytes() == b"mar v0.2.0"


def test_tfserving_fetch_brings_the_stable_version_beside_the_canary(tf_registry, tmp_path):
    fetch_model(str(tf_registry.path), "digits", "v0.2.0", tmp_path / "models", tfserving=True)
    base = tmp_path / "models" / "tfserving"
    (config,) = parse_models_config((base / "models.config").read_text()).model_config_list.config
    assert dict(config.version_labels) == {"stable": 1000, "canary": 2000}
    for number in (1000, 2000):
        assert (base / "digits" / str(number) / "saved_model.pb").is_file()


def test_unknown_version_is_one_clear_error(tf_registry, tmp_path):
    with pytest.raises(RelayError, match="dvc get models/digits/artifacts/model.mar at digits@v9.0.0"):
        fetch_model(str(tf_registry.path), "digits", "v9.0.0", tmp_path / "store")


@needs_kubectl
def test_promoting_a_tensorflow_version_adds_tf_serving_to_the_overlay(tf_registry):
    from components.gitops.promote import promote

    promote("digits", "v0.2.0", "staging", tf_registry.settings)
    overlay = tf_registry.path / "k8s" / "digits" / "overlays" / "staging"
    rendered = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True,
                              check=True).stdout
    assert "name: tfserving" in rendered and "name: torchserve" in rendered and "MODEL_VERSION: v0.2.0" in rendered


def test_the_init_containers_command_works_from_a_clone_of_the_gitops_remote(tmp_path, trained_run):
    """What a serving pod runs, against a bare remote cloned afresh: it sees only what was pushed
    (the committed DVC remote), not the registry's working copy or its git-ignored config."""
    import os
    import shutil
    import sys

    from tests.conftest import PROJECT, register_onnx

    spec, run = trained_run
    remote = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    settings = make_settings(tmp_path / "home", registry_remote=str(remote))
    version = register_onnx(settings, spec, run.optimized_model)
    shutil.rmtree(settings.registry_dir)  # nothing of the working copy is left to lean on
    clone = tmp_path / "fresh-clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    assert "url = " + settings.dvc_remote in (clone / ".dvc" / "config").read_text()
    pod_env = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}

    def init_container(registry: str, env: dict, out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "fetch-model", "digits", "--version", version,
                               "--registry", registry, "--to", str(tmp_path / out)], cwd=tmp_path,
                              env={**env, "PYTHONPATH": str(PROJECT), "HOME": str(tmp_path)},
                              capture_output=True, text=True, timeout=300)

    for registry, out in ((str(remote), "store-remote"), (str(clone), "store-clone")):
        fetched = init_container(registry, pod_env, out)
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        assert (tmp_path / out / "digits.mar").read_bytes()[:2] == b"PK"

    # A pod with its own DVC remote URL (its endpoint, its credentials) fetches from there.
    moved = tmp_path / "pod-remote"
    Path(settings.dvc_remote).rename(moved)
    failed = init_container(str(remote), pod_env, "store-missing")
    assert failed.returncode == 2
    reason = " ".join(failed.stderr.split())
    assert "dvc get models/digits/artifacts/model.mar" in reason and "Having any troubles" not in reason
    assert "ERROR" in reason
    fetched = init_container(str(remote), {**pod_env, "RELAY_DVC_REMOTE": str(moved)}, "store-pod-remote")
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert (tmp_path / "store-pod-remote" / "digits.mar").is_file()


def test_the_init_containers_command_fetches_from_an_s3_dvc_remote_and_says_what_is_wrong(tmp_path, local_s3, s3_env,
                                                                                        digits_spec):
    """The registry's DVC remote on a real S3 server: a fresh clone of the GitOps remote carries the remote's
    URL and endpoint (never a credential), and a pod with the key fetches; a wrong secret or a missing bucket
    is one line naming the remote."""
    import os
    import sys

    from tests.conftest import PROJECT, register_onnx, untrained_onnx

    remote = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    dvc_remote = f"s3://{local_s3.bucket}/fetch/registry"
    settings = make_settings(tmp_path / "home", registry_remote=str(remote), dvc_remote=dvc_remote)
    assert settings.s3_endpoint_url == local_s3.endpoint_url  # from AWS_ENDPOINT_URL_S3
    version = register_onnx(settings, digits_spec, untrained_onnx(digits_spec, tmp_path / "model.onnx"))
    clone = tmp_path / "fresh-clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    config = (clone / ".dvc" / "config").read_text()
    assert f"url = {dvc_remote}" in config and f"endpointurl = {local_s3.endpoint_url}" in config
    assert local_s3.secret_access_key not in config and local_s3.access_key_id not in config
    pod_env = {key: value for key, value in os.environ.items() if not key.startswith(("RELAY_", "AWS_"))}

    def init_container(env: dict, out: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "fetch-model", "digits", "--version", version,
                               "--registry", str(remote), "--to", str(tmp_path / out)], cwd=tmp_path,
                              env={**pod_env, **env, "PYTHONPATH": str(PROJECT), "HOME": str(tmp_path)},
                              capture_output=True, text=True, timeout=300)

    keys = {name: value for name, value in local_s3.env().items() if name != "AWS_ENDPOINT_URL_S3"}
    fetched = init_container(keys, "store")  # the endpoint comes from the clone's DVC config
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert (tmp_path / "store" / "digits.mar").read_bytes()[:2] == b"PK"

    for problem, env, meaning in (
            ("wrong secret", {**keys, "AWS_SECRET_ACCESS_KEY": "wrong"}, "refused"),  # DVC's HEAD: 403, no code
            ("missing bucket", {**keys, "RELAY_DVC_REMOTE": "s3://no-such-bucket/registry"},
             "the bucket does not exist")):
        failed = init_container(env, problem.replace(" ", "-"))
        assert failed.returncode == 2, problem
        message = failed.stderr.strip()
        assert len(message.splitlines()) == 1 and meaning in message, message
        named = env.get("RELAY_DVC_REMOTE", f"{dvc_remote} (endpoint {local_s3.endpoint_url})")
        assert f"DVC remote {named}" in message, message
        assert not list((tmp_path / problem.replace(" ", "-")).glob("*.mar"))  # nothing half-fetched


def test_the_v2_pods_init_container_makes_a_repository_its_server_serves(tmp_path, trained_run):
    """`relay fetch-model --v2` (the KServe component's initContainer) from a real registry, then the predictor
    container's command on what it wrote: the V2 server answers the model's classes with the token. Here the
    server listens on loopback and free ports instead of the pod's 0.0.0.0:8080, which the test rewrites."""
    import json
    import os
    import sys

    import requests

    from components.child_processes import wait_listening
    from components.data.dataset import load_split, unnormalized
    from components.deploy.v2 import SERVER_MODULE
    from components.imaging import preprocess_files
    from components.onnx_runtime import onnx_predictor
    from components.settings import free_ports
    from tests.conftest import PROJECT, register_onnx

    spec, run = trained_run
    settings = make_settings(tmp_path / "home")
    version = register_onnx(settings, spec, run.optimized_model)
    fetched = subprocess.run([sys.executable, "-m", "pipelines.cli", "fetch-model", "digits", "--version", version,
                              "--registry", str(settings.registry_dir), "--to", str(tmp_path / "model-store"), "--v2"],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PROJECT), "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=300)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    repository = tmp_path / "model-store" / "repository"
    assert fetched.stdout.split() == [str(repository)] and not (tmp_path / "model-store" / "digits.mar").exists()
    pod_settings = json.loads((repository / "settings.json").read_text())
    assert (pod_settings["host"], pod_settings["http_port"], pod_settings["grpc_port"]) == ("0.0.0.0", 8080, 8081)
    assert json.loads((repository / "defaults.json").read_text()) == {"digits": "0.1.0"}

    http, grpc = free_ports(2)
    (repository / "settings.json").write_text(json.dumps({**pod_settings, "host": "127.0.0.1", "http_port": http,
                                                          "grpc_port": grpc}))
    token = tmp_path / "token"
    token.write_text("pod-token\n")
    server = subprocess.Popen([str(settings.serve_env / "bin" / "python"), "-m", SERVER_MODULE, str(repository),
                               "--token-file", str(token)], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(PROJECT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_listening(server, "127.0.0.1", http, 120) is None
        _, _, paths = load_split(run.data, "test", spec.dataset.classes)
        # register_onnx packs the .mar with unnormalized(spec), as the register step would the run's own
        expected = onnx_predictor(run.optimized_model)(preprocess_files(paths[:20], unnormalized(spec)))
        url, headers = f"http://127.0.0.1:{http}/predictions/digits", {"Authorization": "Bearer pod-token"}
        deadline = time.monotonic() + 60
        while requests.get(f"http://127.0.0.1:{http}/v2/models/digits/ready", headers=headers,
                           timeout=10).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        answers = [requests.post(url, data=p.read_bytes(), headers=headers, timeout=30).json()["index"]
                   for p in paths[:20]]
        assert answers == expected.argmax(1).tolist()
        assert requests.post(url, data=paths[0].read_bytes(), timeout=30).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)
