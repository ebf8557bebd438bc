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
    assert "Unknown TINYMAE_BACKEND='tensorflow'" in result.stderr
    assert "numpy, cupy" in result.stderr


def test_cupy_not_installed_is_a_clear_error_with_the_cause(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(backend.BackendError, match="CuPy cannot be used: ModuleNotFoundError") as info:
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
