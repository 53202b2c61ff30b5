"""The lineage card: one static HTML page per registered version that says where it came from and where it
is. It renders offline (plots are embedded PNGs, no scripts, no links out) and is built only from files:
the run directory, the project's and Relay's git history, the model registry and the local serving state.

It shows the data version (DVC hash, the commit that pinned it), the code commit, the effective spec and
run parameters, training curves and the confusion matrix, the gate report, the measured figures, which
steps were reused from the step cache, where the version is served and its GTO stage history.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from components.atomic import write_text
from components.html_report import STYLE, figure_png, image_tag, png_tag, pyplot, table
from components.registry.model_registry import ModelRegistry
from components.versioning import git
from components.run_files import GATE_COMPARISON_PLOT, GATE_PLOT, LINEAGE_CARD, RunDir
from components.settings import PROJECT_DIR, Settings, is_source_checkout, relay_version

def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _rounded(value) -> str:
    """A figure as a person reads it: four significant digits, thousands separated; '-' when absent."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def _counts(counts: dict | None) -> str:
    """Counts by name (the split's, the classes') as a one-row table."""
    if not counts:
        return "-"
    return table([tuple(_rounded(n) for n in counts.values())], tuple(counts))


def _chosen_by(chosen: dict | None) -> str:
    """The bake-off that chose this run, linked, with why and the throughput it measured."""
    if not chosen:
        return "<p>Not chosen by a bake-off: trained as its spec says.</p>"
    report = Path(chosen["report"])
    training = chosen.get("training") or {}
    return (f"<p>Bake-off <a href=\"{html.escape(report.as_uri())}\">{html.escape(chosen['bakeoff'])}</a> "
            f"(<code>{html.escape(str(report))}</code>): {html.escape(chosen['why'])}.</p>" +
            table([("training images/s, mixed precision", _rounded(training.get("images_per_s_mixed"))),
                   ("training images/s, fp32", _rounded(training.get("images_per_s_fp32"))),
                   ("mixed over fp32", _rounded(training.get("mixed_over_fp32"))),
                   *([("unreliable (decided nothing)", training["unreliable"])] if training.get("unreliable") else [])],
                  ("measured by the bake-off", "")))


def _curves(history: list[dict]) -> str:
    """Loss and accuracy per epoch, train and validation, as an embedded PNG."""
    if not history:
        return "<p>(no training history)</p>"
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.2))
    for split in ("train", "val"):
        loss.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
        accuracy.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
    loss.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    loss.legend()
    accuracy.legend()
    figure.tight_layout()
    return png_tag(figure_png(figure), "training curves")


def _commit(repo: Path, *path: str) -> str:
    """The commit (and whether the work tree differs from it) of ``repo``, or of the last change to ``path``."""
    if git(["rev-parse", "--is-inside-work-tree"], repo, check=False) != "true":
        return "(not a git checkout)"
    if path:
        return git(["log", "-1", "--format=%H %s", "--", *path], repo, check=False) or "(not committed)"
    head = git(["rev-parse", "HEAD"], repo, check=False) or "(no commit)"
    dirty = git(["status", "--porcelain", "--untracked-files=no"], repo, check=False)
    return head + (" + uncommitted changes" if dirty else "")


def _stage_history(registry: ModelRegistry, task: str, version: str) -> list[tuple]:
    import gto.api

    if not (registry.path / ".git").is_dir():
        return []
    try:
        events = gto.api.history(str(registry.path), task, ascending=True)
    except Exception as error:  # a registry GTO cannot read: the card says so instead of failing
        return [("(history unavailable)", str(error), "", "")]
    rows = events[0] if isinstance(events, tuple) else events
    return [(str(e.get("timestamp", "")), e.get("event", ""), e.get("stage", "") or "", e.get("version", ""))
            for e in rows if e.get("version") == version]


def render_card(run: Path, settings: Settings, serving: str | None = None, version: str | None = None) -> str:
    """The lineage card of the version registered from ``run``, as HTML (``version``: while registering it)."""
    from components.deploy.local import served_state
    from components.deploy.servers import NAMES as SERVER_NAMES

    layout = RunDir(run)
    spec = json.loads(layout.spec_file.read_text())
    task = spec["name"]
    params = _read(layout.params_file) or {}
    data = _read(layout.data_info) or {}
    metrics = _read(layout.metrics) or {}
    optimize = _read(layout.optimize_info) or {}
    gate = _read(layout.gate_json) or {}
    registration = _read(layout.registration) or {}
    deployment = _read(layout.deployment)
    steps = _read(layout.steps_record) or {}
    chosen = _read(layout.chosen_by)
    version = version or registration.get("version", "(not registered)")
    registry = ModelRegistry(settings)

    if serving is None:
        state = served_state(settings).get(task, {})
        if deployment and deployment.get("rolled_back"):
            serving = f"rolled back at deploy: {deployment['why']}"
        elif state.get("default") == version:
            url = deployment and deployment.get("url")
            serving = f"default of {task}, served locally by {SERVER_NAMES[state['server']]}: {url}"
        elif version in state.get("versions", []):
            serving = f"served beside the default ({state['default']}), for rollback"
        else:
            serving = "not served by the local model server"
    pointer = Path(spec["dataset"]["path"])
    pointer = str(pointer.with_name(pointer.name + ".dvc"))
    checks = [(c["name"], c["rule"], f"{c['value']:.4g}{c['unit']}", f"{c['threshold']:.4g}{c['unit']}",
               '<span class="pass">pass</span>' if c["passed"] else '<span class="fail">FAIL</span>')
              for c in gate.get("checks", [])]
    gm = gate.get("metrics", {})
    figures = [
        ("test accuracy (original)", metrics.get("test_accuracy")),
        ("training time (s)", metrics.get("train_seconds")),
        ("training images/s", metrics.get("train_loop_images_per_second")),
        ("conversion time (s)", optimize.get("conversion_seconds")),
        ("held-out accuracy, optimized", gm.get("accuracy_optimized")),
        ("p50 batch-1 latency, original (ms)", gm.get("latency_p50_ms_original")),
        ("p50 batch-1 latency, optimized (ms)", gm.get("latency_p50_ms_optimized")),
        ("max |logit difference|", gm.get("max_abs_logit_diff")),
    ]
    if deployment and deployment.get("canary"):
        for side, figures_of in deployment["canary"].items():
            if figures_of:
                figures.append((f"canary, {side} version: p50 / p99 ms, error rate",
                                f"{_rounded(figures_of['p50_ms'])} / {_rounded(figures_of['p99_ms'])}, "
                                f"{_rounded(figures_of['error_rate'])}"))
    sections = [
        f"<h1>{html.escape(task)} {html.escape(version)}</h1>",
        f"<p>Run <code>{html.escape(run.name)}</code>; framework {html.escape(str(metrics.get('framework')))}; "
        f"registered as <code>{html.escape(str(registration.get('tag')))}</code> (registry commit "
        f"{html.escape(str(registration.get('commit')))}).</p>",
        "<h2>Where it is served</h2>", f"<p>{html.escape(serving)}</p>",
        "<h2>Chosen by</h2>", _chosen_by(chosen),
        "<h2>Stage history (GTO)</h2>",
        table(_stage_history(registry, task, version) or [("(no stage assigned)", "", "", "")],
               ("when", "event", "stage", "version")),
        "<h2>Data</h2>",
        table([("dataset", spec["dataset"]["path"]), ("DVC hash", data.get("dataset_md5")),
                ("pinned by", _commit(settings.project_dir, pointer)),
                ("images", _rounded(data.get("images"))), ("split", _counts(data.get("split_counts"))),
                ("classes", _counts(data.get("class_counts")))]),
        "<h2>Code</h2>",
        table([("Relay", _commit(PROJECT_DIR) if is_source_checkout() else f"relay-mlops {relay_version()} "
                                                                             "(installed package)"),
                ("project", _commit(settings.project_dir))]),
        "<h2>Run parameters and effective spec</h2>",
        f"<p>Run parameters: <code>{html.escape(json.dumps(params))}</code></p>",
        f"<pre>{html.escape(json.dumps(spec, indent=2))}</pre>",
        "<h2>Steps</h2>",
        table([(name, "reused" if entry["reused"] else "computed", _rounded(entry["seconds"]), entry["why"])
                for name, entry in sorted(steps.items(), key=lambda item: item[1].get("finished_at", 0))],
               ("step", "", "seconds", "why")),
        "<h2>Training</h2>", _curves(metrics.get("history", [])),
        image_tag(layout.train / "confusion_matrix.png"), image_tag(layout.train / "per_class.png"),
        "<h2>Gate</h2>",
        f"<p>{'<span class=pass>PASS</span>' if gate.get('passed') else '<span class=fail>FAIL</span>'}</p>",
        table(checks, ("check", "rule", "value", "threshold", "result")),
        image_tag(layout.gate / GATE_PLOT), image_tag(layout.gate / GATE_COMPARISON_PLOT),
        "<h2>Measured figures</h2>",
        table([(name, _rounded(value)) for name, value in figures]),
    ]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(task)} {html.escape(version)}"
            f" lineage</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def write_card(run: Path, settings: Settings, target: Path | None = None, serving: str | None = None,
               version: str | None = None) -> Path:
    """Write the card into ``target`` (default: ``run/lineage.html``), atomically."""
    target = target or RunDir(run).lineage_card
    write_text(target, render_card(run, settings, serving, version))
    return target


def current_card(task: str, version: str | None = None, settings: Settings | None = None) -> Path:
    """The card of ``task``'s ``version`` (default: the newest) as of now: rewritten in its run directory when
    this machine has it, otherwise the card stored with the registered artifacts."""
    from components.errors import RelayError
    from components.settings import get_settings

    settings = settings or get_settings()
    registry = ModelRegistry(settings)
    versions = [row["version"] for row in registry.versions(task)]
    if not versions:
        raise RelayError(f"{task} has no registered version in {registry.path}: run `relay run {task}` first")
    version = version or versions[0]
    if not version.startswith("v"):
        version = "v" + version
    if version not in versions:
        raise RelayError(f"{task} has no version {version}; registered: {', '.join(versions)}")
    run = settings.runs_dir / task / registry.model_info(task, version)["run_id"]
    if RunDir(run).spec_file.is_file():
        return write_card(run, settings)
    target = settings.home / "reports" / task / f"{version}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(registry.artifact_bytes(task, version, LINEAGE_CARD))
    return target
