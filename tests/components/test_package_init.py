"""What importing Relay's steps sets up, seen from a plain shell."""

import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT


@pytest.mark.slow  # starts TensorFlow in two fresh processes (10-20 s): kept out of the fast tier's budget
def test_tensorflow_start_up_notices_stay_out_of_the_console():
    """A step that imports TensorFlow (here the Keras models) prints none of TensorFlow's C++ start-up lines,
    in a shell that sets no TF_CPP_MIN_LOG_LEVEL; a user who sets one keeps it."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(PROJECT)
    script = "import components.models.keras_cnn, tensorflow as tf, os; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.strip() == "2"
    notices = quiet.stderr.splitlines()
    if _tensorflow_turns_onednn_on():
        # On such a CPU TensorFlow 2.21 logs "oneDNN custom operations are on" (tensorflow/core/util/port.cc) through
        # absl before any log level applies: no TF_CPP_MIN_LOG_LEVEL hides it, and TF_ENABLE_ONEDNN_OPTS=0 would
        # cost the speed. It is the one notice left (docs/operations.md, "TensorFlow models and TF Serving").
        notices = [line for line in notices
                   if "oneDNN custom operations are on" not in line and "absl::InitializeLog" not in line]
    assert not [line for line in notices if line.strip()], quiet.stderr
    chatty = subprocess.run([sys.executable, "-c", script], env={**env, "TF_CPP_MIN_LOG_LEVEL": "0"},
                            capture_output=True, text=True, timeout=300)
    assert chatty.stdout.strip() == "0" and "cpu_feature_guard" in chatty.stderr  # the check can see them


def _tensorflow_turns_onednn_on() -> bool:
    """TensorFlow's own rule (tensorflow/core/util/port.cc, IsMklEnabled): oneDNN is on by default on Linux CPUs
    with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX."""
    from components.machine import cpu_flags

    return bool({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"} & cpu_flags())
