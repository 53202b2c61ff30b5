"""Distributed TensorFlow training: ``tf.distribute.MultiWorkerMirroredStrategy`` workers on this machine
(``training.distributed.processes`` > 1 with framework tensorflow).

``train_multi_worker`` starts one process per worker, each running this module's ``main`` with its own
``TF_CONFIG`` (the cluster's addresses on 127.0.0.1 and its own index), as a TFJob or a cluster's launcher sets
it. TensorFlow has no torchrun: when a worker dies the others would wait in their next collective, so the
launcher stops them, and the step fails with one line. The chief (worker 0) alone writes checkpoints and the
published model (atomically); rerunning the step resumes every worker from the chief's checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from components.errors import RelayError
from components.settings import free_ports
from components.spec import TaskSpec
from components.train.launch import (RANK_ERROR, StderrRelay, failure_line, how_it_ended, process_environment,
                                    published_result, spec_for_processes)


def tf_config(ports: list[int], index: int) -> str:
    """The TF_CONFIG of worker ``index`` in a cluster of workers on 127.0.0.1 at ``ports``."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the workers still running (ours, by their Popen), and reap them."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()


def train_multi_worker(spec: TaskSpec, data_dir: Path, out_dir: Path):
    """Train ``spec`` on ``training.distributed.processes`` workers; the result the chief published."""
    count = spec.training.distributed.processes
    ports = free_ports(count)
    environment = process_environment(count)
    with spec_for_processes(spec, data_dir) as spec_file:
        command = [sys.executable, "-m", "components.train.tf_workers", str(spec_file), str(data_dir), str(out_dir)]
        workers = [subprocess.Popen(command, env={**environment, "TF_CONFIG": tf_config(ports, index)},
                                    stderr=subprocess.PIPE, text=True) for index in range(count)]
        errors = [StderrRelay(process, f"[worker {index}] ") for index, process in enumerate(workers)]
        try:
            while True:
                codes = [process.poll() for process in workers]
                failed = next((index for index, code in enumerate(codes) if code not in (None, 0)), None)
                if failed is not None or all(code == 0 for code in codes):
                    break
                time.sleep(0.2)  # polling: a failed worker must stop the others, whichever it is
        finally:
            _stop(workers)
    if failed is not None:
        output = "".join(relay.text() for relay in errors)
        raise RelayError(failure_line(output, f"worker {failed} of {count}", how_it_ended(workers[failed].returncode),
                                      out_dir))
    return published_result(out_dir, "tensorflow")


# How long the coordination service waits for a worker's heartbeat before it fails the training. TensorFlow's
# default, 10 s, failed a healthy 2-worker training here on a loaded 2-core machine ("Task
# /job:worker/replica:0/task:1 heartbeat timeout"); a worker that dies is noticed at once by its launcher anyway.
HEARTBEAT_TIMEOUT_MS = 120_000


def _configure_coordination(count: int) -> None:
    """Configure TensorFlow's coordination service as MultiWorkerMirroredStrategy would (worker 0 leads), with
    ``HEARTBEAT_TIMEOUT_MS``: the strategy keeps a service configured before it starts, and has no setting for it."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    context.context().configure_coordination_service(
        service_type="standalone", service_leader="/job:worker/replica:0/task:0",
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=count)],
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_MS)


def main(argv: list[str]) -> int:
    """One worker (started by ``train_multi_worker``, or by a cluster that sets TF_CONFIG): train, then wait for
    the chief to publish."""
    spec_file, data_dir, out_dir = argv
    spec = TaskSpec.model_validate_json(Path(spec_file).read_text())
    import tensorflow as tf

    from components.train.keras_train import Workers, train

    # The strategy comes first: it starts the cluster's collectives before any other TensorFlow op runs.
    tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _configure_coordination(count=len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"]))
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                      if spec.training.distributed.backend == "nccl" else
                      tf.distribute.experimental.CommunicationImplementation.RING)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    resolver = strategy.cluster_resolver
    workers = Workers(strategy, resolver.task_id, resolver.cluster_spec().num_tasks("worker"))
    try:
        train(spec, Path(data_dir), Path(out_dir), workers)
    except RelayError as error:
        print(f"{RANK_ERROR}{error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
