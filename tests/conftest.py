"""Shared test fixtures: the backend under test, and tolerances.

Every test that takes the `xp` fixture runs once per backend:
  numpy   the default backend
  strict  NumPy whose arrays refuse to mix with host arrays, as CuPy's do (tests/strict_numpy.py)
  cupy    the GPU backend; skipped, with the reason, where CuPy or a GPU is missing

The backend is chosen once at import in tinymae (TINYMAE_BACKEND). To run one test body on several
backends in one process, the fixture points the `xp` name of every tinymae module at the backend
under test, and pytest's monkeypatch puts it back afterwards.
"""
import importlib
import os
import pkgutil
import sys

import pytest

import tinymae
from tinymae import backend

sys.path.insert(0, os.path.dirname(__file__))
from strict_numpy import strict_numpy  # noqa: E402

TINYMAE_MODULES = [importlib.import_module(f"tinymae.{m.name}") for m in pkgutil.iter_modules(tinymae.__path__)]

BACKEND_PARAMS = ["numpy", "strict", "cupy"]


def use_backend(name, monkeypatch):
    """Point every tinymae module at backend `name` for the duration of one test; return its xp."""
    if name == "strict":
        ns = strict_numpy
    else:
        try:
            ns = backend.load(name)
        except backend.BackendError as e:
            pytest.skip(f"backend {name!r} is not available here: {e}")
    for module in TINYMAE_MODULES:
        if hasattr(module, "xp"):
            monkeypatch.setattr(module, "xp", ns)
    monkeypatch.setattr(backend, "name", name)
    return ns


@pytest.fixture(params=BACKEND_PARAMS)
def xp(request, monkeypatch):
    """The array namespace of the backend under test (numpy, strict, cupy)."""
    return use_backend(request.param, monkeypatch)


@pytest.fixture
def rng():
    return backend.host_rng(0)
