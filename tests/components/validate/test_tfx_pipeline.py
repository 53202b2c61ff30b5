"""TFX data validation in its own Python 3.10 environment: schema anomalies and drift stop a run."""

import json
import shutil

import numpy as np
import psutil
import pytest
from PIL import Image

from components.data.dataset import prepare_data, read_data_info
from components.errors import DataValidationError
from components.validate.expectations import SCHEMAS_DIR, validate_data, validate_with_tfx
from tests.conftest import spec_for

pytestmark = pytest.mark.slow  # runs the TFX pipeline in its own venv


def _dataset(source, tmp_path, name, change=None):
    copy = tmp_path / name
    shutil.copytree(source, copy)
    if change:
        change(copy)
    return copy


def _invert(dataset):
    """The same digits, white on black instead of black on white: a shifted intensity distribution."""
    for path in dataset.rglob("*.png"):
        pixels = np.asarray(Image.open(path))
        Image.fromarray((255 - pixels).astype(np.uint8), mode="L").save(path)


def _validate(spec, settings, tmp_path, name):
    prepare_data(spec, tmp_path / name / "data", settings)
    return validate_with_tfx(spec, tmp_path / name / "data", tmp_path / name / "tfx", settings)


def test_curated_schema_is_versioned_for_digits():
    schema = (SCHEMAS_DIR / "digits" / "schema.pbtxt").read_text()
    assert 'name: "label"' in schema and 'name: "mean_intensity"' in schema


def test_tfx_accepts_good_data_then_stops_drift_and_unknown_labels(digits_spec, small_dataset, settings, tmp_path):
    spec = spec_for(digits_spec, small_dataset)
    first = _validate(spec, settings, tmp_path, "good")
    report = json.loads(first.report.read_text())
    assert first.success and first.baseline is None and report["schema_source"].endswith("digits/schema.pbtxt")
    assert (tmp_path / "good" / "tfx" / "statistics.pb").is_file()

    shifted = spec_for(digits_spec, _dataset(small_dataset, tmp_path, "inverted", _invert))
    with pytest.raises(DataValidationError, match="drift vs previous version: mean_intensity") as caught:
        _validate(shifted, settings, tmp_path, "shifted")
    assert "\n" not in str(caught.value)
    assert json.loads((tmp_path / "shifted" / "tfx" / "tfx_report.json").read_text())["drift"]

    def add_label(dataset):
        shutil.copytree(dataset / "7", dataset / "ten")

    unknown = spec_for(digits_spec, _dataset(small_dataset, tmp_path, "unknown", add_label))
    with pytest.raises(DataValidationError, match="label: Unexpected string values"):
        _validate(unknown, settings, tmp_path, "unknown")

    # Neither failed version became the drift baseline.
    accepted = json.loads((settings.home / "tfx" / "digits" / "accepted.json").read_text())
    assert len(accepted) == 1


def test_the_step_runs_both_checks_and_a_version_that_passes_both_becomes_the_baseline(digits_spec, small_dataset,
                                                                                         settings, tmp_path):
    """validate_data, as the validate step calls it: the suite here while TFX's pipeline runs in its process."""
    spec = spec_for(digits_spec, small_dataset)
    prepare_data(spec, tmp_path / "data", settings)
    expectations, tfx = validate_data(spec, tmp_path / "data", tmp_path / "validate", tmp_path / "tfx", settings)
    assert expectations.success and expectations.data_docs.is_file()
    assert tfx.success and (tmp_path / "tfx" / "statistics.pb").is_file()
    assert json.loads((settings.home / "tfx" / "digits" / "accepted.json").read_text()) == [
        read_data_info(tmp_path / "data")["dataset_version"]]


def test_a_failed_expectation_stops_the_tfx_pipeline_and_moves_no_baseline(digits_spec, small_dataset, settings,
                                                                           tmp_path):
    """The suite fails in seconds, long before the pipeline (whose imports alone take longer) ends: the pipeline's
    process is stopped, nothing of it is published, the version is no drift baseline, and the error is the suite's."""
    def corrupt(dataset):
        (dataset / "3" / "9999.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")

    spec = spec_for(digits_spec, _dataset(small_dataset, tmp_path, "corrupt", corrupt))
    prepare_data(spec, tmp_path / "data", settings)
    with pytest.raises(DataValidationError, match="every file is a decodable image: 1 file"):
        validate_data(spec, tmp_path / "data", tmp_path / "validate", tmp_path / "tfx", settings)
    assert not (tmp_path / "tfx").exists() and not (settings.home / "tfx").exists()
    manifest = str(tmp_path / "data" / "manifest.csv")
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if manifest in (p.info["cmdline"] or [])]
