"""Serving manifests, validated offline: kustomize renders each overlay, kubernetes-validate checks it
strictly against the Kubernetes schemas, and checkov finds no failures. No API server exists here."""

import json
import re
import subprocess

import pytest
import yaml

from tests.conftest import PROJECT, needs_kubectl
from tests.infra.conftest import OVERLAYS

pytestmark = needs_kubectl

TOOLS = PROJECT / ".venv-tools" / "bin"
KSERVE_CRD = PROJECT / "infra" / "kserve" / "serving.kserve.io_inferenceservices.yaml"  # v0.20.0, vendored


def docs_of(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def assert_strict_schema(name: str, scanned_manifests, tmp_path) -> None:
    """kubernetes-validate --strict over a rendered manifest."""
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(scanned_manifests[name])
    validate = subprocess.run([str(TOOLS / "kubernetes-validate"), "--strict", "-k", "1.32.0", str(rendered)],
                              capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr


def assert_valid(name: str, scanned_manifests, checkov_scan, tmp_path) -> dict:
    """kubernetes-validate --strict over a rendered kustomization, and its checks in the session's checkov scan;
    returns checkov's counts for it."""
    assert_strict_schema(name, scanned_manifests, tmp_path)
    summary = checkov_scan.summary(f"/k8s/{name}.yaml")
    assert summary["failed"] == 0, summary["failures"]
    return summary


@pytest.mark.parametrize("env", OVERLAYS)
def test_overlay_passes_strict_schema_validation_and_checkov(env, scanned_manifests, checkov_scan, tmp_path):
    assert assert_valid(env, scanned_manifests, checkov_scan, tmp_path)["passed"] > 50


@pytest.mark.parametrize("env", OVERLAYS)
def test_serving_pod_is_locked_down_and_probes_work_with_token_auth(env, scanned_manifests):
    docs = docs_of(scanned_manifests[env])
    assert {doc["metadata"]["namespace"] for doc in docs} == {f"relay-{env}"}
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
    (server,) = pod["containers"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}  # /ping needs the token
    (fetch,) = pod["initContainers"]
    assert fetch["args"][0].startswith('relay fetch-model "$MODEL_TASK" --version "$MODEL_VERSION"')
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"):
        assert len(by_kind(docs, kind)) == 1, kind


def test_torchserve_config_keeps_token_auth_and_management_inside_the_pod(scanned_manifests):
    docs = docs_of(scanned_manifests["production"])
    config = next(doc for doc in by_kind(docs, "ConfigMap") if "config.properties" in doc["data"])
    properties = config["data"]["config.properties"]
    assert "disable_token_authorization" not in properties and "enable_model_api=false" in properties
    assert "management_address=http://127.0.0.1:8081" in properties and "metrics_mode=prometheus" in properties
    heap_mi = int(re.search(r"-Xmx(\d+)m", properties).group(1))
    (deployment,) = by_kind(docs, "Deployment")
    limit = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert limit == "1Gi" and heap_mi < 1024
    (service,) = by_kind(docs, "Service")
    assert {port["port"] for port in service["spec"]["ports"]} == {8080, 8082}  # never the management port


def test_production_runs_more_replicas_than_staging(scanned_manifests):
    replicas = {env: by_kind(docs_of(scanned_manifests[env]), "HorizontalPodAutoscaler")[0]["spec"]["minReplicas"] for env in OVERLAYS}
    assert replicas == {"staging": 2, "production": 3}


def test_argocd_applications_watch_the_overlays():
    for env in OVERLAYS:
        app = yaml.safe_load((PROJECT / "infra" / "argocd" / f"digits-{env}.yaml").read_text())
        assert app["kind"] == "Application" and app["spec"]["source"]["path"] == f"k8s/digits/overlays/{env}"
        assert app["spec"]["destination"]["namespace"] == f"relay-{env}"


def test_tfserving_component_renders_validates_and_serves_the_models_config(scanned_manifests, checkov_scan,
                                                                            tmp_path):
    assert_valid("staging-tfserving", scanned_manifests, checkov_scan, tmp_path)
    docs = docs_of(scanned_manifests["staging-tfserving"])
    tfserving = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "tfserving")
    pod = tfserving["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == "tensorflow/serving:2.19.0"
    assert "--model_config_file=/models/tfserving/models.config" in server["args"]
    assert pod["initContainers"][0]["args"][0].endswith("--to /models --tfserving")
    assert tfserving["metadata"]["namespace"] == "relay-staging"


def test_worker_namespace_for_step_pods_validates(scanned_manifests, checkov_scan, tmp_path):
    assert_valid("workers", scanned_manifests, checkov_scan, tmp_path)
    docs = {doc["kind"]: doc for doc in docs_of(scanned_manifests["workers"])}
    # The names the pod-mode DAG uses (pipelines/airflow_dag.py).
    assert docs["ServiceAccount"]["metadata"]["name"] == "relay-worker"
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == "relay-home"
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kserve_component_replaces_torchserve_and_validates(scanned_manifests, checkov_scan, tmp_path):
    assert assert_valid("staging-kserve", scanned_manifests, checkov_scan, tmp_path)["passed"] > 0  # pods: below
    docs = docs_of(scanned_manifests["staging-kserve"])
    assert not [d for d in docs if "torchserve" in d["metadata"]["name"]]  # KServe makes the Deployment
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "v2server"}
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {8080, 8081}


def test_the_inference_service_matches_kserves_crd_schema_and_reads_the_pinned_version(scanned_manifests):
    from jsonschema import Draft7Validator

    (served,) = [v for v in yaml.safe_load(KSERVE_CRD.read_text())["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = served["schema"]["openAPIV3Schema"]
    (isvc,) = docs_of(scanned_manifests["kserve-inferenceservice"])
    assert list(Draft7Validator(schema).iter_errors(isvc)) == []
    wrong = json.loads(json.dumps(isvc))
    wrong["spec"]["predictor"]["minReplicas"] = "two"
    (error,) = Draft7Validator(schema).iter_errors(wrong)
    assert list(error.absolute_path) == ["spec", "predictor", "minReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    (fetch,) = predictor["initContainers"]
    assert fetch["args"][0].endswith("--to /model-store --v2")
    # The version is the relay-model ConfigMap's, which the overlay (and so the promotion commit) pins.
    (config,) = [d for d in docs_of(scanned_manifests["staging-kserve"]) if d["metadata"]["name"].startswith(
        "relay-model")]
    assert fetch["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert "MODEL_VERSION" in config["data"]
    (server,) = predictor["containers"]
    assert server["image"].endswith("/relay-v2server:0.1.0") and "--token-file" in server["args"]


def test_the_v2_predictor_pod_passes_strict_schema_validation_and_checkov(scanned_manifests, checkov_scan, tmp_path):
    assert assert_valid("kserve-predictor-pod", scanned_manifests, checkov_scan, tmp_path)["passed"] > 50
    (pod,) = docs_of(scanned_manifests["kserve-predictor-pod"])
    for container in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False


# What checkov asks of a pod that a TrainJob cannot set or that does not apply to a training pod, and why.
TRAIN_JOB_EXEMPT = {
    "CKV_K8S_8": "liveness probe: a training pod serves nothing; it ends, and the TrainJob records how",
    "CKV_K8S_9": "readiness probe: as above",
    "CKV_K8S_15": "imagePullPolicy: not among the container fields a TrainJob v2.3.0 runtimePatch may set (env, name, "
                  "securityContext, volumeMounts); the image is pinned by digest instead",
    "CKV_K8S_38": "automountServiceAccountToken: not patchable by a TrainJob; the relay-worker ServiceAccount sets it "
                  "false (infra/k8s/workers)",
    "CKV2_K8S_6": "NetworkPolicy: the step pods of the relay namespace have none yet (their egress to S3 and git)",
}


def test_the_train_job_node_pod_passes_strict_schema_validation_and_checkov_but_what_a_train_job_cannot_set(
        scanned_manifests, checkov_scan, tmp_path):
    assert_strict_schema("trainjob-node", scanned_manifests, tmp_path)
    summary = checkov_scan.summary("/k8s/trainjob-node.yaml")
    assert {check_id for check_id, *_ in summary["failures"]} <= set(TRAIN_JOB_EXEMPT), summary["failures"]
    assert summary["passed"] > 50
    (pod,) = docs_of(scanned_manifests["trainjob-node"])
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "@sha256:" in container["image"]
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
