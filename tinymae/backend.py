"""The one place that chooses the array library.

    TINYMAE_BACKEND=numpy   (default) arrays live in host memory, math runs on the CPU
    TINYMAE_BACKEND=cupy    arrays live on the GPU, math runs there

The choice is read once, when this module is imported. Every other module writes
`from .backend import xp` and calls `xp.exp`, `xp.matmul`, ... so the same code runs on both.
Arrays cross between host and device only at the edges, through `asarray` (host -> device) and
`to_numpy` (device -> host): loading a batch, logging a number, saving a checkpoint, drawing.

Random numbers that decide *what* the model computes (initial weights, masks, augmentation) come from
a seeded NumPy generator on the host (`host_rng`) and are then moved with `asarray`, so a NumPy run
and a CuPy run with the same seed see the same weights and the same masks.

No other module imports CuPy.

A backend that cannot be used raises BackendError when this module is imported, which library code can
catch. A command (python -m tinymae.pretrain, ...) that does not catch it shows it as the one line
"error: ..." and exits with status 1, without a traceback (see _report_backend_errors_in_one_line).
"""
import os
import sys

import numpy

BACKENDS = ("numpy", "cupy")


class BackendError(RuntimeError):
    """The requested array backend cannot be used."""


def load(name):
    """Return the array namespace for `name` ('numpy' or 'cupy'); raise BackendError otherwise."""
    if name == "numpy":
        return numpy
    if name == "cupy":
        try:
            import cupy
            n_gpus = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # ImportError, CUDA driver/runtime errors, ...
            raise BackendError(
                f"TINYMAE_BACKEND=cupy, but CuPy cannot be used: {type(e).__name__}: {e}. "
                "On a machine with an NVIDIA GPU, install CuPy for its CUDA version (pip install -e '.[cuda12]' or "
                "'.[cuda13]': nvidia-smi shows the version), or run with TINYMAE_BACKEND=numpy."
            ) from e
        if n_gpus < 1:
            raise BackendError("TINYMAE_BACKEND=cupy, but CuPy sees no GPU. Run with TINYMAE_BACKEND=numpy.")
        return cupy
    raise BackendError(
        f"Unknown TINYMAE_BACKEND={name!r}. Valid values: {', '.join(BACKENDS)} (default: numpy)."
    )


def _report_backend_errors_in_one_line():
    """Make an uncaught BackendError print as one line, "error: <message>", instead of a traceback.

    The error is raised while the command's modules are imported, before its main() can catch anything,
    so the only place left to shape the message is sys.excepthook, which Python calls for an uncaught
    exception just before it exits with status 1. Every other exception goes to the hook that was there
    before (the usual traceback)."""
    previous_hook = sys.excepthook

    def hook(kind, value, traceback):
        if issubclass(kind, BackendError):
            print(f"error: {value}", file=sys.stderr)
        else:
            previous_hook(kind, value, traceback)

    sys.excepthook = hook


name = os.environ.get("TINYMAE_BACKEND", "numpy").strip().lower() or "numpy"
try:
    xp = load(name)
except BackendError:
    _report_backend_errors_in_one_line()
    raise


def asarray(a, dtype=None):
    """Host (or device) data -> an array of the active backend. The only host -> device door."""
    return xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """An array of the active backend (or a Python/NumPy value) -> a NumPy array on the host.

    The only device -> host door. CuPy arrays (and the test suite's strict arrays) carry a `.get()`
    that copies to the host; NumPy arrays are returned as they are.
    """
    if isinstance(a, numpy.ndarray) and type(a) is numpy.ndarray:
        return a
    if hasattr(a, "get"):
        return a.get()
    return numpy.asarray(a)


def host_rng(seed):
    """A seeded NumPy random generator on the host; draw there, then move with `asarray`."""
    return numpy.random.default_rng(seed)
