"""What the benchmark scripts share: their command lines and fresh processes, each framework's training step built
the same way, timing that takes turns, and what is measured besides time: FLOPs (the formula is in
benchmarks/README.md; tests/test_torch_models.py checks it against torch.utils.flop_counter), the matmul rate, memory,
GPU kernel launches. torch is imported only inside the functions that use it: bench_step.py's tinymae workers must
not load it (its ~200 MB of libraries would count against tinymae's memory).
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

from tinymae import backend
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.errors import TinymaeError
from tinymae.model import build_model
from tinymae.model.masking import masking_noise
from tinymae.util import cli

LR = 1.5e-4  # a small constant learning rate: many timed steps on one batch must not diverge
WEIGHT_DECAY = 0.05


class ArgumentParser(argparse.ArgumentParser):
    """A benchmark's command line: named as it is run, --help opens with the first two paragraphs of the script's
    docstring, and a bad flag is one line, "error: ...", exit status 2 (tinymae.util.cli.run's rule)."""

    def __init__(self, script, doc):
        super().__init__(prog=f"python benchmarks/{script}.py", description="\n\n".join(doc.split("\n\n")[:2]),
                         formatter_class=cli.HelpFormatter)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def at_least(low):
    """argparse type: a whole number of at least `low`."""
    def whole_number(text):
        if int(text) < low:  # a ValueError: argparse says "invalid whole_number value"
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return int(text)
    return whole_number


def run_child(cmd, what, **kwargs):
    """Run cmd in a fresh process (kwargs: subprocess.run's env, cwd) -> its stdout. When it fails, its whole error
    output is shown (indented, on stderr), then a one-line TinymaeError says which process it was."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        lines = done.stderr.rstrip().splitlines() or ["(no error output)"]
        print(f"{what} failed; its error output:\n" + "\n".join("    " + line for line in lines), file=sys.stderr)
        raise TinymaeError(f"{what} failed with exit status {done.returncode} (its error output is above)")
    return done.stdout


def on_gpu():
    return backend.name == "cupy"


def sync():
    """Wait for the GPU (if any): cudaDeviceSynchronize waits for every stream of the device, torch's too."""
    if on_gpu():
        backend.xp.cuda.Device().synchronize()


def make_batch(arch, batch_size, seed=0):
    """A tinymae model at its default size, a batch of standard-normal images (as normalised photos are), and its
    mask noise drawn as the training loop draws it (backend arrays)."""
    model = build_model(arch, {}, seed=seed)
    rng, cfg = host_rng(seed + 1), model.config
    imgs = asarray(rng.standard_normal((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size)), dtype="float32")
    return model, imgs, asarray(masking_noise(rng, batch_size, cfg))


def adamw(cls, model):
    """An optimiser of class `cls` (a fast.Path's AdamW) over model.params, as a training run builds it."""
    return cls(model.params, lr=LR, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY, no_decay=model.no_decay)


def tinymae_step(step, optimizer, imgs, noise):
    """One step as engine.train_one_epoch takes it; float(loss) waits for the GPU."""
    loss, grads = step.loss_and_grads(imgs, noise)
    step.optimizer_step(optimizer, grads)
    return float(loss)


def import_torch():
    try:
        import torch
        return torch
    except ImportError as e:
        raise TinymaeError(f"PyTorch is needed here ({e}); pip install torch==2.13.0") from None


def torch_device():
    """'cpu' with NumPy; 'cuda' with CuPy, or None when this torch has no CUDA (the comparison is skipped)."""
    return "cpu" if not on_gpu() else "cuda" if import_torch().cuda.is_available() else None


def torch_contestant(model, imgs, noise, device):
    """The PyTorch twin of `model` (its weights), torch.optim.AdamW with the same two parameter groups (fused=True
    on CUDA, the for-loop one on the CPU), the same batch -> (twin, optimizer, step() -> the loss)."""
    torch = import_torch()
    import torch_models  # benchmarks/torch_models.py
    twin = torch_models.from_tinymae(model, device=device)
    groups = torch_models.no_decay_param_groups(twin, model.no_decay, WEIGHT_DECAY)
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8, fused=True if device == "cuda" else None)
    timgs, tnoise = (torch.tensor(to_numpy(a), device=device) for a in (imgs, noise))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = twin(timgs, tnoise)[0]
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the GPU, as float(loss) does on tinymae's side
    return twin, optimizer, step


def time_steps(contestants, repeats, block, settle, warmup):
    """{name: step()} -> {name: [each block's median ms per step]}: `warmup` untimed steps of each, then `repeats`
    rounds of `block` steps each, the order flipping every round so that drift and background load hit all alike;
    the first `settle` steps of a block are not counted (the other library's thread pool still spins)."""
    for step in contestants.values():
        for _ in range(warmup):
            step()
    times, order = {name: [] for name in contestants}, list(contestants)
    for rep in range(repeats):
        for name in order if rep % 2 == 0 else order[::-1]:
            ms = []
            for _ in range(block):
                sync()
                t0 = time.perf_counter()
                contestants[name]()
                ms.append((time.perf_counter() - t0) * 1e3)
            times[name].append(float(np.median(ms[settle:])))
    return times


def speed(faster, slower):
    """Per-block times of two contestants -> 'median (IQR q1-q3)' of the blocks' ratios slower / faster."""
    q1, median, q3 = np.percentile([b / a for a, b in zip(faster, slower)], [25, 50, 75])
    return f"{median:.2f} (IQR {q1:.2f}-{q3:.2f})"


def step_flops(model, N):
    """Matmul FLOPs of one training step (forward + backward) of a default-layout tinymae model (README.md)."""
    cfg = model.config
    L, P = cfg.num_patches, cfg.patch_dim
    if model.arch == "mlp":
        dims = [cfg.len_keep * cfg.embed_dim, *cfg.encoder_dims, *cfg.decoder_dims, L * P]
        return 4 * N * L * P * cfg.embed_dim + sum(6 * N * d_in * d_out for d_in, d_out in zip(dims[:-1], dims[1:]))

    def block(T, D):
        hidden = int(D * cfg.mlp_ratio)
        return 6 * N * T * (3 * D * D + D * D + 2 * D * hidden) + 12 * N * T * T * D  # qkv, proj, fc1, fc2; attention

    T, Td = 1 + cfg.len_keep, 1 + L  # the cls token and the K visible (encoder) or all L (decoder) tokens
    D, Dd = cfg.embed_dim, cfg.decoder_embed_dim
    return (4 * N * L * P * D + cfg.depth * block(T, D) + 6 * N * T * D * Dd + cfg.decoder_depth * block(Td, Dd)
            + 6 * N * Td * Dd * P)


def matmul_rate(n, torch_device=None, repeats=5):
    """The float32 (n, n) @ (n, n) rate in GFLOP/s, best of `repeats` after one warm-up, with tinymae's array library
    and, given a torch_device, with torch -> {library: GFLOP/s}."""
    def rate(a):
        best = float("inf")
        for _ in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            a @ a
            sync()
            best = min(best, time.perf_counter() - t0)
        return 2 * n ** 3 / best / 1e9

    a = asarray(host_rng(0).standard_normal((n, n)), dtype="float32")
    rates = {backend.xp.__name__: rate(a)}
    if torch_device is not None:
        rates["torch"] = rate(import_torch().tensor(to_numpy(a), device=torch_device))
    return rates


def describe_machine():
    """-> lines naming the CPU or GPU, Python, NumPy and its BLAS."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    device = platform.machine()
    if on_gpu():
        name = backend.xp.cuda.runtime.getDeviceProperties(backend.xp.cuda.Device().id)["name"]
        device = "GPU " + (name.decode() if isinstance(name, bytes) else name)
    elif os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            device = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), device)
    return [f"machine   {device}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}",
            f"tinymae   backend {backend.name}, NumPy {np.__version__} ({blas['name']} {blas.get('version', '')})"]


def proc_mb(field="VmRSS"):
    """A size of Linux's /proc/self/status in MB (None elsewhere): VmRSS, the resident set now; VmHWM, its high-water
    mark (this program's own, where ru_maxrss would carry a big parent's peak across fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 2 ** 10
    except OSError:
        return None


def memory(framework, before_mb):
    """-> the table's memory column: on a GPU the MB that CuPy's pool (framework 'tinymae') or torch's caching
    allocator holds; else the resident set's peak MB, and in brackets what it added to `before_mb` (proc_mb)."""
    if on_gpu():
        held = backend.xp.get_default_memory_pool().total_bytes() if framework == "tinymae" else \
            import_torch().cuda.max_memory_reserved()
        return f"{held / 2 ** 20:.0f}"
    peak = proc_mb("VmHWM")
    return "-" if peak is None or before_mb is None else f"{peak:.0f} ({peak - before_mb:.0f})"


def kernel_launches(step, steps=3):
    """GPU kernels launched per call of step() by any library in this process (needs torch with CUDA): CUPTI, through
    torch.profiler, records every kernel the device runs for the process, CuPy's and cuBLAS's as much as torch's.
    Memory copies and memsets are not counted; one call first, outside the count (compilation, pools' growth)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    return len([e for e in prof.events() if e.device_type == DeviceType.CUDA
                and not e.name.startswith(("Memcpy", "Memset"))]) / steps
