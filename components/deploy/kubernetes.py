"""The optional live check after a GitOps commit: with a kubeconfig, wait for Argo CD's rollout of the
pinned version through the kubernetes client, then smoke-test a prediction through the Service.

Relay never applies manifests itself (Argo CD does). No Kubernetes API server runs on Relay's CI
machines, so there this says so plainly and the promotion stops after the commit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from components.errors import ServingError

DEPLOYMENT = "torchserve"


def kubeconfig_available() -> bool:
    paths = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")).split(os.pathsep)
    return any(Path(path).is_file() for path in paths if path)


def _load_kubeconfig() -> None:
    """The kubernetes client's configuration from the current KUBECONFIG (the client's own default is the one
    it read when it was first imported)."""
    from kubernetes import config

    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def _pinned(core, namespace: str, deployment) -> str | None:
    for source in deployment.spec.template.spec.containers[0].env_from or []:
        if source.config_map_ref and source.config_map_ref.name.startswith("relay-model"):
            return core.read_namespaced_config_map(source.config_map_ref.name, namespace).data.get("MODEL_VERSION")
    return None


def wait_for_rollout(env: str, version: str, timeout: float = 600) -> str:
    """Block until the env's Deployment runs ``version`` on every replica; return a one-line status."""
    from kubernetes import client
    from urllib3.exceptions import HTTPError

    _load_kubeconfig()
    apps, core = client.AppsV1Api(), client.CoreV1Api()
    namespace = f"relay-{env}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            deployment = apps.read_namespaced_deployment(DEPLOYMENT, namespace)
            status, wanted = deployment.status, deployment.spec.replicas or 0
            if (_pinned(core, namespace, deployment) == version
                    and (status.observed_generation or 0) >= deployment.metadata.generation
                    and status.updated_replicas == wanted and status.available_replicas == wanted):
                return f"rolled out: {namespace}/{DEPLOYMENT} runs {version} on {wanted} replica(s)"
            time.sleep(5)
    except (client.ApiException, HTTPError, OSError) as error:
        raise ServingError(f"cannot follow the rollout in {namespace}: {str(error).splitlines()[0]}") from None
    raise ServingError(f"{namespace}/{DEPLOYMENT} did not roll out {version} within {timeout:.0f}s: "
                       "check the Argo CD application and the pods' events")


def smoke_predict(env: str, image: bytes, task: str) -> dict:
    """POST ``image`` through the Service (API-server proxy) with the inference key read from a pod."""
    from kubernetes import client
    from kubernetes.stream import stream

    _load_kubeconfig()
    core = client.CoreV1Api()
    namespace = f"relay-{env}"
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={DEPLOYMENT}").items
    ready = [pod for pod in pods if pod.status.phase == "Running"]
    if not ready:
        raise ServingError(f"no running {DEPLOYMENT} pod in {namespace} to read the inference key from")
    keys = stream(core.connect_get_namespaced_pod_exec, ready[0].metadata.name, namespace, container=DEPLOYMENT,
                  command=["cat", "/tmp/key_file.json"], stderr=False, stdin=False, stdout=True, tty=False)
    key = json.loads(keys)["inference"]["key"]
    api = core.api_client
    response = api.call_api(f"/api/v1/namespaces/{namespace}/services/{DEPLOYMENT}:inference/proxy/predictions/{task}",
                            "POST", header_params={"Authorization": f"Bearer {key}", "Content-Type": "image/png"},
                            body=image, auth_settings=["BearerToken"], _preload_content=False)
    return json.loads(response.data)


def live_check(task: str, env: str, version: str, smoke_image: bytes | None) -> str:
    """Wait for the rollout and smoke-test it when a kubeconfig exists; otherwise say why not."""
    if not kubeconfig_available():
        return f"no kubeconfig here: stopped after the commit; Argo CD applies it to relay-{env}"
    status = wait_for_rollout(env, version)
    if smoke_image is not None:
        status += f"; smoke prediction through the Service: class {smoke_predict(env, smoke_image, task)['class']}"
    return status
