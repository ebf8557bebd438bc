"""What the benchmarks measure besides time: FLOPs, the machine's matmul rate, memory, GPU kernel launches.

    on_gpu, sync                   tinymae runs on CuPy; wait for the GPU before reading a clock
    step_flops(model, N)           the matmul FLOPs of one training step (the formula below)
    matmul_rate(n, torch_device)   the float32 (n, n) @ (n, n) rate in GFLOP/s, NumPy/CuPy and torch
    memory_of(step, framework)     the memory a few calls of step() take: resident set, or the GPU's
    kernel_launches(step)          GPU kernels launched per call of step(), by any library in the process
    describe_machine()             the report's first lines: CPU, GPU, NumPy and its BLAS

FLOPs of a step (matmuls only; elementwise work, softmax, LayerNorm, AdamW are not counted):
  A Linear on R rows, D_in -> D_out: forward 2 R D_in D_out; backward 2x that (dx and dw), or 1x where
  dx is not needed (the patch embedding, whose input is the image). So 6 R D_in D_out per step.
  Attention over T tokens of width D (all heads together): q k^T and attn v are 2 N T^2 D each forward;
  backward has four such products (dattn, dv, dq, dk). So 12 N T^2 D per block per step.
  MLP MAE (L patches of P values, E per token, K visible):
      4 N L P E (patch embedding)  +  6 N sum(D_in D_out) over the encoder, decoder and decoder_pred
  ViT MAE (encoder T = 1+K tokens of width D, decoder T' = 1+L tokens of width D', MLP ratio 4):
      4 N L P D  +  depth x (6 N T 12 D^2 + 12 N T^2 D)  +  6 N T D D'  (decoder_embed)
      + decoder_depth x (6 N T' 12 D'^2 + 12 N T'^2 D')  +  6 N T' D' P  (decoder_pred)
tests/test_torch_models.py checks step_flops against torch.utils.flop_counter on the PyTorch twin.

torch is imported only inside the functions that use it, when they run: bench_step.py's tinymae memory
worker must not load it (its ~200 MB of libraries would count against tinymae).
"""
import os
import platform
import resource
import sys
import time

import numpy as np

from tinymae import backend
from tinymae.backend import asarray, host_rng, to_numpy


def on_gpu():
    return backend.name == "cupy"


def sync():
    """Wait for the GPU (if any) to finish all queued work. CuPy and torch both queue work asynchronously;
    CuPy's Device.synchronize is cudaDeviceSynchronize, which waits for every stream of the device, so for
    torch's kernels too (both libraries use the device's one primary context)."""
    if on_gpu():
        backend.xp.cuda.Device().synchronize()  # backend.xp is cupy here; no other CuPy import


# ----------------------------------------------------------------------------------------------
# FLOPs (see the module docstring)

def step_flops(model, N):
    """Matmul FLOPs of one training step (forward + backward) of a default-layout tinymae model."""
    cfg = model.config
    L, P = cfg.num_patches, cfg.patch_dim
    if model.arch == "mlp":
        flops = 4 * N * L * P * cfg.embed_dim  # patch embedding: forward + dw (no dx)
        dims = [cfg.len_keep * cfg.embed_dim, *cfg.encoder_dims, *cfg.decoder_dims, L * P]
        flops += sum(6 * N * d_in * d_out for d_in, d_out in zip(dims[:-1], dims[1:]))
        return flops

    def block(T, D):
        hidden = int(D * cfg.mlp_ratio)
        linears = 6 * N * T * (3 * D * D + D * D + 2 * D * hidden)  # qkv, proj, fc1, fc2
        attention = 12 * N * T * T * D  # q k^T and attn v, forward and backward
        return linears + attention

    T, Td = 1 + cfg.len_keep, 1 + L  # the cls token and the K visible (encoder) or all L (decoder) tokens
    D, Dd = cfg.embed_dim, cfg.decoder_embed_dim
    flops = 4 * N * L * P * D  # patch embedding: forward + dw (no dx)
    flops += cfg.depth * block(T, D)
    flops += 6 * N * T * D * Dd  # decoder_embed
    flops += cfg.decoder_depth * block(Td, Dd)
    flops += 6 * N * Td * Dd * P  # decoder_pred
    return flops


# ----------------------------------------------------------------------------------------------
# The machine's matmul rate

def matmul_rate(n, torch_device=None, repeats=5):
    """The machine's float32 matmul rate in GFLOP/s: an (n, n) @ (n, n) product, best of `repeats`,
    with tinymae's array library and, given a torch_device ('cpu', 'cuda'), with torch -> {library: GFLOP/s}."""
    a = asarray(host_rng(0).standard_normal((n, n)), dtype="float32")
    rates = {f"{backend.xp.__name__} ({blas_name()})": 2 * n ** 3 / best_matmul_seconds(a, repeats) / 1e9}
    if torch_device is not None:
        import torch
        ta = torch.tensor(to_numpy(a), device=torch_device)
        library = "cuBLAS" if torch_device == "cuda" else "MKL"
        rates[f"torch ({library})"] = 2 * n ** 3 / best_matmul_seconds(ta, repeats) / 1e9
    return rates


def best_matmul_seconds(a, repeats):
    """Best time of a @ a over `repeats` runs, after one warm-up (thread pool start, GPU kernel load)."""
    best = float("inf")
    for _ in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        a @ a
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def blas_name():
    if on_gpu():
        return "cuBLAS"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info['name']} {info.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict mode
        return "BLAS"


# ----------------------------------------------------------------------------------------------
# Memory

def current_rss_mb():
    """Resident set size now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return None


def peak_rss_mb():
    """The process's resident-set high-water mark.

    Linux: VmHWM from /proc/self/status, which belongs to this program's memory map. Not ru_maxrss: Linux
    carries that across fork + exec, so a child started by a big parent would report the parent's peak.
    Elsewhere ru_maxrss (KiB, bytes on macOS), with that caveat.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2 ** 10
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


def memory_of(step, framework, count=3):
    """Run step() `count` times -> {peak_mb, before_mb} (the resident set's high-water mark, and its size
    before the first step), and on a GPU device_peak_mb: what CuPy's memory pool (framework 'tinymae') or
    torch's caching allocator ('torch') holds, the device memory the library keeps for itself."""
    before = current_rss_mb()
    for _ in range(count):
        step()
    result = {"peak_mb": peak_rss_mb(), "before_mb": before}
    if on_gpu() and framework == "tinymae":
        result["device_peak_mb"] = backend.xp.get_default_memory_pool().total_bytes() / 2 ** 20
    elif on_gpu():
        import torch
        result["device_peak_mb"] = torch.cuda.max_memory_reserved() / 2 ** 20
    return result


# ----------------------------------------------------------------------------------------------
# GPU kernel launches

def kernel_launches(step, steps=3):
    """GPU kernels launched per call of step(), by any library in this process (needs torch with CUDA).

    torch.profiler's CUDA activity records, through CUPTI, every kernel the device runs for this process,
    whichever library launched it: CuPy's elementwise and reduction kernels and its cuBLAS calls as much
    as torch's. Memory copies and memsets are recorded too, as events named Memcpy... and Memset...; they
    are not kernel launches and are not counted. One call first, outside the count: lazy set-up (kernel
    compilation, cuBLAS handles, the memory pools' growth) belongs to the first step only."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()  # every kernel has run before the profiler stops collecting
    kernels = [e for e in prof.events()
               if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))]
    return len(kernels) / steps


# ----------------------------------------------------------------------------------------------
# The machine

def describe_machine():
    """-> lines naming the CPU (and GPU), Python, NumPy and its BLAS with its thread setting."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "library default"
    lines = [f"machine   {cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}",
             f"tinymae   backend {backend.name}, NumPy {np.__version__} ({blas_name()}), BLAS threads: {threads}"]
    if on_gpu():
        props = backend.xp.cuda.runtime.getDeviceProperties(backend.xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"GPU       {name}")
    return lines
