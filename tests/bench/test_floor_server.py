"""The HTTP floor of the serving figures (bench/floor_server.py) answers what the model says, as a real process
under the same load client as the servers it is compared with."""

from starlette.testclient import TestClient

from bench.floor_server import PATH, floor_app
from bench.v2_candidates.servers import FloorTarget, floor_server
from components.data.dataset import load_split
from components.deploy.load import run_load
from components.imaging import PREPROCESSING_FILE, preprocess_files
from components.onnx_runtime import onnx_predictor
from components.train import model_preprocessing


def test_the_floor_server_answers_the_models_class_for_each_image(trained_run):
    spec, run = trained_run
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    expected = onnx_predictor(run.optimized_model)(preprocess_files(paths, model_preprocessing(run.train)))
    client = TestClient(floor_app(run.optimized_model, run.train / PREPROCESSING_FILE))
    labels = [client.post(PATH, content=path.read_bytes()).json()["label"] for path in paths]
    assert labels == expected.argmax(1).tolist()


def test_the_floor_server_runs_as_its_own_process_under_the_load_client_without_errors(trained_run):
    spec, run = trained_run
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    with floor_server(run.optimized_model, run.train / PREPROCESSING_FILE) as url:
        results = [run_load(FloorTarget(url), spec.name, [p.read_bytes() for p in paths], total=64, concurrency=c)
                   for c in (1, 8, 32)]
    for result in results:
        assert result.requests == 64 and result.errors == 0, result.error_samples
