"""Training images/s of every candidate, robust to a busy machine.

Each candidate trains a fresh model in each precision (mixed, fp32) in a long-lived child process of its own
(``python -m components.bakeoff.throughput``), on its real input pipeline, under the same thread settings.
After two warm-up rounds (workers, kernels and graphs start; the second sizes a round to about
``round_seconds``), the children take turns: one round each, in an order reversed every other round
(A B C D, D C B A, ...), so that a drift in the machine's load falls on every candidate alike.

Per round the machine's load is recorded (``components.machine.LoadMeter``): the share of its CPU that other
processes used, and the share the hypervisor stole. A round is *busy* when others used more than
BUSY_SHARE of the machine. A figure is the median images/s of its quiet rounds, with a bootstrap interval
over them. It is *unreliable* (and says why) when fewer than half of its rounds were quiet, or when its
quiet rounds spread by more than MAX_SPREAD. The report and the recommendation never let an unreliable
figure decide anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from components.child_processes import relay_python_path
from components.errors import RelayError
from components.machine import LoadMeter, tree_cpu_seconds
from components.measurement import ThreadSettings, with_interval
from components.settings import PROJECT_DIR
from components.spec import TaskSpec

PRECISIONS = ("mixed", "fp32")
BUSY_SHARE = 0.25  # others used more than a quarter of the machine's CPU: the round is busy
# The quiet rounds' median absolute deviation over their median above this: the figure is unreliable. Robust
# to one odd round; idle rounds on 2 cores spread up to about 0.12 (digits, torch fp32, 2 s rounds).
MAX_SPREAD = 0.15
WARMUP_ROUNDS = 2


def training_threads() -> ThreadSettings:
    """The same for every candidate: every core for one operator, one operator at a time."""
    return ThreadSettings(intra_op=os.cpu_count() or 1)


class _Child:
    """One candidate's training in one precision, in a process of its own, trained on request."""

    def __init__(self, name: str, spec: TaskSpec, data_dir: Path, work: Path, threads: ThreadSettings):
        self.name = name
        work.mkdir(parents=True, exist_ok=True)
        request = work / "request.json"
        request.write_text(json.dumps({"spec": spec.model_dump(mode="json"), "data_dir": str(data_dir)}))
        self.log = work / "child.log"
        env = {**os.environ, **threads.environment(), "PYTHONPATH": relay_python_path()}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "components.bakeoff.throughput", str(request)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                            cwd=PROJECT_DIR, text=True, bufsize=1)
        self.effective_threads = self._answer()["effective_threads"]  # ready: model and input pipeline built

    def train(self, batches: int) -> dict:
        """Train ``batches`` batches; images, the child's own seconds, and the machine's load meanwhile."""
        before, meter = tree_cpu_seconds(self.process.pid), LoadMeter()
        self.process.stdin.write(json.dumps({"batches": batches}) + "\n")
        answer = self._answer()
        load = meter.stop(tree_cpu_seconds(self.process.pid) - before)
        return {**answer, "images_per_s": answer["images"] / answer["seconds"], **load}

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RelayError(f"training throughput of {self.name} failed (exit {self.process.returncode}): "
                             f"{tail[0]}; log: {self.log}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure_training_rounds(candidates: dict[str, tuple[TaskSpec, Path]], work: Path, rounds: int,
                            round_seconds: float, around_round: Callable[[str], AbstractContextManager] | None = None,
                            bootstrap_samples: int = 1000, log=print) -> dict[str, dict]:
    """Per candidate (name → its spec and data directory): images/s in each precision from alternating rounds
    (see the module's docstring), how busy the machine was in each round, whether the figure can be trusted,
    and the thread counts each child really had. ``around_round(child)`` wraps each timed round of a child
    named ``"<candidate> <precision>"``."""
    around_round = around_round or (lambda _: nullcontext())
    threads = training_threads()
    children: list[_Child] = []
    try:
        for candidate, (spec, data_dir) in candidates.items():
            for precision in PRECISIONS:
                log(f"  start {candidate} ({precision})")
                training = spec.training.model_copy(update={"precision": precision})
                run_spec = spec.model_copy(update={"training": training})
                children.append(_Child(f"{candidate} {precision}", run_spec, data_dir,
                                       work / f"{candidate}-{precision}".replace("/", "-"), threads))
        batches = {}
        for child in children:  # warm-up, then size each child's round to about round_seconds
            first = child.train(2)
            per_batch = first["seconds"] / 2
            for _ in range(WARMUP_ROUNDS - 1):
                size = max(1, round(round_seconds / per_batch))
                per_batch = child.train(size)["seconds"] / size
            batches[child.name] = max(1, round(round_seconds / per_batch))
        timed: dict[str, list[dict]] = {child.name: [] for child in children}
        for round_ in range(rounds):
            log(f"  round {round_ + 1}/{rounds}")
            for child in (children if round_ % 2 == 0 else children[::-1]):
                with around_round(child.name):
                    timed[child.name].append(child.train(batches[child.name]))
    finally:
        for child in children:
            child.close()
    effective = {child.name: child.effective_threads for child in children}
    results = {}
    for candidate in candidates:
        figures = {f"images_per_s_{p}": throughput_figure(timed[f"{candidate} {p}"], bootstrap_samples)
                   for p in PRECISIONS}
        mixed, fp32 = figures["images_per_s_mixed"], figures["images_per_s_fp32"]
        results[candidate] = {**figures, "mixed_over_fp32": mixed["value"] / fp32["value"],
                              "throughput_threads": threads.as_dict(),
                              "throughput_effective_threads": effective[f"{candidate} mixed"],
                              "batches_per_round": {p: batches[f"{candidate} {p}"] for p in PRECISIONS}}
    return results


def throughput_figure(rounds: list[dict], samples: int) -> dict:
    """Median images/s of the quiet rounds with its interval, each round's figures, and ``unreliable`` (why)
    when fewer than half the rounds were quiet or the quiet ones spread by more than MAX_SPREAD (median
    absolute deviation over median)."""
    quiet = [r for r in rounds if not busy(r)]
    used = quiet or rounds
    rates = [r["images_per_s"] for r in used]
    busiest = max(_not_ours(r) for r in rounds)
    figure = {**with_interval(rates, np.median, samples), "rounds": rounds, "quiet_rounds": len(quiet),
              "busiest_round_share": busiest}
    median = float(np.median(rates))
    spread = float(np.median(np.abs(np.asarray(rates) - median))) / median
    figure["spread"] = spread
    if len(quiet) * 2 < len(rounds):
        figure["unreliable"] = (f"the machine was busy in {len(rounds) - len(quiet)} of {len(rounds)} rounds "
                                f"(other processes used up to {busiest:.0%} of its CPU)")
    elif spread > MAX_SPREAD:
        figure["unreliable"] = (f"its quiet rounds spread by {spread:.0%} of their median (median absolute deviation; "
                                f"more than {MAX_SPREAD:.0%})")
    return figure


def throughput_method(cfg) -> dict:
    """How the training images/s were measured (``cfg``: the spec's bakeoff section), for the report's Method."""
    return {"rounds": cfg.throughput_rounds, "round_seconds": cfg.throughput_round_seconds,
            "warmup_rounds": WARMUP_ROUNDS,
            "process": "one per candidate and precision, fresh model, real input pipeline",
            "order": "one round per process in turn, reversed every other round",
            "threads": training_threads().as_dict(),
            "threads_why": "the same for every candidate, as in every comparison Relay makes; not tuned per framework",
            "busy_round": f"other processes used more than {BUSY_SHARE:.0%} of the machine's CPU (or it was stolen)",
            "figure": "median images/s of the quiet rounds, bootstrap 95% interval",
            "unreliable": f"fewer than half the rounds quiet, or quiet rounds spread more than {MAX_SPREAD:.0%} "
                          "(median absolute deviation over median); an unreliable figure decides nothing"}


def busy(round_: dict) -> bool:
    return _not_ours(round_) > BUSY_SHARE


def _not_ours(round_: dict) -> float:
    """The share of the machine's CPU that a round did not get: used by others, or stolen."""
    return round_["others_cpu_share"] + round_["steal_share"]


# -- the child ------------------------------------------------------------------------------------------
def _child(request_file: Path) -> None:
    from components.frameworks import backend
    from components.measurement import pin_threads

    # The answers get stdout to themselves: anything a framework prints goes to the log.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    request = json.loads(request_file.read_text())
    spec = TaskSpec.model_validate(request["spec"])
    effective = pin_threads(training_threads(), {spec.framework})
    rounds = backend(spec.framework).training_rounds(spec, Path(request["data_dir"]))
    answers.write(json.dumps({"ready": True, "effective_threads": effective}) + "\n")
    for line in sys.stdin:
        batches = json.loads(line)["batches"]
        started = time.perf_counter()
        images = rounds.run(batches)
        answers.write(json.dumps({"images": images, "seconds": time.perf_counter() - started}) + "\n")


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
