"""The lineage card, rendered from a run's files alone (the full card of a real run: tests/e2e/test_digits_dag.py)."""

import html
import json
import re

import pytest

from components.deploy.lineage import render_card
from components.deploy.local import _record
from components.deploy.servers import NAMES
from components.run_files import RunDir
from components.spec import load_spec
from tests.conftest import make_settings


def _run(tmp_path, chosen: bool) -> RunDir:
    run = RunDir(tmp_path / "runs" / "digits" / "r1")
    for directory in (run.data, run.train, run.optimize, run.gate, run.register):
        directory.mkdir(parents=True)
    run.spec_file.write_text(json.dumps(load_spec("digits").model_dump(mode="json")))
    run.data_info.write_text(json.dumps({"dataset_md5": "abc123", "images": 1797,
                                         "split_counts": {"train": 1253, "val": 180, "test": 364, "skipped": 0},
                                         "class_counts": {str(i): 180 for i in range(10)}}))
    run.metrics.write_text(json.dumps({"framework": "pytorch", "test_accuracy": 0.967032967032967,
                                       "train_seconds": 7.025078000002395,
                                       "train_loop_images_per_second": 2386.23326959847, "history": []}))
    run.optimize_info.write_text(json.dumps({"conversion_seconds": 0.05891421500200522}))
    run.gate_json.write_text(json.dumps({"passed": True, "checks": [], "metrics": {"accuracy_optimized": 0.9670329}}))
    run.registration.write_text(json.dumps({"version": "v0.1.0", "tag": "digits@v0.1.0", "commit": "c0ffee"}))
    if chosen:
        run.chosen_by.write_text(json.dumps({
            "bakeoff": "20261130T084315-574c3c", "report": str(tmp_path / "bakeoffs" / "digits" / "b1" / "bakeoff.html"),
            "why": "pytorch/small_cnn scores 1.000 against tensorflow/small_cnn 0.921",
            "training": {"images_per_s_mixed": 2386.23326959847, "images_per_s_fp32": 5497.797356828194,
                         "mixed_over_fp32": 0.43403441682600374,
                         "unreliable": "images_per_s_fp32: the machine was busy in 4 of 5 rounds"}}))
    return run


def test_the_card_links_the_bakeoff_that_chose_it_and_rounds_its_figures(tmp_path):
    settings = make_settings(tmp_path / "home")
    card = render_card(_run(tmp_path, chosen=True).path, settings)
    report = tmp_path / "bakeoffs" / "digits" / "b1" / "bakeoff.html"
    assert f'<a href="{report.as_uri()}">20261130T084315-574c3c</a>' in card
    assert "scores 1.000 against tensorflow/small_cnn 0.921" in card
    assert "<td>training images/s, mixed precision</td><td>2,386</td>" in card
    assert "<td>training images/s</td><td>2,386</td>" in card  # the run's own training loop
    assert "<td>unreliable (decided nothing)</td><td>images_per_s_fp32: the machine was busy in 4 of 5" in card
    assert "<td>test accuracy (original)</td><td>0.967</td>" in card
    assert not re.search(r"\d\.\d{6,}", card)  # no figure with more digits than it has meaning
    # The split as a table: a header row of the parts, a row of their counts.
    assert ("<table><tr><th>train</th><th>val</th><th>test</th><th>skipped</th></tr>"
            "<tr><td>1,253</td><td>180</td><td>364</td><td>0</td></tr></table>") in card


def test_a_card_not_chosen_by_a_bakeoff_says_so(tmp_path):
    card = render_card(_run(tmp_path, chosen=False).path, make_settings(tmp_path / "home"))
    assert "Not chosen by a bake-off" in card and "<a href" not in card


@pytest.mark.parametrize("server", ["torchserve", "kserve"])
def test_the_card_says_which_server_serves_the_version(tmp_path, server):
    settings = make_settings(tmp_path / "home")
    run = _run(tmp_path, chosen=False)
    url = "http://127.0.0.1:8390/predictions/digits"
    run.deployment.parent.mkdir(parents=True)
    run.deployment.write_text(json.dumps({"version": "v0.1.0", "url": url, "rolled_back": False}))
    _record(settings, "digits", server, "v0.1.0", ["v0.1.0"])
    card = render_card(run.path, settings)
    assert html.escape(f"default of digits, served locally by {NAMES[server]}: {url}") in card
