"""Data tests: the expectation suite passes on good data and names each kind of broken data."""

import shutil

import pytest
from PIL import Image

from components.data import prepare_data
from components.errors import DataValidationError
from components.validate import validate_dataset
from tests.conftest import spec_for


@pytest.fixture
def dataset(small_dataset, tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(small_dataset, copy)
    return copy


def _validate(spec, settings, tmp_path):
    prepare_data(spec, tmp_path / "data", settings)
    return validate_dataset(spec, tmp_path / "data", tmp_path / "validate")


def test_good_dataset_passes_and_writes_result_and_data_docs(digits_spec, dataset, settings, tmp_path):
    result = _validate(spec_for(digits_spec, dataset), settings, tmp_path)
    assert result.success and result.failures == []
    assert result.result_json.is_file()
    assert result.data_docs.is_file() and "<html" in result.data_docs.read_text().lower()


def _failure(spec, settings, tmp_path) -> str:
    with pytest.raises(DataValidationError) as caught:
        _validate(spec, settings, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert (tmp_path / "validate" / "validation.json").is_file()  # the result is kept for the user
    return message


def test_corrupt_png_is_named(digits_spec, dataset, settings, tmp_path):
    (dataset / "3" / "9999.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "every file is a readable image" in message and "3/9999.png" in message


def test_extra_label_folder_is_named(digits_spec, dataset, settings, tmp_path):
    shutil.copytree(dataset / "1", dataset / "x")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "unknown label folder(s) ['x']" in message


def test_empty_class_is_named(digits_spec, dataset, settings, tmp_path):
    for image in (dataset / "5").iterdir():
        image.unlink()
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "'5' has 0" in message


def test_wrong_image_size_is_named(digits_spec, dataset, settings, tmp_path):
    Image.new("L", (9, 8)).save(dataset / "2" / "9998.png")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "every image is 8 px wide" in message and "2/9998.png" in message


def test_same_image_in_train_and_test_is_caught(digits_spec, dataset, settings, tmp_path):
    spec = spec_for(digits_spec, dataset)
    prepare_data(spec, tmp_path / "data", settings)
    manifest_path = tmp_path / "data" / "manifest.csv"
    import pandas as pd

    manifest = pd.read_csv(manifest_path, dtype={"label": str})
    test_hash = manifest.loc[manifest["split"] == "test", "content_hash"].iloc[0]
    first_train = manifest.index[manifest["split"] == "train"][0]
    manifest.loc[first_train, "content_hash"] = test_hash  # a split made without hash grouping would do this
    manifest.to_csv(manifest_path, index=False)
    with pytest.raises(DataValidationError, match="no image content is in both the train and the test split"):
        validate_dataset(spec, tmp_path / "data", tmp_path / "validate")
