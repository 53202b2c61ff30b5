import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components.data import dataset
from components.data.builtin import SHAPES, write_shapes, write_sklearn_digits
from components.data.dataset import (SKIPPED, build_manifest, discover, load_split, prepare_data, read_data_info,
                             split_by_hash)
from components.errors import RelayError
from components.versioning import pointer_md5
from tests.conftest import PROJECT, dvc_checkout, spec_for


def _tree_digest(root):
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                   for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()


def test_digits_generator_is_byte_for_byte_reproducible(tmp_path):
    assert write_sklearn_digits(tmp_path / "a") == 1797
    write_sklearn_digits(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [str(i) for i in range(10)]


def test_shapes_generator_is_reproducible_coloured_and_mixes_formats(tmp_path):
    assert write_shapes(tmp_path / "a", per_class=4) == 40
    write_shapes(tmp_path / "b", per_class=4)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(SHAPES)
    files = sorted((tmp_path / "a").rglob("*.*"))
    formats = {Image.open(f).format for f in files}
    sizes = {Image.open(f).size for f in files}
    assert formats == {"PNG", "JPEG"} and all(48 <= w <= 96 and w == h for w, h in sizes) and len(sizes) > 5
    pixels = np.asarray(Image.open(files[0]))
    assert pixels.ndim == 3 and pixels.std(axis=2).mean() > 5  # colour, not grey


def test_fresh_generation_reproduces_the_committed_dvc_hash(tmp_path):
    """What a fresh clone regenerates must hash to data/digits.dvc, or `dvc pull` users and it diverge."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    write_sklearn_digits(repo / "digits")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "digits"], cwd=repo, check=True)
    assert pointer_md5(repo / "digits.dvc") == pointer_md5(PROJECT / "data" / "digits.dvc")


def test_manifest_describes_every_image_and_splits_three_ways(digits_spec, small_dataset):
    manifest, summary = build_manifest(spec_for(digits_spec, small_dataset), small_dataset)
    assert len(manifest) == 300 and set(summary["class_counts"].values()) == {30}
    assert manifest["readable"].all() and set(manifest["width"]) == {8} and set(manifest["mode"]) == {"L"}
    assert manifest["mean_intensity"].between(0, 1).all() and summary["formats"] == {"PNG": 300}
    per_label = manifest.groupby("label")["split"].value_counts().unstack()
    assert set(per_label["test"]) == {6} and set(per_label["val"]) == {3} and set(per_label["train"]) == {21}
    assert summary["normalization_source"] == "auto: the train split"
    train = manifest[manifest["split"] == "train"]
    assert summary["preprocessing"]["mean"] == [pytest.approx(train["channel_mean_0"].mean(), abs=1e-6)]


def test_split_is_seeded_stratified_and_keeps_duplicates_together(digits_spec, small_dataset):
    spec = spec_for(digits_spec, small_dataset)
    manifest, _ = build_manifest(spec, small_dataset)
    assert manifest["split"].tolist() == build_manifest(spec, small_dataset)[0]["split"].tolist()
    other = spec_for(digits_spec, small_dataset, **{"dataset.split_seed": 8})
    assert manifest["split"].tolist() != build_manifest(other, small_dataset)[0]["split"].tolist()
    duplicated = manifest.assign(content_hash=manifest["content_hash"].where(manifest.index % 2 == 1,
                                                                             manifest["content_hash"].shift(-1)))
    pairs = duplicated.assign(split=split_by_hash(duplicated, 0.1, 0.2, 7)).groupby("content_hash")["split"]
    assert pairs.nunique().max() == 1


def _save(path, image, fmt, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)
    return path


@pytest.fixture
def many_formats(tmp_path):
    """One class folder per format family, with upper-case suffixes, modes and EXIF orientation."""
    root = tmp_path / "photos"
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8), "RGB")
    _save(root / "a" / "one.PNG", rgb, "PNG")
    _save(root / "a" / "two.JPG", rgb, "JPEG", quality=90)
    _save(root / "a" / "three.webp", rgb, "WEBP")
    _save(root / "a" / "four.Bmp", rgb, "BMP")
    _save(root / "a" / "five.TIFF", rgb, "TIFF")
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    (root / "b").mkdir()
    frames[0].save(root / "b" / "six.gif", save_all=True, append_images=frames[1:], format="GIF")
    _save(root / "b" / "seven.png", rgb.convert("RGBA"), "PNG")
    _save(root / "b" / "eight.png", rgb.convert("P"), "PNG")
    _save(root / "b" / "nine.png", Image.fromarray((np.arange(2400).reshape(40, 60) * 27).astype(np.uint16)),
          "PNG")
    _save(root / "b" / "ten.jpg", rgb.convert("CMYK"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    _save(root / "b" / "eleven.jpeg", rgb, "JPEG", exif=exif)
    return root


def _spec_on(digits_spec, root, classes, **changes):
    return spec_for(digits_spec, root, **{"dataset.classes": classes, "input.channels": 3, "input.size": [16, 16],
                                          "dataset.min_per_class": 1, **changes})


def test_every_common_format_decodes_with_any_suffix_case(digits_spec, many_formats):
    manifest, summary = build_manifest(_spec_on(digits_spec, many_formats, ["a", "b"]), many_formats)
    assert manifest["readable"].all(), manifest.loc[~manifest["readable"], ["path", "problem"]]
    assert set(summary["formats"]) == {"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"}
    assert {"RGBA", "P", "CMYK"} <= set(summary["modes"]) and any(m.startswith("I") for m in summary["modes"])
    rotated = manifest[manifest["path"] == "b/eleven.jpeg"].iloc[0]
    assert (rotated["width"], rotated["height"]) == (60, 40)  # the header's size; EXIF turns it upright later


def test_bad_files_are_named_never_dropped(digits_spec, many_formats, tmp_path):
    root = many_formats
    (root / "a" / "truncated.jpg").write_bytes((root / "a" / "two.JPG").read_bytes()[:300])
    (root / "a" / "notes.jpg").write_text("not an image")
    (root / "a" / "empty.png").write_bytes(b"")
    outside = tmp_path / "elsewhere.png"
    shutil.copy(root / "a" / "one.PNG", outside)
    (root / "a" / "link.png").symlink_to(outside)
    Image.new("L", (5000, 5000)).save(root / "b" / "huge.png")
    (root / "a" / ".hidden.png").write_bytes((root / "a" / "one.PNG").read_bytes())
    spec = _spec_on(digits_spec, root, ["a", "b"], **{"dataset.max_pixels": 1_000_000})
    manifest, summary = build_manifest(spec, root)
    problems = dict(zip(manifest["path"], manifest["problem"]))
    assert "truncated" in problems["a/truncated.jpg"] or "decodable" in problems["a/truncated.jpg"]
    assert "no image format recognised" in problems["a/notes.jpg"]
    assert "empty file" in problems["a/empty.png"]
    assert "outside the dataset" in problems["a/link.png"]
    assert "over the limit" in problems["b/huge.png"]
    bad = {"a/truncated.jpg", "a/notes.jpg", "a/empty.png", "a/link.png", "b/huge.png"}
    assert set(manifest.loc[~manifest["readable"], "path"]) == bad
    assert set(manifest.loc[~manifest["readable"], "split"]) == {"none"}
    assert "a/.hidden.png" not in problems and summary["ignored"]["hidden file"] == {"count": 1,
                                                                                    "examples": ["a/.hidden.png"]}
    skipping, _ = build_manifest(_spec_on(digits_spec, root, ["a", "b"], **{"dataset.max_pixels": 1_000_000,
                                                                            "dataset.on_bad_file": "skip"}), root)
    assert set(skipping.loc[skipping["split"] == SKIPPED, "path"]) == bad


def test_oversized_image_is_refused_from_its_header(digits_spec, small_dataset, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(small_dataset, root)
    Image.new("L", (3000, 3000)).save(root / "3" / "big.png")
    Image.new("L", (20000, 20000)).save(root / "3" / "bomb.png")  # 400 MP, a few hundred bytes compressed
    manifest, _ = build_manifest(spec_for(digits_spec, root, **{"dataset.max_pixels": 1_000_000}), root)
    problems = dict(zip(manifest["path"], manifest["problem"]))
    assert "3000x3000 is 9.0 MP, over the limit of 1.0 MP (dataset.max_pixels)" in problems["3/big.png"]
    assert "decompression bomb" in problems["3/bomb.png"]  # Pillow's own guard, from the header too


def test_labels_from_a_csv(digits_spec, small_dataset, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    lines = ["path,label"]
    for index, image in enumerate(sorted(small_dataset.rglob("*.png"))[:60]):
        shutil.copy(image, root / f"img{index}.png")
        lines.append(f"img{index}.png,{image.parent.name}")
    lines.append("gone.png,3")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = spec_for(digits_spec, root, **{"dataset.labels_csv": "labels.csv"})
    manifest, _ = build_manifest(spec, root)
    assert len(manifest) == 61 and manifest["readable"].sum() == 60
    assert manifest.loc[manifest["path"] == "gone.png", "problem"].item() == \
        "labels.csv line 62 names a file that does not exist"
    first = manifest[manifest["path"] == "img0.png"].iloc[0]
    assert first["label"] == sorted(small_dataset.rglob("*.png"))[0].parent.name


def test_csv_without_the_columns_is_one_clear_error(tmp_path):
    (tmp_path / "labels.csv").write_text("file,class\na.png,1\n")
    with pytest.raises(RelayError, match=r"labels.csv: needs a header with the columns path,label"):
        discover(tmp_path, "labels.csv")


def test_manifest_is_incremental(digits_spec, small_dataset, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(small_dataset, root)
    spec, cache = spec_for(digits_spec, root), tmp_path / "cache"
    first, summary = build_manifest(spec, root, cache)
    assert summary["described"] == 300
    again, summary = build_manifest(spec, root, cache)
    assert summary["described"] == 0 and again.equals(first)
    for index in range(3):
        shutil.copy(root / "1" / sorted(p.name for p in (root / "1").iterdir())[index], root / "2" / f"new{index}.png")
    Image.new("L", (8, 8), 255).save(root / "2" / "white.png")
    third, summary = build_manifest(spec, root, cache)
    assert summary["described"] == 4 and len(third) == 304


def test_prepare_data_writes_manifest_and_loads_splits(digits_spec, small_dataset, settings, tmp_path):
    spec = spec_for(digits_spec, small_dataset)
    result = prepare_data(spec, tmp_path / "data", settings)
    assert result.images == 300 and result.manifest.is_file()
    images, labels, paths = load_split(tmp_path / "data", "test", spec.dataset.classes)
    assert images.shape == (len(paths), 1, 8, 8) and images.dtype.name == "float32"
    assert abs(float(images.mean())) < 0.5 and set(labels) == set(range(10))  # normalized around 0
    info = read_data_info(tmp_path / "data")
    assert info["split_counts"]["val"] == 30 and info["preprocessing"]["channels"] == 1


def test_missing_dataset_directory_is_one_clear_error(digits_spec, settings, tmp_path):
    with pytest.raises(RelayError, match="dataset directory .*nowhere does not exist"):
        prepare_data(spec_for(digits_spec, tmp_path / "nowhere"), tmp_path / "data", settings)


def test_dvc_supports_s3_remotes():
    """A user can point RELAY_DVC_REMOTE at s3:// (no S3 endpoint exists here to push to)."""
    version = subprocess.run([sys.executable, "-m", "dvc", "version"], capture_output=True, text=True, check=True)
    schemes = [line.strip().split(" ")[0] for line in version.stdout.split("Supports:")[1].splitlines()]
    assert "s3" in schemes, version.stdout


def test_a_rerun_skips_dvc_until_a_file_changes(digits_spec, small_dataset, tmp_path, monkeypatch):
    """The dataset is pulled once (and pushed: the remote lacked it); reruns with the files untouched start no
    DVC process."""
    import os

    from components import versioning
    from components.data.dataset import ensure_dataset
    from tests.conftest import make_settings

    project = dvc_checkout(tmp_path / "project", small_dataset)
    settings = make_settings(tmp_path / "home", project_dir=project)
    spec = spec_for(digits_spec, project / "data" / "mine", **{"dataset.source": "dvc"})
    calls = []
    real = versioning.dvc
    monkeypatch.setattr(versioning, "dvc", lambda args, repo: calls.append(args[0]) or real(args, repo))
    md5 = pointer_md5(project / "data" / "mine.dvc")
    assert ensure_dataset(spec, settings) == md5 and calls == ["pull", "push"]
    assert ensure_dataset(spec, settings) == md5 and calls == ["pull", "push"]  # nothing started
    touched = next((project / "data" / "mine" / "3").iterdir())
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert ensure_dataset(spec, settings) == md5 and calls == ["pull", "push", "pull"]


def _empty_remote(kind: str, tmp_path, request) -> dict:
    """Settings for an empty DVC remote: a folder, or a prefix of the session's moto server (this process's AWS
    environment then points at it)."""
    if kind == "s3":
        server = request.getfixturevalue("local_s3")
        request.getfixturevalue("s3_env")
        return {"dvc_remote": f"s3://{server.bucket}/{tmp_path.name}", "s3_endpoint_url": server.endpoint_url}
    (tmp_path / "remote").mkdir()
    return {"dvc_remote": str(tmp_path / "remote")}


@pytest.mark.parametrize("remote_kind", ["folder", "s3"])
def test_a_version_only_the_local_cache_holds_is_pushed_before_a_run_uses_it(digits_spec, small_dataset, tmp_path,
                                                                              remote_kind, request):
    """`dvc add` without `dvc push` (or a remote switched to a new bucket): the data step puts the version on the
    remote, so another worker, or a teammate reproducing a registered model, can pull what it was trained on."""
    from components import versioning
    from components.data.dataset import ensure_dataset
    from tests.conftest import make_settings

    remote = _empty_remote(remote_kind, tmp_path, request)
    project = dvc_checkout(tmp_path / "project", small_dataset)
    settings = make_settings(tmp_path / "home", project_dir=project, **remote)
    spec = spec_for(digits_spec, project / "data" / "mine", **{"dataset.source": "dvc"})
    md5 = pointer_md5(project / "data" / "mine.dvc")
    assert versioning.remote_holds(settings.dvc_remote, md5, settings) is False
    assert ensure_dataset(spec, settings) == md5
    assert versioning.remote_holds(settings.dvc_remote, md5, settings) is True
    # Another checkout with the pointer and an empty cache pulls the version from the remote alone.
    clone = dvc_checkout(tmp_path / "clone")
    (clone / "data").mkdir()
    shutil.copy(project / "data" / "mine.dvc", clone / "data" / "mine.dvc")
    ensure_dataset(spec_for(digits_spec, clone / "data" / "mine", **{"dataset.source": "dvc"}),
                   make_settings(tmp_path / "home-clone", project_dir=clone, **remote))
    assert _tree_digest(clone / "data" / "mine") == _tree_digest(project / "data" / "mine")


def _digits_checkout(path):
    """A repo with the committed pointer of the built-in digits dataset and not its files: a fresh clone."""
    (path / "data").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    shutil.copy(PROJECT / "data" / "digits.dvc", path / "data" / "digits.dvc")
    return path


@pytest.mark.parametrize("remote_kind", ["folder", "s3"])
def test_a_built_in_dataset_is_pulled_when_the_remote_has_it_and_made_when_it_has_not(tmp_path, monkeypatch,
                                                                                      remote_kind, request):
    """A fresh clone with an empty remote makes the built-in dataset without a `dvc pull` bound to fail (one
    process, 1 to 3 s), and pushes it; the next fresh clone pulls it, and makes nothing."""
    from components import versioning
    from components.data.dataset import ensure_dataset
    from components.spec import load_spec
    from tests.conftest import make_settings

    remote = _empty_remote(remote_kind, tmp_path, request)
    calls, made = [], []
    real_dvc, real_generator = versioning.dvc, dataset.GENERATORS["sklearn-digits"]
    monkeypatch.setattr(versioning, "dvc", lambda args, repo: calls.append(args[0]) or real_dvc(args, repo))
    monkeypatch.setitem(dataset.GENERATORS, "sklearn-digits", lambda path: made.append(path) or real_generator(path))
    expected = pointer_md5(PROJECT / "data" / "digits.dvc")
    for clone, (dvc_calls, generated) in {"first": (["add", "push"], 1), "second": (["pull"], 0)}.items():
        project = _digits_checkout(tmp_path / clone)
        settings = make_settings(tmp_path / f"home-{clone}", project_dir=project, **remote)
        calls.clear(), made.clear()
        assert ensure_dataset(load_spec("digits"), settings) == expected
        assert (calls, len(made)) == (dvc_calls, generated), clone
        assert _tree_digest(project / "data" / "digits") == _tree_digest(tmp_path / "first" / "data" / "digits")


def test_an_unchanged_dataset_reuses_its_manifest(digits_spec, small_dataset, settings, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(small_dataset, root)
    spec = spec_for(digits_spec, root)
    first = prepare_data(spec, tmp_path / "one", settings)
    again = prepare_data(spec, tmp_path / "two", settings)
    assert (first.described, again.described) == (300, 0)
    assert (tmp_path / "one" / "manifest.csv").read_bytes() == (tmp_path / "two" / "manifest.csv").read_bytes()
    assert read_data_info(tmp_path / "one") == {**read_data_info(tmp_path / "two"), "dataset_dir": str(root)}
    shutil.copy(root / "1" / sorted(p.name for p in (root / "1").iterdir())[0], root / "1" / "extra.png")
    third = prepare_data(spec, tmp_path / "three", settings)
    assert third.described == 1 and third.images == 301  # only the new file is described
    changed = prepare_data(spec_for(digits_spec, root, **{"dataset.split_seed": 3}), tmp_path / "four", settings)
    assert changed.described == 0 and (tmp_path / "four" / "manifest.csv").read_bytes() != \
        (tmp_path / "three" / "manifest.csv").read_bytes()  # another split, from cached rows


@pytest.mark.parametrize("problem", ["wrong key", "missing bucket", "unreachable endpoint"])
def test_an_s3_dvc_remote_that_fails_is_one_line_naming_it_and_nothing_is_pushed(tmp_path, local_s3, s3_env,
                                                                                monkeypatch, problem):
    """The data step pushes a regenerated dataset to the DVC remote: each S3 problem stops it with one line
    naming the remote and what to do."""
    from components.data.dataset import ensure_dataset
    from components.spec import load_spec
    from tests.conftest import PROJECT, free_ports, make_settings

    project = _digits_checkout(tmp_path / "checkout")
    bucket, endpoint = local_s3.bucket, local_s3.endpoint_url
    if problem == "wrong key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKEY000000000")
    elif problem == "missing bucket":
        bucket = "no-such-bucket"
    else:
        endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    remote = f"s3://{bucket}/dvc-problems"
    settings = make_settings(tmp_path / "home", project_dir=project, dvc_remote=remote, s3_endpoint_url=endpoint)
    with pytest.raises(RelayError) as failed:
        ensure_dataset(load_spec("digits"), settings)
    message = str(failed.value)
    assert "\n" not in message and f"DVC remote {remote} (endpoint {endpoint})" in message, message
    assert {"wrong key": "the access key was refused", "missing bucket": "the bucket does not exist",
            "unreachable endpoint": "the endpoint is unreachable"}[problem] in message, message
