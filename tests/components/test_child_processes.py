"""Worker processes never re-run the main script of the process that starts them (an Airflow task's
`airflow` command cannot run twice; neither can a user's script without a __main__ guard)."""

import subprocess
import sys
import textwrap

from tests.conftest import PROJECT


def test_the_data_steps_workers_do_not_rerun_an_unguarded_main_script(tmp_path, small_dataset):
    runs = tmp_path / "main-ran.txt"
    script = tmp_path / "unguarded.py"
    # No `if __name__ == "__main__"`: every process that runs this file appends a line.
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        with open({str(runs)!r}, "a") as log:
            log.write(f"{{os.getpid()}}\\n")
        from components.data import describe_files
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


def test_the_main_module_is_restored_afterwards():
    from components.child_processes import main_script_hidden

    main = sys.modules["__main__"]
    before = (getattr(main, "__file__", None), main.__spec__)
    with main_script_hidden():
        assert not hasattr(main, "__file__") and main.__spec__ is None
    assert (getattr(main, "__file__", None), main.__spec__) == before
