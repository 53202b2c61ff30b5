"""The train step as a Kubeflow Trainer TrainJob: pod mode (RELAY_EXECUTION=kubernetes) with
``training.distributed.processes`` > 1.

Why TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2) rather than PyTorchJob (kubeflow.org/v1): the
Training Operator v1 that serves PyTorchJob is the legacy project ("This page is about Kubeflow Training Operator
V1, for the latest information check the Kubeflow Trainer V2 documentation",
https://kubeflow.org/docs/components/trainer/legacy-v1), and Kubeflow's migration guide replaces PyTorchJob with a
TrainJob on the torch runtime (https://kubeflow.org/docs/components/trainer/operator-guides/migration). The
TrainJob references the ``torch-distributed`` ClusterTrainingRuntime that Kubeflow Trainer installs, and patches its
pod (security, volumes, GPU tolerations) through ``runtimePatches``.

The job's one node runs the same command as the train pod (``relay step train``), which starts the ranks under
torchrun (``components.train.torchrun``), or a TensorFlow spec's MultiWorkerMirroredStrategy workers
(``components.train.tf_workers``: Kubeflow Trainer v2 ships no TensorFlow runtime, and the node only needs the
pod). The manifest is validated offline against the CRD's own OpenAPI schema,
vendored in ``infra/kubeflow/`` with its version and source.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

import yaml

from components.errors import RelayError
from components.settings import PROJECT_DIR
from components.spec import TaskSpec

CRD_FILE = PROJECT_DIR / "infra" / "kubeflow" / "trainer.kubeflow.org_trainjobs.yaml"
GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "torch-distributed"  # Kubeflow Trainer's ClusterTrainingRuntime for PyTorch (its mlPolicy: torch)
NODE = "node"  # the runtime's replicated job and container
PATCH_MANAGER = "relay.dev/airflow"
# The taint GPU node pools carry (NVIDIA's device plugin, GKE, EKS): a GPU training pod must tolerate it.
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def train_job_name(task: str, run_id: str) -> str:
    """A TrainJob name for one run of ``task``: an RFC 1035 label (the CRD's rule) of at most 63 characters,
    readable where it can be and unique per run id."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]+", "-", f"relay-{task}-train".lower())[:63 - len(digest) - 1].strip("-")
    return f"{stem}-{digest}"


def train_job(spec: TaskSpec, name: str, namespace: str, image: str, arguments: list[str], env: list[dict],
              container_security: dict, pod_security: dict, volumes: list[dict], mounts: list[dict],
              service_account: str) -> dict:
    """The TrainJob that runs ``relay ARGUMENTS`` (the train step) with the spec's processes, GPUs and
    tolerations, in the pod setting the other steps' pods have (dicts in the Kubernetes API's JSON form)."""
    processes = spec.training.distributed.processes
    requests = {"cpu": str(processes), "memory": "4Gi"}
    limits = {"cpu": str(2 * processes), "memory": "8Gi"}
    # Hardened beyond the step pods: a read-only root with /tmp on an emptyDir, and the runtime's seccomp profile.
    pod: dict = {"serviceAccountName": service_account,
                 "securityContext": {**pod_security, "seccompProfile": {"type": "RuntimeDefault"}},
                 "volumes": [*volumes, {"name": "scratch", "emptyDir": {}}],
                 "containers": [{"name": NODE,
                                 "securityContext": {**container_security, "readOnlyRootFilesystem": True},
                                 "volumeMounts": [*mounts, {"name": "scratch", "mountPath": "/tmp"}]}]}
    if spec.training.accelerator == "gpu":  # one GPU per rank
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(processes)
        pod["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "relay", "relay.dev/task": spec.name}},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "ClusterTrainingRuntime", "name": RUNTIME},
            "trainer": {"image": image, "command": ["relay"], "args": arguments, "env": env, "numNodes": 1,
                        "numProcPerNode": processes,
                        "resourcesPerNode": {"requests": requests, "limits": limits}},
            "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]}}}}],
        },
    }


@cache
def crd_schema() -> dict:
    """The vendored TrainJob CRD's OpenAPI schema (read once)."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    (served,) = [version for version in crd["spec"]["versions"] if version["name"] == VERSION]
    return served["schema"]["openAPIV3Schema"]


def validate_train_job(manifest: dict, source: str | Path = "TrainJob") -> None:
    """Check ``manifest`` against the TrainJob CRD's OpenAPI schema (and its name rule); one error naming the
    field. The schema's CEL rules other than the name's are the API server's to check."""
    from jsonschema import Draft7Validator

    errors = sorted(Draft7Validator(crd_schema()).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        field = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        raise RelayError(f"{source}: {field}: {first.message} (TrainJob CRD {VERSION}, {CRD_FILE.name})")
    name = manifest["metadata"]["name"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        raise RelayError(f"{source}: metadata.name {name!r} must be an RFC 1035 label of at most 63 characters")


def train_job_finished(train_job_status: dict, name: str) -> bool:
    """Whether a TrainJob (its ``status``, as the API returns it) has completed; its failure as one error."""
    conditions = {c.get("type"): c for c in train_job_status.get("conditions", []) if c.get("status") == "True"}
    if "Failed" in conditions:
        failed = conditions["Failed"]
        raise RelayError(f"TrainJob {name} failed ({failed.get('reason', 'no reason given')}): "
                         f"{failed.get('message', '')}".rstrip(": ") + "; its pods' logs say more "
                         f"(kubectl logs -l jobset.sigs.k8s.io/jobset-name={name})")
    return "Complete" in conditions
