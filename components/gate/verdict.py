"""The precision gate: may the optimized model ship?

It is framework-neutral: it sees only numpy predictors (original, optimized and, when one exists,
the production champion) and the held-out split fixed by the data version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import atomic_dir, write_json, write_text
from components.html_report import legend_beside
from components.measurement import p50_latency_ms
from components.models import Predictor
from components.run_files import GATE_COMPARISON_PLOT, GATE_JSON, GATE_PLOT, GATE_REPORT
from components.spec import GateSpec

# Accuracies are ratios of counts: without this, 0.5 pp "at most 0.5 pp" fails on float rounding.
EPSILON = 1e-9


@dataclass(frozen=True)
class Champion:
    """The model a new one must match: the version served as default, or the production stage's."""

    version: str
    predict: Predictor
    role: str = "production"
    images: np.ndarray | None = None
    """The held-out images through the champion's own preprocessing; None: the same as the new model's."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    report: Path
    metrics: dict
    failed_checks: list[str]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


@dataclass(frozen=True)
class Latency:
    """p50 batch-1 latencies of both models, measured elsewhere (components.measurement), and how."""

    original_ms: float
    optimized_ms: float
    method: dict


def measure_model_pair(original: Predictor, optimized: Predictor, images: np.ndarray, labels: np.ndarray,
                   latency_runs: int, latency: Latency | None = None) -> dict:
    """What the gate measures of the new model pair alone: accuracies, agreement, logit difference, p50
    latencies, and the optimized model's predictions. It does not depend on the champion or the thresholds,
    so a rerun can reuse it (JSON-able).

    ``latency``: both models timed under the serving thread settings in a process of their own (what the gate
    step passes); without it both predictors are timed here, in this process's settings."""
    if len(images) == 0:
        raise ValueError("the held-out split is empty: the gate has nothing to measure")
    original_logits, optimized_logits = original(images), optimized(images)
    if latency is None:
        one = images[:1]
        latency = Latency(p50_latency_ms(original, one, latency_runs), p50_latency_ms(optimized, one, latency_runs),
                          {"process": "the caller's, in its own thread settings"})
    return {
        "accuracy_original": _accuracy(original_logits, labels),
        "accuracy_optimized": _accuracy(optimized_logits, labels),
        "agreement": float((original_logits.argmax(1) == optimized_logits.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(original_logits.astype(np.float64) - optimized_logits).max()),
        "latency_p50_ms_original": latency.original_ms,
        "latency_p50_ms_optimized": latency.optimized_ms,
        "latency_method": latency.method,
        "predictions_optimized": optimized_logits.argmax(1).tolist(),
    }


def evaluate_gate(thresholds: GateSpec, original: Predictor, optimized: Predictor, images: np.ndarray,
                  labels: np.ndarray, champion: Champion | None = None, classes: list[str] | None = None) -> dict:
    """Measure both models on the held-out set and decide each check. Returns the gate document.

    With ``classes``, it also holds the challenger's (the optimized model's) and the champion's confusion
    matrices and per-class precision and recall on that set, side by side.
    """
    measured = measure_model_pair(original, optimized, images, labels, thresholds.latency_runs)
    return decide_gate(thresholds, measured, images, labels, champion, classes)


def decide_gate(thresholds: GateSpec, measured: dict, images: np.ndarray, labels: np.ndarray,
                champion: Champion | None = None, classes: list[str] | None = None) -> dict:
    """Decide each check from ``measure_model_pair``'s figures and, when there is one, the champion re-scored on
    the same held-out set."""
    acc_original, acc_optimized = measured["accuracy_original"], measured["accuracy_optimized"]
    agreement, max_abs_diff = measured["agreement"], measured["max_abs_logit_diff"]
    latency_original, latency_optimized = measured["latency_p50_ms_original"], measured["latency_p50_ms_optimized"]
    drop_pp = (acc_original - acc_optimized) * 100

    checks = [
        {"name": "accuracy_drop", "passed": drop_pp <= thresholds.max_accuracy_drop_pp + EPSILON,
         "value": drop_pp, "threshold": thresholds.max_accuracy_drop_pp, "unit": "pp",
         "rule": "original − optimized accuracy ≤ threshold"},
        {"name": "agreement", "passed": agreement >= thresholds.min_agreement - EPSILON,
         "value": agreement, "threshold": thresholds.min_agreement, "unit": "",
         "rule": "top-1 agreement ≥ threshold"},
        {"name": "latency", "passed": latency_optimized <= latency_original,
         "value": latency_optimized, "threshold": latency_original, "unit": "ms",
         "rule": "optimized p50 batch-1 latency ≤ original's"},
        {"name": "accuracy_floor", "passed": acc_optimized >= thresholds.min_accuracy - EPSILON,
         "value": acc_optimized, "threshold": thresholds.min_accuracy, "unit": "",
         "rule": "optimized accuracy ≥ floor"},
    ]
    champion_info = champion_logits = None
    if champion is not None:
        champion_logits = champion.predict(images if champion.images is None else champion.images)
        acc_champion = _accuracy(champion_logits, labels)
        floor = acc_champion - thresholds.champion_tolerance_pp / 100
        checks.append({"name": "champion", "passed": acc_optimized >= floor - EPSILON, "value": acc_optimized,
                       "threshold": floor, "unit": "",
                       "rule": f"optimized accuracy ≥ {champion.role} {champion.version} − tolerance"})
        champion_info = {"version": champion.version, "accuracy": acc_champion, "role": champion.role}
    return {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "metrics": {
            "accuracy_original": acc_original, "accuracy_optimized": acc_optimized,
            "accuracy_drop_pp": drop_pp, "agreement": agreement, "max_abs_logit_diff": max_abs_diff,
            "latency_p50_ms_original": latency_original, "latency_p50_ms_optimized": latency_optimized,
            "speedup_b1": latency_original / latency_optimized, "heldout_images": int(len(labels)),
        },
        "champion": champion_info,
        "latency_method": measured.get("latency_method"),
        "comparison": classes and _comparison(classes, labels, np.array(measured["predictions_optimized"]),
                                              champion_logits, champion),
        "thresholds": thresholds.model_dump(),
    }


def _comparison(classes: list[str], labels: np.ndarray, challenger: np.ndarray, champion_logits: np.ndarray | None,
                champion: Champion | None) -> dict:
    from components.class_metrics import class_metrics

    def figures(predictions: np.ndarray) -> dict:
        matrix, per_class = class_metrics(labels, predictions, classes)
        return {"accuracy": float((predictions == labels).mean()), "confusion_matrix": matrix.tolist(),
                "per_class": per_class}

    return {"classes": classes, "challenger": {"version": "this run (optimized)", **figures(challenger)},
            "champion": champion and {"version": champion.version, "role": champion.role,
                                      **figures(champion_logits.argmax(1))}}


def render_report(task: str, gate: dict, notes: dict[str, str]) -> str:
    """A Markdown report of the gate document, readable without tools."""
    verdict = "PASS" if gate["passed"] else "FAIL"
    lines = [f"# Precision gate for `{task}`: **{verdict}**", "", "| check | rule | value | threshold | result |",
             "|---|---|---|---|---|"]
    for check in gate["checks"]:
        lines.append(f"| {check['name']} | {check['rule']} | {check['value']:.4f}{check['unit']} | "
                     f"{check['threshold']:.4f}{check['unit']} | {'pass' if check['passed'] else '**FAIL**'} |")
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.6g} |" for key, value in gate["metrics"].items()]
    method = gate.get("latency_method") or {}
    if "threads" in method:
        threads = method["threads"]
        lines += ["", f"Latencies were timed under the serving thread settings: {threads['intra_op']} intra-op and "
                      f"{threads['inter_op']} inter-op thread(s) for both models ({method['process']}; in effect: "
                      + ", ".join(f"{k} {v}" for k, v in method["effective_threads"].items()) + ")."]
    champion = gate.get("champion")
    lines += ["", f"Champion ({champion.get('role', 'production')}): {champion['version']} at accuracy "
                  f"{champion['accuracy']:.4f} on this held-out set"
              if champion else "Champion: none yet (nothing served or in production; the champion check is not applied)."]
    lines += [f"- {name}: {text}" for name, text in notes.items()]
    comparison = gate.get("comparison")
    if comparison:
        sides = [("challenger", comparison["challenger"])] + (
            [("champion " + comparison["champion"]["version"], comparison["champion"])] if comparison["champion"]
            else [])
        lines += ["", "## Champion and challenger, per class", "",
                  "| class | support | " + " | ".join(f"{name} precision | {name} recall" for name, _ in sides) + " |",
                  "|---|---|" + "---|---|" * len(sides)]
        for label in comparison["classes"]:
            row = [f"{side['per_class'][label]['precision']:.3f} | {side['per_class'][label]['recall']:.3f}"
                   for _, side in sides]
            lines.append(f"| {label} | {sides[0][1]['per_class'][label]['support']} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: dict, target: Path) -> Path:
    """The challenger's and the champion's confusion matrices side by side, and per-class recall of both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from components.class_metrics import plot_confusion

    classes = comparison["classes"]
    sides = [("challenger (this run)", comparison["challenger"])]
    if comparison["champion"]:
        champion = comparison["champion"]
        sides.append((f"champion {champion['version']} ({champion['role']})", champion))
    size = max(3.5, 0.4 * len(classes) + 2)
    figure, axes = plt.subplots(1, len(sides) + 1, figsize=(size * (len(sides) + 1), size))
    for ax, (name, side) in zip(axes, sides):
        plot_confusion(ax, np.array(side["confusion_matrix"]), classes, f"{name}: accuracy {side['accuracy']:.3f}")
    x = np.arange(len(classes))
    width = 0.8 / len(sides)
    for i, (name, side) in enumerate(sides):
        axes[-1].bar(x + (i - (len(sides) - 1) / 2) * width, [side["per_class"][c]["recall"] for c in classes],
                     width, label=name.split(" (")[0])
    axes[-1].set(xticks=x, xticklabels=classes, ylim=(0, 1.05), title="per-class recall")
    plt.setp(axes[-1].get_xticklabels(), rotation=45, ha="right")
    legend_beside(axes[-1])
    figure.tight_layout()
    figure.savefig(target, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return target


def plot_gate(gate: dict, target: Path) -> Path:
    """Accuracy and p50 latency side by side: the gate's two questions in one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = gate["metrics"]
    names, accuracies = ["original", "optimized"], [metrics["accuracy_original"], metrics["accuracy_optimized"]]
    if gate.get("champion"):
        names.append(f"{gate['champion'].get('role', 'production')} {gate['champion']['version']}")
        accuracies.append(gate["champion"]["accuracy"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.bar(names, [a * 100 for a in accuracies], color=["#888", "#2a7", "#47c"][: len(names)])
    left.set_ylim(max(0, min(*accuracies, gate["thresholds"]["min_accuracy"]) * 100 - 3), 100)
    left.set_ylabel("held-out accuracy (%)")
    left.axhline(gate["thresholds"]["min_accuracy"] * 100, color="#c33", linestyle="--", label="floor")
    legend_beside(left)
    right.bar(["original", "optimized"], [metrics["latency_p50_ms_original"], metrics["latency_p50_ms_optimized"]],
              color=["#888", "#2a7"])
    right.set_ylabel("p50 latency, batch 1 (ms)")
    figure.suptitle(f"{gate['task']}: gate {'PASS' if gate['passed'] else 'FAIL'}")
    figure.tight_layout()
    figure.savefig(target, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return target


def write_gate(task: str, gate: dict, notes: dict[str, str], out_dir: Path) -> GateResult:
    """Write ``gate.json``, ``gate.md`` and ``gate.png`` atomically into ``out_dir``."""
    gate = {**gate, "task": task, "notes": notes}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / GATE_JSON, gate)
        write_text(tmp / GATE_REPORT, render_report(task, gate, notes) + "\n![accuracy and latency](gate.png)\n")
        plot_gate(gate, tmp / GATE_PLOT)
        if gate.get("comparison"):
            plot_comparison(gate["comparison"], tmp / GATE_COMPARISON_PLOT)
            with (tmp / GATE_REPORT).open("a") as report:
                report.write("\n![champion and challenger](" + GATE_COMPARISON_PLOT + ")\n")
    failed = [c["name"] for c in gate["checks"] if not c["passed"]]
    return GateResult(gate["passed"], out_dir / GATE_JSON, gate["metrics"], failed)
