"""Backend selection: clear errors, never a silent fallback; and the strict test backend itself."""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tinymae import backend

from strict_numpy import HostDeviceMixError, strict_numpy


def run_python(code, backend_value):
    env = dict(os.environ, TINYMAE_BACKEND=backend_value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_default_backend_is_numpy():
    result = run_python("import os; os.environ.pop('TINYMAE_BACKEND'); "
                        "from tinymae import backend; print(backend.name, backend.xp.__name__)", "numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["numpy", "numpy"]


def test_unknown_backend_is_a_clear_error_listing_valid_ones():
    result = run_python("import tinymae.backend", "tensorflow")
    assert result.returncode != 0
    assert "unknown TINYMAE_BACKEND='tensorflow'" in result.stderr
    assert "numpy, cupy" in result.stderr


def test_cupy_not_installed_is_a_clear_error_with_the_cause(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(backend.BackendError, match="CuPy cannot be used \\(ModuleNotFoundError") as info:
        backend.load("cupy")
    assert isinstance(info.value.__cause__, ImportError)
    assert "TINYMAE_BACKEND=numpy" in str(info.value)


def test_cupy_without_gpu_is_a_clear_error_with_the_cause(monkeypatch):
    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(backend.BackendError, match="cudaErrorNoDevice") as info:
        backend.load("cupy")
    assert isinstance(info.value.__cause__, CUDARuntimeError)


def test_cupy_backend_at_import_never_falls_back_silently():
    result = run_python("import sys; sys.modules['cupy'] = None; import tinymae.backend", "cupy")
    assert result.returncode != 0
    assert "CuPy cannot be used" in result.stderr


# ---- the commands: a backend that cannot be used is one line and a non-zero exit, never a traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {"pretrain": ["-m", "tinymae.pretrain", "--data", "nowhere"],
            "evaluate": ["-m", "tinymae.evaluate", "--checkpoint", "c.npz", "--data", "nowhere"],
            "probe": ["-m", "tinymae.probe", "--checkpoint", "c.npz", "--data", "nowhere"],
            "example": [os.path.join(REPO, "examples", "train_catsdogs.py"), "--data", "nowhere"]}


def run_command(args, backend_value, tmp_path):
    env = dict(os.environ, TINYMAE_BACKEND=backend_value, TINYMAE_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_report_an_unknown_backend_in_one_line(command, tmp_path):
    result = run_command(COMMANDS[command], "tensorflow", tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown TINYMAE_BACKEND='tensorflow'; valid values: numpy, cupy (default: numpy)"]


@pytest.mark.parametrize("command", ["evaluate", "example"])
def test_commands_report_missing_cupy_in_one_line(command, tmp_path):
    # sys.modules['cupy'] = None makes `import cupy` fail here even where CuPy is installed
    args = COMMANDS[command]
    runner = (f"runpy.run_module({args[1]!r}, run_name='__main__')" if args[0] == "-m"
              else f"runpy.run_path({args[0]!r}, run_name='__main__')")
    argv = ["prog", *(args[2:] if args[0] == "-m" else args[1:])]
    code = f"import runpy, sys; sys.modules['cupy'] = None; sys.argv = {argv!r}; {runner}"
    result = run_command(["-c", code], "cupy", tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TINYMAE_BACKEND=cupy, but CuPy cannot be used")


def test_library_code_can_still_catch_the_backend_error():
    code = ("try:\n    import tinymae.backend\nexcept Exception as e:\n"
            "    print(type(e).__name__)\nelse:\n    print('no error')")
    result = run_python(code, "tensorflow")
    assert result.returncode == 0 and result.stdout.split() == ["BackendError"]


def test_other_errors_after_a_backend_error_keep_their_traceback():
    code = ("try:\n    import tinymae.backend\nexcept Exception:\n    pass\n"
            "raise ValueError('something else')")
    result = run_python(code, "tensorflow")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ValueError: something else" in result.stderr


def test_to_numpy_and_asarray_round_trip(xp):
    a = np.arange(6, dtype="float32").reshape(2, 3)
    b = backend.asarray(a)
    back = backend.to_numpy(b)
    assert type(back) is np.ndarray and back.dtype == np.float32
    np.testing.assert_array_equal(back, a)
    assert backend.to_numpy(3.5) == 3.5


def test_host_rng_is_seeded():
    assert backend.host_rng(3).random() == backend.host_rng(3).random()


# ---- the strict backend must really refuse what CuPy refuses

def test_strict_backend_refuses_host_arrays():
    a = strict_numpy.asarray(np.ones(3))
    host = np.ones(3)
    with pytest.raises(HostDeviceMixError):
        a + host
    with pytest.raises(HostDeviceMixError):
        host * a
    with pytest.raises(HostDeviceMixError):
        strict_numpy.concatenate([a, host])
    with pytest.raises(HostDeviceMixError):
        strict_numpy.maximum(a, host)
    with pytest.raises(HostDeviceMixError):
        a[np.array([0, 1])]
    with pytest.raises(HostDeviceMixError):
        a[:] = host
    with pytest.raises(HostDeviceMixError):
        np.concatenate([a, host])


def test_strict_backend_allows_scalars_and_returns_strict_arrays():
    a = strict_numpy.asarray(np.arange(4.0))
    b = a * 2.0 + np.float32(1.0)
    assert type(b).__name__ == "StrictArray"
    total = b.sum()
    assert type(total).__name__ == "StrictArray" and total.shape == ()  # 0-d, like CuPy
    assert float(total) == 16.0
    assert type(a[strict_numpy.asarray(np.array([0, 2]))]).__name__ == "StrictArray"
    assert type(backend.to_numpy(a)) is np.ndarray
