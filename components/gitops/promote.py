"""GitOps promotion: a GTO stage assignment plus a commit that pins the version in the environment's
kustomize overlay, pushed to the GitOps remote that Argo CD syncs. Rollback is a new commit.

The GitOps repository is the model registry repository: the stage tag and the overlay commit that
deploys it land in one history, and Argo CD watches ``k8s/<task>/overlays/<env>`` there. The base
manifests come from Relay's ``infra/k8s`` (installed under ``<prefix>/share/relay/k8s``) and are copied in
on each promotion.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.registry import model_version
from components.deploy.kubernetes import live_check
from components.errors import RelayError
from components.frameworks import backend
from components.registry.model_registry import ModelRegistry
from components.versioning import git
from components.settings import PROJECT_DIR, Settings, get_settings, is_source_checkout

ENVIRONMENTS = ("staging", "production")
# The manifests promotion copies in: this checkout's infra/k8s, or where the wheel installs them.
K8S_SOURCE = PROJECT_DIR / "infra" / "k8s" if is_source_checkout() else Path(sys.prefix) / "share" / "relay" / "k8s"


@dataclass(frozen=True)
class Promotion:
    task: str
    env: str
    version: str
    previous: str | None
    commit: str
    overlay: Path
    live: str


def overlay_file(repo: Path, task: str, env: str) -> Path:
    return repo / "k8s" / task / "overlays" / env / "kustomization.yaml"


def pinned_version(kustomization: Path) -> str | None:
    """The MODEL_VERSION an overlay file pins, or None."""
    return pinned_version_text(kustomization.read_text()) if kustomization.is_file() else None


def pinned_version_text(text: str) -> str | None:
    """The MODEL_VERSION an overlay's text pins, or None."""
    for generator in (yaml.safe_load(text) or {}).get("configMapGenerator", []):
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            if generator["name"] == "relay-model" and key == "MODEL_VERSION":
                return value.split("#")[0].strip()
    return None


def _write_manifests(repo: Path, task: str, env: str, version: str, registry_url: str, framework: str) -> Path:
    """Copy the base, components and the environment's overlay into the GitOps repo, pinning task and
    version; a TensorFlow version also gets TF Serving (the tfserving component) beside TorchServe."""
    target = repo / "k8s" / task
    for folder in ("base", "components"):
        shutil.rmtree(target / folder, ignore_errors=True)
        shutil.copytree(K8S_SOURCE / folder, target / folder)
    base = yaml.safe_load((target / "base" / "kustomization.yaml").read_text())
    for generator in base["configMapGenerator"]:
        if generator["name"] == "relay-model":
            generator["literals"] = [f"MODEL_TASK={task}", "MODEL_VERSION=v0.0.0", f"REGISTRY_URL={registry_url}"]
    (target / "base" / "kustomization.yaml").write_text(yaml.safe_dump(base, sort_keys=False))

    overlay = overlay_file(repo, task, env)
    if not overlay.is_file():
        overlay.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(K8S_SOURCE / "overlays" / env / "kustomization.yaml", overlay)
    data = yaml.safe_load(overlay.read_text())
    for generator in data["configMapGenerator"]:
        if generator["name"] == "relay-model":
            generator["literals"] = [f"MODEL_VERSION={version}"]
    components = backend(framework).KUSTOMIZE_COMPONENTS
    if components:
        data["components"] = list(components)
    else:
        data.pop("components", None)
    overlay.write_text(f"# Pinned by relay: {task} {version} in {env}. Argo CD syncs this overlay.\n"
                       + yaml.safe_dump(data, sort_keys=False))
    return overlay


def promote(task: str, version: str, env: str, settings: Settings | None = None) -> Promotion:
    """Pin ``version`` of ``task`` in ``env``: GTO assignment + overlay commit, pushed."""
    if env not in ENVIRONMENTS:
        raise RelayError(f"unknown environment '{env}': use one of {', '.join(ENVIRONMENTS)}")
    version = model_version.canonical(version)
    registry = ModelRegistry(settings or get_settings()).ensure()
    with registry.locked():
        known = [row["version"] for row in registry.versions(task)]
        if version not in known:
            raise RelayError(f"{task} has no registered version {version}; registered: {', '.join(known) or 'none'}")
        if not registry.gate(task, version)["passed"]:
            raise RelayError(f"refusing to promote {task} {version}: its precision gate did not pass")
        if env == "production" and not registry.was_in_stage(task, version, "staging"):
            raise RelayError(f"refusing to promote {task} {version} to production: it never went to staging; "
                             f"run `relay promote {task} --version {version} --to staging` first")
        pinned = _pin(registry, task, version, env, f"promote {task} {version} to {env}")
    return _after_commit(pinned)


ROLLED_BACK_FROM = "Relay-Rolled-Back-From"  # a git trailer on rollback commits


def rollback(task: str, env: str, settings: Settings | None = None) -> Promotion:
    """Pin the newest version ``env`` ran before the current one that is still good, with a new commit.

    It walks back through the overlay's history, skipping every version that was rolled back from
    (rolling back twice never brings a bad version back) and every version whose gate failed. A
    rolled-back version returns only when promoted again by name.
    """
    if env not in ENVIRONMENTS:
        raise RelayError(f"unknown environment '{env}': use one of {', '.join(ENVIRONMENTS)}")
    registry = ModelRegistry(settings or get_settings()).ensure()
    with registry.locked():
        overlay = overlay_file(registry.path, task, env)
        current = pinned_version(overlay)
        if current is None:
            raise RelayError(f"nothing to roll back: {task} was never promoted to {env}")
        relative = str(overlay.relative_to(registry.path))
        history = git(["log", f"--format=%H%x00%(trailers:key={ROLLED_BACK_FROM},valueonly,separator=%x20)",
                       "--", relative], registry.path).splitlines()
        commits, rolled_back = [], {current}
        for line in history:
            commit, _, trailer = line.partition("\0")
            commits.append(commit)
            rolled_back.update(trailer.split())
        for commit in commits:
            earlier = pinned_version_text(git(["show", f"{commit}:{relative}"], registry.path))
            if earlier and earlier not in rolled_back and registry.gate(task, earlier)["passed"]:
                message = (f"rollback {task} in {env} to {earlier} (from {current})\n\n"
                           f"{ROLLED_BACK_FROM}: {current}")
                pinned = _pin(registry, task, earlier, env, message)
                break
        else:
            raise RelayError(f"nothing to roll back to: {env} runs {task} {current}, and every earlier version was "
                             f"rolled back from ({', '.join(sorted(rolled_back - {current})) or 'none'}); promote one "
                             "by name to pin it again")
    return _after_commit(pinned)


def _after_commit(pinned: Promotion) -> Promotion:
    # Outside the registry lock: waiting on a rollout must not block other registrations.
    return dataclasses.replace(pinned, live=live_check(pinned.task, pinned.env, pinned.version,
                                                       _smoke_image(pinned.task)))


def _pin(registry: ModelRegistry, task: str, version: str, env: str, message: str) -> Promotion:
    overlay = overlay_file(registry.path, task, env)
    previous = pinned_version(overlay)
    with registry.transaction() as change:
        if previous and previous != version:  # one version per environment: the one the overlay pins
            registry.unassign_unlocked(task, previous, env)
        registry.assign_unlocked(task, version, env)
        framework = registry.model_info(task, version).get("framework", "pytorch")
        _write_manifests(registry.path, task, env, version, registry.remote or str(registry.path), framework)
        commit = change.commit(message, "k8s")
    return Promotion(task, env, version, previous, commit, overlay, live="")


def _smoke_image(task: str) -> bytes | None:
    """One image of the task's dataset in this checkout, for the post-rollout smoke prediction."""
    from components.spec import load_spec

    try:
        dataset = load_spec(task).dataset_dir()
    except RelayError:
        return None
    image = next(iter(sorted(dataset.glob("*/*.png"))), None) if dataset.is_dir() else None
    return image.read_bytes() if image else None
