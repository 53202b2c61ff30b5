"""Data tests: the expectation suite passes on good data and names each kind of broken data."""

import shutil

import pytest
from PIL import Image

from components.data.dataset import prepare_data
from components.errors import DataValidationError
from components.validate.expectations import validate_dataset
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
    assert "every file is a decodable image: 1 file(s) fail: 3/9999.png (not a decodable image" in message


def test_extra_label_folder_is_named(digits_spec, dataset, settings, tmp_path):
    shutil.copytree(dataset / "1", dataset / "x")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "the labels are exactly the spec's classes: label(s) not in the spec ['x']" in message


def test_empty_class_is_named(digits_spec, dataset, settings, tmp_path):
    for image in (dataset / "5").iterdir():
        image.unlink()
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "'5' has 0" in message


def test_too_small_image_is_named(digits_spec, dataset, settings, tmp_path):
    Image.new("L", (4, 8)).save(dataset / "2" / "9998.png")
    message = _failure(spec_for(digits_spec, dataset, **{"dataset.min_side": 8}), settings, tmp_path)
    assert "every image is at least 8 px wide: 1 file(s) fail, e.g. 2/9998.png (4x8)" in message


def test_same_image_under_two_labels_names_both_files(digits_spec, dataset, settings, tmp_path):
    first = sorted((dataset / "1").iterdir())[0]
    shutil.copy(first, dataset / "7" / "copy.png")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert (f"no image content is under two labels: 1 image(s) under two labels, e.g. the same image as "
            f"1/{first.name} ('1') and 7/copy.png ('7')") in message


def test_duplicates_within_a_label_are_counted_and_kept_in_one_split(digits_spec, dataset, settings, tmp_path):
    import json

    import pandas as pd

    first = sorted((dataset / "1").iterdir())[0]
    shutil.copy(first, dataset / "1" / "again.png")
    result = _validate(spec_for(digits_spec, dataset), settings, tmp_path)
    assert json.loads(result.result_json.read_text())["duplicates_within_label"] == 1
    manifest = pd.read_csv(tmp_path / "data" / "manifest.csv", dtype={"label": str})
    assert manifest.loc[manifest["path"].isin([f"1/{first.name}", "1/again.png"]), "split"].nunique() == 1


def test_class_imbalance_is_bounded(digits_spec, dataset, settings, tmp_path):
    for image in sorted((dataset / "4").iterdir())[:20]:
        image.unlink()
    message = _failure(spec_for(digits_spec, dataset, **{"dataset.max_imbalance": 2}), settings, tmp_path)
    assert "the largest class is at most 2x the smallest (dataset.max_imbalance): the ratio is 3.0" in message


def test_skipped_bad_files_pass_and_are_listed(digits_spec, dataset, settings, tmp_path):
    import json

    (dataset / "3" / "notes.png").write_text("not an image")
    result = _validate(spec_for(digits_spec, dataset, **{"dataset.on_bad_file": "skip"}), settings, tmp_path)
    skipped = json.loads(result.result_json.read_text())["skipped_files"]
    assert skipped == [{"path": "3/notes.png", "problem": "not a decodable image (no image format recognised)"}]


def test_an_ordinary_failure_prints_no_data_docs_traceback(digits_spec, dataset, settings, tmp_path, capfd):
    """GX's renderer fails on the aggregate expectations (KeyError 'unexpected_percent'); the user sees
    only the one-line error, and the renderer's complaint is kept in the run."""
    for image in (dataset / "8").iterdir():
        image.unlink()
    shutil.copytree(dataset / "0", dataset / "ten")
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    printed = capfd.readouterr()
    assert "label(s) not in the spec ['ten']" in message and "'8' has 0" in message
    for noise in ("Traceback", "KeyError", "unexpected_percent"):
        assert noise not in printed.out + printed.err
    assert "unexpected_percent" in (tmp_path / "validate" / "data_docs_render.log").read_text()


def test_an_image_over_the_pixel_limit_is_refused_undecoded_and_named(digits_spec, dataset, settings, tmp_path):
    """A 14000x14000 PNG is ~190 KB on disk and 196 MP decoded: refused from its header, named."""
    import resource
    import subprocess
    import sys

    bomb, large = dataset / "3" / "bomb.png", dataset / "5" / "large.png"
    subprocess.run([sys.executable, "-c", "import sys; from PIL import Image; "
                    "Image.new('L', (14000, 14000)).save(sys.argv[1], optimize=True); "
                    "Image.new('L', (9000, 9000)).save(sys.argv[2], optimize=True)", str(bomb), str(large)], check=True)
    assert bomb.stat().st_size < 300_000  # small on disk, 196 MP decoded
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = _failure(spec_for(digits_spec, dataset), settings, tmp_path)
    assert "every file is a decodable image: 2 file(s) fail" in message
    assert "3/bomb.png (" in message and "decompression bomb" in message
    assert "5/large.png (9000x9000 is 81.0 MP, over the limit of 50.0 MP (dataset.max_pixels))" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB: nothing decoded
