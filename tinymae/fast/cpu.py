"""Every CPU core at work: the fast path of the NumPy backend.

    DataParallel        the training step on shards of the batch, one worker thread per core
    keep_freed_memory   glibc's malloc keeps big freed blocks for the next step instead of returning them

The first is below; the second at the end of the file.

The reference training step is the plain one, on one batch:

    loss, _, _, cache = model.forward(imgs, noise)
    grads = model.backward(1.0, cache)
    optimizer.step(grads)

NumPy runs each elementwise formula (GELU, LayerNorm, softmax) as passes on one core, and attention's
many small matrix products go to BLAS one small matrix at a time, also on one core; only the large
products of the Linear layers use every core. `DataParallel` computes the same step with every core
busy throughout, the way a multi-GPU trainer splits a batch across devices:

  * the batch is cut into shards of a few images (SHARD_IMAGES), so each shard's activations stay in
    the CPU's caches;
  * each worker thread takes a fixed share of the shards (worker w: shards w, w + T, w + 2T, ...) and
    runs the model's own forward and backward on them, adding their gradients up as it goes. NumPy
    releases the GIL inside its loops and BLAS calls, so the threads run in parallel; BLAS is held to
    one thread per worker meanwhile, so that the workers do not fight over the cores;
  * the workers' sums are added in worker order, and AdamW updates its pieces on every worker;
  * evaluation (no gradients) spreads whole batches over the workers (`map`).

Why this gives the reference's gradients: the loss is a mean over the batch's removed patches (or all
patches), and every image has the same number of them, so the batch loss is sum_s (n_s / N) * loss_s
over shards of n_s images; its gradient is the same sum of the shards' gradients, and each shard's
backward gets dloss = n_s / N. The additions happen in a fixed order, so a run is bit-for-bit repeatable
for a given thread count; against the single-threaded step it differs only by float32 rounding
(tests/test_parallel.py checks both). AdamW's pieces are elementwise and independent, so that part is
bit-identical to AdamW.step.

On CuPy the GPU runs every kernel in parallel already: DataParallel then does the plain step.
"""
import ctypes
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

from .. import backend
from ..backend import xp
from .optim import adamw_update

# Images per shard, by architecture. The ViT's elementwise work is half of its step: small shards keep
# it in cache. The MLP is mostly large matrix products: one shard per core (of a batch of 256), each
# core's products single-threaded, beats one batch whose products BLAS spreads over the cores, even with
# the gradients of its 4.6 M weights to add up (benchmarks/README.md has the measurements).
SHARD_IMAGES = {"mlp": 128, "vit": 32, "vit_classifier": 32}  # the classifier: the ViT encoder on all 1+L tokens


def cpu_count():
    """The cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class DataParallel:
    """model.forward + model.backward and AdamW steps, spread over `threads` worker threads."""

    def __init__(self, model, threads=0, shard_images=None):
        """model: has forward(*inputs) -> (loss, ..., cache) and backward(dloss, cache) -> grads, its loss a
        mean over the images of the batch. shard_images: images per shard (default: SHARD_IMAGES)."""
        self.model = model
        self.threads = threads or cpu_count()
        on_cpu = backend.name != "cupy"
        shard_images = shard_images or SHARD_IMAGES.get(model.arch)
        self.shard_images = shard_images if on_cpu and self.threads > 1 else None
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinymae") if on_cpu and self.threads > 1 \
            else None
        self.blas = ThreadpoolController() if self.pool is not None else None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def describe(self):
        """', 2 threads' for the run's first line, or '' for the plain step."""
        return "" if self.pool is None else f", {self.threads} threads"

    # ------------------------------------------------------------------------------------------
    def loss_and_grads(self, *inputs):
        """inputs: the batch, e.g. (imgs, noise), each with the images along axis 0 -> (loss, grads): the
        batch's mean loss (a 0-d backend array) and its gradient dict, as model.forward + model.backward."""
        N = inputs[0].shape[0]
        if self.shard_images is None or N == 1:
            outputs = self.model.forward(*inputs)  # (loss, ..., cache)
            return outputs[0], self.model.backward(1.0, outputs[-1])

        # Shards of shard_images images, but never fewer shards than workers: a small batch is still split
        # over every core.
        shard = min(self.shard_images, -(-N // self.threads))
        bounds = [(start, min(N, start + shard)) for start in range(0, N, shard)]

        def worker(w):
            """Forward and backward of shards w, w + T, ...: the sum of their weighted losses and gradients."""
            loss_sum, grads_sum = None, None
            for start, stop in bounds[w::self.threads]:
                outputs = self.model.forward(*(a[start:stop] for a in inputs))  # (loss, ..., cache)
                loss = outputs[0]
                weight = (stop - start) / N  # this shard's share of the batch mean
                grads = self.model.backward(weight, outputs[-1])
                del outputs  # free the shard's activations before the next shard's forward
                if grads_sum is None:
                    loss_sum, grads_sum = loss * weight, grads
                else:
                    loss_sum = loss_sum + loss * weight
                    for name, g in grads.items():
                        grads_sum[name] += g  # fresh arrays from backward: the worker may add into them
            return loss_sum, grads_sum

        with self.blas.limit(limits=1, user_api="blas"):
            results = list(self.pool.map(worker, range(min(self.threads, len(bounds)))))
        loss, grads = results[0]
        for other_loss, _ in results[1:]:  # in worker order, so the sums are the same every run
            loss = loss + other_loss

        # The workers' gradients are added up on the workers too: worker w adds part w of every
        # parameter (a flat view of it), in worker order, so every element's sum is the same every run.
        for name, g in grads.items():
            if not g.flags.c_contiguous:  # (a flat view of it must be the array itself)
                grads[name] = xp.ascontiguousarray(g)

        def add_up(w):
            for name, g in grads.items():
                flat = g.reshape(-1)  # a view
                part = slice(w * flat.size // self.threads, (w + 1) * flat.size // self.threads)
                for _, other_grads in results[1:]:
                    flat[part] += other_grads[name].reshape(-1)[part]

        list(self.pool.map(add_up, range(self.threads)))
        return loss, grads

    # ------------------------------------------------------------------------------------------
    def map(self, fn, items):
        """[fn(item) for item in items], the items spread over the workers (BLAS held to one thread each).

        For work without gradients, e.g. evaluating batch after batch: the results come back in the
        order of `items`, so sums over them are the same every run."""
        if self.pool is None:
            return [fn(item) for item in items]
        with self.blas.limit(limits=1, user_api="blas"):
            return list(self.pool.map(fn, items))

    # ------------------------------------------------------------------------------------------
    def optimizer_step(self, optimizer, grads):
        """optimizer.step(grads): a fast.optim.FlatAdamW's pieces updated on every worker (bit-identical to its
        step(): the pieces are independent); any other optimiser steps as it is."""
        if self.pool is None or not hasattr(optimizer, "pieces"):  # (the reference AdamW: one parameter at a time)
            optimizer.step(grads)
            return
        pieces = optimizer.pieces(grads)
        beta1, beta2 = optimizer.betas

        def worker(w):
            for p, g, m, v, decay, scale, step_size, eps in pieces[w::self.threads]:
                adamw_update(p, g, m, v, decay, scale, optimizer.lr, beta1, beta2, eps, step_size)

        list(self.pool.map(worker, range(self.threads)))


# ----------------------------------------------------------------------------------------------
# keep_freed_memory. A training step allocates the same big temporaries every time (activations,
# gradients). glibc's malloc gives blocks above its mmap threshold their own mmap, unmapped on free, and
# returns free memory at the top of its heap to the OS once it exceeds the trim threshold. When a step ends
# and its arrays are freed, most of that memory goes back to the OS, and the next step gets it again as
# fresh pages: one page fault each, and the kernel zeroes every page. Raising both thresholds keeps freed
# memory in the heap for the next step (benchmarks/README.md has what it saves).

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold_bytes=1 << 30):
    """Ask glibc's malloc to keep big freed blocks for reuse; True if it did, False where it cannot.

    Sets M_MMAP_THRESHOLD (blocks at least this big come from mmap, and go back to the OS on free) and
    M_TRIM_THRESHOLD (free memory at the top of the heap beyond this is given back) to `threshold_bytes`
    (a C int: below 2 GiB). Some glibc versions cap the mmap threshold at 32 MiB (HEAP_MAX_SIZE / 2);
    then that cap is used. Both settings are process-wide and affect every library in the process
    (torch's CPU allocator too). Linux with glibc only: elsewhere (macOS, Windows, musl) nothing happens
    and the result is False. Call it once, early; it changes how memory is obtained, never a result.
    """
    if not 0 < threshold_bytes < 2 ** 31:
        raise ValueError(f"threshold_bytes must be between 1 and 2**31 - 1 (a C int), got {threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc's own symbol: mallopt's parameter numbers are glibc's
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes) or libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, threshold_bytes)
    return bool(mmap_set and trim_set)
