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


def test_an_ordinary_failure_prints_no_data_docs_traceback(digits_spec, dataset, settings, tmp_path, capfd):
    """GX's renderer fails on the aggregate expectations (KeyError 'unexpected_percent'); the user sees
    only the one-line error, and the renderer's complaint is kept in the run."""
    for image in (dataset / "8").iterdir():
        image.unlink()
    shutil.copytree(dataset / "0", dataset / "ten")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    printed = capfd.readouterr()
    assert "unknown label folder(s) ['ten']" in message and "'8' has 0" in message
    for noise in ("Traceback", "KeyError", "unexpected_percent"):
        assert noise not in printed.out + printed.err
    assert "unexpected_percent" in (tmp_path / "validate" / "data_docs_render.log").read_text()


def test_an_image_over_the_pixel_limit_stops_the_data_step_naming_it(digits_spec, dataset, settings, tmp_path):
    """A 14000x14000 PNG is ~190 KB on disk and 196 MP decoded: refused from its header, named."""
    import resource

    from components.errors import RelayError

    import subprocess
    import sys

    bomb, large = dataset / "3" / "bomb.png", dataset / "5" / "large.png"
    subprocess.run([sys.executable, "-c", "import sys; from PIL import Image; "
                    "Image.new('L', (14000, 14000)).save(sys.argv[1], optimize=True); "
                    "Image.new('L', (9000, 9000)).save(sys.argv[2], optimize=True)", str(bomb), str(large)], check=True)
    assert bomb.stat().st_size < 300_000  # small on disk, 196 MP decoded
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(RelayError) as caught:
        prepare_data(spec_for(digits_spec, dataset), tmp_path / "data", settings)
    message = str(caught.value)
    assert "2 image(s) over the pixel limit, none decoded" in message
    assert f"{bomb}: " in message and f"{large}: 9000x9000 is 81.0 MP, over the limit of 50.0 MP" in message
    assert "dataset.image.max_pixels" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB: nothing decoded
    assert not (tmp_path / "data").exists()  # nothing published
