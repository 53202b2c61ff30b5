"""The validate step: a Great Expectations suite over the dataset manifest.

Three tables are validated, each a plain DataFrame derived from the manifest:
- ``images``: one row per file (readable, size, mode, labels);
- ``classes``: one row per label folder with its image count (catches empty classes);
- ``split_hashes``: one row per distinct (content hash, split) pair, so a hash that appears in
  both train and test shows up as a duplicate.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.atomic import atomic_dir, write_json
from components.data import MANIFEST, read_data_info
from components.errors import DataValidationError
from pipelines.spec import TaskSpec

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
