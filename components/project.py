"""A team's own Relay project (``relay init DIR``): their specs, data pointers and DAGs in their repository,
with Relay installed as a package beside it, as ``kedro new``, ``zenml init`` and ``dvc init`` make theirs.

The project holds no copy of Relay's code. ``relay.yaml`` marks it: every command run inside it (or with
``RELAY_PROJECT_DIR`` naming it) works on it (components.settings.find_project_dir).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.errors import RelayError
from components.settings import PROJECT_FILE

DAG_FILE = "relay_dags.py"
_DAGS = '''"""Airflow DAGs of this project: relay_<task> for each specs/<task>.yaml, built by Relay's factory, and
relay_promote. Relay is an installed package; nothing of its code lives here."""

import os
from pathlib import Path

# This project, wherever Airflow's processes run from.
os.environ.setdefault("RELAY_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from components.spec import all_specs  # noqa: E402
from pipelines.airflow_dag import build_dag, build_promote_dag  # noqa: E402

for _spec_file in all_specs():
    _dag = build_dag(_spec_file)
    globals()[_dag.dag_id] = _dag
if all_specs():
    relay_promote = build_promote_dag()
'''
_README = """# {name}

A Relay project: this team's image tasks, from versioned data to a
served, promoted model. Relay itself is an installed package (`relay --help`); this repository holds only
what is the team's own:

- `specs/`: one task spec per task (`relay task new NAME --from DIR` writes one from a folder of images);
- `data/`: the datasets' DVC pointers (`data/NAME.dvc`); the images live in the DVC remote;
- `dags/{dag_file}`: the Airflow DAGs of these specs, built by Relay's factory;
- `relay.yaml`: marks the project, so every `relay` command run in it works on it;
- `Dockerfile`: the worker image for Airflow's Kubernetes mode, Relay's worker image plus this project.

```bash
relay task new flowers --from ~/photos/flowers   # scan, copy under DVC, write specs/flowers.yaml
relay run flowers                                 # data → validate → train → optimize → gate → register → deploy
relay predict ~/photos/flowers/rose/001.jpg       # the served model's answer
relay airflow                                     # Airflow on 127.0.0.1 with these DAGs and their forms
```

Upgrading Relay is installing a newer package; nothing here changes.
"""
_DOCKERFILE = """# This project's worker image, for Airflow's Kubernetes mode (RELAY_EXECUTION=kubernetes): Relay's worker
# image plus this project's specs, data pointers and DAGs. Build it, push it, and set RELAY_WORKER_IMAGE to
# it where Airflow runs; each step's pod runs `relay step NAME --task TASK` against /opt/project.
ARG RELAY_WORKER_IMAGE=relay-worker:{version}
FROM ${{RELAY_WORKER_IMAGE}}
COPY --chown=relay . /opt/project
ENV RELAY_PROJECT_DIR=/opt/project
"""
_DOCKERIGNORE = """.venv
# the images themselves come from the DVC remote; their pointers (data/*.dvc) go into the image
data/*/
.dvc/cache
.dvc/tmp
"""
_GITIGNORE = """__pycache__/
*.pyc
.venv/
# Relay's state (runs, registry, server) lives in RELAY_HOME (~/.relay), outside the project.
"""


@dataclass(frozen=True)
class NewProject:
    path: Path
    files: list[Path]


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RelayError(f"`{' '.join(command)}` failed in {cwd}: {(done.stderr or done.stdout).strip()[-500:]}")


def init_project(path: Path, relay_version: str) -> NewProject:
    """Create a team project at ``path`` (a new or empty directory): a git repository with DVC initialised,
    ``specs/``, ``data/``, ``dags/``, a README, ``.gitignore``, ``relay.yaml`` and the worker image's
    ``Dockerfile``. Nothing is committed: the repository is the team's."""
    path = path.resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RelayError(f"{path} exists and is not an empty directory: `relay init` makes a new project; "
                         "choose a new directory")
    path.mkdir(parents=True, exist_ok=True)
    _run(["git", "init", "-q", "-b", "main"], path)
    _run([sys.executable, "-m", "dvc", "init", "-q"], path)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], path)
    files = {
        PROJECT_FILE: yaml.safe_dump({"project": path.name, "created_with_relay": relay_version}, sort_keys=False),
        f"dags/{DAG_FILE}": _DAGS,
        "README.md": _README.format(name=path.name, dag_file=DAG_FILE),
        ".gitignore": _GITIGNORE,
        "Dockerfile": _DOCKERFILE.format(version=relay_version),
        ".dockerignore": _DOCKERIGNORE,
        "specs/.gitkeep": "",
        "data/.gitkeep": "",
    }
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return NewProject(path, [path / name for name in files])
