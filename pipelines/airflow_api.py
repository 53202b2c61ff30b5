"""A small client for Airflow 3's REST API (``/api/v2``): what Relay's CLI and tests send to a running Airflow.

It logs in through ``POST /auth/token`` (a JWT), and raises RelayError naming the URL and Airflow's
answer on any failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import requests

from components.errors import RelayError
from components.settings import Settings, get_settings


def dataset_asset_uri(task: str) -> str:
    """The Airflow Asset that stands for a task's dataset; its DAG is scheduled on it."""
    return f"relay://datasets/{task}"


def generated_password(username: str, airflow_home: Path | None = None) -> str | None:
    """The password SimpleAuthManager generated for ``username`` (what `make airflow` prints), if any."""
    home = airflow_home or Path(os.environ.get("AIRFLOW_HOME", get_settings().home / "airflow"))
    path = home / "simple_auth_manager_passwords.json.generated"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get(username)


class AirflowClient:
    """Airflow's REST API at ``url``, authenticated as one user."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30):
        self.url, self.username, self.timeout = url.rstrip("/"), username, timeout
        self._password = password
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> AirflowClient:
        settings = settings or get_settings()
        password = settings.airflow_password or generated_password(settings.airflow_username)
        if not password:
            raise RelayError(f"no password for Airflow user {settings.airflow_username}: set RELAY_AIRFLOW_PASSWORD "
                             "(or AIRFLOW_HOME to the Airflow that `make airflow` started)")
        return cls(settings.airflow_url, settings.airflow_username, password)

    def token(self) -> str:
        if self._token is None:
            answer = self._send("POST", "/auth/token", {"username": self.username, "password": self._password},
                                auth=False, expect=(200, 201))
            self._token = answer.json()["access_token"]
        return self._token

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True,
              expect: tuple[int, ...] = (200,), params: dict | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"} if auth else {}
        try:
            answer = requests.request(method, self.url + path, json=body, params=params, headers=headers,
                                      timeout=self.timeout)
        except requests.ConnectionError:
            raise RelayError(f"Airflow is not reachable at {self.url} (RELAY_AIRFLOW_URL): start it with "
                             "`make airflow`, or point RELAY_AIRFLOW_URL at yours") from None
        if answer.status_code not in expect:
            raise AirflowApiError(f"{method} {self.url}{path}: HTTP {answer.status_code}: {answer.text[:500]}",
                                  answer.status_code)
        return answer

    def request(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,),
                params: dict | None = None) -> Any:
        """Send an authenticated request to ``/api/v2{path}``; return the decoded JSON answer."""
        answer = self._send(method, "/api/v2" + path, body, expect=expect, params=params)
        return answer.json() if answer.content else None

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict) -> dict:
        """Start a run with ``conf`` as its params (what the UI's trigger form sends)."""
        return self.request("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]

    def emit_asset_event(self, uri: str, extra: dict) -> dict:
        """Record an event for the Asset ``uri``: the DAGs scheduled on it start a run."""
        assets = self.request("GET", "/assets", params={"uri_pattern": uri})["assets"]
        matching = [asset for asset in assets if asset["uri"] == uri]
        if not matching:
            raise RelayError(f"Airflow at {self.url} knows no asset {uri}: is the task's DAG loaded there "
                             "(its spec in the DAG folder's project)?")
        return self.request("POST", "/assets/events", {"asset_id": matching[0]["id"], "extra": extra})


class AirflowApiError(RelayError):
    """Airflow answered with an unexpected HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
