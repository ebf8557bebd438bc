"""Time full training steps of tinymae's MAEs, check them against PyTorch eager, and compare.

    python benchmarks/bench_step.py                       # both models, batch 256, 30 timed steps each
    python benchmarks/bench_step.py --arch vit --steps 50
    TINYMAE_BACKEND=cupy python benchmarks/bench_step.py  # on a GPU: against PyTorch on CUDA

A training step is what examples/train_catsdogs.py does per batch: forward, backward, AdamW step, and
the loss read back to the host (which also waits for a GPU to finish). For each model (`--arch`), at
its default size and the training batch size, the script

1. checks correctness: builds the PyTorch twin from tinymae's own weights (benchmarks/torch_models.py),
   runs one step on each side with the same batch and the same mask noise, and prints how far apart the
   loss, the prediction and every gradient are, and the parameters after one AdamW step from the same
   gradients (each as max |ours - torch| / max |torch| over the array); it fails loudly beyond float32
   tolerances;
2. times both steps alternating in one process, in blocks of consecutive steps as a training run takes
   them (--block steps of tinymae, then of torch, then of torch, then of tinymae, ...: the order flips
   every repetition, so drift and background load hit both alike). The first steps of each block are not
   counted (--settle): the two libraries' thread pools keep spinning for a while after their last
   operation and would slow the other's first steps. It reports the median milliseconds per step, images
   per second, and the speed of tinymae relative to torch (torch ms / tinymae ms: 1.0 is parity, above 1
   tinymae is faster) as the median of the per-repetition ratios of the blocks' median steps;
3. measures peak memory of each framework alone, in a fresh subprocess that runs a few steps: the
   process's resident-set high-water mark, and in brackets that peak minus the resident size just before
   the first step, i.e. what the training step itself adds on top of the interpreter, the libraries, the
   weights and the batch. A subprocess, so that torch's own ~200 MB of libraries never count against
   tinymae (its subprocess does not import torch), nor the other way round. On a GPU: the device memory
   high-water mark instead (what CuPy's pool and torch's caching allocator hold);
4. divides the analytic FLOP count of the step (below) by the time: achieved GFLOP/s, printed next to
   the machine's own measured float32 matmul rate (a 2048^3 product, 4096^3 on a GPU, best of 5, in both
   NumPy/CuPy and torch), so you see how far from the hardware limit each model runs.

As the training script, the script first calls tinymae.speed.keep_freed_memory() (see there; process-wide,
so torch's steps get it as well; --default-malloc leaves glibc as it is).

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

Without torch the comparison is skipped (said so) and tinymae is still timed. --threads N sets the
thread count of NumPy's BLAS and of torch alike (default: each library's own default, all cores).
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def apply_thread_setting(argv):
    """--threads N -> the BLAS/OpenMP thread variables. They must be set before NumPy and torch load
    (OpenBLAS and MKL read them once, then), so this runs before those imports, on the raw argv."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


if __name__ == "__main__":
    apply_thread_setting(sys.argv[1:])
    sys.path.insert(0, str(ROOT))  # run from a fresh clone without installing tinymae

import numpy as np  # noqa: E402

from tinymae import backend, speed  # noqa: E402
from tinymae.backend import asarray, host_rng, to_numpy  # noqa: E402
from tinymae.model.masking import masking_noise  # noqa: E402
from tinymae.model.build import build_model  # noqa: E402
from tinymae.config import PretrainConfig  # noqa: E402
from tinymae.model.optim import AdamW  # noqa: E402
from tinymae.parallel import DataParallel  # noqa: E402
from tinymae.pretrain import train_one_epoch  # noqa: E402

# --no-torch does not even import torch: the tinymae memory subprocess uses it, so that torch's own
# ~200 MB of libraries never count against tinymae.
torch, torch_models, TORCH_MISSING = None, None, "not imported (--no-torch)"
if not (__name__ == "__main__" and "--no-torch" in sys.argv):
    try:
        import torch
        import torch_models  # benchmarks/torch_models.py, next to this script
    except ImportError as e:
        torch, torch_models, TORCH_MISSING = None, None, f"{type(e).__name__}: {e}"

ARCH_SETTINGS = {"mlp": {}, "vit": {}}  # the default sizes of MLPConfig and ViTConfig
LR = 1.5e-4  # a small constant learning rate: many timed steps on one batch must not diverge
WEIGHT_DECAY = 0.05

# float32 agreement we require: measured at batch 256 on the defaults, the worst gradient is ~3e-6 of its
# array's largest value, the loss ~1e-7 relative; a wrong gradient is off by far more (it is O(1)).
GRAD_TOL = 1e-4
LOSS_RTOL = 1e-5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=("mlp", "vit", "both"), default="both", help="which model(s)")
    p.add_argument("--repeats", type=int, default=10, help="blocks per framework, taking turns (after warm-up)")
    p.add_argument("--block", type=int, default=6, help="consecutive steps per block")
    p.add_argument("--settle", type=int, default=2,
                   help="steps at the start of each block that are not counted: OpenBLAS's threads spin for "
                        "~0.1 s after a matmul, OpenMP's for a while after a torch op, so right after the other "
                        "library the two thread pools fight over the cores; a training run has only one")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per framework first")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per step (default: each model's training batch, config.ARCH_RECIPE)")
    p.add_argument("--loop-steps", type=int, default=10,
                   help="steps of the training loop itself (train_one_epoch on random photos), timed as a whole")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/OpenMP threads for NumPy and torch (default: the libraries' own, all cores)")
    p.add_argument("--no-torch", action="store_true", help="time tinymae only (torch is not imported)")
    p.add_argument("--torch-sdpa", action="store_true",
                   help="torch's ViT uses F.scaled_dot_product_attention (current timm) instead of timm "
                        "0.3.2's explicit softmax(q k^T) v, which is what tinymae computes")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc as it is; by default the script calls tinymae.speed.keep_freed_memory() "
                        "as the training script does (process-wide: torch's steps get it too)")
    p.add_argument("--memory-worker", choices=("tinymae", "torch"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Devices, synchronisation, the batch

def on_gpu():
    return backend.name == "cupy"


def torch_device():
    """'cpu' with NumPy; 'cuda' with CuPy, or None when this torch has no CUDA (the comparison is skipped)."""
    if not on_gpu():
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def sync():
    """Wait for the GPU (if any) to finish: CuPy and torch both queue work asynchronously."""
    if on_gpu():
        backend.xp.cuda.Device().synchronize()  # backend.xp is cupy here; no other CuPy import
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()


def make_batch(arch, batch_size, seed=0):
    """A tinymae model at its default size, a batch of standard-normal images (as normalised photos are),
    and the masks' noise drawn as the training script draws it."""
    model = build_model(arch, ARCH_SETTINGS[arch], seed=seed)
    rng = host_rng(seed + 1)
    cfg = model.config
    imgs = asarray(rng.standard_normal((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size)), dtype="float32")
    noise = masking_noise(rng, batch_size, cfg.num_patches)  # (N, L)
    return model, imgs, noise


def tinymae_optimizer(model):
    return AdamW(model.params, lr=LR, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY, no_decay=model.no_decay)


def torch_optimizer(twin, model):
    """torch.optim.AdamW with its defaults (on the CPU that is the for-loop implementation, as a user gets)."""
    groups = torch_models.no_decay_param_groups(twin, model.no_decay, WEIGHT_DECAY)
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8)


def tinymae_step(runner, optimizer, imgs, noise):
    """One training step, as tinymae.pretrain.train_one_epoch takes it: forward and backward (on shards
    on every core for the NumPy ViT: tinymae/parallel.py), AdamW; float(loss) waits for the GPU."""
    loss, grads = runner.loss_and_grads(imgs, noise)
    runner.optimizer_step(optimizer, grads)
    return float(loss)


def torch_step(twin, optimizer, imgs, noise):
    optimizer.zero_grad(set_to_none=True)
    loss, pred, mask = twin(imgs, noise)
    loss.backward()
    optimizer.step()
    return loss.item()


def torch_inputs(imgs, noise, device):
    return (torch.tensor(to_numpy(imgs), device=device), torch.tensor(to_numpy(noise), device=device))


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


def matmul_rate(n=2048, repeats=5):
    """The machine's float32 matmul rate in GFLOP/s: an (n, n) @ (n, n) product, best of `repeats`,
    with tinymae's array library and (if present) with torch -> {library: GFLOP/s}."""
    xp = backend.xp
    a = asarray(host_rng(0).standard_normal((n, n)), dtype="float32")
    rates = {f"{xp.__name__} ({blas_name()})": 2 * n ** 3 / best_matmul_seconds(a, repeats) / 1e9}
    device = torch_device() if torch is not None else None
    if device is not None:
        ta = torch.tensor(to_numpy(a), device=device)
        rates[f"torch ({'cuBLAS' if device == 'cuda' else 'MKL'})"] = 2 * n ** 3 / best_matmul_seconds(ta, repeats) / 1e9
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
# 1. correctness

def check_correctness(arch, batch_size, device, sdpa):
    """One step on each side from the same weights, batch and noise; print the agreement; True if within tolerance."""
    model, imgs, noise = make_batch(arch, batch_size)
    twin = torch_models.from_tinymae(model, device=device, fused_attn=sdpa)
    r = torch_models.compare_step(model, twin, imgs, noise)

    # AdamW on its own: both optimisers get the very same gradients (tinymae's, copied into torch's .grad),
    # so this compares the update rules, not the float32 noise of two backward passes. (From the zero
    # initial biases, a first Adam step moves each parameter by about lr * sign(g): a gradient that is zero
    # in theory, as the key bias's, would make a comparison after independent backward passes a coin toss.)
    grads = model.backward(1.0, model.forward(imgs, noise)[3])
    torch_models.load_tinymae_grads(twin, model.params, grads)
    tinymae_optimizer(model).step(grads)
    torch_optimizer(twin, model).step()
    theirs = torch_models.tinymae_params(twin, model.params)
    param_diff = {name: torch_models.max_rel_diff(to_numpy(v), theirs[name]) for name, v in model.params.items()}

    ours, theirs_loss = r["loss"]
    loss_rel = abs(ours - theirs_loss) / abs(theirs_loss)
    worst = max(r["grads"], key=r["grads"].get)
    worst_p = max(param_diff, key=param_diff.get)
    ok = (r["mask_equal"] and loss_rel <= LOSS_RTOL and r["grads"][worst] <= GRAD_TOL
          and r["pred"] <= GRAD_TOL and param_diff[worst_p] <= GRAD_TOL)
    print(f"  loss           tinymae {ours:.7f}   torch {theirs_loss:.7f}   rel diff {loss_rel:.1e}")
    print(f"  mask           {'identical' if r['mask_equal'] else 'DIFFERENT'}")
    print(f"  pred           max rel diff {r['pred']:.1e}")
    print(f"  gradients      max rel diff {r['grads'][worst]:.1e} (worst: {worst}; "
          f"median over {len(r['grads'])} arrays {np.median(list(r['grads'].values())):.1e})")
    print(f"  AdamW step     max rel diff {param_diff[worst_p]:.1e} (worst: {worst_p})")
    print(f"  -> {'PASS' if ok else 'FAIL'} (tolerance: loss {LOSS_RTOL:g} relative, arrays {GRAD_TOL:g} "
          f"of their largest value)")
    return ok


# ----------------------------------------------------------------------------------------------
# 2. interleaved timing

def time_steps(arch, batch_size, repeats, block, settle, warmup, device, sdpa, threads=0):
    """-> {"tinymae": [ms per block...], "torch": [...] or absent, "ratio": [torch/tinymae per repetition]}:
    each block's median step."""
    model, imgs, noise = make_batch(arch, batch_size)
    optimizer = tinymae_optimizer(model)
    runner = DataParallel(model, threads)
    runners = {"tinymae": lambda: tinymae_step(runner, optimizer, imgs, noise)}
    if device is not None:
        twin = torch_models.from_tinymae(model, device=device, fused_attn=sdpa)
        topt = torch_optimizer(twin, model)
        timgs, tnoise = torch_inputs(imgs, noise, device)
        runners["torch"] = lambda: torch_step(twin, topt, timgs, tnoise)

    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    order = list(runners)
    for rep in range(repeats):
        for name in (order if rep % 2 == 0 else order[::-1]):
            steps = []
            for _ in range(block):
                sync()
                t0 = time.perf_counter()
                runners[name]()  # ends with the loss on the host: the GPU has finished
                steps.append((time.perf_counter() - t0) * 1e3)
            times[name].append(median(steps[settle:]))  # see --settle
    if "torch" in times:
        times["ratio"] = [t / o for o, t in zip(times["tinymae"], times["torch"])]
    return times


def time_training_loop(arch, batch_size, steps, threads=0):
    """The training loop itself, tinymae.pretrain.train_one_epoch, on `steps` batches of random uint8 photos
    -> its stats: images/s, and waiting_for_data_s, the time the step waited for its batch (the host-side
    work: crop, flip, normalisation and mask noise, prepared on a background thread, and the copy to the
    device). On a GPU, host work that the step waits for is what keeps the loop below the step's speed."""
    model = build_model(arch, ARCH_SETTINGS[arch], seed=0)
    cfg = model.config
    rng = host_rng(0)
    load = cfg.img_size * 9 // 8  # the training script's default load size
    data = SimpleNamespace(train_images=rng.integers(0, 256, (steps * batch_size, load, load, 3), dtype=np.uint8),
                           mean=np.full(3, 0.5, dtype=np.float32), std=np.full(3, 0.25, dtype=np.float32))
    recipe = PretrainConfig(arch=arch, batch_size=batch_size, epochs=1)
    optimizer = tinymae_optimizer(model)
    runner = DataParallel(model, threads)
    try:
        train_one_epoch(model, optimizer, runner, data, recipe, 0, rng, lambda step: LR, progress=False)  # warm-up
        return train_one_epoch(model, optimizer, runner, data, recipe, 0, rng, lambda step: LR, progress=False)
    finally:
        runner.close()


# ----------------------------------------------------------------------------------------------
# 3. peak memory, one framework per fresh process

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


def memory_worker(framework, arch, batch_size, steps=3, threads=0):
    """Runs in its own process: a few training steps of one framework, then prints its memory as JSON.
    minor_faults_per_step: page faults the kernel served per step (fresh memory it had to zero)."""
    model, imgs, noise = make_batch(arch, batch_size)
    if framework == "tinymae":
        optimizer = tinymae_optimizer(model)
        runner = DataParallel(model, threads)
        run = lambda: tinymae_step(runner, optimizer, imgs, noise)  # noqa: E731
    else:
        device = torch_device()
        twin = torch_models.from_tinymae(model, device=device)
        topt = torch_optimizer(twin, model)
        timgs, tnoise = torch_inputs(imgs, noise, device)
        del model, imgs, noise  # only torch's own arrays stay: tinymae's weights are not torch's memory
        run = lambda: torch_step(twin, topt, timgs, tnoise)  # noqa: E731
    before = current_rss_mb()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        run()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    result = {"peak_mb": peak_rss_mb(), "before_mb": before, "minor_faults_per_step": faults}
    if on_gpu():
        if framework == "tinymae":
            result["device_peak_mb"] = backend.xp.get_default_memory_pool().total_bytes() / 2 ** 20
        else:
            result["device_peak_mb"] = torch.cuda.max_memory_reserved() / 2 ** 20  # held by its cache, as CuPy's pool
    print(json.dumps(result))


def measure_memory(framework, arch, batch_size, default_malloc, threads=None):
    """Run memory_worker in a fresh Python process (same environment) -> its dict, or None on failure."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", framework, "--arch", arch,
           "--batch-size", str(batch_size)] + (["--no-torch"] if framework == "tinymae" else [])
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--default-malloc"] if default_malloc else []
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        print(f"  (memory of {framework} not measured: {done.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# the report

def describe_machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"machine   {cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}",
             f"tinymae   backend {backend.name}, NumPy {np.__version__} ({blas_name()})"]
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "library default"
    lines[-1] += f", BLAS threads: {threads}"
    if on_gpu():
        props = backend.xp.cuda.runtime.getDeviceProperties(backend.xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"GPU       {name}")
    if torch is not None:
        lines.append(f"torch     {torch.__version__}, {torch.get_num_threads()} intra-op threads"
                     + (f", CUDA {torch.version.cuda}" if on_gpu() and torch.cuda.is_available() else ""))
    return lines


def median(values):
    return float(np.median(values))


def main(argv=None):
    args = parse_args(argv)
    malloc_tuned = False if args.default_malloc else speed.keep_freed_memory()
    if args.memory_worker:
        memory_worker(args.memory_worker, args.arch, args.batch_size or PretrainConfig(arch=args.arch).batch_size,
                      threads=args.threads or 0)
        return
    if args.threads:
        if torch is not None:
            torch.set_num_threads(args.threads)
    archs = ("mlp", "vit") if args.arch == "both" else (args.arch,)

    print("\n".join(describe_machine()))
    use_torch = torch is not None and not args.no_torch
    device = None
    if args.no_torch:
        print("torch     comparison skipped (--no-torch)")
    elif torch is None:
        print(f"torch     not installed ({TORCH_MISSING}): the PyTorch comparison is skipped; "
              "pip install torch==2.13.0 to add it")
    else:
        device = torch_device()
        if device is None:
            print("torch     has no CUDA here: the PyTorch-on-GPU comparison is skipped")
            use_torch = False
        elif device == "cuda":
            # Full float32 on both sides: cuDNN's convolutions (the patch embedding) default to TF32, with a
            # 10-bit mantissa; CuPy's matmuls are plain float32 unless CUPY_TF32 is set.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    print("malloc    " + ("tinymae.speed.keep_freed_memory(): big freed blocks are reused (as in training)"
                          if malloc_tuned else "glibc defaults" if args.default_malloc else
                          "keep_freed_memory() does not apply here (not Linux/glibc)"))
    rates = matmul_rate(4096 if on_gpu() else 2048)
    peak = max(rates.values())
    print(f"float32 matmul ({4096 if on_gpu() else 2048}^3, best of 5): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))

    rows, all_ok = [], True
    for arch in archs:
        batch = args.batch_size or PretrainConfig(arch=arch).batch_size  # the training batch by default
        model, _, _ = make_batch(arch, 1)
        flops = step_flops(model, batch)
        print(f"\n== {arch}: {model.num_params():,} parameters, batch {batch}, "
              f"{flops / 1e9:.2f} GFLOP per step (matmuls) ==")
        if use_torch:
            print("correctness (tinymae vs torch, same weights, batch and mask, one step, float32):")
            all_ok &= check_correctness(arch, batch, device, args.torch_sdpa)
        times = time_steps(arch, batch, args.repeats, args.block, args.settle, args.warmup,
                           device if use_torch else None, args.torch_sdpa, threads=args.threads or 0)
        memory = {}
        if not args.no_memory:
            for fw in ("tinymae", "torch") if use_torch else ("tinymae",):
                memory[fw] = measure_memory(fw, arch, batch, args.default_malloc, args.threads)
        loop = time_training_loop(arch, batch, args.loop_steps, threads=args.threads or 0)
        step_rate = batch / median(times["tinymae"]) * 1e3
        print(f"training loop (tinymae.pretrain.train_one_epoch, {args.loop_steps} steps): "
              f"{loop['train_images_per_s']:.0f} img/s, {100 * loop['train_images_per_s'] / step_rate:.0f}% of the "
              f"step alone ({step_rate:.0f} img/s); host-side work the step waited for: "
              f"{1e3 * loop['waiting_for_data_s'] / args.loop_steps:.1f} ms per step")
        for fw in ("tinymae", "torch") if use_torch else ("tinymae",):
            ms = median(times[fw])
            rows.append((f"{arch}/{batch}", fw, ms, batch / ms * 1e3, flops / ms / 1e6, memory.get(fw)))
        if use_torch:
            q1, q3 = np.percentile(times["ratio"], [25, 75])
            rows.append((f"{arch}/{batch}", "ratio", median(times["ratio"]), q1, q3, None))

    # the table
    mem_head = "device MB" if on_gpu() else "peak RSS MB (step)"
    print(f"\n{'model/batch':11} {'framework':22} {'ms/step':>9} {'img/s':>8} {'GFLOP/s':>8} {'% matmul':>9} {mem_head:>20}")
    for arch, fw, a, b, c, mem in rows:
        if fw == "ratio":
            print(f"{arch:11} {'speed tinymae/torch':22} {a:9.2f}   (torch ms / tinymae ms, median of the "
                  f"repetitions' ratios; interquartile {b:.2f} to {c:.2f}; >= 1: tinymae as fast or faster)")
            continue
        name = f"tinymae/{backend.name}" if fw == "tinymae" else f"torch {torch.__version__.split('+')[0]} eager"
        if mem is None:
            mem_text = "-"
        elif on_gpu():
            mem_text = f"{mem['device_peak_mb']:.0f}"
        else:
            mem_text = f"{mem['peak_mb']:.0f} ({mem['peak_mb'] - mem['before_mb']:.0f})"
        print(f"{arch:11} {name:22} {a:9.1f} {b:8.0f} {c:8.1f} {100 * c / peak:8.1f}% {mem_text:>20}")
    print(f"(median of {args.repeats} blocks of {args.block - args.settle} counted steps, after {args.warmup} warm-up; % matmul: of the best measured float32 "
          f"matmul rate, {peak:.0f} GFLOP/s)")
    if not all_ok:
        sys.exit("correctness check FAILED: tinymae and torch disagree beyond float32 tolerance (see above)")


if __name__ == "__main__":
    main()
