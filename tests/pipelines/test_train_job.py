"""Distributed training on Kubernetes: the pod-mode DAG's train step as a Kubeflow TrainJob, validated offline
against the CRD's own schema (infra/kubeflow, Kubeflow Trainer v2.3.0). No API server exists here: the checkov
scan of its node pod is in tests/infra/test_k8s.py."""

import copy
import re

import pytest
import yaml

from components.errors import RelayError
from pipelines.train_job import GPU_TOLERATION, crd_schema, train_job_finished, train_job_name, validate_train_job
from tests.conftest import train_job_of_dag

RUN_ID = "manual__2026-11-30T20:00:00.123456+00:00"


def _crd_rule_pattern() -> str:
    """The name rule of the vendored CRD (a CEL `matches`), as a regular expression."""
    rules = crd_schema()["x-kubernetes-validations"]
    (rule,) = [r["rule"] for r in rules if "matches" in r["rule"]]
    return re.search(r"matches\('(.+)'\)", rule).group(1)


def test_with_processes_the_pod_mode_train_step_is_a_train_job_created_and_watched(monkeypatch, tmp_path):
    from airflow.providers.cncf.kubernetes.operators.resource import KubernetesCreateResourceOperator

    from pipelines.airflow_dag import build_dag

    job = train_job_of_dag(tmp_path, RUN_ID, **{"training.accelerator": "gpu"})
    validate_train_job(job)
    assert job["metadata"]["name"] == train_job_name("digits", RUN_ID)
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}
    trainer = job["spec"]["trainer"]
    assert trainer["command"] == ["relay"] and trainer["args"][:3] == ["step", "train", "--run-uri"]
    assert trainer["args"][3] == "s3://relay/runs/digits/airflow-manual__2026-11-30T20-00-00.123456-00-00"
    assert trainer["numNodes"] == 1 and trainer["numProcPerNode"] == 2
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"  # one GPU per rank
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "2"
    (patch,) = job["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == [GPU_TOLERATION] and pod["serviceAccountName"] == "relay-worker"

    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    dag = build_dag(tmp_path / "digits.yaml")
    create, watch = dag.get_task("train"), dag.get_task("train_finished")
    assert isinstance(create, KubernetesCreateResourceOperator) and create.custom_resource_definition
    assert create.retries == 0  # a TrainJob of the same name exists after a failure: rerun by clearing the tasks
    assert watch.mode == "reschedule"  # no worker slot held while the ranks train
    assert dag.get_task("validate").downstream_task_ids == {"train"}
    assert create.downstream_task_ids == {"train_finished"} and watch.downstream_task_ids == {"optimize"}


def test_on_cpus_the_train_job_asks_for_no_gpu_and_tolerates_no_taint(tmp_path):
    job = train_job_of_dag(tmp_path, RUN_ID)
    validate_train_job(job)
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert "tolerations" not in yaml.safe_dump(job)


@pytest.mark.parametrize(("task", "run_id"), [
    ("digits", RUN_ID),
    ("a_task_name_that_is_far_too_long_for_any_kubernetes_label_at_all", RUN_ID),
    ("x", "scheduled__2026-01-01T00:00:00+00:00"),
])
def test_train_job_names_follow_the_crds_rule_and_differ_per_run(task, run_id):
    name = train_job_name(task, run_id)
    assert re.fullmatch(_crd_rule_pattern(), name) and len(name) <= 63
    assert train_job_name(task, run_id + "x") != name


def test_a_train_job_that_breaks_the_crd_schema_is_one_error_naming_the_field(tmp_path):
    job = train_job_of_dag(tmp_path, RUN_ID)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["trainer"]["numProcPerNode"] = "two"
    with pytest.raises(RelayError, match=r"^TrainJob: spec\.trainer\.numProcPerNode: 'two' is not of type 'integer'"):
        validate_train_job(wrong_type)
    no_runtime = copy.deepcopy(job)
    del no_runtime["spec"]["runtimeRef"]
    with pytest.raises(RelayError, match=r"spec: 'runtimeRef' is a required property"):
        validate_train_job(no_runtime)
    long_name = copy.deepcopy(job)
    long_name["metadata"]["name"] = "relay-" + "x" * 60
    with pytest.raises(RelayError, match=r"metadata.name .* at most 63 characters"):
        validate_train_job(long_name)


def _status(*conditions: dict) -> dict:
    """A TrainJob status with these conditions, checked against the CRD's status schema."""
    from jsonschema import Draft7Validator

    status = {"conditions": [{"lastTransitionTime": "2026-11-30T20:00:00Z", "status": "True", "message": "",
                              "reason": "", **condition} for condition in conditions]}
    Draft7Validator(crd_schema()["properties"]["status"]).validate(status)
    return status


def test_the_watch_ends_when_the_train_job_completes_and_fails_the_run_in_one_line_when_it_fails():
    assert train_job_finished({}, "j") is False  # just created: no status yet
    assert train_job_finished(_status({"type": "Suspended", "status": "False", "reason": "Resumed"}), "j") is False
    assert train_job_finished(_status({"type": "Complete", "reason": "JobsCompleted"}), "j") is True
    failed = _status({"type": "Failed", "reason": "FailedJobs",
                      "message": "jobset failed: node-0 BackoffLimitExceeded"})
    with pytest.raises(RelayError) as error:
        train_job_finished(failed, "relay-digits-train-0123456789")
    assert str(error.value).startswith("TrainJob relay-digits-train-0123456789 failed (FailedJobs): jobset failed: "
                                       "node-0 BackoffLimitExceeded; its pods' logs say more")
    assert "\n" not in str(error.value)
