"""What the infrastructure tests check, rendered once, and one checkov scan over all of it.

checkov spends most of its 8-12 s per call starting up, so the Kubernetes manifests, the Terraform and the
Dockerfile are scanned together, once per session, and each test reads the checks of its own files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT, train_job_of_dag

K8S = PROJECT / "infra" / "k8s"
TERRAFORM_DIR = PROJECT / "infra" / "terraform"
DOCKERFILE = PROJECT / "Dockerfile"
OVERLAYS = ["staging", "production"]


def kustomize(folder: Path) -> str:
    return subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout


def staging_with(component: str, folder: Path) -> Path:
    """An overlay of staging with one of Relay's components (tfserving, kserve), as a team writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "relay-staging",
        "resources": [os.path.relpath(K8S / "overlays" / "staging", folder)],
        "components": [os.path.relpath(K8S / "components" / component, folder)]}))
    return folder


# What KServe's controller sets on the predictor pod beside the predictor's own fields, not Relay's to set.
PREDICTOR_ONLY = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "labels", "annotations")


def predictor_pod(inference_service: dict) -> dict:
    """The pod KServe (RawDeployment) makes from the InferenceService's predictor, as far as Relay sets it: the
    predictor's pod fields, labels and annotations. checkov has no InferenceService checks, so this is what it
    scans."""
    predictor = inference_service["spec"]["predictor"]
    metadata = inference_service["metadata"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{metadata['name']}-predictor", "namespace": metadata["namespace"],
                         "labels": predictor["labels"], "annotations": predictor.get("annotations", {})},
            "spec": {key: value for key, value in predictor.items() if key not in PREDICTOR_ONLY}}


def rendered_manifests(scratch: Path) -> dict[str, str]:
    """Each kustomization Relay ships (or documents), rendered: name → YAML text. The KServe overlay is split:
    its InferenceService (``kserve-inferenceservice``, checked against KServe's CRD), the predictor pod made from
    it (``kserve-predictor-pod``) and the rest (``staging-kserve``)."""
    texts = {env: kustomize(K8S / "overlays" / env) for env in OVERLAYS}
    texts["staging-tfserving"] = kustomize(staging_with("tfserving", scratch / "staging-tfserving"))
    kserve_docs = list(yaml.safe_load_all(kustomize(staging_with("kserve", scratch / "staging-kserve"))))
    (isvc,) = [doc for doc in kserve_docs if doc["kind"] == "InferenceService"]
    texts["staging-kserve"] = yaml.safe_dump_all([doc for doc in kserve_docs if doc is not isvc])
    texts["kserve-inferenceservice"] = yaml.safe_dump(isvc)
    texts["kserve-predictor-pod"] = yaml.safe_dump(predictor_pod(isvc))
    texts["workers"] = kustomize(K8S / "workers")
    spec_dir = scratch / "trainjob-spec"
    spec_dir.mkdir()
    texts["trainjob-node"] = yaml.safe_dump(train_job_node_pod(train_job_of_dag(spec_dir, "scheduled__2026-12-01",
                                                                                **{"training.accelerator": "gpu"})))
    return texts


def train_job_node_pod(train_job: dict) -> dict:
    """The pod a TrainJob's node runs, as far as Relay sets it: the runtime patch's pod, with the trainer's image,
    command, arguments, environment and resources in its container. checkov has no TrainJob checks, so this is
    what it scans (Kubeflow Trainer's torch runtime adds its own PET_* environment and the rendezvous)."""
    trainer = train_job["spec"]["trainer"]
    (patch,) = train_job["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container = {**container, "image": trainer["image"], "command": trainer["command"], "args": trainer["args"],
                 "env": trainer["env"], "resources": trainer["resourcesPerNode"]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{train_job['metadata']['name']}-node-0-0", "namespace": "relay"},
            "spec": {**pod, "containers": [container], "restartPolicy": "Never"}}


@dataclass(frozen=True)
class CheckovScan:
    """checkov's checks over the scanned tree, each with its file (``/k8s/staging.yaml``, ``/terraform/…``)."""

    checks: dict[str, list[dict]]  # "passed" / "failed" / "skipped" → checks

    def summary(self, prefix: str) -> dict[str, int | list]:
        """Counts for the files under ``prefix``, and the failed checks themselves (to print on failure)."""
        mine = {outcome: [c for c in checks if c["file_path"].startswith(prefix)]
                for outcome, checks in self.checks.items()}
        return {**{outcome: len(found) for outcome, found in mine.items()},
                "failures": [(c["check_id"], c["check_name"], c["file_path"], c.get("resource"))
                             for c in mine["failed"]]}


@pytest.fixture(scope="session")
def scanned_manifests(tmp_path_factory) -> dict[str, str]:
    """The rendered kustomizations; none without kubectl (the Kubernetes tests are skipped then)."""
    if shutil.which("kubectl") is None:
        return {}
    return rendered_manifests(tmp_path_factory.mktemp("overlays"))


@pytest.fixture(scope="session")
def checkov_scan(tmp_path_factory, scanned_manifests) -> CheckovScan:
    """One offline checkov run (from .venv-tools) over the manifests, the Terraform and the Dockerfile."""
    tree = tmp_path_factory.mktemp("checkov")
    (tree / "k8s").mkdir()
    for name, text in scanned_manifests.items():
        (tree / "k8s" / f"{name}.yaml").write_text(text)
    shutil.copytree(TERRAFORM_DIR, tree / "terraform", ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copy(DOCKERFILE, tree / "Dockerfile")
    result = subprocess.run([str(PROJECT / ".venv-tools" / "bin" / "checkov"), "-d", str(tree),
                             "--framework", "kubernetes", "terraform", "dockerfile", "--skip-download", "--compact",
                             "-o", "json"], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-2000:]  # 1: some check failed
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    expected = {"terraform", "dockerfile"} | ({"kubernetes"} if scanned_manifests else set())
    assert {report["check_type"] for report in reports} == expected, result.stderr[-2000:]
    checks = {outcome: [check for report in reports for check in report["results"][f"{outcome}_checks"]]
              for outcome in ("passed", "failed", "skipped")}
    return CheckovScan(checks)
