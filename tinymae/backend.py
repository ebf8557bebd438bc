"""The one place that chooses the array library: TINYMAE_BACKEND=numpy (default, the CPU) or cupy (a GPU).

Every other module writes `from .backend import xp` and calls `xp.exp`, `xp.matmul`, ..., so the same code
runs on both. Arrays cross between host and device only through `asarray` (host -> device) and `to_numpy`
(device -> host). Random numbers that decide what a model computes (weights, masks, augmentation) come from
a seeded NumPy generator on the host (`host_rng`), so a NumPy run and a CuPy run see the same numbers.
No other module imports CuPy.
"""
import os
import sys

import numpy

from .errors import TinymaeError

BACKENDS = ("numpy", "cupy")


class BackendError(TinymaeError):
    """The requested array backend cannot be used."""


def load(name):
    """The array namespace for `name` ('numpy' or 'cupy'); BackendError otherwise."""
    if name == "numpy":
        return numpy
    if name != "cupy":
        raise BackendError(f"unknown TINYMAE_BACKEND={name!r}; valid values: {', '.join(BACKENDS)} (default: numpy)")
    try:
        import cupy
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError, CUDA driver or runtime errors, ...
        raise BackendError(f"TINYMAE_BACKEND=cupy, but CuPy cannot be used ({type(e).__name__}: {e}); install the "
                           "CuPy build of your CUDA version (pip install -e '.[cuda12]' or '.[cuda13]'), or run "
                           "with TINYMAE_BACKEND=numpy") from e
    if n_gpus < 1:
        raise BackendError("TINYMAE_BACKEND=cupy, but CuPy sees no GPU; run with TINYMAE_BACKEND=numpy")
    return cupy


def _one_line_hook(kind, value, traceback, previous=sys.excepthook):
    """A BackendError is raised while a command's modules are imported, before its main() can catch it: Python's
    last hook prints it as one line instead of a traceback."""
    if issubclass(kind, BackendError):
        print(f"error: {value}", file=sys.stderr)
    else:
        previous(kind, value, traceback)


name = os.environ.get("TINYMAE_BACKEND", "numpy").strip().lower() or "numpy"
try:
    xp = load(name)
except BackendError:
    sys.excepthook = _one_line_hook
    raise


def asarray(a, dtype=None):
    """Host (or device) data -> an array of the active backend: the only host -> device door."""
    return xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """An array of the active backend (or a Python or NumPy value) -> a host NumPy array: the only way back.
    CuPy's arrays (and the tests' strict stand-in) copy to the host with .get()."""
    if type(a) is numpy.ndarray:
        return a
    return a.get() if hasattr(a, "get") else numpy.asarray(a)


def host_rng(seed):
    """A seeded NumPy generator on the host: draw there, then move with `asarray`."""
    return numpy.random.default_rng(seed)
