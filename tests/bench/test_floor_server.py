"""The HTTP floor of the serving figures (bench/floor_server.py) answers what the model says, as a real process
under the same load client as the servers it is compared with."""

from starlette.testclient import TestClient

from bench.floor_server import PATH, floor_app
from bench.v2_candidates.servers import floor_target
from components.bakeoff import SERVING_VERSION, measure_serving
from components.data.dataset import load_split
from components.deploy.load import run_load
from components.deploy.package import build_mar
from components.imaging import PREPROCESSING_FILE, preprocess_files
from components.onnx_runtime import onnx_predictor
from components.settings import own_server_settings
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
    with floor_target(run.optimized_model, run.preprocessing) as floor:
        results = [run_load(floor, spec.name, [p.read_bytes() for p in paths], total=64, concurrency=c)
                   for c in (1, 8, 32)]
    for result in results:
        assert result.requests == 64 and result.errors == 0, result.error_samples


def test_a_bakeoff_measures_its_candidates_on_both_servers_beside_the_floor(trained_run, settings, tmp_path):
    spec, run = trained_run
    spec = spec.model_copy(update={"bakeoff": spec.bakeoff.model_copy(update={"serving_requests": 64,
                                                                               "bootstrap_samples": 100})})
    mar = build_mar(spec, SERVING_VERSION, run.optimized_model, model_preprocessing(run.train), tmp_path / "c.mar")
    candidate = {"name": "pytorch/small_cnn", "run": str(run.path),
                 "serving": {"model_name": "digits-pytorch", "mar": str(mar)}}
    measure_serving(spec, [candidate], own_server_settings(settings, tmp_path / "servers"),
                    references={"HTTP floor": floor_target})
    by_server = candidate["serving_by_server"]
    assert set(by_server) == {"torchserve", "kserve", "HTTP floor"}
    for server, figures in by_server.items():
        assert figures["errors"] == 0, server
        assert set(figures["by_concurrency"]) == {"1", "8", "32"}, server
        assert all(level["requests_per_s"] > 0 for level in figures["by_concurrency"].values()), server
    # The recommendation weighs the server the spec deploys to, never the reference.
    assert candidate["serving"]["server"] == spec.deploy.server
    assert candidate["serving"]["by_concurrency"] == by_server[spec.deploy.server]["by_concurrency"]
