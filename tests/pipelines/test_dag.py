"""The DAG only wires steps: check its shape, its Params form and that a bad param fails fast."""

import pytest

from tests.conftest import PROJECT


@pytest.fixture(scope="module")
def dag():
    from pipelines.airflow_dag import build_dag
    from pipelines.spec import spec_path

    return build_dag(spec_path("digits"))


def test_one_dag_per_spec_from_the_dag_file():
    import runpy

    namespace = runpy.run_path(str(PROJECT / "dags" / "relay_pipelines.py"))
    assert "relay_digits" in namespace and namespace["relay_digits"].dag_id == "relay_digits"


def test_tasks_run_in_pipeline_order(dag):
    order = ["data", "validate", "train", "optimize", "gate", "register", "deploy"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    assert dag.get_task("gate").task_type == "_ShortCircuitDecoratedOperator"
    assert dag.schedule == "@weekly"


def test_params_form_offers_framework_epochs_and_thresholds(dag):
    params = dag.params
    assert params.get_param("framework").schema["enum"] == ["pytorch", "tensorflow"]
    assert params["epochs"] == 12 and params.get_param("epochs").schema["type"] == "integer"
    for name in ("max_accuracy_drop_pp", "min_agreement", "min_accuracy", "champion_tolerance_pp"):
        assert params.get_param(name).schema["type"] == "number"


def test_bad_param_value_fails_validation(dag):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="jax"):
        dag.params.get_param("framework").resolve("jax")
    with pytest.raises(ParamValidationError):
        dag.params.get_param("epochs").resolve(0)
    assert dag.params.get_param("framework").resolve("tensorflow") == "tensorflow"
