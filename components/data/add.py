"""``relay data add TASK DIR``: add new images to a task's DVC-tracked dataset.

The images (``DIR/<label>/<files>``, labels among the task's classes) are checked, copied into the
dataset, ``dvc add``-ed and ``dvc push``-ed; the new ``data/<task>.dvc`` pointer is committed to the
project. The CLI then tells Airflow, with an Asset event, that the dataset changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from components import versioning
from components.data.dataset import ensure_dataset
from components.errors import RelayError
from components.versioning import git
from components.settings import Settings, get_settings
from components.spec import load_spec
from components.data.task_new import scan


@dataclass(frozen=True)
class DataAdded:
    task: str
    added: int
    already_present: int
    dataset_md5: str
    pointer: Path
    commit: str | None  # None: not committed; ``commit_command`` says what to run


def _digest(path: Path) -> str:
    return hashlib.file_digest(path.open("rb"), "md5").hexdigest()


def add_data(task: str, source: Path, commit: bool = True, settings: Settings | None = None) -> DataAdded:
    """Add the images under ``source`` to ``task``'s dataset, version them with DVC and commit the pointer.

    Nothing is overwritten: a file whose path exists in the dataset with other content is refused by name.
    """
    settings = settings or get_settings()
    spec = load_spec(task)
    project = settings.project_dir
    if spec.dataset.source != "dvc":
        raise RelayError(f"task {spec.name} uses the built-in dataset {spec.dataset.source}: it is generated, not "
                         "added to; create a task of your own with `relay task new`")
    if spec.dataset.labels_csv:
        raise RelayError(f"task {spec.name} labels its files with {spec.dataset.labels_csv}: add rows to that CSV and "
                         "files to the dataset, then `dvc add` it; `relay data add` takes label folders")
    found = scan(source)
    unknown = sorted(set(found.classes) - set(spec.dataset.classes))
    if unknown:
        raise RelayError(f"{source}: label folder(s) {unknown} are not classes of {spec.name} "
                         f"({', '.join(spec.dataset.classes)}); a new class is a spec change: edit dataset.classes")
    if found.unreadable:
        first = sorted(found.unreadable.items())[0]
        raise RelayError(f"{source}: {len(found.unreadable)} file(s) are not usable images, e.g. {first[0]}: "
                         f"{first[1]}; remove them and run again (nothing was added)")

    ensure_dataset(spec, settings)  # the dataset as committed, pulled if this checkout lacks it
    dataset = spec.dataset_dir(project)
    files = [rel for rel, _ in found.found.files]
    new, present = [], 0
    for rel in files:
        target = dataset / rel
        if not target.exists():
            new.append(rel)
        elif _digest(target) == _digest(source / rel):
            present += 1
        else:
            raise RelayError(f"{target} exists with other content than {source / rel}: rename the new file "
                             "(nothing was added)")
    for rel in new:
        # Each file appears whole or not at all: copied beside its destination, then renamed into place.
        target = dataset / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.relay-partial")
        shutil.copyfile(source / rel, partial)
        os.replace(partial, target)

    pointer = versioning.pointer_file(dataset)
    rel_dataset = str(dataset.relative_to(project))
    with versioning.remote_locked(settings):
        versioning.dvc(["add", rel_dataset], project)
        versioning.dvc(["push", rel_dataset + ".dvc"], project)
    md5 = versioning.pointer_md5(pointer)
    made = None
    if commit and new and _is_git_checkout(project):
        rel_pointer = str(pointer.relative_to(project))
        git(["add", rel_pointer], project)
        git(["commit", "-q", "-m", f"data: add {len(new)} image(s) to {spec.name}", "--", rel_pointer], project)
        made = git(["rev-parse", "HEAD"], project)
    return DataAdded(spec.name, len(new), present, md5, pointer, made)


def commit_command(result: DataAdded, project: Path) -> str:
    rel = result.pointer.relative_to(project)
    return f"git add {rel} && git commit -m 'data: add {result.added} image(s) to {result.task}' -- {rel}"


def _is_git_checkout(project: Path) -> bool:
    return git(["rev-parse", "--is-inside-work-tree"], project, check=False) == "true"
