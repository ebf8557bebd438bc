"""Every CPU core at work: DataParallel, the fast training step on NumPy, and keep_freed_memory.

NumPy runs each elementwise formula (GELU, LayerNorm, softmax) as passes on one core, and attention's small
matrix products go to BLAS one at a time; only the large products of the Linear layers use every core.
DataParallel computes the reference step (engine.Step) with every core busy, the way a multi-GPU trainer splits
a batch across devices:

  * the batch is cut into shards of model.shard_images images, so each shard's activations stay in cache;
  * the worker threads run the model's own forward and backward on the shards; NumPy releases the GIL in its
    loops and BLAS calls, so the threads run in parallel, BLAS held to one thread per worker meanwhile;
  * the shards' gradients are added in shard order, each worker adding up its part of every parameter, and
    AdamW updates its pieces on every worker.

Why this is the reference's gradient: the loss is a mean over the batch's images (each with the same number of
removed patches), so the batch's loss is sum_s (n_s / N) loss_s over shards of n_s images, and so is its gradient;
each shard's backward gets dloss = n_s / N. The shards and the order of the additions do not depend on the number
of threads, so a run is bit-for-bit the same on 1 thread or 16 (the sweep's jobs may run on any share of the
cores); against the reference it differs by float32 rounding (tests/test_fast.py).
"""
import ctypes
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

from ..backend import xp
from .optim import adamw_update


def cpu_count():
    """The cores this process may use (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class DataParallel:
    """engine.Step's methods, spread over `threads` worker threads (0: one per core).
    shard_images: images per shard (default: the model's own, model.shard_images)."""

    def __init__(self, model, threads=0, shard_images=None):
        self.model, self.threads = model, threads or cpu_count()
        self.shard_images = shard_images or model.shard_images
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tinymae") if self.threads > 1 else None
        self.blas = ThreadpoolController()

    def describe(self):
        return f"{self.threads} worker threads"

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def loss_and_grads(self, *inputs):
        """inputs: the batch, images along axis 0 -> (the batch's mean loss, its gradients), as engine.Step."""
        N = inputs[0].shape[0]

        def shard(bounds):  # one shard's forward and backward -> its share of the loss and of the gradients
            start, stop = bounds
            outputs = self.model.forward(*(a[start:stop] for a in inputs))  # (loss, ..., cache)
            weight = (stop - start) / N  # this shard's share of the batch mean
            return outputs[0] * weight, self.model.backward(weight, outputs[-1])

        bounds = [(start, min(N, start + self.shard_images)) for start in range(0, N, self.shard_images)]
        results = self.map(shard, bounds)
        loss, grads = results[0][0], {name: xp.ascontiguousarray(g) for name, g in results[0][1].items()}
        for other, _ in results[1:]:  # added in shard order: the same sums for any number of threads
            loss = loss + other

        def add_up(w):  # worker w adds up part w of every gradient (fresh arrays from backward: ours to add into)
            for name, g in grads.items():
                flat = g.reshape(-1)
                part = slice(w * flat.size // self.threads, (w + 1) * flat.size // self.threads)
                for _, other in results[1:]:
                    flat[part] += other[name].reshape(-1)[part]

        self.map(add_up, range(self.threads))
        return loss, grads

    def map(self, fn, items):
        """[fn(item) for item in items], spread over the workers, in order, BLAS on one thread in each."""
        with self.blas.limit(limits=1, user_api="blas"):
            return list(self.pool.map(fn, items)) if self.pool is not None else [fn(item) for item in items]

    def optimizer_step(self, optimizer, grads):
        """A FlatAdamW's pieces updated on every worker (bit-identical to its step(): the pieces are independent)."""
        if self.pool is None or not hasattr(optimizer, "pieces"):
            return optimizer.step(grads)
        pieces = optimizer.pieces(grads)
        beta1, beta2 = optimizer.betas

        def worker(w):
            for p, g, m, v, decay, scale, step_size, eps in pieces[w::self.threads]:
                adamw_update(p, g, m, v, decay, scale, optimizer.lr, beta1, beta2, eps, step_size)

        list(self.pool.map(worker, range(self.threads)))


def keep_freed_memory(threshold_bytes=1 << 30):
    """Ask glibc's malloc to keep freed blocks up to threshold_bytes for reuse: True if it did (Linux with glibc).

    A step allocates the same big temporaries every time. glibc gives blocks above its mmap threshold their own
    mmap, unmapped on free, and trims free memory at the top of its heap: the next step gets the memory back as
    fresh pages, a page fault each, zeroed by the kernel. Raising both thresholds (M_MMAP_THRESHOLD = -3,
    M_TRIM_THRESHOLD = -1 in <malloc.h>) keeps it. Process-wide; it changes how memory is obtained, never a result."""
    if not 0 < threshold_bytes < 2 ** 31:  # a C int: a larger value would wrap round to nonsense
        raise ValueError(f"threshold_bytes must be between 1 and 2**31 - 1, got {threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc's own symbol: the parameter numbers are glibc's
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool((libc.mallopt(-3, threshold_bytes) or libc.mallopt(-3, 32 << 20)) and libc.mallopt(-1, threshold_bytes))
