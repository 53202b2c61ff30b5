"""Distributed PyTorch training under torchrun (``training.distributed.processes`` > 1).

``train_distributed`` starts ``python -m torch.distributed.run`` (torchrun) with one process per rank, each
running this module's ``main``: DistributedDataParallel over gloo (CPUs) or nccl (GPUs), as
``components.train.torch_train.train`` does it. Rank 0 alone writes checkpoints and the published model
(atomically), so a rank that dies leaves the last finished epoch's checkpoint and nothing published; torchrun
then stops the other ranks, and the step fails with one line. Rerunning it resumes every rank from the checkpoint.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from components.errors import RelayError
from components.settings import free_ports
from components.spec import TaskSpec
from components.train.launch import (RANK_ERROR, StderrRelay, failure_line, how_it_ended, process_environment,
                                    published_result, spec_for_processes)


def torchrun_command(spec_file: Path, data_dir: Path, out_dir: Path, processes: int, port: int) -> list[str]:
    """torchrun on this machine: ``processes`` ranks, a static rendezvous on 127.0.0.1:``port``, no restarts (a
    failed rank fails the step; the rerun resumes from the checkpoint)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={processes}",
            "--max-restarts=0", "--master-addr=127.0.0.1", f"--master-port={port}", "--local-addr=127.0.0.1",
            "-m", "components.train.torchrun", str(spec_file), str(data_dir), str(out_dir)]


def torchrun_failure(output: str, processes: int, out_dir: Path) -> str:
    """One line for a failed torchrun, from its output: a rank's own error, or which rank died and how."""
    # torchrun's summary names the first failed rank ("rank : 1 (local_rank: 1)", "exitcode : -9 (pid: ...)")
    # and, for a signal, "Signal 9 (SIGKILL) received by PID ...".
    cause = output.rsplit("Root Cause", 1)[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", cause)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", cause)
    signal = re.search(r"Signal \d+ \((SIG\w+)\)", cause)
    who = f"rank {rank.group(1)} of {processes}" if rank else f"a rank of {processes}"
    how = (f"was killed by {signal.group(1)}" if signal else
           how_it_ended(int(code.group(1))) if code else "failed")
    return failure_line(output, who, how, out_dir)


def train_distributed(spec: TaskSpec, data_dir: Path, out_dir: Path):
    """Train ``spec`` on ``training.distributed.processes`` ranks under torchrun; the result rank 0 published."""
    processes = spec.training.distributed.processes
    with spec_for_processes(spec, data_dir) as spec_file:
        command = torchrun_command(spec_file, data_dir, out_dir, processes, free_ports(1)[0])
        # gloo stays on loopback
        environment = {**process_environment(processes), "GLOO_SOCKET_IFNAME": "lo"}
        process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
        errors = StderrRelay(process)  # the ranks' stderr reaches the user as it comes, and is kept
        code = process.wait()
    if code != 0:
        raise RelayError(torchrun_failure(errors.text(), processes, out_dir))
    return published_result(out_dir, "pytorch")


def main(argv: list[str]) -> int:
    """One rank (run by torchrun): join the process group, train, leave it."""
    import torch
    import torch.distributed as dist

    from components.train.torch_train import Ranks, train

    spec_file, data_dir, out_dir = argv
    spec = TaskSpec.model_validate_json(Path(spec_file).read_text())
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if spec.training.distributed.backend == "nccl":
        torch.cuda.set_device(ranks.local)
    dist.init_process_group(spec.training.distributed.backend)
    try:
        train(spec, Path(data_dir), Path(out_dir), ranks)
    except RelayError as error:
        print(f"{RANK_ERROR}{error}", file=sys.stderr, flush=True)
        return 1
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
