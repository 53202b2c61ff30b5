"""Worker processes never re-run the main script of the process that starts them (an Airflow task's
`airflow` command cannot run twice; neither can a user's script without a __main__ guard)."""

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import PROJECT

pytestmark = pytest.mark.slow  # trains models in both frameworks


def test_the_data_steps_workers_do_not_rerun_an_unguarded_main_script(tmp_path, small_dataset):
    runs = tmp_path / "main-ran.txt"
    script = tmp_path / "unguarded.py"
    # No `if __name__ == "__main__"`: every process that runs this file appends a line.
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        with open({str(runs)!r}, "a") as log:
            log.write(f"{{os.getpid()}}\\n")
        from components.data.dataset import describe_files
        from components.imaging import Preprocessing
        prep = Preprocessing(height=8, width=8, channels=1, resize="stretch", mean=(0.0,), std=(1.0,),
                             max_pixels=10**6)
        rows = describe_files(sorted(Path({str(small_dataset)!r}).rglob("*.png"))[:300], prep)
        assert len(rows) == 300 and all(row["readable"] for row in rows)
        print("ok")
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=PROJECT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert len(runs.read_text().split()) == 1  # the parent only, though the files went to pool workers


# Each of Relay's worker pools, started from an unguarded script. The script's own work (logging its pid) must
# run once, in the parent only.
_POOL_SCRIPTS = {
    "the decoded cache's process pool": """
        from components.imaging import Preprocessing
        from components.train.loader import build_cache
        prep = Preprocessing(height=8, width=8, channels=1, resize="stretch", mean=(0.0,), std=(1.0,),
                             max_pixels=10**6)
        files = [str(p) for p in sorted(Path(DATASET).rglob("*.png"))]
        assert np.load(build_cache(files, prep, Path(WORK) / "cache.npy")).shape == (len(files), 8, 8, 1) and len(files) == 300
    """,
    "PyTorch's DataLoader workers": """
        train(framework="pytorch", workers=1, cache="none")
    """,
    "TensorFlow training on data never decoded (the cache's pool)": """
        train(framework="tensorflow", workers=1, cache="decoded")
    """,
}
_TRAIN = """
    def train(**training):
        from components.data.dataset import prepare_data
        from components.settings import get_settings
        from components.spec import load_spec, parse_spec
        from components.frameworks import train_model
        data = load_spec("digits").model_dump(mode="json")
        data["dataset"].update(path=DATASET, min_per_class=5)
        data["framework"] = training.pop("framework")
        data["optimize"]["exporter"] = None
        data["training"].update(epochs=1, **training)
        spec = parse_spec(data)
        prepare_data(spec, Path(WORK) / "data", get_settings())
        train_model(spec, Path(WORK) / "data", Path(WORK) / "train")
"""


@pytest.mark.parametrize("pool", sorted(_POOL_SCRIPTS))
def test_no_worker_pool_reruns_an_unguarded_main_script(tmp_path, small_dataset, pool):
    runs = tmp_path / "main-ran.txt"
    script = tmp_path / "unguarded.py"
    body = textwrap.dedent(_TRAIN) + textwrap.dedent(_POOL_SCRIPTS[pool])
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        import numpy as np
        with open({str(runs)!r}, "a") as log:
            log.write(f"{{os.getpid()}}\\n")
        DATASET, WORK = {str(small_dataset)!r}, {str(tmp_path / "work")!r}
    """) + body + "\nprint('ok')\n")
    env = {"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "RELAY_HOME": str(tmp_path / "relay-home"), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert len(runs.read_text().split()) == 1, runs.read_text()  # the parent only


def test_the_main_module_is_restored_afterwards():
    from components.child_processes import main_script_hidden

    main = sys.modules["__main__"]
    before = (getattr(main, "__file__", None), main.__spec__)
    with main_script_hidden():
        assert not hasattr(main, "__file__") and main.__spec__ is None
    assert (getattr(main, "__file__", None), main.__spec__) == before
