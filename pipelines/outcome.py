"""What a finished run amounts to (deployed, rolled back, gate failed, validation failed, failed), read from
its run directory, and the Airflow notifier that posts it to a webhook."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.sdk import BaseNotifier

from components.run_files import RunDir
from components.settings import get_settings


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run_outcome(run: Path | None) -> dict:
    """The run's outcome and the details a person needs, from the files its steps wrote."""
    if run is None or not run.is_dir():
        return {"outcome": "skipped", "why": "the run trained nothing (no run directory)"}
    layout = RunDir(run)
    deployment = _read(layout.deployment)
    if deployment and deployment.get("rolled_back"):
        return {"outcome": "rolled_back", "version": deployment["version"], "why": deployment["why"],
                "serving": deployment.get("previous_default")}
    if deployment:
        return {"outcome": "deployed", "version": deployment["version"], "url": deployment.get("url"),
                "previous": deployment.get("previous_default", deployment.get("previous"))}
    gate = _read(layout.gate_json)
    if gate and not gate["passed"]:
        return {"outcome": "gate_failed", "failed_checks": [c["name"] for c in gate["checks"] if not c["passed"]],
                "report": str(layout.gate_report)}
    validation = _read(layout.validation)
    if validation and not validation["success"]:
        return {"outcome": "validation_failed", "first_failure": validation["failures"][0],
                "failures": len(validation["failures"]), "data_docs": str(layout.validate / "data_docs")}
    tfx = _read(layout.tfx / "tfx_report.json")
    if tfx and not tfx["success"]:
        problems = tfx["anomalies"] + tfx["drift"]
        return {"outcome": "validation_failed", "first_failure": problems[0] if problems else "TFX validation failed",
                "failures": len(problems), "report": str(layout.tfx / "tfx_report.json")}
    registration = _read(layout.registration)
    return {"outcome": "failed", "registered": registration and registration["version"],
            "why": "a step failed: see the task logs"}


class RunOutcomeNotifier(BaseNotifier):
    """Posts a relay_<task> run's outcome as JSON to RELAY_WEBHOOK_URL (nothing when it is unset)."""

    def __init__(self, task: str):
        super().__init__()
        self.task = task

    def render_template_fields(self, context, jinja_env=None) -> None:
        # Nothing here is templated, and under dag.test() the context's DAG is a SerializedDAG without the
        # template environment BaseNotifier asks it for (Airflow 3.3).
        return None

    def notify(self, context) -> None:
        import requests

        from pipelines.run_store import airflow_run_location, run_at

        settings = get_settings()
        if not settings.webhook_url:
            return
        run_id = context["run_id"]  # DAG callbacks get a short context: run_id and dag, maybe no dag_run
        location = airflow_run_location(self.task, run_id, settings)
        with run_at(location, settings) as run:  # reads only: nothing is uploaded back
            outcome = run_outcome(run)
        payload = {"task": self.task, "dag_id": context["dag"].dag_id, "run_id": run_id, "run_dir": location,
                   **outcome}
        response = requests.post(settings.webhook_url, json=payload, timeout=10)
        response.raise_for_status()
