import hashlib
import subprocess
import sys

import pytest

from components.data import build_manifest, load_split, prepare_data, split_by_hash, write_sklearn_digits
from components.errors import RelayError
from components.versioning import pointer_md5
from tests.conftest import PROJECT, spec_for


def _tree_digest(root):
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                   for p in sorted(root.rglob("*.png")))).hexdigest()


def test_generator_is_byte_for_byte_reproducible(tmp_path):
    assert write_sklearn_digits(tmp_path / "a") == 1797
    write_sklearn_digits(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [str(i) for i in range(10)]


def test_fresh_generation_reproduces_the_committed_dvc_hash(tmp_path):
    """What a fresh clone regenerates must hash to data/digits.dvc, or `dvc pull` users and it diverge."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    write_sklearn_digits(repo / "digits")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "digits"], cwd=repo, check=True)
    assert pointer_md5(repo / "digits.dvc") == pointer_md5(PROJECT / "data" / "digits.dvc")


def test_manifest_describes_every_image(small_dataset):
    manifest, counts = build_manifest(small_dataset, 0.2, 0)
    assert len(manifest) == 300 and set(counts.values()) == {30}
    assert list(manifest.columns) == ["path", "label", "width", "height", "mode", "bytes", "mean_intensity",
                                      "content_hash", "readable", "split"]
    assert manifest["mean_intensity"].between(0, 1).all()
    assert manifest["readable"].all() and set(manifest["width"]) == {8} and set(manifest["mode"]) == {"L"}


def test_split_is_seeded_stratified_and_keeps_duplicates_together(small_dataset):
    manifest, _ = build_manifest(small_dataset, 0.2, 7)
    again, _ = build_manifest(small_dataset, 0.2, 7)
    other, _ = build_manifest(small_dataset, 0.2, 8)
    assert manifest["split"].tolist() == again["split"].tolist()
    assert manifest["split"].tolist() != other["split"].tolist()
    assert set(manifest.groupby("label")["split"].apply(lambda s: (s == "test").sum())) <= {6, 7}
    duplicated = manifest.assign(content_hash=manifest["content_hash"].where(manifest.index % 2 == 1,
                                                                             manifest["content_hash"].shift(-1)))
    pairs = duplicated.assign(split=split_by_hash(duplicated, 0.2, 7)).groupby("content_hash")["split"].nunique()
    assert pairs.max() == 1


def test_unreadable_file_is_recorded_not_fatal(small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "digits"
    shutil.copytree(small_dataset, copy)
    (copy / "4" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    manifest, _ = build_manifest(copy, 0.2, 0)
    broken = manifest[manifest["path"] == "4/broken.png"].iloc[0]
    assert not broken["readable"] and broken["width"] != broken["width"]  # NaN size


def test_prepare_data_writes_manifest_and_loads_splits(digits_spec, small_dataset, settings, tmp_path):
    spec = spec_for(digits_spec, small_dataset)
    result = prepare_data(spec, tmp_path / "data", settings)
    assert result.images == 300 and result.manifest.is_file()
    images, labels, paths = load_split(tmp_path / "data", "test", spec.dataset.classes)
    assert images.shape == (len(paths), 1, 8, 8) and images.dtype.name == "float32"
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(labels) == set(range(10))


def test_missing_dataset_directory_is_one_clear_error(digits_spec, settings, tmp_path):
    with pytest.raises(RelayError, match="dataset directory .*nowhere does not exist"):
        prepare_data(spec_for(digits_spec, tmp_path / "nowhere"), tmp_path / "data", settings)


def test_dvc_supports_s3_remotes():
    """A user can point RELAY_DVC_REMOTE at s3:// (no S3 endpoint exists here to push to)."""
    version = subprocess.run([sys.executable, "-m", "dvc", "version"], capture_output=True, text=True, check=True)
    schemes = [line.strip().split(" ")[0] for line in version.stdout.split("Supports:")[1].splitlines()]
    assert "s3" in schemes, version.stdout
