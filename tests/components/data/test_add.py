"""`relay data add`: new images join a task's dataset under DVC, the pointer is committed, nothing is
overwritten, and bad input is refused by name with nothing added (the Asset event is in tests/e2e)."""

import shutil
import subprocess

import pytest

from components import versioning
from components.data.add import add_data, commit_command
from components.errors import RelayError
from components.spec import SPECS_DIR
from components.data.task_new import create_task
from tests.components.data.test_task_new import _folder, project  # noqa: F401  (the fixture)
from tests.conftest import make_settings


@pytest.fixture
def pets(tmp_path, project):  # noqa: F811
    settings = make_settings(tmp_path / "home", project_dir=project)
    create_task("pets", _folder(tmp_path / "photos"), settings=settings)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pets"], cwd=project,
                   check=True)
    return settings, project


def _git_log(project) -> list[str]:
    return subprocess.run(["git", "log", "--format=%s"], cwd=project, capture_output=True, text=True,
                          check=True).stdout.split("\n")


@pytest.mark.slow  # DVC push and a git remote
def test_new_images_are_added_pushed_and_the_pointer_committed(tmp_path, pets):
    settings, project = pets
    before = versioning.pointer_md5(project / "data" / "pets.dvc")
    new = tmp_path / "new"
    _folder(new, count=3, size=(64, 64))
    for image in (new / "cat").iterdir():  # distinct names: these are new files
        image.rename(image.with_name("new-" + image.name))
    for image in (new / "dog").iterdir():
        image.rename(image.with_name("new-" + image.name))
    result = add_data("pets", new, settings=settings)
    assert (result.added, result.already_present) == (6, 0)
    assert result.dataset_md5 == versioning.pointer_md5(project / "data" / "pets.dvc") != before
    assert len(list((project / "data" / "pets" / "cat").iterdir())) == 15
    assert _git_log(project)[0] == "data: add 6 image(s) to pets" and result.commit
    assert not subprocess.run(["git", "status", "--porcelain", "data/pets.dvc"], cwd=project, capture_output=True,
                              text=True).stdout.strip()
    again = add_data("pets", new, settings=settings)  # idempotent
    assert (again.added, again.already_present, again.commit) == (0, 6, None)


@pytest.mark.slow  # DVC and git repositories
def test_without_commit_it_says_what_to_commit(tmp_path, pets):
    settings, project = pets
    new = _folder(tmp_path / "new", classes=("cat",), count=2)
    for image in (new / "cat").iterdir():
        image.rename(image.with_name("x" + image.name))
    result = add_data("pets", new, commit=False, settings=settings)
    assert result.commit is None and result.added == 2
    assert commit_command(result, project) == ("git add data/pets.dvc && git commit -m 'data: add 2 image(s) to "
                                               "pets' -- data/pets.dvc")


@pytest.mark.slow  # DVC and git repositories
def test_refusals_name_the_problem_and_add_nothing(tmp_path, pets):
    settings, project = pets
    dataset = project / "data" / "pets"
    count = len(list(dataset.rglob("*.jpg")))
    with pytest.raises(RelayError, match=r"label folder\(s\) \['bird'\] are not classes of pets"):
        add_data("pets", _folder(tmp_path / "birds", classes=("cat", "bird"), count=2), settings=settings)
    clash = _folder(tmp_path / "clash", classes=("cat",), count=1, size=(50, 50))  # cat/0.jpg, other pixels
    with pytest.raises(RelayError, match=r"pets/cat/0.jpg exists with other content .* \(nothing was added\)"):
        add_data("pets", clash, settings=settings)
    broken = tmp_path / "broken"
    shutil.copytree(clash, broken)
    (broken / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    shutil.copy(tmp_path / "photos" / "cat" / "1.jpg", broken / "cat" / "fine.jpg")
    with pytest.raises(RelayError, match=r"1 file\(s\) are not usable images, e.g. cat/0.jpg"):
        add_data("pets", broken, settings=settings)
    assert len(list(dataset.rglob("*.jpg"))) == count
    with pytest.raises(RelayError, match="built-in dataset sklearn-digits"):
        add_data(str(SPECS_DIR / "digits.yaml"), clash, settings=settings)
