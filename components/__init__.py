"""Relay's steps: one plain, typed function per step, shared by the CLI, Airflow, DVC and pods."""

import os

# TensorFlow's C++ start-up notices (absl's "All log messages before absl::InitializeLog()", the CPU-feature
# and oneDNN lines, grappler's sessions) would land in every console summary and task log, wherever a step
# first imports TensorFlow; this runs before any step can. A TF_CPP_MIN_LOG_LEVEL of the user's own wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
