"""Preprocessing is part of the model's contract: the served model's answer through the model server equals the
original trained model's offline answer on the same file, for files of many formats, modes and sizes."""

import io

import numpy as np
import pytest
from PIL import Image

from components.data.builtin import write_shapes
from components.data.dataset import prepare_data
from components.deploy.local import deploy_local
from components.deploy.servers import model_server
from components.imaging import preprocess_files
from components.run_files import RunDir
from components.frameworks import load_predictor, optimize_model, train_model
from components.spec import load_spec
from components.train import model_preprocessing
from tests.conftest import make_settings, spec_for, write_gate_report

pytestmark = pytest.mark.slow  # trains a model and serves it


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A small RGB resnet trained for one epoch on generated shapes, with center-crop resizing."""
    home = tmp_path_factory.mktemp("parity")
    dataset = home / "shapes"
    write_shapes(dataset, per_class=12)
    spec = spec_for(load_spec("shapes"), dataset, **{
        "dataset.min_per_class": 5, "input.size": [32, 32], "input.resize": "center_crop",
        "model.widths": [8, 16], "training.epochs": 1, "training.workers": 0, "gate.min_accuracy": 0.0})
    settings = make_settings(home / "relay-home")
    run = RunDir(home / "run")
    prepare_data(spec, run.data, settings)
    train_model(spec, run.data, run.train)
    optimize_model(spec, run.train, run.data, run.optimize)
    return spec, run, settings


def _files(tmp_path):
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8))
    small = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8
    cases = {
        "large.jpg": (photo, "JPEG", {"quality": 85}),              # decoded at 1/8 scale (draft)
        "rotated.jpg": (small, "JPEG", {"exif": exif}),
        "cmyk.jpg": (small.convert("CMYK"), "JPEG", {}),
        "alpha.png": (small.convert("RGBA"), "PNG", {}),
        "grey16.png": (Image.fromarray((np.asarray(small.convert("L"), np.uint16) * 257)), "PNG", {}),
        "palette.gif": (small.convert("P"), "GIF", {}),
        "lossy.webp": (small, "WEBP", {}),
        "plain.bmp": (small.resize((33, 17)), "BMP", {}),
    }
    paths = []
    for name, (image, fmt, options) in cases.items():
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        (tmp_path / name).write_bytes(buffer.getvalue())
        paths.append(tmp_path / name)
    return paths


def test_served_logits_equal_the_trained_models_offline_logits(colour_run, tmp_path):
    from components.atomic import copy_file
    from components.deploy.package import build_mar
    from components.registry.model_registry import ModelRegistry

    spec, run, settings = colour_run
    prep = model_preprocessing(run.train)
    assert prep.channels == 3 and prep.resize == "center_crop" and prep.std != (1.0, 1.0, 1.0)
    gate = write_gate_report(settings.home / "gate-report")

    def build(version, dest):
        copy_file(run.optimized_model, dest / "model.onnx")
        copy_file(run.preprocessing, dest / "preprocessing.json")
        build_mar(spec, version, run.optimized_model, prep, dest / "model.mar")
        for report in gate.iterdir():
            copy_file(report, dest / report.name)

    version = ModelRegistry(settings).register(spec.name, build, {"run_id": "parity"}).version
    server = model_server(spec.deploy.server, settings)  # Relay's default server
    try:
        deploy_local(spec, version, run.data, settings)
        original = load_predictor(run.train)  # the eager PyTorch model, not the exported one
        for path in _files(tmp_path):
            offline = original(preprocess_files([path], prep))[0]
            served = np.asarray(server.predict(spec.name, path.read_bytes())["logits"], dtype=np.float32)
            assert np.abs(served - offline).max() < 1e-4, (path.name, served, offline)
    finally:
        server.stop()
