"""The Dockerfile, checked without a Docker engine (none runs here): parsed for its targets, pinned
bases, locked installs, non-root users and absence of secrets; scanned by checkov."""

import re

from tests.conftest import PROJECT
from tests.infra.conftest import DOCKERFILE


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def stages() -> dict[str, dict]:
    result, current = {}, None
    for keyword, rest in instructions():
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            current = name.strip()
            result[current] = {"from": image.strip(), "lines": []}
        else:
            result[current]["lines"].append((keyword, rest))
    return result


def effective_user(name: str, all_stages: dict) -> str:
    stage = all_stages[name]
    users = [rest for keyword, rest in stage["lines"] if keyword == "USER"]
    if users:
        return users[-1]
    return effective_user(stage["from"], all_stages) if stage["from"] in all_stages else "root"


def test_targets_exist_and_bases_are_pinned():
    all_stages = stages()
    assert {"airflow", "worker", "tfx", "v2server"} <= set(all_stages)
    for name, stage in all_stages.items():
        if stage["from"] not in all_stages:
            assert re.fullmatch(r"python:3\.1[01]\.\d+-slim-bookworm", stage["from"]), (name, stage["from"])


def test_final_images_run_as_a_non_root_user():
    all_stages = stages()
    for target in ("airflow", "worker", "tfx", "v2server"):
        assert effective_user(target, all_stages) not in ("root", "0"), target


def test_dependencies_come_from_the_locks():
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert all(f"-r requirements/{lock}.lock" in runs for lock in ("main", "tfx", "serve"))
    assert runs.count("pip install --require-hashes --no-deps") == 3  # a swapped wheel fails the build
    assert "pip install --no-deps" in runs and "pip check" in runs


def test_no_secrets_in_layers():
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY|API_KEY)\w*=", rest, re.I), rest
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|credentials|\.aws|key_file\.json|id_rsa", rest), rest


def test_dockerignore_keeps_data_and_environments_out():
    ignored = (PROJECT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv*", "data/digits", ".dvc/cache", "runs"):
        assert entry in ignored, entry


def test_checkov_finds_no_failures(checkov_scan):
    summary = checkov_scan.summary("/Dockerfile")
    assert summary["failed"] == 0 and summary["passed"] > 50, summary["failures"]
