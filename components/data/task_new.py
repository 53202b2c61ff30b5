"""``relay task new NAME --from DIR``: bring a team's own image folder into Relay.

It scans ``DIR/<label>/...`` (or a ``path,label`` CSV), reports what it found, copies the data to
``data/NAME`` in the project, puts it under DVC (``data/NAME.dvc``, pushed to the remote) and writes
``pipelines/specs/NAME.yaml`` with defaults chosen from what it found. The spec is validated before
it is written, so it always loads.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components import versioning
from components.atomic import atomic_dir, write_text
from components.data.dataset import Discovery, describe_files, discover
from components.errors import RelayError
from components.imaging import Preprocessing
from components.settings import Settings, get_settings
from components.spec import parse_spec, specs_dir

# Grey modes; anything else (RGB, palette, CMYK, …) makes a 3-channel task.
_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_PROBE = Preprocessing(height=8, width=8, channels=3, resize="stretch", mean=(0, 0, 0), std=(1, 1, 1),
                       max_pixels=50_000_000)


@dataclass
class Scan:
    """What a dataset folder holds."""

    counts: Counter = field(default_factory=Counter)
    formats: Counter = field(default_factory=Counter)
    modes: Counter = field(default_factory=Counter)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    found: Discovery = field(default_factory=Discovery)

    @property
    def classes(self) -> list[str]:
        return sorted(self.counts)


def scan(source: Path, labels_csv: str | None = None) -> Scan:
    """Describe every file under ``source`` (classes, counts, formats, sizes, modes, unreadable files)."""
    found = discover(source, labels_csv)
    result = Scan(found=found, unreadable=dict(found.problems))
    good = [(rel, label) for rel, label in found.files if rel not in found.problems]
    for (rel, label), row in zip(good, describe_files([source / rel for rel, _ in good], _PROBE,
                                                      label="scan images")):
        if not row["readable"]:
            result.unreadable[rel] = row["problem"]
            continue
        result.counts[label] += 1
        result.formats[row["format"]] += 1
        result.modes[row["mode"]] += 1
        result.sizes.append((int(row["width"]), int(row["height"])))
    if not result.counts:
        raise RelayError(f"{source}: no readable image found; expected {source}/<label>/<image files>"
                         + (f" ({len(result.unreadable)} unreadable file(s))" if result.unreadable else ""))
    return result


def _input_size(sizes: list[tuple[int, int]]) -> int:
    """Small images keep their size (rounded to 8); larger ones train at 64, or 96 from 400 px up."""
    side = statistics.median(min(w, h) for w, h in sizes)
    if side <= 48:
        return max(8, int(round(side / 8)) * 8)
    return 64 if side < 400 else 96


def propose_spec(name: str, found: Scan, labels_csv: str | None) -> dict:
    """A spec for the scanned data: sensible defaults, each one explained in the written file."""
    size = _input_size(found.sizes)
    channels = 1 if set(found.modes) <= _GREY else 3
    aspects = [w / h for w, h in found.sizes]
    ratio = max(found.counts.values()) / min(found.counts.values())
    resnet = size >= 16
    return {
        "name": name,
        "description": f"{name}: {sum(found.counts.values())} images in {len(found.counts)} classes "
                       "(written by `relay task new`).",
        "dataset": {
            "name": name, "path": f"data/{name}", "source": "dvc", "labels_csv": labels_csv,
            "classes": found.classes, "on_bad_file": "skip" if found.unreadable else "fail",
            "min_per_class": min(10, min(found.counts.values())),
            "max_imbalance": max(10.0, float(math.ceil(ratio))),
            "val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0,
        },
        "input": {"size": [size, size], "channels": channels,
                  "resize": "center_crop" if max(aspects) / min(aspects) > 1.2 else "stretch",
                  "normalization": "auto"},
        "framework": "pytorch",
        "model": {"name": "resnet", "widths": [32, 64, 128], "blocks_per_stage": 1} if resnet else
                 {"name": "small_cnn", "conv_channels": [32, 64], "hidden_units": 128},
        "training": {
            "epochs": 15, "batch_size": 64, "learning_rate": 0.003, "optimizer": "adamw", "weight_decay": 0.0005,
            "schedule": "onecycle", "label_smoothing": 0.0,
            "class_weights": "balanced" if ratio > 1.5 else "none",
            "augment": {"random_resized_crop": False, "horizontal_flip": False, "color_jitter": False,
                        "random_shift": 0.1},
            "early_stopping_patience": 5, "workers": 1, "cache": "decoded", "precision": "mixed", "seed": 0,
        },
        "gate": {"min_accuracy": 0.8},
        "deploy": {"target": "local"},
        "schedule": None,
    }


HEADER = """\
# Written by `relay task new {name} --from {source}`. Every field is documented in components/spec.py.
# Found: {summary}.
# Choices made from the data (change them freely):
# - input.size {size}: the median short side is {side} px; channels {channels} ({modes}).
# - augment: random shifts only. Turn on horizontal_flip for photos whose mirror image is the same class
#   (not for text, digits or arrows), random_resized_crop and color_jitter for natural photos.
# - gate.min_accuracy 0.8: a floor for a first run; raise it once you know what the model reaches.
{bad}"""


def create_task(name: str, source: Path, labels_csv: str | None = None, settings: Settings | None = None,
                found: Scan | None = None) -> Path:
    """Copy ``source`` to ``data/NAME``, DVC-add and push it, and write the project's spec ``NAME.yaml``
    (components.spec.specs_dir)."""
    settings = settings or get_settings()
    project = settings.project_dir
    spec_file = specs_dir() / f"{name}.yaml"
    target = project / "data" / name
    if spec_file.exists():
        raise RelayError(f"task {name} exists ({spec_file}): choose another name, or delete the spec first")
    if target.exists():
        raise RelayError(f"{target} exists: choose another task name, or remove it first")
    if not (project / ".dvc").is_dir():
        raise RelayError(f"{project} is not a DVC project (no .dvc/): run `dvc init` there first")
    found = found or scan(source, labels_csv)
    if len(found.counts) < 2:
        raise RelayError(f"{source}: only one class ({found.classes[0]}); a classifier needs at least two "
                         "label folders")
    spec = propose_spec(name, found, labels_csv)
    parse_spec(spec, f"the spec proposed for {name}")  # never write a spec that does not load

    refused = set(found.found.problems)
    with atomic_dir(target) as tmp:
        for rel, _ in found.found.files:
            if rel in refused:
                continue  # symlinks out of the dataset and missing CSV rows: named in the spec's header
            destination = tmp / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, destination)
        if labels_csv:
            shutil.copyfile(source / labels_csv, tmp / labels_csv)
    try:
        with versioning.remote_locked(settings):
            versioning.dvc(["add", str(target.relative_to(project))], project)
            versioning.dvc(["push", str(target.relative_to(project)) + ".dvc"], project)
    except RelayError:
        shutil.rmtree(target, ignore_errors=True)
        target.with_name(name + ".dvc").unlink(missing_ok=True)
        raise

    sizes = found.sizes
    side = statistics.median(min(w, h) for w, h in sizes)
    bad = "".join(f"# - unreadable, skipped (dataset.on_bad_file: skip): {rel}: {why}\n"
                  for rel, why in sorted(found.unreadable.items())[:20])
    header = HEADER.format(name=name, source=source, summary=summarize(found), size=spec["input"]["size"],
                           side=int(side), channels=spec["input"]["channels"],
                           modes=", ".join(f"{m} {n}" for m, n in found.modes.most_common()), bad=bad)
    write_text(spec_file, header + yaml.safe_dump(spec, sort_keys=False, width=110))
    return spec_file


def summarize(found: Scan) -> str:
    """One line: classes, counts, formats, sizes."""
    widths, heights = [w for w, _ in found.sizes], [h for _, h in found.sizes]
    return (f"{sum(found.counts.values())} images in {len(found.counts)} classes; "
            f"formats {', '.join(f'{f} {n}' for f, n in found.formats.most_common())}; "
            f"sizes {min(widths)}x{min(heights)} to {max(widths)}x{max(heights)}; "
            f"{len(found.unreadable)} unreadable")
