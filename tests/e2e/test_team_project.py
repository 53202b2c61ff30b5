"""A team's own repository, with Relay installed as a package, as a team uses it.

The wheel is built from this repository and installed into a fresh venv with the lock as constraints. In a
temporary directory, `relay init` makes the project. `relay task new` brings in a generated image folder,
`relay run` takes it to a served prediction, and the project's DAG file builds its DAGs. Then Relay is
upgraded to a second build of the wheel and the run is repeated. Every command runs from a plain shell in
the project: no PYTHONPATH, no RELAY_PROJECT_DIR, no OMP_NUM_THREADS.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.data.builtin import write_shapes
from components.deploy.servers import stop_servers
from tests.conftest import PROJECT, make_settings, settings_env

pytestmark = pytest.mark.e2e
SECOND_BUILD = "0.1.0.post1"


def _source_copy(target: Path, version: str | None = None) -> Path:
    """The repository's files as a clone has them (tracked, plus new files not ignored), less the datasets."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        source = PROJECT / name
        if name.startswith("data/") or not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    if version:
        pyproject = target / "pyproject.toml"
        pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text()))
    return target


def _wheel(source: Path, out: Path) -> Path:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(out), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    return max(out.glob("relay_mlops-*.whl"), key=lambda p: p.stat().st_mtime)


@dataclass
class Team:
    root: Path
    venv: Path
    project: Path
    env: dict
    second_wheel: Path
    constraints: Path
    shim: Path

    def relay(self, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / "relay"), *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.venv / "bin" / "pip"), "--disable-pip-version-check", "-q", *args],
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    dist = root / "dist"
    first = _wheel(_source_copy(root / "build-1"), dist / "first")
    second = _wheel(_source_copy(root / "build-2", SECOND_BUILD), dist / "second")
    shim = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(dist / "shim"), str(PROJECT / "requirements" / "shims" / "tensorflow")],
                          capture_output=True, text=True)
    assert shim.returncode == 0, shim.stderr[-2000:]
    shim_wheel = next((dist / "shim").glob("tensorflow-*.whl"))
    # The lock as constraints: pip refuses hashes in a constraints file unless every requirement is pinned
    # with one, which a wheel file cannot be (docs/team-project.md has the hash-checked way).
    constraints = root / "constraints.txt"
    lock = (PROJECT / "requirements" / "main.lock").read_text()
    constraints.write_text(re.sub(r" \\\n(\s+--hash=\S+( \\)?\n?)+", "\n", lock))
    venv = root / "venv"
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)  # a fresh one, as a team makes it
    settings = make_settings(root / "relay-home")
    env = {key: value for key, value in settings_env(settings).items() if key != "RELAY_PROJECT_DIR"}
    env.update({"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(root / "home"),
                "RELAY_TFX_ENV": str((PROJECT / ".venv-tfx").resolve()),
                "RELAY_SERVE_ENV": str((PROJECT / ".venv-serve").resolve()), "GX_ANALYTICS_ENABLED": "False",
                "DVC_NO_ANALYTICS": "1", "AIRFLOW_HOME": str(root / "airflow"), "LANG": "C.UTF-8"})
    made = Team(root, venv, root / "our-project", env, second, constraints, shim_wheel)
    made.pip("install", str(first), str(shim_wheel), "-c", str(constraints))
    try:
        yield made
    finally:
        stop_servers(settings)


def _installed_version(team: Team) -> str:
    shown = subprocess.run([str(team.venv / "bin" / "python"), "-c",
                            "from importlib import metadata; print(metadata.version('relay-mlops'))"],
                           capture_output=True, text=True, check=True)
    return shown.stdout.strip()


def test_relay_installs_as_a_package_with_everything_its_steps_need(team):
    assert _installed_version(team) == "0.1.0"
    checked = subprocess.run([str(team.venv / "bin" / "pip"), "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    helped = subprocess.run([str(team.venv / "bin" / "relay"), "--help"], env=team.env, capture_output=True,
                            text=True, cwd=team.root)
    assert helped.returncode == 0 and "init" in helped.stdout and "airflow" in helped.stdout


def test_relay_init_makes_a_project_that_holds_no_relay_code(team):
    team.project.parent.mkdir(exist_ok=True)
    made = subprocess.run([str(team.venv / "bin" / "relay"), "init", str(team.project)], cwd=team.root,
                          env=team.env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    for name in ("relay.yaml", "specs", "data", "dags/relay_dags.py", "README.md", ".gitignore", ".git", ".dvc"):
        assert (team.project / name).exists(), name
    assert not any((team.project / name).exists() for name in ("components", "pipelines", "Makefile"))
    again = subprocess.run([str(team.venv / "bin" / "relay"), "init", str(team.project)], cwd=team.root,
                           env=team.env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "is not an empty directory" in again.stderr


def test_a_teams_images_go_from_task_new_to_a_served_prediction(team):
    photos = team.root / "photos"
    write_shapes(photos, per_class=20)
    created = team.relay("task", "new", "parts", "--from", str(photos))
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]
    spec_file = team.project / "specs" / "parts.yaml"
    assert spec_file.is_file() and (team.project / "data" / "parts.dvc").is_file()
    assert "commit them: git add specs/parts.yaml data/parts.dvc" in " ".join(created.stdout.split())
    spec = yaml.safe_load(spec_file.read_text())
    spec["training"]["epochs"] = 2
    spec["gate"]["min_accuracy"] = 0.0  # a tiny dataset: the floor is not what this test checks
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    ran = team.relay("run", "parts")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    predicted = team.relay("predict", str(next((photos / "star").iterdir())))
    assert predicted.returncode == 0, predicted.stderr
    assert re.search(r"class \S+ \(p=", predicted.stdout) and any(c in predicted.stdout for c in spec["dataset"]["classes"])
    card = team.relay("report", "parts")
    assert card.returncode == 0 and "relay-mlops 0.1.0 (installed package)" in Path(card.stdout.strip()).read_text()


def test_the_projects_dag_file_builds_its_dags_with_relays_factory(team):
    # Run from outside the project, as Airflow's dag-processor does: the file finds its project itself.
    loaded = subprocess.run([str(team.venv / "bin" / "python"), "-c",
                             "import runpy, json, sys; ns = runpy.run_path(sys.argv[1]); "
                             "print(json.dumps(sorted(k for k in ns if k.startswith('relay_'))))",
                             str(team.project / "dags" / "relay_dags.py")],
                            cwd=team.root, env=team.env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == ["relay_parts", "relay_promote"]


def test_upgrading_relay_is_a_new_package_version_and_the_project_runs_again(team):
    team.pip("install", "--upgrade", str(team.second_wheel), str(team.shim), "-c", str(team.constraints))
    assert _installed_version(team) == SECOND_BUILD
    ran = team.relay("run", "parts", "--epochs", "1")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    predicted = team.relay("predict", str(next((team.root / "photos" / "ring").iterdir())))
    assert predicted.returncode == 0, predicted.stderr
    listed = team.relay("models", "parts")
    assert re.search(r"v0.2.0 .* default", listed.stdout) and "/predictions/parts/0.2.0 (default:" in listed.stdout, listed.stdout
    card = team.relay("report", "parts")
    assert f"relay-mlops {SECOND_BUILD} (installed package)" in Path(card.stdout.strip()).read_text()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=team.project, capture_output=True, text=True)
    assert "components" not in status.stdout and "pipelines" not in status.stdout
