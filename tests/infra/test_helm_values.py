"""Airflow on Kubernetes: the official Helm chart's values (infra/argocd/airflow.yaml), validated offline against
the chart's own values schema (vendored with its version in infra/helm/), and what the values must say for Relay
(its executor, its broker, Argo CD's rules). No Helm binary or API server exists here; see docs/operations.md."""

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import PROJECT

ARGOCD_APPS = PROJECT / "infra" / "argocd" / "airflow.yaml"
WORKERS_RBAC = PROJECT / "infra" / "k8s" / "workers" / "rbac.yaml"


def airflow_app() -> dict:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(ARGOCD_APPS.read_text())}["relay-airflow"]


def chart_schema(version: str) -> dict:
    folder = PROJECT / "infra" / "helm" / f"airflow-chart-{version}"
    assert folder.is_dir(), f"no values schema vendored for chart {version} (expected {folder})"
    return json.loads((folder / "values.schema.json").read_text())


def schema_errors(values: dict, schema: dict) -> list[str]:
    """What Helm's own check finds: the values against the chart's JSON schema."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(values)]


def undeclared_keys(values: dict, schema: dict, node: dict | None = None, where: str = "") -> list[str]:
    """Keys the chart's schema does not declare. Helm ignores them without a word where the schema leaves
    additionalProperties open (as at its top level), so a misspelt key would silently configure nothing."""
    node = schema if node is None else node
    while "$ref" in node:  # the chart's refs point into its own definitions
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    declared = node.get("properties")
    if not isinstance(values, dict) or not declared:
        return []
    found = []
    for key, value in values.items():
        if key in declared:
            found += undeclared_keys(value, schema, declared[key], f"{where}{key}.")
        elif not node.get("additionalProperties") and not node.get("patternProperties"):
            found.append(f"{where}{key}")
    return found


def test_the_helm_values_validate_against_the_schema_of_the_chart_version_they_pin():
    source = airflow_app()["spec"]["source"]
    assert (source["repoURL"], source["chart"]) == ("https://airflow.apache.org", "airflow")
    schema = chart_schema(source["targetRevision"])
    values = source["helm"]["valuesObject"]
    assert schema_errors(values, schema) == []
    assert undeclared_keys(values, schema) == []


@pytest.mark.parametrize("mistake, expected", [
    ({"workers": {"celery": {"replicas": "two"}}}, "workers.celery.replicas: 'two' is not of type"),
    ({"executor": "Celery"}, "executor: 'Celery' does not match"),
    ({"redis": {"passwordSecret": "x"}}, "redis: Additional properties are not allowed"),
])
def test_a_value_of_the_wrong_type_or_name_is_refused_by_the_schema(mistake, expected):
    values = {**airflow_app()["spec"]["source"]["helm"]["valuesObject"], **mistake}
    errors = schema_errors(values, chart_schema(airflow_app()["spec"]["source"]["targetRevision"]))
    assert any(error.startswith(expected) for error in errors), errors


def test_a_misspelt_top_level_key_that_helm_would_ignore_is_caught():
    values = {**airflow_app()["spec"]["source"]["helm"]["valuesObject"], "executer": "CeleryExecutor"}
    schema = chart_schema(airflow_app()["spec"]["source"]["targetRevision"])
    assert schema_errors(values, schema) == []  # the chart's schema alone lets it through
    assert undeclared_keys(values, schema) == ["executer"]


def test_airflow_runs_celery_workers_with_a_fixed_broker_password_and_what_argo_cd_needs():
    import airflow

    values = airflow_app()["spec"]["source"]["helm"]["valuesObject"]
    assert values["executor"] == "CeleryExecutor"
    importlib.import_module("airflow.providers.celery.executors.celery_executor")  # the image's locked provider
    assert values["airflowVersion"] == airflow.__version__
    assert values["workers"]["celery"]["replicas"] >= 2
    # The chart refuses a Redis password secret without the broker URL secret (its templates/check-values.yaml);
    # a generated password would change on every Argo CD render.
    assert values["redis"]["passwordSecretName"] and values["data"]["brokerUrlSecretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key]
    for job in ("createUserJob", "migrateDatabaseJob"):  # the chart's docs: "Installing ... with Argo CD"
        assert values[job]["useHelmHooks"] is False and values[job]["applyCustomEnv"] is False
    assert values["migrateDatabaseJob"]["jobAnnotations"] == {"argocd.argoproj.io/hook": "Sync"}
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["RELAY_EXECUTION"] == "kubernetes" and env["RELAY_RUNS_URI"].startswith("s3://")
    assert env["RELAY_SHARDS_URI"].startswith("s3://")  # training may stream shards: pods share no disk


def test_production_airflow_uses_a_real_auth_manager_that_the_image_has_and_no_default_user():
    """SimpleAuthManager (`make airflow`) is for development; the Helm values configure FabAuthManager,
    which must import from the locked environment the images install."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager

    values = airflow_app()["spec"]["source"]["helm"]["valuesObject"]
    dotted = values["config"]["core"]["auth_manager"]
    assert "SimpleAuthManager" not in dotted
    assert values["createUserJob"]["enabled"] is False and "defaultUser" not in values.get("webserver", {})
    module, _, name = dotted.rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), BaseAuthManager)


def test_the_celery_workers_may_start_step_pods_and_train_jobs_in_the_workers_namespace_and_nothing_more():
    app = airflow_app()
    role, binding = yaml.safe_load_all(WORKERS_RBAC.read_text())
    # The chart names the workers' service account <release>-worker; Argo CD's release is the Application's name.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{app['metadata']['name']}-worker",
                                    "namespace": app["spec"]["destination"]["namespace"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    allowed = {(group, resource): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert {"create", "get", "watch", "delete"} <= allowed[("", "pods")]
    assert {"create", "get", "delete"} <= allowed[("trainer.kubeflow.org", "trainjobs")]
    assert not any(resource in ("secrets", "pods/exec") or "*" in verbs | {resource}
                   for (_, resource), verbs in allowed.items())
