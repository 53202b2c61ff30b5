"""Build one Airflow DAG per task spec. It only wires ``run_step`` calls; no step logic lives here.

The Params form offers the run overrides (framework, epochs, gate thresholds); they are validated
by Airflow's JSON schema in the form and again by the spec model when the run starts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Param, task

from pipelines.spec import TaskSpec, load_spec
from pipelines.steps import run_step, start_run


def _params(spec: TaskSpec) -> dict[str, Param]:
    gate = spec.gate
    return {
        "framework": Param(spec.framework, enum=["pytorch", "tensorflow"], title="Framework",
                           description="Which framework trains this run (the spec's is the default)."),
        "epochs": Param(spec.training.epochs, type="integer", minimum=1, maximum=1000, title="Epochs"),
        "max_accuracy_drop_pp": Param(gate.max_accuracy_drop_pp, type="number", minimum=0,
                                      title="Max accuracy drop (pp)",
                                      description="Optimized vs original model, in percentage points."),
        "min_agreement": Param(gate.min_agreement, type="number", minimum=0, maximum=1, title="Min top-1 agreement"),
        "min_accuracy": Param(gate.min_accuracy, type="number", minimum=0, maximum=1, title="Accuracy floor"),
        "champion_tolerance_pp": Param(gate.champion_tolerance_pp, type="number", minimum=0,
                                       title="Tolerance vs production (pp)"),
    }


def _step_task(name: str):
    @task(task_id=name)
    def step(run_dir: str) -> str:
        print(run_step(name, Path(run_dir)))
        return run_dir

    return step


def build_dag(spec_file: Path) -> DAG:
    """The training DAG for one spec: data → validate → train → optimize → gate → register → deploy."""
    spec = load_spec(spec_file)

    with DAG(
        dag_id=f"relay_{spec.name}",
        description=spec.description or f"Relay pipeline for {spec.name}",
        schedule=spec.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=_params(spec),
        tags=["relay", spec.name],
        doc_md=f"Relay training pipeline for `{spec.name}` (spec: `{spec_file.name}`). "
               "The gate decides whether register and deploy run.",
    ) as dag:

        @task(task_id="data")
        def data(params: dict | None = None, run_id: str | None = None) -> str:
            run_dir = start_run(str(spec_file), dict(params or {}), run_id=f"airflow-{run_id}")
            print(run_step("data", run_dir))
            return str(run_dir)

        @task.short_circuit(task_id="gate")
        def gate(run_dir: str) -> bool:
            """False skips register and deploy: a failed gate never touches what is served."""
            summary = run_step("gate", Path(run_dir))
            print(summary)
            return bool(summary["passed"])

        run_dir = data()
        optimized = _step_task("optimize")(_step_task("train")(_step_task("validate")(run_dir)))
        registered = _step_task("register")(optimized)
        gate(optimized) >> registered
        _step_task("deploy")(registered)
    return dag
