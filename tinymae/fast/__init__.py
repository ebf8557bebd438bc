"""The fast path: the same computations as the plain reference in tinymae/model/, made faster, and the one
place that chooses what a training run uses.

    runner(model, threads)  computes model.forward + model.backward and the optimiser step for the loop:
                            on the CPU, cpu.DataParallel (the batch in shards, one worker thread per core);
                            on a GPU, the plain step (the GPU spreads every kernel over its own cores)
    AdamW                   optim.FlatAdamW: AdamW over one flat buffer of every parameter
    use_cuda_kernels()      on CuPy with TINYMAE_CUDA_KERNELS=1: the models' Transformer blocks, norms and
                            loss run as fused CUDA kernels (cuda.py) instead of chains of small ones

Every fast function is tested equal to the reference it stands in for (tests/test_fast.py), on NumPy and
on the strict CuPy stand-in, and on CuPy itself where a GPU exists.
"""
import os

from .. import backend
from .cpu import DataParallel, keep_freed_memory
from .optim import FlatAdamW as AdamW

# The fused CUDA kernels are off unless asked for: they have been tested through NumPy (their formulas),
# not yet run on a GPU.
CUDA_KERNELS = os.environ.get("TINYMAE_CUDA_KERNELS", "0") == "1"


def runner(model, threads=0):
    """The training step's runner for `model` (threads: CPU worker threads, 0 = one per core)."""
    if backend.name == "numpy":
        keep_freed_memory()  # reuse freed big arrays instead of page-faulting new memory
    return DataParallel(model, threads)  # on CuPy, or with one thread, it runs the plain step
