"""The validate step: a Great Expectations suite over the dataset manifest.

Three tables are validated, each a plain DataFrame derived from the manifest:
- ``images``: one row per file (readable, size, mode, labels);
- ``classes``: one row per label folder with its image count (catches empty classes);
- ``split_hashes``: one row per distinct (content hash, split) pair, so a hash that appears in
  both train and test shows up as a duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.atomic import atomic_dir, write_json
from components.data import MANIFEST, read_data_info
from components.errors import DataValidationError
from components.settings import PROJECT_DIR, Settings
from pipelines.spec import TaskSpec

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
    image = spec.dataset.image
    return {
        "images": [
            E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True],
                                          meta={"why": "every file is a readable image"}),
            E.ExpectColumnValuesToBeInSet(column="width", value_set=[image.width],
                                          meta={"why": f"every image is {image.width} px wide"}),
            E.ExpectColumnValuesToBeInSet(column="height", value_set=[image.height],
                                          meta={"why": f"every image is {image.height} px high"}),
            E.ExpectColumnValuesToBeInSet(column="mode", value_set=[image.mode],
                                          meta={"why": f"every image has mode {image.mode}"}),
        ],
        "classes": [
            E.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=list(spec.dataset.classes),
                                                   meta={"why": "the label folders are exactly the spec's classes"}),
            E.ExpectColumnValuesToBeBetween(column="count", min_value=spec.dataset.min_per_class,
                                            meta={"why": f"each class has at least {spec.dataset.min_per_class} images"}),
        ],
        "split_hashes": [
            E.ExpectColumnValuesToBeUnique(column="content_hash",
                                           meta={"why": "no image content is in both the train and the test split"}),
        ],
    }


def _tables(manifest: pd.DataFrame, class_counts: dict[str, int]) -> dict[str, pd.DataFrame]:
    # Unreadable files have no size: compare them as -1 so their rows fail the readable check, not a crash.
    images = manifest.assign(width=manifest["width"].fillna(-1).astype(int),
                             height=manifest["height"].fillna(-1).astype(int),
                             mode=manifest["mode"].fillna("unreadable"))
    classes = pd.DataFrame({"label": list(class_counts), "count": list(class_counts.values())})
    split_hashes = manifest[["content_hash", "split"]].drop_duplicates()
    return {"images": images, "classes": classes, "split_hashes": split_hashes}


def _describe_failure(table: str, frame: pd.DataFrame, result) -> str:
    config = result.expectation_config
    why = (config.meta or {}).get("why", config.type)
    column = config.kwargs.get("column")
    details = result.result or {}
    if table == "images":
        bad = frame[frame[column].astype(str).isin([str(v) for v in details.get("partial_unexpected_list", [])])]
        examples = ", ".join(bad["path"].head(3))
        return f"{why}: {details.get('unexpected_count', '?')} file(s) fail, e.g. {examples}"
    if table == "classes" and column == "label":
        expected = set(config.kwargs["value_set"])
        observed = set(frame["label"])
        parts = []
        if observed - expected:
            parts.append(f"unknown label folder(s) {sorted(observed - expected)}")
        if expected - observed:
            parts.append(f"missing class folder(s) {sorted(expected - observed)}")
        return f"{why}: " + "; ".join(parts)
    if table == "classes":
        low = frame[frame["count"] < config.kwargs["min_value"]]
        listed = ", ".join(f"'{row.label}' has {row.count}" for row in low.itertuples())
        return f"{why}: {listed}"
    dupes = frame[frame["content_hash"].duplicated()]["content_hash"].head(3).str[:12].tolist()
    return f"{why}: {details.get('unexpected_count', len(dupes))} hash(es) in both, e.g. {dupes}"


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
    manifest = pd.read_csv(data_dir / MANIFEST, dtype={"label": str})
    tables = _tables(manifest, read_data_info(data_dir)["class_counts"])
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
        write_json(tmp / "validation.json", {"success": not failures, "failures": failures, "results": summary})

    result = ValidationResult(not failures, out_dir / "validation.json", out_dir / "data_docs" / "index.html", failures)
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
    """Run ``components.tfx_validate`` in the TFX environment; raise if it finds anomalies or drift.

    Drift is measured against the statistics of the last dataset version that passed; a version
    that passes becomes the next baseline. The curated schema is ``pipelines/schemas/<task>/schema.pbtxt``;
    without one, SchemaGen infers a schema (written to the run for review).
    """
    python = settings.tfx_env / "bin" / "python"
    if not python.exists():
        raise DataValidationError(f"the TFX environment {settings.tfx_env} is missing: run `make setup`")
    version = read_data_info(data_dir)["dataset_version"]
    store = _baselines(settings, spec.name)
    accepted = json.loads((store / "accepted.json").read_text()) if (store / "accepted.json").exists() else []
    previous = next((v for v in reversed(accepted) if v != version), None)
    schema = SCHEMAS_DIR / spec.name / "schema.pbtxt"
    with atomic_dir(out_dir) as tmp:
        command = [str(python), "-m", "components.tfx_validate", "--manifest", str(data_dir / MANIFEST),
                   "--out", str(tmp), "--label-linf", str(spec.dataset.drift.label_linf),
                   "--js-threshold", str(spec.dataset.drift.numeric_js)]
        if schema.exists():
            command += ["--schema", str(schema)]
        if previous:
            command += ["--previous-stats", str(store / f"{previous}.pb")]
        with open(tmp / "tfx.log", "w") as log:
            proc = subprocess.run(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, timeout=900,
                                  env={**os.environ, "PYTHONPATH": str(PROJECT_DIR), "TF_CPP_MIN_LOG_LEVEL": "2"})
        if proc.returncode != 0:
            tail = (tmp / "tfx.log").read_text().strip().splitlines()[-1:]
            raise DataValidationError(f"the TFX validation pipeline failed (exit {proc.returncode}): {tail}; "
                                      f"log: {out_dir / 'tfx.log'}")
        report = json.loads((tmp / "tfx_report.json").read_text())
        shutil.rmtree(tmp / "tfx" / "examples", ignore_errors=True)  # a copy of the data; the stats stay
    result = TfxResult(report["success"], out_dir / "tfx_report.json", report["anomalies"], report["drift"], previous)
    if not result.success:
        raise DataValidationError(
            f"dataset {spec.dataset.name} failed TFX validation: " + " | ".join(result.anomalies + result.drift)
            + f" — see {result.report}")
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(out_dir / "statistics.pb", store / f"{version}.pb")
    if not accepted or accepted[-1] != version:
        write_json(store / "accepted.json", [*accepted, version])
    return result
