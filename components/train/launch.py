"""What the two distributed launchers share (``components.train.torchrun`` for PyTorch,
``components.train.tf_workers`` for TensorFlow): the processes' environment on this machine, and the one line a
failed training ends with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.child_processes import relay_python_path

# A process's own error (a RelayError) is printed after this prefix, so the launcher can repeat it.
RANK_ERROR = "relay rank error: "


@contextmanager
def spec_for_processes(spec, data_dir: Path) -> Iterator[Path]:
    """The spec as a JSON file the processes read, for as long as they run. The decoded cache is built here first,
    once, so the processes do not each decode the dataset into it."""
    from components.train.loader import open_run_data

    open_run_data(data_dir, spec)
    with tempfile.TemporaryDirectory(prefix="relay-ranks-") as scratch:
        spec_file = Path(scratch) / "spec.json"
        spec_file.write_text(spec.model_dump_json())
        yield spec_file


def published_result(out_dir: Path, framework: str):
    """The TrainResult of what rank 0 published in ``out_dir``."""
    from components.run_files import METRICS
    from components.train import TrainResult

    metrics = json.loads((out_dir / METRICS).read_text())
    return TrainResult(out_dir, framework, metrics["test_accuracy"], metrics["train_seconds"])


def process_environment(processes: int) -> dict[str, str]:
    """The processes' threads split this machine's cores, whatever the user's shell sets (torch and TensorFlow take
    their intra-op threads from OMP_NUM_THREADS here); Relay's source is importable."""
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    return {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", "PYTHONPATH": relay_python_path()}


def checkpoint_note(out_dir: Path) -> str:
    """What a rerun of the train step will do: resume after the last finished epoch, or start over."""
    from components.run_files import CHECKPOINTS
    from components.train.common import Checkpoints

    state = out_dir.parent / CHECKPOINTS / Checkpoints.STATE
    if state.is_file():
        done = json.loads(state.read_text()).get("epochs_done", 0)
        return f"rerun the train step to resume all ranks after epoch {done}"
    return "no epoch had finished: a rerun starts over"


def failure_line(output: str, who: str, how: str, out_dir: Path) -> str:
    """One line for a failed distributed training: a process's own error if one printed it, else ``who``
    ``how`` (which process died, and how) with what a rerun does."""
    own = [line.split(RANK_ERROR, 1)[1].strip() for line in output.splitlines() if RANK_ERROR in line]
    if own:
        return own[-1]
    return f"training.distributed: {who} {how}; nothing was published; {checkpoint_note(out_dir)}"


def how_it_ended(code: int) -> str:
    """A process's exit status in words: "was killed by SIGKILL", "exited with code 1"."""
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class StderrRelay:
    """Copies a child's stderr to ours as it comes, and keeps its last lines for the failure line."""

    def __init__(self, process: subprocess.Popen, prefix: str = ""):
        self.tail: deque[str] = deque(maxlen=400)
        self._thread = threading.Thread(target=self._copy, args=(process, prefix), daemon=True)
        self._thread.start()

    def _copy(self, process: subprocess.Popen, prefix: str) -> None:
        for line in process.stderr:
            sys.stderr.write(prefix + line)
            self.tail.append(line)

    def text(self) -> str:
        """Everything kept, once the child has exited."""
        self._thread.join()
        return "".join(self.tail)
