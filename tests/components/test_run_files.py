"""The run layout: every step's outputs are named once, and the steps' needs follow the pipeline's order."""

from pathlib import Path

import pytest

from components.errors import RelayError
from components.run_files import STEP_OUTPUTS, STEP_NEEDS, STEPS, RunDir
from pipelines.steps import run_step, start_run
from tests.conftest import make_settings


def test_each_step_publishes_its_completion_inside_its_own_outputs_and_reads_only_earlier_steps():
    run = RunDir(Path("/runs/digits/r1"))
    for index, step in enumerate(STEPS):
        assert any(run.path / output in run.completed(step).parents for output in STEP_OUTPUTS[step]), step
        assert all(STEPS.index(earlier) < index for earlier in STEP_NEEDS[step]), step
    assert set(STEP_OUTPUTS) == set(STEP_NEEDS) == set(STEPS)


def test_a_step_whose_input_never_completed_names_the_step_to_run_first(tmp_path):
    settings = make_settings(tmp_path / "home")
    run = start_run("digits", settings=settings)
    with pytest.raises(RelayError) as refused:
        run_step("optimize", run, settings)
    message = str(refused.value)
    assert "needs train/metrics.json from step train" in message
    assert f"relay step train --run-dir {run}" in message
    assert not RunDir(run).optimize.exists()
