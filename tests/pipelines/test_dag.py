"""The DAG only wires steps: check its shape, its Params form and that a bad param fails fast."""

import pytest

from tests.conftest import PROJECT


@pytest.fixture(scope="module")
def dag():
    from pipelines.airflow_dag import build_dag
    from components.spec import spec_path

    return build_dag(spec_path("digits"))


def test_one_dag_per_spec_from_the_dag_file():
    import runpy

    namespace = runpy.run_path(str(PROJECT / "dags" / "relay_pipelines.py"))
    assert "relay_digits" in namespace and namespace["relay_digits"].dag_id == "relay_digits"
    assert runpy.run_path(str(PROJECT / "dags" / "relay_promote.py"))["relay_promote"].dag_id == "relay_promote"


def test_tasks_run_in_pipeline_order(dag):
    order = ["on_time", "route", "data", "validate", "train", "optimize", "gate", "register", "deploy"]
    assert set(dag.task_ids) == set(order) | {"bakeoff"}
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # framework=both takes the other branch: the bake-off, which ships through the same steps itself.
    assert dag.get_task("route").downstream_task_ids == {"data", "bakeoff"}
    assert dag.get_task("bakeoff").downstream_task_ids == set()
    # A failed gate fails its task (and the run), not a short-circuit that leaves the run green.
    assert dag.get_task("gate").task_type == "_PythonDecoratedOperator" and dag.get_task("gate").retries == 0
    assert dag.get_task("on_time").task_type == "_ShortCircuitDecoratedOperator"


def test_one_dag_runs_on_the_specs_cron_and_on_its_dataset_asset(dag):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    cron = dag.timetable.timetable
    assert isinstance(cron, CronTriggerTimetable) and cron.expression == "0 0 * * 0"  # @weekly
    assert cron.run_immediately is False and dag.start_date is None and dag.catchup is False
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == ["relay://datasets/digits"]
    assert dag.max_active_runs == 1


def test_a_scheduled_run_created_late_is_a_catch_up_and_trains_nothing():
    from datetime import datetime, timedelta, timezone

    from pipelines.airflow_dag import late_scheduled_run

    sunday = datetime(2026, 11, 22, tzinfo=timezone.utc)
    assert late_scheduled_run("@weekly", sunday, sunday + timedelta(seconds=3)) is None  # started on time
    assert late_scheduled_run("@weekly", sunday, sunday + timedelta(hours=16)) is None  # < 10% of a week
    reason = late_scheduled_run("@weekly", sunday, sunday + timedelta(days=3))
    assert reason and "catch-up" in reason and "Trigger the DAG" in reason
    minute = datetime(2026, 11, 24, 0, 24, tzinfo=timezone.utc)
    assert late_scheduled_run("* * * * *", minute, minute + timedelta(seconds=2)) is None
    assert late_scheduled_run("* * * * *", minute, minute + timedelta(seconds=16))


def test_params_form_offers_every_run_parameter_described_with_the_specs_values(dag):
    from components.spec import OVERRIDABLE, load_spec

    params = dag.params
    assert set(params.keys()) == set(OVERRIDABLE)
    for name in OVERRIDABLE:
        assert params.get_param(name).description, f"{name} has no description in the form"
    assert params.get_param("framework").schema["enum"] == ["pytorch", "tensorflow", "both"]  # both: a bake-off
    assert params.get_param("precision").schema["enum"] == ["mixed", "fp32"]
    assert params.get_param("quantize").schema["enum"] == ["none", "int8"]
    assert params["epochs"] == load_spec("digits").training.epochs
    assert params.get_param("epochs").schema.items() >= {"type": "integer", "minimum": 1, "maximum": 1000}.items()
    for name in ("max_accuracy_drop_pp", "min_agreement", "min_accuracy", "champion_tolerance_pp"):
        assert params.get_param(name).schema["type"] == "number"
    assert params.get_param("min_agreement").schema["maximum"] == 1


def test_bad_param_value_fails_validation(dag):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="jax"):
        dag.params.get_param("framework").resolve("jax")
    with pytest.raises(ParamValidationError):
        dag.params.get_param("epochs").resolve(0)
    assert dag.params.get_param("framework").resolve("tensorflow") == "tensorflow"


def test_pod_mode_runs_each_step_as_the_cli_command_in_the_worker_image(monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from pipelines.airflow_dag import build_dag
    from components.spec import spec_path

    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    monkeypatch.setenv("RELAY_WORKER_IMAGE", "registry.example/relay-worker:1.2.3")
    monkeypatch.setenv("RELAY_DVC_REMOTE", "s3://relay-dvc/remote")
    monkeypatch.setenv("RELAY_SHARDS_URI", "s3://relay-dvc/shards")
    dag = build_dag(spec_path("digits"))
    order = ["on_time", "data", "validate", "train", "optimize", "gate", "register", "deploy"]
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    for name in order[1:]:
        pod = dag.get_task(name)
        assert isinstance(pod, KubernetesPodOperator)
        assert pod.image == "registry.example/relay-worker:1.2.3" and pod.cmds == ["relay"]
        assert pod.arguments[:3] == ["step", name, "--run-dir"]
        assert pod.arguments[3].startswith("/var/lib/relay/runs/digits/airflow-{{ run_id")
        assert [m.mount_path for m in pod.volume_mounts] == ["/var/lib/relay"]
        assert pod.volumes[0].persistent_volume_claim.claim_name == "relay-home"
        env = {e.name: e.value for e in pod.env_vars}
        assert (env["RELAY_DVC_REMOTE"], env["RELAY_SHARDS_URI"]) == ("s3://relay-dvc/remote", "s3://relay-dvc/shards")
        assert pod.container_resources.limits["memory"] and pod.container_resources.requests["cpu"]
        assert pod.container_security_context.run_as_non_root is True
    assert dag.get_task("data").arguments[4:6] == ["--task", "digits"]
    assert not dag.get_task("gate").skip_on_exit_code  # exit 1 (a failed gate) fails the pod task and the run
    assert "nvidia.com/gpu" not in dag.get_task("train").container_resources.limits


def test_pod_mode_refuses_a_bake_off_in_the_form(monkeypatch):
    """Pods have no bake-off route: the form does not offer framework=both and refuses it before any pod starts."""
    from airflow.sdk.definitions.param import ParamValidationError

    from components.spec import spec_path
    from pipelines.airflow_dag import build_dag

    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    framework = build_dag(spec_path("digits")).params.get_param("framework")
    assert framework.schema["enum"] == ["pytorch", "tensorflow"]
    assert "runs only with local execution" in framework.description and "relay bakeoff" in framework.description
    with pytest.raises(ParamValidationError, match="both"):
        framework.resolve("both")
    assert framework.resolve("tensorflow") == "tensorflow"


def test_pod_mode_hands_every_form_value_to_the_data_pod_as_one_json_argument(monkeypatch):
    """Gate thresholds typed into the form reach the pod (they were once dropped), and the pod's CLI applies them."""
    from airflow.sdk.definitions.param import ParamsDict

    from components.spec import apply_overrides, load_spec, parse_run_params
    from pipelines.airflow_dag import build_dag
    from components.spec import spec_path

    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    dag = build_dag(spec_path("digits"))
    arguments = dag.get_task("data").arguments
    flag = arguments.index("--params")
    typed = {"framework": "tensorflow", "model": "small_cnn", "epochs": 3, "precision": "fp32", "processes": 1,
             "cache": "shards", "quantize": "int8", "max_accuracy_drop_pp": 0.25, "min_agreement": 0.9, "min_accuracy": 0.5, "champion_tolerance_pp": 2.0}
    params = ParamsDict(dict(dag.params.items()))
    params.update(typed)
    rendered = dag.get_template_env().from_string(arguments[flag + 1]).render(params=params)
    received = parse_run_params(rendered)
    assert received == typed
    spec = apply_overrides(load_spec("digits"), received)
    assert (spec.framework, spec.training.epochs, spec.training.precision, spec.training.cache,
            spec.optimize.quantize) == ("tensorflow", 3, "fp32", "shards", "int8")
    assert (spec.gate.max_accuracy_drop_pp, spec.gate.min_agreement, spec.gate.min_accuracy,
            spec.gate.champion_tolerance_pp) == (0.25, 0.9, 0.5, 2.0)


def test_pod_mode_requests_a_gpu_for_training_when_the_spec_asks(monkeypatch, tmp_path):
    import yaml

    from pipelines.airflow_dag import build_dag

    spec = yaml.safe_load((PROJECT / "pipelines" / "specs" / "digits.yaml").read_text())
    spec["training"]["accelerator"] = "gpu"
    path = tmp_path / "digits-gpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    assert build_dag(path).get_task("train").container_resources.limits["nvidia.com/gpu"] == "1"


def test_promote_dag_has_a_form_for_task_version_and_env():
    from pipelines.airflow_dag import build_promote_dag

    dag = build_promote_dag()
    assert dag.task_ids == ["promote"] and dag.schedule is None
    assert dag.params.get_param("env").schema["enum"] == ["staging", "production"]
    assert dag.params.get_param("task").schema["enum"] == ["digits", "shapes"]
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.params.get_param("version").resolve("latest")


def test_pod_mode_passes_the_run_by_uri_when_a_runs_uri_is_set(monkeypatch):
    from pipelines.airflow_dag import build_dag
    from components.spec import spec_path

    monkeypatch.setenv("RELAY_EXECUTION", "kubernetes")
    monkeypatch.setenv("RELAY_RUNS_URI", "s3://relay-dvc-prod/runs/")
    dag = build_dag(spec_path("digits"))
    for name in ("data", "train", "deploy"):
        arguments = dag.get_task(name).arguments
        assert arguments[2] == "--run-uri"
        assert arguments[3].startswith("s3://relay-dvc-prod/runs/digits/airflow-{{ run_id")
        # the pods know runs move between machines: the data step packs the files for the others
        assert {e.name: e.value for e in dag.get_task(name).env_vars}["RELAY_RUNS_URI"] == "s3://relay-dvc-prod/runs/"


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_only_steps_that_fail_for_passing_reasons_retry_with_backoff(monkeypatch, mode):
    from pipelines.airflow_dag import build_dag
    from components.spec import SPECS_DIR

    monkeypatch.setenv("RELAY_EXECUTION", mode)
    dag = build_dag(SPECS_DIR / "digits.yaml")
    retries = {task.task_id: task.retries for task in dag.tasks}
    # A bake-off (local mode) is a measurement: a retry would train every candidate again.
    bakeoff = {"route": 0, "bakeoff": 0} if mode == "local" else {}
    assert retries == {"on_time": 0, "data": 3, "validate": 0, "train": 0, "optimize": 0, "gate": 0, "register": 3,
                       "deploy": 3, **bakeoff}
    for step in ("data", "register", "deploy"):
        assert dag.get_task(step).retry_exponential_backoff


def test_training_goes_to_the_celery_queue_the_settings_name_and_the_rest_to_airflows_default(monkeypatch):
    from airflow.configuration import conf

    from pipelines.airflow_dag import build_dag
    from components.spec import SPECS_DIR

    default = conf.get("operators", "default_queue")
    monkeypatch.delenv("RELAY_TRAIN_QUEUE", raising=False)
    assert {task.queue for task in build_dag(SPECS_DIR / "digits.yaml").tasks} == {default}

    monkeypatch.setenv("RELAY_TRAIN_QUEUE", "gpu")
    queues = {task.task_id: task.queue for task in build_dag(SPECS_DIR / "digits.yaml").tasks}
    assert queues == {"on_time": default, "route": default, "data": default, "validate": default, "train": "gpu",
                      "optimize": default, "gate": default, "register": default, "deploy": default, "bakeoff": "gpu"}
