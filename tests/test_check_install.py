"""examples/check_install.py, the install check a GPU user runs, exercised on the CPU backends."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "check_install.py")


def test_install_check_passes_on_numpy(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--backend", "numpy", "--pytest-args", "none", "--epochs", "2"],
                          capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("PASS (numpy): backend, parity, training")


def test_install_check_says_fail_with_the_step_when_the_backend_cannot_load(tmp_path):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: the backend step would not fail")
    done = subprocess.run([sys.executable, SCRIPT, "--backend", "cupy", "--pytest-args", "none"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120)
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FAIL (cupy): backend:") and "CuPy cannot be used" in last


def test_bad_flags_are_refused_before_any_step(tmp_path):
    """One epoch cannot show a falling loss, and a typo in --data must not cost the tests' minute first."""
    for flags, message in ((["--epochs", "1"], "--epochs must be at least 2"),
                           (["--data", str(tmp_path / "nowhere")], "--data: the photo folder")):
        done = subprocess.run([sys.executable, SCRIPT, "--backend", "numpy", *flags], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and done.stdout == ""
        assert message in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr
