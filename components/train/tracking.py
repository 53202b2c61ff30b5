"""Per-epoch metrics for either framework: dvclive files plus a rich progress bar in the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress


@dataclass
class EpochLog:
    live: Any
    progress: Progress
    bar: Any
    label: str
    epochs: int

    def epoch(self, index: int, loss: float, train_accuracy: float, test_accuracy: float) -> None:
        """Record one finished epoch (0-based ``index``)."""
        self.live.log_metric("train/loss", loss)
        self.live.log_metric("train/accuracy", train_accuracy)
        self.live.log_metric("test/accuracy", test_accuracy)
        self.live.next_step()
        self.progress.update(self.bar, advance=1,
                             description=f"{self.label} epoch {index + 1}/{self.epochs} loss {loss:.3f}")


@contextmanager
def epoch_log(out_dir: Path, label: str, epochs: int, params: dict) -> Iterator[EpochLog]:
    """dvclive logging into ``out_dir/dvclive`` (no DVC experiment, no dvc.yaml) and a progress bar."""
    from dvclive import Live

    with Live(dir=str(out_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None) as live, \
            Progress(transient=False) as progress:
        live.log_params(params)
        yield EpochLog(live, progress, progress.add_task(label, total=epochs), label, epochs)
