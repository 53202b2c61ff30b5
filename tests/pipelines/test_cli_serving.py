"""What a user sees of the served model from a plain shell: the documented client line after the keys expire,
`relay predict` without --task, the framework of each version, and printed paths that are never wrapped."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timezone

import pytest
import requests

from components.deploy.local import _record, deploy_local
from components.deploy.torchserve import TorchServe
from components.data.dataset import load_split
from tests.conftest import PROJECT, make_settings, register_onnx, settings_env

RELAY = str(PROJECT / "bin" / "relay")


def _shell(command: str, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    """``command`` in bash without a terminal, as a user's script or a CI job runs it."""
    return subprocess.run(["bash", "-c", command], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def short_lived_keys(trained_run, tmp_path_factory):
    """digits served by a TorchServe whose keys live 15 s (the V2 server's token does not expire)."""
    spec, run = trained_run
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.5}),
                                   "deploy": spec.deploy.model_copy(update={"server": "torchserve"})})
    settings = make_settings(tmp_path_factory.mktemp("keys") / "relay-home", ts_token_expiration_min=0.25)
    server = TorchServe(settings)
    try:
        deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-1"), run.data,
                     settings)
        env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, **settings_env(settings)}
        _, _, paths = load_split(run.data, "test", spec.dataset.classes)
        yield settings, server, env, paths[0]
    finally:
        server.stop()


def test_after_the_keys_expire_the_documented_client_line_still_works(short_lived_keys):
    settings, server, env, image = short_lived_keys
    stale = json.loads(server.key_file.read_text())["inference"]
    expires = datetime.fromisoformat(stale["expiration time"])
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 1)
    url = f"{server.inference_url}/predictions/digits"
    refused = requests.post(url, headers={"Authorization": f"Bearer {stale['key']}"}, data=image.read_bytes(),
                            timeout=10)
    assert refused.status_code == 400 and "Token Authorization failed" in refused.text  # what users saw
    # The line the demo, the README and docs/operations.md print, run as printed.
    line = f'curl -sS --fail-with-body -H "Authorization: Bearer $(bin/relay serve key)" -T {image} {url}'
    documented = " ".join((PROJECT / "docs" / "operations.md").read_text().split())
    assert 'curl -H "Authorization: Bearer $(bin/relay serve key)" -T IMAGE' in documented
    assert '$(bin/relay serve key)' in (PROJECT / "README.md").read_text()
    answered = _shell(line, env)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert json.loads(answered.stdout)["class"] in [str(i) for i in range(10)]
    assert json.loads(server.key_file.read_text())["inference"]["key"] != stale["key"]  # renewed in the file


@pytest.mark.parametrize("option, server", [("", "V2 server"), ("--server torchserve", "TorchServe")])
def test_serve_key_without_a_server_says_what_to_run(tmp_path, option, server):
    """Without a served task, `relay serve key` speaks of the default server, the V2 server."""
    env = {**os.environ, **settings_env(make_settings(tmp_path / "relay-home"))}
    done = _shell(f"bin/relay serve key {option}", env)
    assert done.returncode == 2 and done.stdout == ""
    assert f"no Relay {server} is running" in done.stderr and "relay serve start" in done.stderr


def test_predict_defaults_to_the_only_served_task_and_otherwise_names_them(short_lived_keys):
    settings, _, env, image = short_lived_keys
    answered = _shell(f"bin/relay predict {image}", env)
    assert answered.returncode == 0 and " class " in answered.stdout, answered.stderr
    _record(settings, "flowers", "torchserve", "v0.1.0", ["v0.1.0"])  # a second task in the served state
    try:
        refused = _shell(f"bin/relay predict {image}", env)
        assert refused.returncode == 2
        assert "serve 2 tasks (digits, flowers): pass --task" in " ".join(refused.stderr.split())
    finally:
        state = json.loads((settings.serve_dir / "served.json").read_text())
        del state["flowers"]
        (settings.serve_dir / "served.json").write_text(json.dumps(state))


def test_models_lists_each_versions_framework(short_lived_keys):
    _, _, env, _ = short_lived_keys
    listed = _shell("bin/relay models digits", env)
    assert listed.returncode == 0, listed.stderr
    header, row = (next(line for line in listed.stdout.splitlines() if marker in line)
                   for marker in ("framework", "v0.1.0"))
    assert "pytorch" in row  # register_onnx records the framework, as the register step does


def test_printed_paths_are_never_wrapped_without_a_terminal(tmp_path):
    """rich wraps at 80 columns without a terminal: a path split over two lines breaks a copied command."""
    home = tmp_path / ("a-directory-name-long-enough-that-the-registry-path-passes-eighty-columns" * 2) / "home"
    env = {**os.environ, **settings_env(make_settings(home))}
    listed = _shell("bin/relay models digits", env)
    assert listed.returncode == 0, listed.stderr
    assert f"no registered versions of digits in {home / 'registry'}" in listed.stdout.splitlines()


def test_a_task_on_the_v2_server_is_served_stopped_started_and_predicted_from_a_plain_shell(trained_run, tmp_path):
    """deploy.server: kserve, through the same commands: status, predict, the documented client line with
    `relay serve key`, stop, and start (which serves the default again from the registry)."""
    from components.deploy.servers import model_server

    spec, run = trained_run
    spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"min_accuracy": 0.5}),
                                   "deploy": spec.deploy.model_copy(update={"server": "kserve"})})
    settings = make_settings(tmp_path / "relay-home")
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, **settings_env(settings)}
    image = load_split(run.data, "test", spec.dataset.classes)[2][0]
    url = f"http://127.0.0.1:{settings.v2_http_port}/predictions/digits"
    try:
        deploy_local(spec, register_onnx(settings, spec, run.optimized_model, "run-1"), run.data, settings)
        status = _shell("bin/relay serve status", env)
        assert "The V2 server (MLServer): running" in status.stdout, status.stdout + status.stderr
        assert f"digits: serving v0.1.0; default v0.1.0 ({url})" in status.stdout
        assert "TorchServe" not in status.stdout  # nothing was deployed to it, and it is not the default
        predicted = _shell(f"bin/relay predict {image}", env)
        assert predicted.returncode == 0 and " class " in predicted.stdout, predicted.stderr
        answered = _shell(f'curl -sS --fail-with-body -H "Authorization: Bearer $(bin/relay serve key)" -T {image} '
                          f'{url}', env)
        assert answered.returncode == 0 and json.loads(answered.stdout)["class"] in spec.dataset.classes, answered
        refused = _shell(f"curl -sS -o /dev/null -w '%{{http_code}}' -T {image} {url}", env)
        assert refused.stdout == "401"
        stopped = _shell("bin/relay serve stop", env)
        assert "the V2 server (MLServer) stopped" in stopped.stdout
        after = _shell("bin/relay serve status", env)
        assert "The V2 server (MLServer): not running" in after.stdout
        assert "digits: default v0.1.0; `relay serve start` serves it again" in after.stdout
        started = _shell("bin/relay serve start", env)
        assert started.returncode == 0, started.stderr
        assert "digits: serving v0.1.0 (default v0.1.0) on the V2 server (MLServer)" in started.stdout
        assert _shell(f"bin/relay predict {image}", env).returncode == 0
    finally:
        model_server("kserve", settings).stop()
