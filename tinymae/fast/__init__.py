"""The fast path, apart from the reference of tinymae/model/, and the one place that chooses between them:

    training_step(model, kernels, threads) -> Path(step, AdamW, resident)

    reference  engine.Step and model/optim.py's AdamW: the plain formulas, one batch at a time
    fast       on the CPU: cpu.DataParallel (the batch in shards, one worker thread per core; glibc keeps freed
               memory for the next step) and optim.FlatAdamW (every parameter in one flat buffer, updated in
               cache-sized pieces on every core);
               on a GPU: the reference step (the GPU spreads each kernel over its own cores), and with
               TINYMAE_FAST_GPU=1 cuda.py's fused Transformer block, FlatAdamW's one-kernel update, and the
               training photos resident on the device (resident: the caller cuts each batch there)

Each piece computes what the reference computes (tests/test_fast.py holds them equal) and is kept because it pays
(benchmarks/bench_step.py prints what each buys). The choice is a value: the step and optimiser a run builds,
and the block a model holds (model.block); nothing is swapped behind the model's back.
"""
from functools import partial
from typing import NamedTuple

from .. import backend
from ..engine import Step
from ..model import optim as reference
from . import cuda
from .cpu import DataParallel, keep_freed_memory
from .optim import FlatAdamW

KERNELS = ("fast", "reference")


class Path(NamedTuple):
    step: object  # loss_and_grads, optimizer_step, map, describe, close
    AdamW: object  # the optimiser's class, AdamW's arguments
    resident: bool  # whether the photos live on the device (cuda.DeviceImages cuts the batches there)


def training_step(model, kernels="fast", threads=0):
    """How `model` trains: the reference step, or the fast one of this backend."""
    if kernels == "reference":
        return Path(Step(model), reference.AdamW, False)
    if backend.name == "cupy":  # no shards; FlatAdamW's cache-sized pieces pay on a CPU only, its fused kernel here
        if not cuda.ENABLED:
            return Path(Step(model), reference.AdamW, False)
        model.block = cuda.BLOCK
        return Path(Step(model), partial(FlatAdamW, fused=True), True)
    keep_freed_memory()
    return Path(DataParallel(model, threads), FlatAdamW, False)
