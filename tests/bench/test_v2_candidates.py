"""The V2 server candidates that bench measures (bench/v2_candidates) run for real in their own environments, listen
on loopback only and answer what the model says, so that their figures compare servers doing the same work."""

import pytest
import requests

from bench.v2_candidates import v2_request
from bench.v2_candidates.servers import kserve_server, mlserver_server
from components.data.dataset import load_split
from components.imaging import PREPROCESSING_FILE, preprocess_files
from components.onnx_runtime import onnx_predictor
from components.train import model_preprocessing
from tests.conftest import is_loopback, listening_addresses


@pytest.mark.parametrize("candidate", ["kserve", "mlserver", "mlserver raw"])
def test_each_candidate_answers_the_models_class_and_listens_on_loopback_only(trained_run, tmp_path, candidate):
    spec, run = trained_run
    _, _, paths = load_split(run.data, "test", spec.dataset.classes)
    paths = paths[:40]
    expected = onnx_predictor(run.optimized_model)(preprocess_files(paths, model_preprocessing(run.train))).argmax(1)
    model, preprocessing = run.optimized_model, run.train / PREPROCESSING_FILE
    server = (kserve_server(model, preprocessing) if candidate == "kserve"
              else mlserver_server(tmp_path, model, preprocessing, raw=candidate.endswith("raw")))
    with server as url:
        addresses = listening_addresses(url)
        assert addresses and all(is_loopback(ip) for ip in addresses), addresses
        labels = []
        for path in paths:
            if candidate.endswith("raw"):
                answer = requests.post(url, data=path.read_bytes(), timeout=30)
                labels.append(answer.json()["label"])
            else:
                answer = requests.post(url, data=v2_request(path.read_bytes()), timeout=30,
                                       headers={"Content-Type": "application/json"})
                (output,) = answer.json()["outputs"]
                labels.append(output["data"][0])
            assert answer.status_code == 200, answer.text[:500]
    assert labels == expected.tolist()
