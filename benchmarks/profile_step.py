"""Where a training step of each tinymae model spends its time: cProfile of a few steps, top costs per step.

    python benchmarks/profile_step.py                    # both models at their training batch, 5 steps each
    python benchmarks/profile_step.py --arch vit --top 20 --torch
    python benchmarks/profile_step.py --kernels reference   # the plain layers of tinymae/model/ instead

cProfile sees Python functions. Each of tinymae's layers is one Python function around a few NumPy calls,
and NumPy's operators (x @ w, x * y) and ufuncs run inside the function that calls them, so a layer's
"own" time (tottime) is the NumPy work it does itself: the table by own time reads as a per-layer cost
list. "cumulative" adds what a function calls (attention_backward includes its linear_backward calls).
Both are in milliseconds per step, with the share of the whole step. cProfile adds a small overhead per
Python call (tinymae makes a few hundred per step, so well under 1%).

cProfile sees only the thread it runs on, so this profiles the plain step on one core (fast.runner with
threads=1: model.forward, model.backward, fast.AdamW, with BLAS held to one thread as on each of the
training step's workers), with the fast layers in place (--kernels fast, the default) or the reference
ones. A training run computes the same functions on shards of the batch, one worker per core (fast/cpu.py).

--torch also profiles the PyTorch twin (benchmarks/torch_models.py) with torch.profiler and lists its
top operators by self CPU time, for comparing the two breakdowns.
"""
import cProfile
import pstats
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from cli import ArgumentParser, positive  # benchmarks/cli.py, steps.py and measure.py, next to this file
from measure import sync
from steps import (kernel_sets, make_batch, tinymae_optimizer, tinymae_step, torch_device, torch_inputs,
                   torch_optimizer, torch_step, training_batch)
from tinymae import fast


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--arch", choices=("mlp", "vit", "both"), default="both", help="which model(s)")
    p.add_argument("--steps", type=positive, default=5, help="profiled steps (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=positive, default=None,
                   help="images per step (default: each model's training batch, config.ARCH_RECIPE)")
    p.add_argument("--top", type=positive, default=15, help="rows per table")
    p.add_argument("--kernels", choices=("fast", "reference"), default="fast",
                   help="tinymae's layers: the fast ones a training run uses, or the plain reference formulas")
    p.add_argument("--torch", action="store_true", help="also profile the PyTorch twin with torch.profiler")
    return p.parse_args(argv)


def function_name(key):
    """pstats key (file, line, name) -> 'module.function' or the built-in's name."""
    filename, line, name = key
    if filename == "~":  # a built-in, e.g. {method 'argsort' of 'numpy.ndarray' objects}
        return name
    return f"{Path(filename).stem}.{name}"


def print_table(stats, sort_index, title, steps, step_ms, top, only_tinymae=False):
    """stats.stats: key -> (calls, ncalls, tottime, cumtime, callers); sort_index 2 (own) or 3 (cumulative)."""
    rows = []
    for key, (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        if only_tinymae and "tinymae" not in key[0]:
            continue
        rows.append((function_name(key), ncalls / steps, tottime, cumtime))
    rows.sort(key=lambda r: -r[sort_index])
    print(f"\n{title}")
    print(f"  {'function':44} {'calls/step':>10} {'own ms':>8} {'own %':>6} {'cum ms':>8} {'cum %':>6}")
    for name, calls, tottime, cumtime in rows[:top]:
        own, cum = tottime / steps * 1e3, cumtime / steps * 1e3
        print(f"  {name[:44]:44} {calls:10.0f} {own:8.1f} {100 * own / step_ms:5.1f}% "
              f"{cum:8.1f} {100 * cum / step_ms:5.1f}%")


def profile_tinymae(arch, batch_size, steps, top, kernels):
    model, imgs, noise = make_batch(arch, batch_size)
    runner = fast.runner(model, threads=1)  # the plain step: cProfile sees only the thread it runs on
    fast.use_kernels(kernel_sets(kernels)[kernels])  # after fast.runner, which puts the fast kernels in place
    optimizer = tinymae_optimizer(model)
    with threadpool_limits(limits=1, user_api="blas"):  # one core, as each worker of the training step
        for _ in range(2):
            tinymae_step(runner, optimizer, imgs, noise)
        profiler = cProfile.Profile()
        sync()
        t0 = time.perf_counter()
        profiler.enable()
        for _ in range(steps):
            tinymae_step(runner, optimizer, imgs, noise)
        profiler.disable()
        step_ms = (time.perf_counter() - t0) / steps * 1e3
    stats = pstats.Stats(profiler)
    print(f"\n=== tinymae {arch}, {kernels} kernels: {step_ms:.0f} ms per step under cProfile (batch {batch_size}, "
          f"{steps} steps, one core) ===")
    print_table(stats, 2, "by own time (tottime)", steps, step_ms, top)
    print_table(stats, 3, "by cumulative time (tinymae functions)", steps, step_ms, top, only_tinymae=True)


def profile_torch(arch, batch_size, steps, top):
    import torch
    import torch_models  # benchmarks/torch_models.py

    model, imgs, noise = make_batch(arch, batch_size)
    device = torch_device()
    twin = torch_models.from_tinymae(model, device=device)
    topt = torch_optimizer(twin, model)
    timgs, tnoise = torch_inputs(imgs, noise, device)
    for _ in range(2):
        torch_step(twin, topt, timgs, tnoise)
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            torch_step(twin, topt, timgs, tnoise)
    step_ms = (time.perf_counter() - t0) / steps * 1e3
    print(f"\n=== torch {arch}: {step_ms:.0f} ms per step under torch.profiler ({steps} steps) ===")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    print(f"  {'operator':44} {'calls/step':>10} {'self ms':>8} {'self %':>6}")
    for e in events[:top]:
        ms = e.self_cpu_time_total / steps / 1e3
        print(f"  {e.key[:44]:44} {e.count / steps:10.0f} {ms:8.1f} {100 * ms / step_ms:5.1f}%")


def main(argv=None):
    args = parse_args(argv)
    if args.torch:
        try:
            import torch  # noqa: F401  (profile_torch imports it; here only to say early that it is missing)
        except ImportError as e:
            sys.exit(f"error: --torch needs PyTorch ({e}); pip install torch==2.13.0")
    try:
        for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
            batch = args.batch_size or training_batch(arch)
            profile_tinymae(arch, batch, args.steps, args.top, args.kernels)
            if args.torch:
                profile_torch(arch, batch, args.steps, args.top)
    except MemoryError:
        sys.exit(f"error: out of memory at --batch-size {args.batch_size or 'of the training recipe'}: "
                 "try a smaller --batch-size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
