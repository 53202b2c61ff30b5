"""How a machine that did not run the data step gets the files a step reads: the run's packs, else the DVC remote."""

import io
import shutil
import subprocess
import sys
import tarfile

import pytest

from components.data import split_files
from components.data.dataset import SPLITS, prepare_data, read_manifest, usable_images
from components.data.split_files import ensure_split_files, write_file_packs
from components.errors import RelayError
from components.run_files import FILE_PACKS
from components.versioning import pointer_md5
from tests.conftest import dvc_checkout, make_settings, spec_for


def _files(checkout):
    root = checkout / "data" / "mine"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


@pytest.fixture
def machines(digits_spec, small_dataset, tmp_path):
    """The data step's machine (a checkout with the images, pushed to a DVC remote) and a run it wrote; another
    machine's checkout of the same version without the images. Returns (spec, run's data dir, first, second,
    remote)."""
    remote = tmp_path / "remote"
    remote.mkdir()
    first = dvc_checkout(tmp_path / "first", small_dataset)
    spec = spec_for(digits_spec, "data/mine", **{"dataset.source": "dvc", "training.shards.shard_mb": 0.005})
    run = tmp_path / "run" / "data"
    prepare_data(spec, run, make_settings(tmp_path / "home-1", project_dir=first, dvc_remote=str(remote)))
    subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=first, check=True)
    second = dvc_checkout(tmp_path / "second")
    (second / "data").mkdir()
    shutil.copy(first / "data" / "mine.dvc", second / "data" / "mine.dvc")
    return spec, run, first, second, remote


def test_a_checkout_without_the_images_fetches_only_the_splits_a_step_reads(machines, tmp_path):
    """Without packs, a machine that did not run the data step fetches the files of the splits asked for from the
    DVC remote, those alone; asking for every split brings the rest, and the checkout is then DVC's clean version."""
    spec, run, first, second, remote = machines
    settings = make_settings(tmp_path / "home-2", project_dir=second, dvc_remote=str(remote))
    manifest = read_manifest(run)

    ensure_split_files(spec, run, ("test",), settings)
    test_split = set(manifest.loc[manifest["split"] == "test", "path"])
    assert _files(second) == test_split and 0 < len(test_split) < len(manifest) / 2
    assert all((second / "data" / "mine" / p).read_bytes() == (first / "data" / "mine" / p).read_bytes()
               for p in test_split)
    assert not [p for p in (second / "data").iterdir() if p.name.startswith(".")]  # no scratch left behind

    ensure_split_files(spec, run, SPLITS, settings)
    assert _files(second) == set(manifest["path"])
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "data/mine.dvc"], cwd=second, capture_output=True,
                            text=True, check=True)
    assert "up to date" in status.stdout, status.stdout


def test_packs_on_s3_bring_each_step_its_splits_files_without_the_dvc_remote(machines, tmp_path, local_s3, s3_env,
                                                                             monkeypatch):
    """The data step packs each split's original files into WebDataset tars on S3, once per data version and
    split; another machine unpacks only the packs it needs, byte for byte, and asks DVC for nothing."""
    spec, run, first, second, _ = machines
    prefix = f"s3://{local_s3.bucket}/{tmp_path.name}"
    stores = {"runs_uri": f"{prefix}/runs", "shards_uri": f"{prefix}/shards", "s3_endpoint_url": local_s3.endpoint_url}
    packer = make_settings(tmp_path / "home-1", project_dir=first, **stores)
    assert split_files.packs_reach_other_machines(packer)
    record = write_file_packs(spec, run, packer)
    assert record["url"].startswith(f"{prefix}/shards/files/") and (run / FILE_PACKS).is_file()
    usable = usable_images(run)
    for split, packs in record["splits"].items():
        assert sorted(row for pack in packs for row in pack["rows"]) == list(usable.index[usable["split"] == split])
    assert len(record["splits"]["train"]) > 1  # shard_mb 0.005 (5 kB): several packs

    def no_packing(*args):
        raise AssertionError("packed again")

    monkeypatch.setattr(split_files, "_pack", no_packing)
    assert write_file_packs(spec, run, packer) == record  # this version's packs are there: not packed again

    # The other machine's DVC remote is empty: any file asked of DVC would fail the step.
    settings = make_settings(tmp_path / "home-2", project_dir=second, **stores)
    ensure_split_files(spec, run, ("test",), settings)
    test_split = set(usable.loc[usable["split"] == "test", "path"])
    assert _files(second) == test_split
    ensure_split_files(spec, run, SPLITS, settings)
    assert _files(second) == set(usable["path"])
    assert all((second / "data" / "mine" / p).read_bytes() == (first / "data" / "mine" / p).read_bytes()
               for p in usable["path"])
    assert not [p for p in (second / "data").iterdir() if p.name.startswith(".")]  # no scratch left behind


def _rewrite_pack(store, name, change):
    """Pack ``name`` in the folder ``store`` with each member's bytes passed through ``change``."""
    original = (store / name).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(original)) as source, tarfile.open(store / name, "w") as target:
        for member in source.getmembers():
            content = change(source.extractfile(member).read())
            member.size = len(content)
            target.addfile(member, io.BytesIO(content))


def test_a_pack_changed_by_hand_is_refused_in_one_line_and_its_files_are_not_placed(machines, tmp_path):
    spec, run, first, second, remote = machines
    record = write_file_packs(spec, run, make_settings(tmp_path / "home-1", project_dir=first))
    pack = record["splits"]["test"][0]
    store = tmp_path / "home-1" / "shards" / "files" / record["url"].rsplit("/", 1)[1]
    _rewrite_pack(store, pack["name"], lambda content: content + b"changed")

    settings = make_settings(tmp_path / "home-1", project_dir=second, dvc_remote=str(remote))
    with pytest.raises(RelayError, match=rf"{pack['name']} holds .* changed by hand") as refused:
        ensure_split_files(spec, run, ("test",), settings)
    assert "\n" not in str(refused.value) and _files(second) == set()


def test_a_pack_gone_from_the_store_leaves_its_files_to_the_dvc_remote(machines, tmp_path):
    spec, run, first, second, remote = machines
    record = write_file_packs(spec, run, make_settings(tmp_path / "home-1", project_dir=first))
    gone, kept = record["splits"]["test"][:2]  # shard_mb 0.005: the test split is 3 packs
    store = tmp_path / "home-1" / "shards" / "files" / record["url"].rsplit("/", 1)[1]
    (store / gone["name"]).unlink()
    _rewrite_pack(store, kept["name"], lambda content: content)  # still whole

    settings = make_settings(tmp_path / "home-1", project_dir=second, dvc_remote=str(remote))
    ensure_split_files(spec, run, ("test",), settings)
    usable = usable_images(run)
    assert _files(second) == set(usable.loc[usable["split"] == "test", "path"])


def test_a_file_changed_since_the_manifest_is_refused_and_no_packs_are_published(machines, tmp_path):
    spec, run, first, second, remote = machines
    usable = usable_images(run)
    changed = first / "data" / "mine" / usable["path"][len(usable) - 1]
    changed.write_bytes(changed.read_bytes() + b"changed")
    settings = make_settings(tmp_path / "home-1", project_dir=first)
    with pytest.raises(RelayError, match=f"{changed} changed while the data step ran") as refused:
        write_file_packs(spec, run, settings)
    assert "\n" not in str(refused.value) and not (run / FILE_PACKS).exists()
    assert not list((settings.home / "shards").rglob("index.json"))  # no reader sees these packs as whole


def test_a_checkout_of_another_dataset_version_is_refused_before_anything_is_fetched(digits_spec, small_dataset,
                                                                                   tmp_path):
    project = dvc_checkout(tmp_path / "project", small_dataset)
    spec = spec_for(digits_spec, "data/mine", **{"dataset.source": "dvc"})
    settings = make_settings(tmp_path / "home", project_dir=project, dvc_remote=str(tmp_path))
    run = tmp_path / "run" / "data"
    prepare_data(spec, run, settings)
    pointer = project / "data" / "mine.dvc"
    recorded = pointer_md5(pointer)
    pointer.write_text(pointer.read_text().replace(recorded, "0" * 32 + ".dir"))
    shutil.rmtree(project / "data" / "mine" / "3")

    with pytest.raises(RelayError, match=rf"run used dataset version {recorded}.*data/mine\.dvc") as refused:
        ensure_split_files(spec, run, ("test",), settings)
    assert "\n" not in str(refused.value) and not (project / "data" / "mine" / "3").exists()
