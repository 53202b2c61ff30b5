"""Build one Airflow DAG per task spec. It only wires ``run_step`` calls; no step logic lives here.

The Params form offers the run parameters (components.spec.OVERRIDABLE: framework, epochs, precision,
quantize, gate thresholds); they are validated by Airflow's JSON schema in the form and again by the
spec model when the run starts.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk import DAG, Param, task

from components.run_files import RunDir
from components.settings import get_settings
from components.spec import TaskSpec, load_spec, run_param_schemas
from pipelines.outcome import RunOutcomeNotifier
from pipelines.run_store import airflow_run_location, is_uri, run_at
from pipelines.steps import RETRYABLE, STEPS, gate_failure, run_step, start_run
from pipelines.train_job import train_job_name


def _retries(step: str) -> dict:
    """Retries with exponential backoff (30 s, 60 s, …) for steps that can fail for passing reasons."""
    if step not in RETRYABLE:
        return {"retries": 0}
    return {"retries": 3, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10)}


def schedule(spec: TaskSpec):
    """When relay_<task> runs: whenever its dataset's Asset gets an event (`relay data add`), and on the spec's
    cron or preset, if any. One DAG serves both.

    The cron is a CronTriggerTimetable with no start date and run_immediately off, so a new DAG waits for its
    next fire time; ``late_scheduled_run`` covers the unpause of a DAG that has run before (docs/operations.md).
    """
    from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable
    from airflow.sdk.definitions.timetables.simple import OnceTimetable

    from pipelines.airflow_api import dataset_asset_uri

    dataset = Asset(name=f"relay_{spec.name}_dataset", uri=dataset_asset_uri(spec.name), group="relay-dataset")
    if spec.schedule is None:
        return [dataset]
    timetable = (OnceTimetable() if spec.schedule == "@once"
                 else CronTriggerTimetable(spec.schedule, timezone="UTC", run_immediately=False))
    return AssetOrTimeSchedule(timetable=timetable, assets=[dataset])


LATE_FRACTION = 0.1  # of the cron's interval; Airflow's own run_immediately=None uses the same 10%


def late_scheduled_run(cron: str, fire_time: datetime, started: datetime) -> str | None:
    """Why a scheduled run should not train, or None when it should.

    Airflow keeps a paused DAG's next fire time; unpausing it after that time passed creates that run at once,
    late. A run started more than 10% of the cron's interval after its fire time is such a catch-up (or
    follows a scheduler outage, or waited behind a long run): nobody asked for it now, and the next fire
    time comes as usual.
    """
    from croniter import croniter

    interval = croniter(cron, fire_time).get_next(datetime) - fire_time
    lateness = started - fire_time
    if lateness <= interval * LATE_FRACTION:
        return None
    return (f"this scheduled run is for {fire_time.isoformat()} but started {lateness} later (more than "
            f"{LATE_FRACTION:.0%} of the {interval} interval): a catch-up after an unpause or an outage, skipped. "
            "Trigger the DAG to retrain now.")


def _params(spec: TaskSpec, bakeoff: bool) -> dict[str, Param]:
    """The trigger form: one field per run parameter, generated from the spec model (run_param_schemas).
    ``bakeoff``: whether framework=both is offered (pod mode has no bake-off pod: the form refuses it)."""
    return {name: Param(schema.pop("default"), **schema)
            for name, schema in run_param_schemas(spec, bakeoff=bakeoff).items()}


def _queue(work: str) -> dict:
    """The Celery queue for ``work``: training (the train step, the bake-off) goes to RELAY_TRAIN_QUEUE when set,
    everything else to Airflow's default queue."""
    queue = get_settings().train_queue
    return {"queue": queue} if work in ("train", "bakeoff") and queue else {}


def _step_task(name: str):
    @task(task_id=name, **_retries(name), **_queue(name))
    def step(run: str) -> str:
        """``run``: the run's directory, or its URI under RELAY_RUNS_URI (stepped on a local copy)."""
        with run_at(run, get_settings()) as run_dir:
            summary = run_step(name, run_dir)
        print(summary)
        if summary.get("rolled_back"):  # the canary's verdict: a retry would only repeat it
            raise AirflowFailException(f"rolled back: {summary['why']}; {summary.get('previous_default')} still "
                                       "serves as default")
        return run

    return step


def _pod_steps(spec: TaskSpec) -> dict[str, tuple[object, object]]:
    """RELAY_EXECUTION=kubernetes: every step is a pod running the exact CLI command `relay step NAME ...`
    in the worker image, or (train, with training.distributed.processes > 1) a Kubeflow TrainJob running it.
    Each step's first and last task. Run directories live on S3 (RELAY_RUNS_URI) or a shared volume."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    home = "/var/lib/relay"
    run_dir = f"{home}/runs/{spec.name}/airflow-{{{{ run_id | replace(':', '-') | replace('+', '-') }}}}"
    env = [k8s.V1EnvVar(name="RELAY_HOME", value=home), k8s.V1EnvVar(name="OMP_NUM_THREADS", value="2")]
    env += [k8s.V1EnvVar(name=name, value=os.environ[name])
            for name in ("RELAY_DVC_REMOTE", "RELAY_REGISTRY_REMOTE", "RELAY_SHARDS_URI", "RELAY_RUNS_URI")
            if os.environ.get(name)]  # RELAY_RUNS_URI: the data step packs the files for pods without them
    volume = k8s.V1Volume(name="relay-home",
                          persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="relay-home"))
    mount = k8s.V1VolumeMount(name="relay-home", mount_path=home)
    security = k8s.V1SecurityContext(run_as_non_root=True, run_as_user=10001, allow_privilege_escalation=False,
                                     capabilities=k8s.V1Capabilities(drop=["ALL"]))

    def resources(step: str) -> k8s.V1ResourceRequirements:
        if step == "train":
            limits = {"cpu": "4", "memory": "8Gi"}
            if spec.training.accelerator == "gpu":
                limits["nvidia.com/gpu"] = "1"
            return k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "4Gi"}, limits=limits)
        return k8s.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"},
                                          limits={"cpu": "2", "memory": "4Gi"})

    # With RELAY_RUNS_URI (s3://bucket/runs) each pod downloads the run, steps it and uploads its outputs;
    # without it the pods share the relay-home volume.
    runs_uri = get_settings().runs_uri
    location = (["--run-uri", f"{runs_uri.rstrip('/')}/{spec.name}/{run_dir.rsplit('/', 1)[1]}"] if runs_uri
                else ["--run-dir", run_dir])
    namespace = os.environ.get("RELAY_K8S_NAMESPACE", "relay")
    image = os.environ.get("RELAY_WORKER_IMAGE", "relay-worker:0.1.0")
    operators = {}
    for step in STEPS:
        arguments = ["step", step, *location]
        if step == "data":
            # Every run parameter, as one JSON object that the spec model validates in the pod.
            arguments += ["--task", spec.name, "--params", "{{ params.dump() | tojson }}"]
        if step == "train" and spec.training.distributed.processes > 1:
            plain = k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001)
            operators[step] = _train_job_tasks(spec, namespace, image, arguments, env, security, plain, volume, mount)
            continue
        pod = KubernetesPodOperator(
            task_id=step, name=f"relay-{spec.name}-{step}", namespace=namespace,
            image=image, cmds=["relay"], arguments=arguments,
            env_vars=env, volumes=[volume], volume_mounts=[mount], container_resources=resources(step),
            container_security_context=security, service_account_name="relay-worker",
            # `relay step gate` exits 1 when the gate fails: the pod task fails (no retry), so register and
            # deploy never run and the run is marked failed, as in the local DAG.
            get_logs=True, on_finish_action="delete_succeeded_pod", **_retries(step))
        operators[step] = (pod, pod)
    return operators


def _train_job_tasks(spec: TaskSpec, namespace: str, image: str, arguments: list[str], env, security, pod_security,
                     volume, mount) -> tuple[object, object]:
    """The train step as a Kubeflow TrainJob (pipelines.train_job): created by the cncf.kubernetes provider's
    KubernetesCreateResourceOperator, then watched until it completes or fails (a rescheduling sensor)."""
    import yaml
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from airflow.providers.cncf.kubernetes.operators.resource import KubernetesCreateResourceOperator
    from kubernetes.client import ApiClient

    from components.errors import RelayError
    from pipelines.train_job import GROUP, PLURAL, VERSION, train_job, train_job_finished, validate_train_job

    as_json = ApiClient().sanitize_for_serialization

    def manifest(name: str) -> dict:
        return train_job(spec, name, namespace, image, arguments, as_json(env), as_json(security),
                         as_json(pod_security), [as_json(volume)], [as_json(mount)], "relay-worker")

    # A bad manifest fails the DAG's import, not a run; the name of each run's TrainJob is rendered from its run id.
    validate_train_job(manifest(train_job_name(spec.name, "")), f"the train step's TrainJob for {spec.name}")
    templated = yaml.safe_dump(manifest("{{ run_id | train_job_name }}"), sort_keys=False)
    create = KubernetesCreateResourceOperator(task_id="train", yaml_conf=templated,
                                              custom_resource_definition=True, namespace=namespace, retries=0)

    @task.sensor(task_id="train_finished", poke_interval=30, timeout=48 * 3600, mode="reschedule")
    def train_finished(run_id: str | None = None) -> bool:
        """Whether the run's TrainJob has completed; its failure fails the run in one line."""
        name = train_job_name(spec.name, run_id)
        job = KubernetesHook().get_custom_object(group=GROUP, version=VERSION, plural=PLURAL, name=name,
                                                 namespace=namespace)
        try:
            return train_job_finished(job.get("status") or {}, name)
        except RelayError as failed:
            raise AirflowFailException(str(failed)) from None

    watch = train_finished()
    create >> watch
    return create, watch


def build_dag(spec_file: Path) -> DAG:
    """The training DAG for one spec: data → validate → train → optimize → gate → register → deploy.

    Steps run in the Airflow worker, or as Kubernetes pods when RELAY_EXECUTION=kubernetes.
    """
    spec = load_spec(spec_file)
    execution = os.environ.get("RELAY_EXECUTION", "local")
    if execution not in ("local", "kubernetes"):
        raise ValueError(f"RELAY_EXECUTION={execution!r}: use local or kubernetes")

    with DAG(
        dag_id=f"relay_{spec.name}",
        description=spec.description or f"Relay pipeline for {spec.name}",
        schedule=schedule(spec),
        catchup=False,
        max_active_runs=1,
        params=_params(spec, bakeoff=execution == "local"),
        # Each run's outcome goes to RELAY_WEBHOOK_URL: deployed, rolled back, gate or validation failed.
        on_success_callback=RunOutcomeNotifier(spec.name),
        on_failure_callback=RunOutcomeNotifier(spec.name),
        tags=["relay", spec.name],
        user_defined_filters={"train_job_name": lambda run_id: train_job_name(spec.name, run_id)},
        doc_md=f"Relay training pipeline for `{spec.name}` (spec: `{spec_file.name}`). "
               "The gate decides whether register and deploy run: a failed gate fails its task and the run.",
    ) as dag:

        @task.short_circuit(task_id="on_time", retries=0)
        def on_time(dag_run=None) -> bool:
            """False skips the run: a scheduled run created late (an unpaused DAG catching up) trains nothing."""
            run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
            if spec.schedule in (None, "@once") or run_type != "scheduled" or dag_run.start_date is None:
                return True
            reason = late_scheduled_run(spec.schedule, dag_run.logical_date, dag_run.start_date)
            print(reason or "on time")
            return reason is None

        if execution == "kubernetes":
            pods = _pod_steps(spec)
            on_time() >> pods["data"][0]
            for upstream, downstream in zip(STEPS, STEPS[1:]):
                pods[upstream][1] >> pods[downstream][0]
            return dag

        @task(task_id="data", **_retries("data"))
        def data(params: dict | None = None, run_id: str | None = None) -> str:
            """Start the run (a retry resumes it) and run the data step; return where the run lives."""
            settings = get_settings()
            location = airflow_run_location(spec.name, run_id, settings)
            if not is_uri(location):
                location = str(start_run(str(spec_file), dict(params or {}), run_id=f"airflow-{run_id}"))
            with run_at(location, settings) as run_dir:
                if not RunDir(run_dir).spec_file.is_file():
                    start_run(str(spec_file), dict(params or {}), run_dir=run_dir)
                print(run_step("data", run_dir))
            return location

        @task(task_id="gate", **_retries("gate"))
        def gate(run: str) -> str:
            """A failed gate fails this task, so register and deploy never run (upstream_failed) and the run is
            marked failed: "nothing shipped, and why" shows in the grid, the DAG list and the failure callback,
            not only in this log. What is served is never touched. A failed gate's report is published too."""
            with run_at(run, get_settings()) as run_dir:
                summary = run_step("gate", run_dir)
                # the report's place in the run, not in the local copy that is gone after the upload
                failure = None if summary["passed"] else gate_failure(run_dir).replace(str(run_dir), run)
            print(summary)
            if failure:
                raise AirflowFailException(failure)
            return run

        @task.branch(task_id="route")
        def route(params: dict | None = None) -> str:
            """framework=both makes the run a bake-off; any other framework, the training pipeline."""
            from pipelines.bakeoff import is_bakeoff

            return "bakeoff" if is_bakeoff(params) else "data"

        @task(task_id="bakeoff", retries=0, **_queue("bakeoff"))
        def bakeoff(params: dict | None = None, run_id: str | None = None) -> dict:
            """Both frameworks trained, gated and measured; the recommended one registered and deployed."""
            from pipelines.bakeoff import bakeoff_for_airflow

            return bakeoff_for_airflow(str(spec_file), spec.name, params or {}, run_id)

        run_dir = data()
        on_time() >> route() >> [run_dir, bakeoff()]
        optimized = _step_task("optimize")(_step_task("train")(_step_task("validate")(run_dir)))
        registered = _step_task("register")(optimized)
        gate(optimized) >> registered
        _step_task("deploy")(registered)
    return dag


def build_promote_dag() -> DAG:
    """relay_promote: the same promotion as `relay promote`, with a form for task, version and env."""
    from components.spec import all_specs

    tasks = [path.stem for path in all_specs()]
    with DAG(
        dag_id="relay_promote",
        description="Promote a registered model version (GTO stage + GitOps overlay commit)",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={
            "task": Param(tasks[0], enum=tasks, title="Task"),
            "version": Param("v0.1.0", type="string", pattern=r"^v\d+\.\d+\.\d+$", title="Version"),
            "env": Param("staging", enum=["staging", "production"], title="Environment"),
        },
        tags=["relay", "promotion"],
    ) as dag:

        @task(task_id="promote")
        def promote_version(params: dict | None = None) -> dict:
            from components.gitops.promote import promote

            result = promote(params["task"], params["version"], params["env"])
            print(result.live)
            return {"version": result.version, "env": result.env, "previous": result.previous,
                    "commit": result.commit}

        promote_version()
    return dag
