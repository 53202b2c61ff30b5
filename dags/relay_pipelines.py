"""One Relay training DAG per task spec in pipelines/specs/ (relay_<task>)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, when run from a checkout

from pipelines.airflow_dag import build_dag  # noqa: E402
from components.spec import all_specs  # noqa: E402

for _spec_file in all_specs():
    _dag = build_dag(_spec_file)
    globals()[_dag.dag_id] = _dag
