"""Per-epoch metrics for either framework: dvclive files plus a rich progress bar in the terminal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

DVCLIVE_DIR = "dvclive"


@dataclass
class EpochLog:
    live: Any
    progress: Progress
    bar: Any
    label: str
    epochs: int
    directory: Path

    def skip(self, done: int) -> None:
        """A resumed training: advance the bar past the epochs already done."""
        if done:
            self.progress.update(self.bar, advance=done, description=f"{self.label} resumed after epoch {done}")

    def epoch(self, index: int, metrics: dict[str, float]) -> None:
        """Record one finished epoch (0-based ``index``): train and val loss and accuracy."""
        _log_step(self.live, metrics)
        self.progress.update(self.bar, advance=1, description=(
            f"{self.label} epoch {index + 1}/{self.epochs} loss {metrics['train_loss']:.3f} "
            f"val acc {metrics['val_accuracy']:.3f}"))

    def note(self, text: str) -> None:
        """A line for the user above the progress bar."""
        self.progress.console.print(text)

    def summary(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.live.summary[name] = value

    def copy_to(self, target: Path) -> None:
        """Copy the dvclive logs (written beside the checkpoints) into the published model directory."""
        self.live.make_summary()
        shutil.copytree(self.directory / DVCLIVE_DIR, target / DVCLIVE_DIR)


def _log_step(live, metrics: dict[str, float]) -> None:
    """One dvclive step of an epoch's metrics ("train_loss" is logged as train/loss)."""
    for name, value in metrics.items():
        split, _, metric = name.partition("_")
        live.log_metric(f"{split}/{metric}", value)
    live.next_step()


@contextmanager
def epoch_log(work_dir: Path, label: str, epochs: int, params: dict, done: list[dict] = ()) -> Iterator[EpochLog]:
    """dvclive logging into ``work_dir/dvclive`` (no DVC experiment, no dvc.yaml) and a progress bar.
    ``done``: a resumed training's history (``TrainState.history``). The log is written afresh from it rather than
    resumed: a training killed while dvclive wrote its files, or after it logged an epoch that no checkpoint
    committed, leaves files that must not be read back."""
    from dvclive import Live

    # dvclive binds to the repository of the current directory, the user's project: in one with no commit
    # yet it fails ("Empty git repo"), and in a git repository without DVC it runs `dvc init` there. The run's
    # logs belong to the run, so it starts from the run's own directory (outside any project).
    work_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work_dir / DVCLIVE_DIR, ignore_errors=True)
    with chdir(work_dir):
        live = Live(dir=str(work_dir / DVCLIVE_DIR), save_dvc_exp=False, dvcyaml=None, report=None)
    with live, Progress(transient=False) as progress:
        live.log_params(params)
        for row in done:
            _log_step(live, {name: value for name, value in row.items() if name not in ("epoch", "elapsed_seconds")})
        yield EpochLog(live, progress, progress.add_task(label, total=epochs), label, epochs, work_dir)
