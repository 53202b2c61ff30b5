"""The optional live check. No API server can run here: without a kubeconfig it says so; with one that
points at nothing it fails with one clear line instead of hanging or passing."""

import pytest

from components.deploy.kubernetes import kubeconfig_available, live_check
from components.errors import ServingError

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:%d"}
  name: nowhere
contexts:
- context: {cluster: nowhere, user: nobody}
  name: nowhere
current-context: nowhere
users:
- name: nobody
  user: {token: not-a-token}
"""


def test_without_kubeconfig_it_stops_after_the_commit(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert not kubeconfig_available()
    assert live_check("digits", "staging", "v0.1.0", None) == (
        "no kubeconfig here: stopped after the commit; Argo CD applies it to relay-staging")


def test_unreachable_cluster_is_one_clear_error(monkeypatch, tmp_path):
    from tests.conftest import free_ports

    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG % free_ports(1)[0])
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert kubeconfig_available()
    with pytest.raises(ServingError, match="cannot follow the rollout in relay-production"):
        live_check("digits", "production", "v0.1.0", None)
