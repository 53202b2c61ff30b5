"""relay_promote: promote a registered model version to staging or production from the Airflow UI."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, when run from a checkout

from pipelines.airflow_dag import build_promote_dag  # noqa: E402

relay_promote = build_promote_dag()
