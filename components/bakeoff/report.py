"""The bake-off's verdict and its report: winners per criterion (or a tie), a recommendation that weighs the
spec's priorities with its arithmetic shown, and bakeoff.json, bakeoff.html (offline: embedded charts) and
bakeoff.md (what the CLI prints). The HTML and the markdown are rendered from the JSON document alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from components.atomic import atomic_file, write_json, write_text
from components.bakeoff.result import BakeoffResult
from components.html_report import STYLE, figure_png, png_tag, pyplot, table

NO_INTERVAL_TIE = 0.05  # relative difference under which figures without an interval are called a tie


@dataclass(frozen=True)
class Criterion:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    path: tuple[str, ...]  # into a candidate's figures; a dict with "value"/"low"/"high" has an interval


CRITERIA = (
    Criterion("accuracy", "test accuracy, optimized model", "", True, ("accuracy", "optimized")),
    Criterion("accuracy_original", "test accuracy, original model", "", True, ("accuracy", "original")),
    Criterion("train_speed", "training images/s, mixed precision", "img/s", True, ("training", "images_per_s_mixed")),
    Criterion("train_speed_fp32", "training images/s, fp32", "img/s", True, ("training", "images_per_s_fp32")),
    Criterion("time_to_best", "time to best validation accuracy", "s", False, ("training", "time_to_best_s")),
    Criterion("peak_rss", "training peak RSS", "MB", False, ("training", "peak_rss_mb")),
    Criterion("conversion", "conversion time", "s", False, ("optimization", "conversion_s")),
    Criterion("conversion_loss", "accuracy lost in conversion", "pp", False, ("optimization", "accuracy_loss_pp")),
    Criterion("native_b1", "native p50, batch 1", "ms", False, ("best_native_b1",)),
    Criterion("optimized_b1", "served model p50, batch 1", "ms", False, ("served_b1",)),
    Criterion("int8_option_b1", "INT8 option p50, batch 1 (not served)", "ms", False, ("int8_option_b1",)),
    Criterion("served_p50", "served p50, one client", "ms", False, ("serving", "p50_ms")),
    Criterion("served_c32", "served requests/s, 32 clients", "req/s", True,
              ("serving", "by_concurrency", "32", "requests_per_s")),
    Criterion("mar_size", "served model size (.mar)", "MB", False, ("footprint_mb", ".mar")),
)
# The spec's priorities, and the criterion each one is judged by.
PRIORITY_CRITERIA = {"accuracy": "accuracy", "latency": "served_p50", "training_cost": "train_speed"}


ONNX_RUNTIME, INT8_RUNTIME = "ONNX Runtime", "ONNX Runtime INT8"  # the inference rows' runtime names


def served_runtime(quantize: str) -> str:
    """The runtime that serves the model under the spec's ``optimize.quantize``."""
    return INT8_RUNTIME if quantize == "int8" else ONNX_RUNTIME


def _derived(candidate: dict, quantize: str) -> dict:
    """The candidate with its batch-1 latencies picked out, each naming its runtime: the best native one, the
    served model's, and INT8 as an option when the spec does not serve it."""
    def b1(name: str) -> dict:
        return {**candidate["inference"][name]["b1"]["p50_ms"], "runtime": name}

    natives = [name for name in candidate["inference"] if name.startswith("native")]
    derived = {**candidate, "best_native_b1": min((b1(n) for n in natives), key=lambda f: f["value"]),
               "served_b1": b1(served_runtime(quantize))}
    if quantize != "int8" and INT8_RUNTIME in candidate["inference"]:
        derived["int8_option_b1"] = b1(INT8_RUNTIME)
    return derived


def _figure(candidate: dict, path: tuple[str, ...]):
    """The figure at ``path``, or None where the candidate has none (an option that was not measured)."""
    node = candidate
    for part in path:
        if part not in node:
            return None
        node = node[part]
    return node


def _value(figure) -> float:
    return figure["value"] if isinstance(figure, dict) else float(figure)


def _unreliable(figures: dict) -> dict[str, str]:
    """Candidate → why its figure cannot be trusted (a measurement that says so of itself)."""
    return {name: figure["unreliable"] for name, figure in figures.items()
            if isinstance(figure, dict) and figure.get("unreliable")}


def judge(candidates: list[dict], quantize: str = "none") -> list[dict]:
    """Per criterion: each candidate's figure, the winner, and the candidates tied with it; ``undecided``
    where some figure is unreliable. A criterion that some candidate has no figure for is left out."""
    rows = []
    for criterion in CRITERIA:
        figures = {c["name"]: _figure(_derived(c, quantize), criterion.path) for c in candidates}
        if any(figure is None for figure in figures.values()):
            continue
        pick = max if criterion.higher_is_better else min
        winner = pick(figures, key=lambda name: _value(figures[name]))
        tied = sorted(name for name in figures if name != winner and _tied(figures[winner], figures[name]))
        unreliable = _unreliable(figures)
        rows.append({"key": criterion.key, "title": criterion.title, "unit": criterion.unit,
                     "higher_is_better": criterion.higher_is_better, "figures": figures,
                     "winner": UNDECIDED if unreliable else ("tie" if tied else winner), "best": winner,
                     "tied_with_best": tied, "unreliable": unreliable})
    return rows


UNDECIDED = "undecided"


def _interval(figure) -> tuple[float, float] | None:
    return (figure["low"], figure["high"]) if isinstance(figure, dict) and "low" in figure else None


def _tied(best, other) -> bool:
    if (mine := _interval(best)) and (theirs := _interval(other)):
        return mine[0] <= theirs[1] and theirs[0] <= mine[1]
    a, b = _value(best), _value(other)
    return abs(a - b) <= NO_INTERVAL_TIE * max(abs(a), abs(b), 1e-12)


def recommend(candidates: list[dict], priorities: dict[str, float], verdicts: list[dict] | None = None) -> dict:
    """Weighted score per candidate that passed its gate: for each priority, 1.0 for the best figure and for
    any tied with it, else the ratio to the best (best/value when lower is better; for accuracy, the best
    error rate over this one's). A priority whose figures include an unreliable one decides nothing: every
    candidate scores 1.0 for it, and ``undecided`` says why. Shows the arithmetic."""
    verdicts = verdicts or judge(candidates)
    by_key = {v["key"]: v for v in verdicts}
    total_weight = sum(priorities.values())
    weights = {name: weight / total_weight for name, weight in priorities.items()}
    eligible = [c["name"] for c in candidates if c["gate"]["passed"]]
    excluded = {c["name"]: f"gate failed: {', '.join(c['gate']['failed_checks'])}"
                for c in candidates if not c["gate"]["passed"]}
    scores, arithmetic, undecided = {}, [], {}
    for name in eligible:
        parts = {}
        for priority, weight in weights.items():
            verdict = by_key[PRIORITY_CRITERIA[priority]]
            figures = {n: f for n, f in verdict["figures"].items() if n in eligible}
            best_name = (max if verdict["higher_is_better"] else min)(figures, key=lambda n: _value(figures[n]))
            value, best = _value(figures[name]), _value(figures[best_name])
            if unreliable := _unreliable(figures):
                undecided[priority] = "; ".join(f"{n}'s {verdict['title']} is unreliable: {why}"
                                                for n, why in unreliable.items())
            if unreliable or name == best_name or _tied(figures[best_name], figures[name]):
                score = 1.0
            elif priority == "accuracy":
                # Accuracy is scored by its error rate: 0.90 against 0.97 is 3.3x the errors, not 93% as good.
                score = (1 - best) / (1 - value)
            else:
                score = value / best if verdict["higher_is_better"] else best / value
            parts[priority] = {"weight": weight, "score": score, "value": value, "best": best}
        scores[name] = {"parts": parts, "total": sum(p["weight"] * p["score"] for p in parts.values())}
        arithmetic.append(f"{name}: " + " + ".join(f"{p['weight']:.2f}×{p['score']:.3f} ({k})"
                                                   for k, p in parts.items()) + f" = {scores[name]['total']:.3f}")
    if not scores:
        return {"recommended": None, "weights": weights, "scores": {}, "arithmetic": [], "excluded": excluded,
                "undecided": {}, "why": "no candidate passed its gate: nothing can be recommended or shipped"}
    recommended = max(scores, key=lambda n: scores[n]["total"])
    ahead = [n for n in scores if n != recommended]
    others = ", ".join(f"{n} {scores[n]['total']:.3f}" for n in ahead)
    why = (f"{recommended} scores {scores[recommended]['total']:.3f}" + (f" against {others}" if ahead else "") +
           " with priorities " + ", ".join(f"{k} {w:.2f}" for k, w in weights.items()))
    why += "".join(f"; {priority.replace('_', ' ')} could not be decided ({reason})"
                   for priority, reason in undecided.items())
    return {"recommended": recommended, "weights": weights, "scores": scores, "arithmetic": arithmetic,
            "excluded": excluded, "undecided": undecided, "why": why}


def _format(figure, unit: str) -> str:
    if isinstance(figure, dict):
        text = f"{figure['value']:.4g}"
        if "low" in figure:
            text += f" [{figure['low']:.4g}, {figure['high']:.4g}]"
        if figure.get("unreliable"):
            text += " (unreliable)"
    else:
        text = f"{figure:.4g}"
    return f"{text} {unit}".strip()


def _cell(figure, unit: str) -> str:
    """A summary cell: the figure, and the runtime it was measured in where it names one."""
    runtime = figure.get("runtime") if isinstance(figure, dict) else None
    return _format(figure, unit) + (f" ({runtime.removeprefix('native: ')})" if runtime else "")


CHART_WIDTH_IN = 11  # at figure_png's 90 dpi, about the page's 70em: chart text stays at its set size
CHART_FONT = 10


def _worth_a_chart(verdict: dict, names: list[str]) -> bool:
    """A bar chart shows a difference: not when every candidate's figure is 0 (nothing lost in conversion)."""
    return any(_value(verdict["figures"][n]) != 0 for n in names)


@dataclass(frozen=True)
class Bars:
    """How one criterion's bar chart is drawn."""

    values: list[float]
    colours: list[str]
    errors: list[list[float]] | None  # [below, above] per bar; None: no figure has an interval, so no caps
    ylim: tuple[float, float] | None  # zoomed to the data for fractions (accuracy); None: matplotlib's own


WINNER, OTHER = "#2a7", "#999"


def bars(verdict: dict, names: list[str]) -> Bars:
    """The winner green (none on a tie or when undecided), interval whiskers only where there are intervals,
    and accuracy axes zoomed to the data so that the intervals show."""
    figures = [verdict["figures"][n] for n in names]
    values = [_value(f) for f in figures]
    spans = [_interval(f) or (v, v) for f, v in zip(figures, values)]
    colours = [WINNER if n == verdict["best"] and verdict["winner"] not in ("tie", UNDECIDED) else OTHER
               for n in names]
    errors = ([[v - low for v, (low, _) in zip(values, spans)], [high - v for v, (_, high) in zip(values, spans)]]
              if any(_interval(f) for f in figures) else None)
    ylim = None
    if verdict["unit"] == "":  # a fraction: on a 0-1 axis 0.96 and 0.98 look the same
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        margin = max(high - low, 0.01) * 0.5
        ylim = (max(0.0, low - margin), min(1.0, high + margin))
    return Bars(values, colours, errors, ylim)


def _criteria_chart(plt, verdicts: list[dict], names: list[str]) -> bytes | None:
    """One bar chart per criterion that shows a difference (see ``bars``)."""
    shown = [v for v in verdicts if _worth_a_chart(v, names)]
    if not shown:
        return None
    columns = 3
    rows = -(-len(shown) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(CHART_WIDTH_IN, 3.2 * rows), squeeze=False)
    for axis, verdict in zip(axes.flat, shown):
        drawn = bars(verdict, names)
        if drawn.errors:
            axis.bar(range(len(names)), drawn.values, yerr=drawn.errors, color=drawn.colours, capsize=4)
        else:
            axis.bar(range(len(names)), drawn.values, color=drawn.colours)
        if drawn.ylim:
            axis.set_ylim(*drawn.ylim)
        axis.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=CHART_FONT - 1)
        axis.tick_params(axis="y", labelsize=CHART_FONT - 1)
        better = "higher" if verdict["higher_is_better"] else "lower"
        axis.set_title(f"{verdict['title']}\n({verdict['unit'] or 'fraction'}, {better} is better"
                       f"{'; ' + verdict['winner'] if verdict['winner'] in ('tie', UNDECIDED) else ''})",
                       fontsize=CHART_FONT)
    for axis in list(axes.flat)[len(shown):]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure_png(figure)


def _charts(document: dict) -> dict[str, bytes]:
    """Bar charts per criterion (with interval whiskers), training curves, and served throughput vs clients;
    a chart with nothing to show is left out."""
    plt = pyplot()
    candidates, verdicts = document["candidates"], document["verdicts"]
    names = [c["name"] for c in candidates]
    charts = {}
    if criteria := _criteria_chart(plt, verdicts, names):
        charts["criteria.png"] = criteria

    if training := _training_chart(plt, candidates):
        charts["training_curves.png"] = training
    if any(c["serving"].get("by_concurrency") for c in candidates):
        charts["serving.png"] = _serving_chart(plt, candidates)
    return charts


def _training_chart(plt, candidates: list[dict]) -> bytes | None:
    """Validation accuracy per epoch and over time; None when no candidate has a training history."""
    histories = [(c["name"], c["training"].get("history") or []) for c in candidates]
    if any(history for _, history in histories):
        figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(CHART_WIDTH_IN, 3.8))
        for name, history in histories:
            accuracy = [row["val_accuracy"] for row in history]
            by_epoch.plot([row["epoch"] for row in history], accuracy, marker="o", label=name)
            by_time.plot([row["elapsed_seconds"] for row in history], accuracy, marker="o", label=name)
        by_epoch.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy per epoch")
        by_time.set(xlabel="training time, s", ylabel="validation accuracy", title="validation accuracy over time")
        by_epoch.legend(fontsize=CHART_FONT - 1)
        figure.tight_layout()
        return figure_png(figure)
    return None


def serving_by_server(candidate: dict) -> dict[str, dict]:
    """A candidate's serving figures per model server (a bake-off from before the V2 server: TorchServe's)."""
    return candidate.get("serving_by_server") or {"torchserve": candidate["serving"]}


def _serving_chart(plt, candidates: list[dict]) -> bytes:
    """Served throughput and latency against concurrent clients, per candidate and server."""
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(CHART_WIDTH_IN, 3.8))
    for candidate in candidates:
        for server, serving in serving_by_server(candidate).items():
            levels = serving.get("by_concurrency") or {}
            clients, label = [int(c) for c in levels], f"{candidate['name']} on {server}"
            throughput.plot(clients, [levels[c]["requests_per_s"] for c in levels], marker="o", label=label)
            latency.plot(clients, [levels[c]["p50_ms"] for c in levels], marker="o", label=f"{label} p50")
            latency.plot(clients, [levels[c]["p99_ms"] for c in levels], marker="x", linestyle="--",
                         label=f"{label} p99")
    throughput.set(xlabel="concurrent clients", ylabel="requests/s", title="served throughput")
    latency.set(xlabel="concurrent clients", ylabel="ms", title="served latency")
    throughput.legend(fontsize=CHART_FONT - 1)
    latency.legend(fontsize=CHART_FONT - 2)
    figure.tight_layout()
    return figure_png(figure)


def render_markdown(document: dict) -> str:
    """The summary the CLI prints (its caller prints the report's path, once): criteria, winners and the
    recommendation."""
    names = [c["name"] for c in document["candidates"]]
    lines = [f"# Bake-off: {document['task']} ({document['id']})", "",
             "| criterion | " + " | ".join(names) + " | winner |", "|---" * (len(names) + 2) + "|"]
    for verdict in document["verdicts"]:
        cells = [_cell(verdict["figures"][n], verdict["unit"]) for n in names]
        lines.append(f"| {verdict['title']} | " + " | ".join(cells) + f" | {verdict['winner']} |")
    if notes := _unreliable_notes(document["verdicts"]):
        lines += ["", "Unreliable figures (they decide nothing):", *[f"- {note}" for note in notes]]
    if notes := precision_notes(document["candidates"], document.get("machine", {}).get("flags", {})):
        lines += ["", *[f"- {note}" for note in notes]]
    recommendation = document["recommendation"]
    lines += ["", f"**Recommendation:** {recommendation['recommended'] or 'none'}: {recommendation['why']}."]
    lines += [f"- {line}" for line in recommendation["arithmetic"]]
    lines += [f"- excluded {name}: {why}" for name, why in recommendation["excluded"].items()]
    shipped = document.get("shipped")
    if shipped and shipped.get("shipped"):
        lines += ["", f"**Shipped:** {shipped['candidate']} as {shipped['version']} ({shipped['deployment']['url']})."]
    elif shipped:
        lines += ["", f"**Not shipped:** {shipped.get('deployment', {}).get('why') or shipped['why']}"]
    lines += ["", f"GPU: {document['gpu']['why']}."]
    return "\n".join(lines) + "\n"


def precision_notes(candidates: list[dict], flags: dict[str, bool]) -> list[str]:
    """Per candidate that mixed precision does not speed up (its mixed images/s not above fp32's interval):
    the measurement, and why, from the CPU's bf16 support and what the other candidates gained on it."""
    gains = {c["name"]: c["training"]["mixed_over_fp32"] for c in candidates if "mixed_over_fp32" in c["training"]}
    bf16 = [flag for flag in ("avx512_bf16", "amx_bf16") if flags.get(flag)]
    notes = []
    for candidate in candidates:
        training = candidate["training"]
        mixed, fp32 = training.get("images_per_s_mixed"), training.get("images_per_s_fp32")
        if not (isinstance(mixed, dict) and isinstance(fp32, dict)) or mixed["value"] > fp32.get("high", fp32["value"]):
            continue
        effect = ("slows {} down" if mixed.get("high", mixed["value"]) < fp32.get("low", fp32["value"]) else
                  "does not speed {} up").format(candidate["name"])
        gainers = {n: g for n, g in gains.items() if n != candidate["name"] and g > 1.1}
        if not bf16:
            why = ("this CPU has no bf16 instructions (neither AVX512-BF16 nor AMX-BF16), so bf16 math is converted "
                   "to and from fp32 around fp32 arithmetic")
        elif gainers:
            gained = ", ".join(f"{n} gains {g:.2f}x" for n, g in gainers.items())
            why = (f"this CPU has {' and '.join(bf16)}, and {gained}"
                   + f" from it, so the cost lies in {candidate['framework']}'s bf16 path for this model, not the CPU")
        else:
            why = f"this CPU has {' and '.join(bf16)}, yet no candidate gains from bf16 on it with this model"
        notes.append(f"Mixed precision {effect}: {mixed['value']:.4g} img/s mixed against "
                     f"{fp32['value']:.4g} fp32 ({training['mixed_over_fp32']:.2f}x); {why}. Training in fp32 "
                     f"(training.precision: fp32) is faster for it here.")
    return notes


def _unreliable_notes(verdicts: list[dict]) -> list[str]:
    """One line per unreliable figure: whose, which, and why."""
    return [f"{name}, {verdict['title']}: {why}" for verdict in verdicts
            for name, why in verdict.get("unreliable", {}).items()]


def _throughput_rows(candidates: list[dict]) -> list[tuple]:
    """Per candidate and precision: the training images/s from alternating rounds, how many rounds were quiet,
    their spread, the busiest round and the verdict."""
    rows = []
    for candidate in candidates:
        for precision in ("mixed", "fp32"):
            figure = candidate["training"].get(f"images_per_s_{precision}")
            if not isinstance(figure, dict) or "rounds" not in figure:
                continue
            rows.append((candidate["name"], precision, _format(figure, "img/s"),
                         f"{figure['quiet_rounds']} of {len(figure['rounds'])}", f"{figure['spread']:.0%}",
                         f"{figure['busiest_round_share']:.0%}", figure.get("unreliable") or "reliable"))
    return rows


def _training_load_rows(candidates: list[dict]) -> list[tuple]:
    """Per candidate: the load its (sequential) training run was taken under, beside its wall-clock figures."""
    return [(c["name"], f"{c['training']['train_seconds']:.1f} s", f"{c['training']['time_to_best_s']:.1f} s",
             f"{load['others_cpu_share']:.0%}", f"{load['steal_share']:.0%}", f"{load['load_average_1m']:.2f}")
            for c in candidates if (load := c["training"].get("load"))]


def _method_rows(method: dict, prefix: str = "") -> list[tuple[str, str]]:
    """The Method as rows: nested settings by their path ("threads › inference › intra_op"), lists joined."""
    rows = []
    for key, value in method.items():
        name = f"{prefix} › {key}" if prefix else key
        if isinstance(value, dict):
            rows += _method_rows(value, name)
        else:
            rows.append((name.replace("_", " "), ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def render_html(document: dict, charts: dict[str, bytes]) -> str:
    names = [c["name"] for c in document["candidates"]]
    machine, method = document["machine"], document["method"]
    summary = table([(v["title"], *[_cell(v["figures"][n], v["unit"]) for n in names], v["winner"])
                     for v in document["verdicts"]], ("criterion", *names, "winner"))
    recommendation = document["recommendation"]
    arithmetic = "".join(f"<li>{html.escape(line)}</li>" for line in recommendation["arithmetic"])
    excluded = "".join(f"<li>{html.escape(n)}: {html.escape(w)}</li>" for n, w in recommendation["excluded"].items())
    inference_rows = []
    for candidate in document["candidates"]:
        for runtime, figures in candidate["inference"].items():
            inference_rows.append((candidate["name"], runtime,
                                   *[_format(figures[b]["p50_ms"], "ms") for b in ("b1", "b64")],
                                   *[f"{figures[b]['p99_ms']:.4g} ms" for b in ("b1", "b64")]))
    serving_rows = [(c["name"], server, clients, f"{level['requests_per_s']:.0f}", f"{level['p50_ms']:.3g}",
                     f"{level['p99_ms']:.3g}", serving["errors"])
                    for c in document["candidates"] for server, serving in serving_by_server(c).items()
                    for clients, level in serving["by_concurrency"].items()]
    artifacts = list(dict.fromkeys(name for c in document["candidates"] for name in c["footprint_mb"]))
    size_rows = [(c["name"], *[f"{c['footprint_mb'][a]:.3f}" if a in c["footprint_mb"] else "" for a in artifacts])
                 for c in document["candidates"]]
    optimization_rows = [(c["name"], f"{o['conversion_s_onnx']:.3g} s", f"{o['conversion_s_int8']:.3g} s",
                          f"{o['accuracy_loss_pp_onnx']:.3g} pp", f"{o['accuracy_loss_pp_int8']:.3g} pp",
                          f"{o['max_logit_diff_onnx']:.3g}", f"{o['max_logit_diff_int8']:.3g}",
                          "passed" if c["gate"]["passed"] else "failed: " + ", ".join(c["gate"]["failed_checks"]))
                         for c in document["candidates"] for o in [c["optimization"]]]
    shipped = document.get("shipped")
    shipped_html = ""
    if shipped:
        shipped_html = ("<h2>Shipped</h2><p>" + html.escape(
            f"{shipped['candidate']} as {shipped['version']}, served at {shipped['deployment']['url']}: "
            f"{shipped['why']}" if shipped.get("shipped") else
            f"nothing shipped: {shipped.get('deployment', {}).get('why') or shipped['why']}") + "</p>")
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["flags"].items())
    sections = [
        f"<h1>Bake-off: {html.escape(document['task'])}</h1><p>{html.escape(document['id'])}, "
        f"{html.escape(document['created'])}. Candidates: {html.escape(', '.join(names))}.</p>",
        "<h2>Summary</h2>", summary,
        "<h2>Recommendation</h2>", f"<p><b>{html.escape(str(recommendation['recommended']))}</b>: "
        f"{html.escape(recommendation['why'])}.</p><ul>{arithmetic}</ul>"
        "<p>Each priority (the spec's <code>bakeoff.priorities</code>, normalized) scores 1.0 for the best "
        "candidate and any tied with it; otherwise the ratio to the best: best/value where lower is better, "
        "value/best where higher is better, and for accuracy the best error rate over this one's. Accuracy is "
        "judged on the optimized model, latency on the served p50 with one client, training cost on "
        "mixed-precision images/s. Candidates that failed their gate are not scored.</p>"
        + (f"<p>Excluded:</p><ul>{excluded}</ul>" if excluded else ""), shipped_html,
        "<h2>Charts</h2>", *[png_tag(data, name) for name, data in charts.items()],
        "<h2>Training throughput (alternating rounds)</h2>",
        table(_throughput_rows(document["candidates"]),
              ("candidate", "precision", "images/s [95% interval]", "quiet rounds", "spread", "busiest round",
               "verdict")),
        table(_method_rows(method.get("training_throughput", {})), ("how the rounds were taken", "")),
        *([f"<p>{html.escape(note)}</p>" for note in precision_notes(document["candidates"], machine["flags"])]),
        "<h2>Training runs and the load they ran under</h2>",
        table(_training_load_rows(document["candidates"]),
              ("candidate", "training time", "time to best", "CPU used by others", "CPU stolen",
               "load average (1 min, at the end)")),
        "<h2>Optimization and gate</h2>",
        table(optimization_rows, ("candidate", "ONNX conversion", "INT8 conversion", "ONNX loss", "INT8 loss",
                                  "ONNX max logit diff", "INT8 max logit diff", "gate")),
        "<h2>Inference (one process of its own, under the serving thread settings)</h2>",
        table(inference_rows, ("candidate", "runtime", "p50 b1", "p50 b64", "p99 b1", "p99 b64")),
        "<h2>Serving (loopback; the recommendation weighs the server deploy.server names)</h2>",
        table(serving_rows, ("candidate", "server", "clients", "requests/s", "p50 ms", "p99 ms",
                             "errors (all levels)")),
        "<h2>Footprint (MB)</h2>", table(size_rows, ("candidate", *artifacts)),
        "<h2>Method</h2>", table(_method_rows(method), ("setting", "value")),
        "<h2>Machine</h2>",
        table([("CPU", machine["cpu"]), ("cores", machine["cores"]), ("flags", flags),
               ("OMP_NUM_THREADS", machine["omp_num_threads"]), ("platform", machine["platform"]),
               ("python", machine["python"]),
               *[(name, version) for name, version in machine["libraries"].items()]]),
        "<h2>GPU</h2>", f"<p>{html.escape(document['gpu']['why'])}</p>",
    ]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Bake-off {html.escape(document['task'])}"
            f"</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def write_report(document: dict, directory: Path) -> BakeoffResult:
    """Judge, recommend, and write bakeoff.json, the charts, bakeoff.html and bakeoff.md into ``directory``."""
    document["verdicts"] = judge(document["candidates"], document["method"]["same_for_all"]["quantize"])
    document["recommendation"] = recommend(document["candidates"], document["priorities"], document["verdicts"])
    report = directory / "bakeoff.html"
    document["report"] = str(report)
    write_json(directory / "bakeoff.json", document)
    charts = _charts(document)
    for name, data in charts.items():
        with atomic_file(directory / name, "wb") as handle:
            handle.write(data)
    write_text(report, render_html(document, charts))
    summary = render_markdown(document)
    write_text(directory / "bakeoff.md", summary)
    return BakeoffResult(directory, report, document, summary)
