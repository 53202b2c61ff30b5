"""Packed shards per data version: what the data step writes to the shard store, and how training fetches them."""

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from components.data.dataset import data_preprocessing, dataset_root, usable_images
from components.data.shards import INDEX, ShardReader, write_shards
from components.errors import RelayError
from components.imaging import load_pixels
from components.run_files import SHARDS
from tests.conftest import make_settings, spec_for

SHARD_MB = 0.05  # about 30 of digits' 8x8 images per shard: the small dataset's 300 make a dozen shards


@pytest.fixture
def data_dir(trained_run, tmp_path) -> Path:
    """A copy of the shared run's data step output (writing shards records them in it)."""
    _, run = trained_run
    shutil.copytree(run.data, tmp_path / "data")
    return tmp_path / "data"


def _spec(trained_run, **changes):
    spec, _ = trained_run
    return spec_for(spec, Path(spec.dataset.path), **{"training.cache": "shards", "training.shards.shard_mb": SHARD_MB,
                                                      **changes})


def test_each_split_is_packed_into_webdataset_tars_of_its_decoded_images_once_per_version(trained_run, data_dir,
                                                                                           settings):
    spec = _spec(trained_run, **{"training.distributed.processes": 3})
    record = write_shards(spec, data_dir, settings)

    store = Path(record["url"])
    assert store.parent == settings.home / "shards" and (data_dir / SHARDS).is_file()
    names = [shard["name"] for split in record["splits"].values() for shard in split]
    assert sorted(path.name for path in store.iterdir()) == sorted([*names, INDEX])
    usable, prep = usable_images(data_dir), data_preprocessing(data_dir)
    classes = spec.dataset.classes
    for split, shards in record["splits"].items():
        rows = np.concatenate([shard["rows"] for shard in shards])
        assert sorted(rows) == list(np.flatnonzero(usable["split"] == split)), split
        for shard in shards:
            # read back by webdataset's own reader, as any WebDataset user would
            samples = list(wds.WebDataset(str(store / shard["name"]), shardshuffle=False).decode())
            assert [int(sample["__key__"]) for sample in samples] == shard["rows"]
            for sample in samples:
                row = int(sample["__key__"])
                np.testing.assert_array_equal(
                    sample["npy"], load_pixels(dataset_root(data_dir) / usable["path"][row], prep))
                assert sample["cls"] == classes.index(usable["label"][row])
    assert len(record["splits"]["train"]) >= 3  # one shard per training process at least
    # shuffled before packing: a shard of the manifest's order (folder by folder) would hold one class
    assert all(usable["label"][shard["rows"]].nunique() >= 5 for shard in record["splits"]["train"])
    assert all(len(shard["rows"]) <= 40 for split in record["splits"].values() for shard in split)

    written = {path.name: path.stat().st_mtime_ns for path in store.iterdir()}
    assert write_shards(spec, data_dir, settings) == record
    assert {path.name: path.stat().st_mtime_ns for path in store.iterdir()} == written  # not packed again


def test_shards_stream_from_s3_through_a_cache_that_stays_within_its_bound(trained_run, data_dir, tmp_path,
                                                                          local_s3, s3_env):
    settings = make_settings(tmp_path / "home", shards_uri=f"s3://{local_s3.bucket}/{tmp_path.name}/shards")
    record = write_shards(_spec(trained_run), data_dir, settings)
    assert record["url"].startswith(f"s3://{local_s3.bucket}/")
    cache = tmp_path / "cache"
    reader = ShardReader(record, cache, cache_mb=3 * SHARD_MB)
    names = [shard["name"] for split in record["splits"].values() for shard in split]
    reader.check(names)
    largest = 0
    for name in names * 2:
        rows, pixels = reader.read(name)
        held = [path.stat().st_size for path in cache.iterdir()]
        largest = max(largest, max(held))
        assert sum(held) <= reader.cache_bytes + largest, (name, held)
        shard = next(shard for split in record["splits"].values() for shard in split if shard["name"] == name)
        assert rows.tolist() == shard["rows"] and pixels.dtype == np.uint8 and len(pixels) == len(rows)
    assert len(list(cache.iterdir())) < len(names)  # the first fetched went


def test_a_shard_store_that_fails_is_one_line_naming_it_and_nothing_is_recorded(trained_run, data_dir, tmp_path,
                                                                               local_s3, s3_env):
    import boto3

    missing = f"no-bucket-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=local_s3.endpoint_url, region_name="us-east-1")
    assert missing not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    settings = make_settings(tmp_path / "home", shards_uri=f"s3://{missing}/shards")
    assert settings.s3_endpoint_url == local_s3.endpoint_url
    with pytest.raises(RelayError) as failure:
        write_shards(_spec(trained_run), data_dir, settings)
    message = str(failure.value)
    assert "\n" not in message and message.startswith(f"shard store s3://{missing}/shards/")
    assert "the bucket does not exist" in message
    assert not (data_dir / SHARDS).exists()


def test_a_store_missing_a_shard_is_refused_before_training_naming_it(trained_run, data_dir, settings):
    record = write_shards(_spec(trained_run), data_dir, settings)
    Path(record["url"], "val-000000.tar").unlink()
    reader = ShardReader(record, settings.home / "cache", 1)
    with pytest.raises(RelayError, match=r"lacks 1 of the run's \d+ shards \(val-000000.tar\): rerun the data step"):
        reader.check([shard["name"] for split in record["splits"].values() for shard in split])


def test_a_shard_store_on_this_machine_is_refused_when_runs_move_between_machines(trained_run, data_dir, tmp_path):
    settings = make_settings(tmp_path / "home", runs_uri="s3://relay/runs")
    with pytest.raises(RelayError, match=r"which other workers cannot read: set RELAY_SHARDS_URI to a URL"):
        write_shards(_spec(trained_run), data_dir, settings)
    assert not (data_dir / SHARDS).exists()
