"""A run's outcome, read from the files its steps wrote: what the webhook receives."""

import json

from components.run_files import RunDir
from pipelines.outcome import run_outcome
from tests.conftest import write_gate_report


def test_each_outcome_names_what_a_person_needs(tmp_path):
    assert run_outcome(tmp_path / "never-started")["outcome"] == "skipped"
    run = RunDir(tmp_path / "run")
    run.validate.mkdir(parents=True)
    run.validation.write_text(json.dumps(
        {"success": False, "failures": ["images: every file is a decodable image: 1 file(s) fail: 6/0006.png",
                                        "labels: 'ten' not in the spec"]}))
    assert run_outcome(run.path) == {"outcome": "validation_failed", "failures": 2,
                                "first_failure": "images: every file is a decodable image: 1 file(s) fail: 6/0006.png",
                                "data_docs": str(run.validate / "data_docs")}
    run.validation.write_text(json.dumps({"success": True, "failures": []}))
    write_gate_report(run.gate, passed=False)
    failed = run_outcome(run.path)
    assert failed["outcome"] == "gate_failed" and "accuracy_floor" in failed["failed_checks"]
    run.deploy.mkdir()
    run.deployment.write_text(json.dumps(
        {"version": "v0.2.0", "previous_default": "v0.1.0", "rolled_back": True, "why": "canary: p99 latency 301 ms"}))
    assert run_outcome(run.path) == {"outcome": "rolled_back", "version": "v0.2.0", "why": "canary: p99 latency 301 ms",
                                "serving": "v0.1.0"}
    run.deployment.write_text(json.dumps(
        {"version": "v0.2.0", "previous_default": "v0.1.0", "rolled_back": False, "url": "http://127.0.0.1:1/p/x"}))
    assert run_outcome(run.path) == {"outcome": "deployed", "version": "v0.2.0", "url": "http://127.0.0.1:1/p/x",
                                "previous": "v0.1.0"}
