"""The validate step: a Great Expectations suite over the dataset manifest, and TFX data validation beside it
(``validate_data``).

Five tables are validated, each a plain DataFrame derived from the manifest:
- ``images``: one row per file the run uses (all files, unless ``on_bad_file: skip`` left some out):
  every file decodes;
- ``sizes``: the decodable ones: each at least ``min_side`` pixels in width and height;
- ``classes``: one row per label with its image count: the labels are exactly the spec's classes,
  each has at least ``min_per_class`` images;
- ``balance``: one row, the largest class count over the smallest, at most ``max_imbalance``;
- ``hash_labels``: one row per distinct (content hash, label): no image content under two labels.

Duplicates within one label are counted in the report, not failed: the split keeps them together.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

from components.validate import tfx_pipeline
from components.atomic import atomic_dir, write_json
from components.child_processes import stop_session
from components.data.dataset import MANIFEST, SKIPPED, read_data_info, read_manifest
from components.run_files import VALIDATION
from components.errors import DataValidationError
from components.settings import PROJECT_DIR, Settings
from components.spec import TaskSpec

SCHEMAS_DIR = PROJECT_DIR / "pipelines" / "schemas"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    result_json: Path
    data_docs: Path
    failures: list[str]


def _expectations(spec: TaskSpec) -> dict[str, list]:
    import great_expectations as gx

    E = gx.expectations
    data = spec.dataset
    return {
        "images": [
            E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True],
                                          meta={"why": "every file is a decodable image"}),
        ],
        "sizes": [
            E.ExpectColumnValuesToBeBetween(column="width", min_value=data.min_side,
                                            meta={"why": f"every image is at least {data.min_side} px wide"}),
            E.ExpectColumnValuesToBeBetween(column="height", min_value=data.min_side,
                                            meta={"why": f"every image is at least {data.min_side} px high"}),
        ],
        "classes": [
            E.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=list(data.classes),
                                                   meta={"why": "the labels are exactly the spec's classes"}),
            E.ExpectColumnValuesToBeBetween(column="count", min_value=data.min_per_class,
                                            meta={"why": f"each class has at least {data.min_per_class} images"}),
        ],
        "balance": [
            E.ExpectColumnValuesToBeBetween(column="ratio", max_value=data.max_imbalance,
                                            meta={"why": f"the largest class is at most {data.max_imbalance:g}x "
                                                         "the smallest (dataset.max_imbalance)"}),
        ],
        "hash_labels": [
            E.ExpectColumnValuesToBeUnique(column="content_hash",
                                           meta={"why": "no image content is under two labels"}),
        ],
    }


def _tables(manifest: pd.DataFrame, class_counts: dict[str, int]) -> dict[str, pd.DataFrame]:
    used = manifest[manifest["split"] != SKIPPED]
    readable = used[used["readable"]]
    sizes = readable.assign(width=readable["width"].astype(int), height=readable["height"].astype(int))
    classes = pd.DataFrame({"label": list(class_counts), "count": list(class_counts.values())})
    counts = [n for n in class_counts.values()]
    ratio = max(counts) / min(counts) if counts and min(counts) > 0 else float("inf")
    hash_labels = readable.drop_duplicates(["content_hash", "label"])[["content_hash", "label", "path"]]
    return {"images": used, "sizes": sizes, "classes": classes, "balance": pd.DataFrame({"ratio": [ratio]}),
            "hash_labels": hash_labels}


def _describe_failure(table: str, frame: pd.DataFrame, result) -> str:
    config = result.expectation_config
    why = (config.meta or {}).get("why", config.type)
    column = config.kwargs.get("column")
    details = result.result or {}
    if table == "images" and column == "readable":
        bad = frame[~frame["readable"]]
        examples = "; ".join(f"{row.path} ({row.problem})" for row in bad.head(3).itertuples())
        return f"{why}: {len(bad)} file(s) fail: {examples}{' …' if len(bad) > 3 else ''}"
    if table == "sizes":
        bad = frame[frame[column] < config.kwargs["min_value"]]
        examples = ", ".join(f"{row.path} ({row.width}x{row.height})" for row in bad.head(3).itertuples())
        return f"{why}: {len(bad)} file(s) fail, e.g. {examples}"
    if table == "classes" and column == "label":
        expected = set(config.kwargs["value_set"])
        observed = set(frame["label"])
        parts = []
        if observed - expected:
            parts.append(f"label(s) not in the spec {sorted(observed - expected)}")
        if expected - observed:
            parts.append(f"missing class(es) {sorted(expected - observed)}")
        return f"{why}: " + "; ".join(parts)
    if table == "classes":
        low = frame[frame["count"] < config.kwargs["min_value"]]
        listed = ", ".join(f"'{row.label}' has {row.count}" for row in low.itertuples())
        return f"{why}: {listed}"
    if table == "balance":
        return f"{why}: the ratio is {frame['ratio'].iloc[0]:.1f}"
    conflicts = frame[frame["content_hash"].duplicated(keep=False)].sort_values(["content_hash", "label"])
    examples = []
    for _, group in list(conflicts.groupby("content_hash"))[:3]:
        examples.append(" and ".join(f"{row.path} ('{row.label}')" for row in group.itertuples()))
    count = conflicts["content_hash"].nunique()
    return f"{why}: {count} image(s) under two labels, e.g. the same image as {'; '.join(examples)}"


@contextmanager
def _renderer_log_to(path: Path) -> Iterator[None]:
    """GX's Data Docs renderer logs a traceback for some failed aggregate expectations (a missing
    ``unexpected_percent``) and renders the rest. That is GX's problem, not the user's: it goes to a
    file in the run, never to the terminal, and the one-line validation error stays the only message."""
    renderer = logging.getLogger("great_expectations.render")
    handler = logging.FileHandler(path, delay=True)
    saved = renderer.propagate
    renderer.addHandler(handler)
    renderer.propagate = False
    try:
        yield
    finally:
        renderer.removeHandler(handler)
        renderer.propagate = saved
        handler.close()


def validate_dataset(spec: TaskSpec, data_dir: Path, out_dir: Path) -> ValidationResult:
    """Run the suite; write the result JSON and Data Docs to ``out_dir``; raise if any expectation fails."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    manifest = read_manifest(data_dir)
    info = read_data_info(data_dir)
    tables = _tables(manifest, info["class_counts"])
    expectations = _expectations(spec)

    failures: list[str] = []
    summary: dict[str, dict] = {}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as gx_root:
        context = gx.get_context(mode="file", project_root_dir=gx_root)
        context.variables.progress_bars = {"globally": False}
        source = context.data_sources.add_pandas(f"{spec.name}_manifest")
        definitions = []
        for table, items in expectations.items():
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
            suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}_{table}"))
            for expectation in items:
                suite.add_expectation(expectation)
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{spec.name}_{table}", data=batch, suite=suite)))
        for definition in definitions:
            table = definition.name.removeprefix(f"{spec.name}_")
            result = definition.run(batch_parameters={"dataframe": tables[table]},
                                    result_format={"result_format": "SUMMARY"})
            summary[table] = result.to_json_dict()
            failures += [_describe_failure(table, tables[table], r) for r in result.results if not r.success]
        with _renderer_log_to(tmp / "data_docs_render.log"):
            context.build_data_docs()
        shutil.copytree(Path(gx_root) / "gx" / "uncommitted" / "data_docs" / "local_site", tmp / "data_docs")
        write_json(tmp / VALIDATION, {
            "success": not failures, "failures": failures, "results": summary,
            "skipped_files": manifest.loc[manifest["split"] == SKIPPED, ["path", "problem"]].to_dict("records"),
            "ignored": info.get("ignored", {}), "duplicates_within_label": info.get("duplicates_within_label", 0)})

    result = ValidationResult(not failures, out_dir / VALIDATION, out_dir / "data_docs" / "index.html", failures)
    if failures:
        raise DataValidationError(
            f"dataset {spec.dataset.name} failed validation ({len(failures)} expectation(s)): "
            + " | ".join(failures) + f" — see {result.data_docs}"
        )
    return result


@dataclass(frozen=True)
class TfxResult:
    success: bool
    report: Path
    anomalies: list[str]
    drift: list[str]
    baseline: str | None


def _baselines(settings: Settings, task: str) -> Path:
    return settings.home / "tfx" / task


def validate_with_tfx(spec: TaskSpec, data_dir: Path, out_dir: Path, settings: Settings) -> TfxResult:
    """Run ``components.validate.tfx_pipeline`` in the TFX environment; raise if it finds anomalies or drift.

    Drift is measured against the statistics of the last dataset version that passed; a version
    that passes becomes the next baseline. The curated schema is ``pipelines/schemas/<task>/schema.pbtxt``;
    without one, SchemaGen infers a schema (written to the run for review).
    """
    return accept_tfx_result(spec, run_tfx_pipeline(spec, data_dir, out_dir, settings), data_dir, settings)


def validate_data(spec: TaskSpec, data_dir: Path, validate_dir: Path, tfx_dir: Path,
                  settings: Settings) -> tuple[ValidationResult, TfxResult]:
    """The validate step: the Great Expectations suite runs here while the TFX pipeline runs in its own process
    (they share no state, and TFX's takes longest), then TFX's verdict is taken. A failed suite stops the pipeline
    if it still runs, so that it publishes nothing, and a version becomes TFX's drift baseline only when both
    pass."""
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="tfx") as pool:
        pipeline = pool.submit(run_tfx_pipeline, spec, data_dir, tfx_dir, settings, stop)
        try:
            expectations = validate_dataset(spec, data_dir, validate_dir)
            return expectations, accept_tfx_result(spec, pipeline.result(), data_dir, settings)
        finally:
            stop.set()  # a no-op once the pipeline has ended; otherwise the pool waits until it is stopped


def run_tfx_pipeline(spec: TaskSpec, data_dir: Path, out_dir: Path, settings: Settings,
                     stop: threading.Event | None = None) -> TfxResult:
    """Run the TFX pipeline over the data step's manifest and publish its outputs in ``out_dir``; its verdict, not
    yet acted on (``accept_tfx_result``). Once ``stop`` is set its process ends, and nothing is published."""
    python = settings.tfx_env / "bin" / "python"
    if not python.exists():
        raise DataValidationError(f"the TFX environment {settings.tfx_env} is missing: run `make setup` in a Relay "
                                  "checkout, or set RELAY_TFX_ENV to a Python 3.10 environment built from its "
                                  "requirements/tfx.lock")
    store = _baselines(settings, spec.name)
    previous = next((v for v in reversed(_accepted(store)) if v != read_data_info(data_dir)["dataset_version"]), None)
    schema = SCHEMAS_DIR / spec.name / "schema.pbtxt"
    with atomic_dir(out_dir) as tmp:
        # The TFX environment is Python 3.10: it runs the module as a script, isolated (-I), so neither Relay's
        # directory nor PYTHONPATH (an installed Relay lives in the 3.11 site-packages) reaches its imports.
        command = [str(python), "-I", str(Path(tfx_pipeline.__file__)), "--manifest", str(data_dir / MANIFEST),
                   "--out", str(tmp), "--label-linf", str(spec.dataset.drift.label_linf),
                   "--js-threshold", str(spec.dataset.drift.numeric_js)]
        if schema.exists():
            command += ["--schema", str(schema)]
        if previous:
            command += ["--previous-stats", str(store / f"{previous}.pb")]
        with open(tmp / "tfx.log", "w") as log:
            returncode = _run_unless_stopped(command, tmp, log, stop)
        if returncode != 0:
            tail = (tmp / "tfx.log").read_text().strip().splitlines()[-1:]
            raise DataValidationError(f"the TFX validation pipeline failed (exit {returncode}): {tail}; "
                                      f"log: {out_dir / 'tfx.log'}")
        report = json.loads((tmp / "tfx_report.json").read_text())
        shutil.rmtree(tmp / "tfx" / "examples", ignore_errors=True)  # a copy of the data; the stats stay
    return TfxResult(report["success"], out_dir / "tfx_report.json", report["anomalies"], report["drift"], previous)


def _accepted(store: Path) -> list[str]:
    """The dataset versions that passed, oldest first."""
    return json.loads((store / "accepted.json").read_text()) if (store / "accepted.json").exists() else []


def _run_unless_stopped(command: list[str], cwd: Path, log: IO[str], stop: threading.Event | None,
                        timeout_s: float = 900) -> int:
    """Run ``command`` to its end and return its exit status. Its process, and any it started, is stopped and
    this raises once ``stop`` is set or after ``timeout_s``."""
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + timeout_s
    try:
        while process.poll() is None:
            if stop is not None and stop.is_set():
                raise DataValidationError("the TFX validation pipeline was stopped: another check failed")
            if time.monotonic() > deadline:
                raise DataValidationError(f"the TFX validation pipeline did not finish in {timeout_s:.0f} s: see "
                                          f"{cwd / 'tfx.log'}")
            time.sleep(0.2)
        return process.returncode
    finally:
        if process.poll() is None:
            stop_session(process.pid)


def accept_tfx_result(spec: TaskSpec, result: TfxResult, data_dir: Path, settings: Settings) -> TfxResult:
    """Raise on the pipeline's anomalies or drift; otherwise make this dataset version the next drift baseline."""
    if not result.success:
        raise DataValidationError(
            f"dataset {spec.dataset.name} failed TFX validation: " + " | ".join(result.anomalies + result.drift)
            + f" — see {result.report}")
    version = read_data_info(data_dir)["dataset_version"]
    store = _baselines(settings, spec.name)
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(result.report.parent / "statistics.pb", store / f"{version}.pb")
    if (accepted := _accepted(store))[-1:] != [version]:
        write_json(store / "accepted.json", [*accepted, version])
    return result
