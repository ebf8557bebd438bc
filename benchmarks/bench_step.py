"""Time tinymae's training step against the same model in PyTorch eager, after checking that both agree.

    python benchmarks/bench_step.py                       # both models at their training batch (MLP 256, ViT 32)
    python benchmarks/bench_step.py --arch vit --repeats 20 --kernels fast
    TINYMAE_BACKEND=cupy python benchmarks/bench_step.py  # on a GPU: against PyTorch on CUDA (fused AdamW)
    TINYMAE_BACKEND=cupy TINYMAE_FAST_GPU=1 python benchmarks/bench_step.py   # tinymae's fused GPU kernels too

A step is what engine.train_one_epoch does per batch: fast.runner's forward and backward (on the CPU, the
batch in shards, one worker thread per core), fast.AdamW's update, and the loss read back to the host
(which waits for a GPU to finish). For each model (--arch) the script prints, in this order:

  correctness  the PyTorch twin (torch_models.py) built from tinymae's weights, fed the same batch and
               mask noise: loss, mask, prediction, every gradient and one AdamW step, each compared as
               max |ours - torch| / max |torch|; beyond float32 tolerances the script ends in an error
  timing       the contestants (tinymae with its fast layers, with the reference ones (--kernels), torch)
               take turns in blocks of --block steps (steps.time_steps): ms/step, img/s, speed ratios
  launches     on a GPU, the kernels each launches per step (measure.kernel_launches); on a CPU, n/a
  the loop     engine.train_one_epoch over pretrain.training_batches (prefetched), against the step alone
  memory       each framework alone, in a fresh subprocess (so torch's libraries never count against tinymae)
  GFLOP/s      the step's matmul FLOPs (measure.step_flops) over its time, against the machine's matmul rate

benchmarks/README.md explains every figure and keeps measured tables. On the CPU, fast.runner tells glibc's
malloc to keep freed memory, as in training; that is process-wide, so torch's steps get it too. Without
torch, tinymae is timed alone.
"""
import argparse
import json
import os
import subprocess
import sys


def apply_thread_setting(argv):
    """--threads N -> the BLAS/OpenMP thread variables. They must be set before NumPy and torch load
    (OpenBLAS and MKL read them once, then), so this runs before those imports, on the raw argv."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit() and int(value) > 0:  # a bad value: parse_args says so
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


if __name__ == "__main__":
    apply_thread_setting(sys.argv[1:])

import numpy as np  # noqa: E402

import measure  # noqa: E402  (benchmarks/measure.py and steps.py, next to this script)
import steps  # noqa: E402
from cli import ArgumentParser, non_negative, positive  # noqa: E402
from measure import on_gpu  # noqa: E402
from tinymae import backend, fast  # noqa: E402
from tinymae.backend import to_numpy  # noqa: E402

# --no-torch does not even import torch: the tinymae memory subprocess uses it.
torch, torch_models, TORCH_MISSING = None, None, "not imported (--no-torch)"
if not (__name__ == "__main__" and "--no-torch" in sys.argv):
    try:
        import torch
        import torch_models  # benchmarks/torch_models.py, next to this script
    except ImportError as e:
        torch, torch_models, TORCH_MISSING = None, None, f"{type(e).__name__}: {e}"

# float32 agreement we require: measured on the defaults, the worst gradient is ~1e-6 of its array's
# largest value, the loss ~1e-7 relative; a wrong gradient is off by far more (it is O(1)).
GRAD_TOL = 1e-4
LOSS_RTOL = 1e-5


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--arch", choices=("mlp", "vit", "both"), default="both", help="which model(s)")
    p.add_argument("--repeats", type=positive, default=10, help="blocks per contestant, taking turns (after warm-up)")
    p.add_argument("--block", type=positive, default=6, help="consecutive steps per block")
    p.add_argument("--settle", type=non_negative, default=2,
                   help="steps at the start of each block that are not counted: right after another library, "
                        "its thread pool still spins on the cores for a while (a training run has only one)")
    p.add_argument("--warmup", type=non_negative, default=3, help="untimed steps per contestant first")
    p.add_argument("--batch-size", type=positive, default=None,
                   help="images per step (default: each model's training batch, config.ARCH_RECIPE)")
    p.add_argument("--loop-steps", type=positive, default=10,
                   help="steps of the training loop itself (train_one_epoch on random photos), timed as a whole")
    p.add_argument("--kernels", choices=("both", "fast", "reference"), default="both",
                   help="tinymae's layers: the fast ones a training run uses (fast.CPU_KERNELS on NumPy), the "
                        "plain reference formulas (fast.REFERENCE), or both, taking turns")
    p.add_argument("--threads", type=positive, default=None,
                   help="BLAS/OpenMP threads for NumPy and torch, and tinymae's worker threads (default: all cores)")
    p.add_argument("--no-torch", action="store_true", help="time tinymae only (torch is not imported)")
    p.add_argument("--torch-sdpa", action="store_true",
                   help="torch's ViT uses F.scaled_dot_product_attention (current timm) instead of timm "
                        "0.3.2's explicit softmax(q k^T) v, which is what tinymae computes")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    # measure_memory runs this script with --memory-worker, in a fresh process
    p.add_argument("--memory-worker", choices=("tinymae", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.settle >= args.block:
        p.error(f"--settle {args.settle} leaves no counted step of a --block of {args.block}: make it smaller")
    return args


# ----------------------------------------------------------------------------------------------
# correctness

def check_correctness(arch, batch_size, device, sdpa, kernels, threads):
    """One step on each side from the same weights, batch and noise, with `kernels` in place; print the
    agreement; True if within tolerance."""
    model, imgs, noise = steps.make_batch(arch, batch_size)
    twin = torch_models.from_tinymae(model, device=device, fused_attn=sdpa)
    runner = fast.runner(model, threads)
    fast.use_kernels(kernels)  # after fast.runner, which puts the backend's fast kernels in place
    try:
        r = torch_models.compare_step(model, twin, imgs, noise)  # model.forward and model.backward
        theirs = torch_models.tinymae_grads(twin, model.params)  # torch's gradients of that step
        # The step as it is timed: fast.runner's gradients (on the CPU, shards added up in float32), then
        # fast.AdamW. Both optimisers get the very same gradients (the runner's, copied into torch's .grad),
        # so this compares the update rules, not the float32 noise of two backward passes. (From the zero
        # initial biases, a first Adam step moves each parameter by about lr * sign(g): a gradient that is
        # zero in theory, as the key bias's, would make a comparison after two backward passes a coin toss.)
        loss, grads = runner.loss_and_grads(imgs, noise)
        runner_diff = {name: torch_models.max_rel_diff(to_numpy(g), theirs[name]) for name, g in grads.items()}
        torch_models.load_tinymae_grads(twin, model.params, grads)
        runner.optimizer_step(steps.tinymae_optimizer(model), grads)
        topt = steps.torch_optimizer(twin, model)
        topt.step()
    finally:
        runner.close()
    after = torch_models.tinymae_params(twin, model.params)
    param_diff = {name: torch_models.max_rel_diff(to_numpy(v), after[name]) for name, v in model.params.items()}

    ours, theirs_loss = r["loss"]
    loss_rel = max(abs(ours - theirs_loss), abs(float(loss) - theirs_loss)) / abs(theirs_loss)
    worst, worst_r, worst_p = (max(d, key=d.get) for d in (r["grads"], runner_diff, param_diff))
    ok = (r["mask_equal"] and loss_rel <= LOSS_RTOL and r["pred"] <= GRAD_TOL
          and max(r["grads"][worst], runner_diff[worst_r], param_diff[worst_p]) <= GRAD_TOL)
    adamw = "fused=True" if topt.defaults.get("fused") else "default"
    print(f"  loss           tinymae {ours:.7f} (fast.runner {float(loss):.7f})   torch {theirs_loss:.7f}   "
          f"rel diff {loss_rel:.1e}")
    print(f"  mask           {'identical' if r['mask_equal'] else 'DIFFERENT'}")
    print(f"  pred           max rel diff {r['pred']:.1e}")
    print(f"  gradients      max rel diff {r['grads'][worst]:.1e} (worst: {worst}; "
          f"median over {len(r['grads'])} arrays {np.median(list(r['grads'].values())):.1e})")
    print(f"  fast.runner    max rel diff {runner_diff[worst_r]:.1e} (worst: {worst_r}){runner.describe()}")
    print(f"  AdamW step     max rel diff {param_diff[worst_p]:.1e} (worst: {worst_p}; fast.AdamW against "
          f"torch.optim.AdamW, {adamw})")
    print(f"  -> {'PASS' if ok else 'FAIL'} (tolerance: loss {LOSS_RTOL:g} relative, arrays {GRAD_TOL:g} "
          f"of their largest value)")
    return ok


# ----------------------------------------------------------------------------------------------
# peak memory, one framework per fresh process

def memory_worker(framework, arch, batch_size, kernels, threads):
    """Runs in its own process: a few training steps of one framework, then prints its memory as JSON."""
    model, imgs, noise = steps.make_batch(arch, batch_size)
    if framework == "tinymae":
        runner = fast.runner(model, threads)
        fast.use_kernels(steps.kernel_sets(kernels)[kernels])  # kernels: 'fast' or 'reference'
        optimizer = steps.tinymae_optimizer(model)
        step = lambda: steps.tinymae_step(runner, optimizer, imgs, noise)  # noqa: E731
    else:
        device = steps.torch_device()
        twin = torch_models.from_tinymae(model, device=device)
        topt = steps.torch_optimizer(twin, model)
        timgs, tnoise = steps.torch_inputs(imgs, noise, device)
        del model, imgs, noise  # only torch's own arrays stay: tinymae's weights are not torch's memory
        step = lambda: steps.torch_step(twin, topt, timgs, tnoise)  # noqa: E731
    print(json.dumps(measure.memory_of(step, framework)))


def measure_memory(framework, args, arch, batch_size, kernels):
    """Run memory_worker in a fresh Python process (same environment) -> its dict, or None on failure."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", framework, "--arch", arch,
           "--batch-size", str(batch_size), "--kernels", kernels] + (["--no-torch"] if framework == "tinymae" else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        print(f"  (memory of {framework} not measured: {done.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_text(mem):
    if mem is None:
        return "-"
    if on_gpu():
        return f"{mem['device_peak_mb']:.0f}"
    return f"{mem['peak_mb']:.0f} ({mem['peak_mb'] - mem['before_mb']:.0f})"


def median(values):
    return float(np.median(values))


# ----------------------------------------------------------------------------------------------
# One model, and the report

def bench_model(arch, args, device, peak):
    """Check, time and measure one model -> (its lines of the table, whether every correctness check passed)."""
    batch = args.batch_size or steps.training_batch(arch)
    kernels = steps.kernel_sets(args.kernels)
    model, imgs, noise = steps.make_batch(arch, batch)
    flops = measure.step_flops(model, batch)
    print(f"\n== {arch}: {model.num_params():,} parameters, batch {batch}, "
          f"{flops / 1e9:.2f} GFLOP per step (matmuls) ==")
    ok = True
    for label, k in kernels.items() if device is not None else ():
        print(f"correctness ({label} kernels against torch: same weights, batch and mask, one step, float32):")
        ok &= check_correctness(arch, batch, device, args.torch_sdpa, k, args.threads or 0)

    # The contestants: tinymae with each set of kernels (one model, its kernels switched), and torch.
    runner = fast.runner(model, args.threads or 0)
    optimizer = steps.tinymae_optimizer(model)
    contestants = {f"tinymae/{backend.name} {label}": steps.Contestant(
        lambda: steps.tinymae_step(runner, optimizer, imgs, noise), k) for label, k in kernels.items()}
    ours_label = next(iter(kernels))  # fast, unless --kernels reference
    ours, theirs = f"tinymae/{backend.name} {ours_label}", None
    if device is not None:
        theirs = f"torch {torch.__version__.split('+')[0]} eager"
        twin = torch_models.from_tinymae(model, device=device, fused_attn=args.torch_sdpa)
        topt = steps.torch_optimizer(twin, model)
        timgs, tnoise = steps.torch_inputs(imgs, noise, device)
        contestants[theirs] = steps.Contestant(lambda: steps.torch_step(twin, topt, timgs, tnoise), None)
    times = steps.time_steps(contestants, args.repeats, args.block, args.settle, args.warmup)

    launches = {}
    if not on_gpu():
        print("launches: n/a (CPU)")
    elif device is None:
        print("launches: n/a (counting GPU kernels needs torch.profiler, with CUDA)")
    else:
        for name, contestant in contestants.items():
            launches[name] = measure.kernel_launches(lambda: steps.run(contestant))
        print("launches: " + ", ".join(f"{name} {n:.0f}" for name, n in launches.items())
              + " GPU kernels per step (torch.profiler)")

    fast.use_kernels(kernels[ours_label])
    loop = steps.time_training_loop(model, runner, optimizer, batch, args.loop_steps)
    runner.close()
    step_rate = batch / median(times[ours]) * 1e3
    print(f"training loop (engine.train_one_epoch, {args.loop_steps} steps): {loop['train_images_per_s']:.0f} img/s, "
          f"{100 * loop['train_images_per_s'] / step_rate:.0f}% of the step alone ({step_rate:.0f} img/s); "
          f"host-side work the step waited for: {1e3 * loop['waiting_for_data_s'] / args.loop_steps:.1f} ms per step")

    memory = {}
    if not args.no_memory:
        memory[ours] = measure_memory("tinymae", args, arch, batch, ours_label)
        if device is not None:
            memory[theirs] = measure_memory("torch", args, arch, batch, ours_label)

    lines = []
    for name in contestants:
        ms = median(times[name])
        line = (f"{arch}/{batch:<7} {name:26} {ms:9.1f} {batch / ms * 1e3:8.0f} {flops / ms / 1e6:8.1f} "
                f"{100 * flops / ms / 1e6 / peak:8.1f}% {memory_text(memory.get(name)):>20}")
        lines.append(line + (f" {launches[name]:14.0f}" if name in launches else ""))
    pairs = [("speed tinymae/torch", ours, theirs, "torch ms / tinymae ms")] if device is not None else []
    if len(kernels) == 2:
        pairs.append(("speed fast/reference", f"tinymae/{backend.name} fast", f"tinymae/{backend.name} reference",
                      "reference kernels' ms / fast kernels' ms"))
    for what, faster, slower, meaning in pairs:
        ratios = [b / a for a, b in zip(times[faster], times[slower])]  # per repetition
        q1, q3 = np.percentile(ratios, [25, 75])
        lines.append(f"{arch}/{batch:<7} {what:26} {median(ratios):9.2f}   ({meaning}, median of the repetitions' "
                     f"ratios; interquartile {q1:.2f} to {q3:.2f})")
    return lines, ok


def kernels_text(kernels):
    if kernels is fast.REFERENCE:
        return "fast.REFERENCE, the plain formulas of tinymae/model/" + (
            " (what training uses on CuPy unless TINYMAE_FAST_GPU=1)" if on_gpu() else "")
    if kernels is fast.CPU_KERNELS:
        return "fast.CPU_KERNELS (tinymae/fast/layers_cpu.py), what training uses"
    return "fast.CUDA_KERNELS (tinymae/fast/cuda.py), what training uses with TINYMAE_FAST_GPU=1"


def benchmark(args):
    """The whole report -> 0, or 1 when tinymae and torch disagree."""
    if args.threads and torch is not None:
        torch.set_num_threads(args.threads)
    print("\n".join(measure.describe_machine()))
    device = None
    if args.no_torch:
        print("torch     comparison skipped (--no-torch)")
    elif torch is None:
        print(f"torch     not installed ({TORCH_MISSING}): the PyTorch comparison is skipped; "
              "pip install torch==2.13.0 to add it")
    else:
        device = steps.torch_device()
        print(f"torch     {torch.__version__}, {torch.get_num_threads()} intra-op threads"
              + (f", CUDA {torch.version.cuda}" if device == "cuda" else ""))
        if device is None:
            print("torch     has no CUDA here: the PyTorch-on-GPU comparison is skipped")
        elif device == "cuda":
            # Full float32 on both sides: cuDNN's convolutions (the patch embedding) default to TF32, with a
            # 10-bit mantissa; CuPy's matmuls are plain float32 unless CUPY_TF32 is set.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    for label, kernels in steps.kernel_sets(args.kernels).items():
        print(f"kernels   {label}: {kernels_text(kernels)}")
    if not on_gpu():
        kept = fast.keep_freed_memory()  # fast.runner does it too, as in training
        print("malloc    " + ("fast.cpu.keep_freed_memory(): big freed blocks are reused (as in training)" if kept
                              else "keep_freed_memory() does not apply here (not Linux/glibc)"))
    n = 4096 if on_gpu() else 2048
    rates = measure.matmul_rate(n, device)
    peak = max(rates.values())
    print(f"float32 matmul ({n}^3, best of 5): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))

    table, all_ok = [], True
    for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
        lines, ok = bench_model(arch, args, device, peak)
        table += lines
        all_ok &= ok

    mem_head = "device MB" if on_gpu() else "peak RSS MB (step)"
    print(f"\n{'model/batch':11} {'contestant':26} {'ms/step':>9} {'img/s':>8} {'GFLOP/s':>8} {'% matmul':>9} "
          f"{mem_head:>20}" + (f" {'launches/step':>14}" if on_gpu() and device is not None else ""))
    print("\n".join(table))
    print(f"(median of {args.repeats} blocks of {args.block - args.settle} counted steps, after {args.warmup} "
          f"warm-up; % matmul: of the best measured float32 matmul rate, {peak:.0f} GFLOP/s; a speed above 1: "
          "the first named is faster)")
    if not all_ok:
        print("error: the correctness check FAILED: tinymae and torch disagree beyond float32 tolerance (see above)",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.memory_worker:
            arch = "vit" if args.arch == "both" else args.arch
            memory_worker(args.memory_worker, arch, args.batch_size or steps.training_batch(arch),
                          "fast" if args.kernels == "both" else args.kernels, args.threads or 0)
            return 0
        return benchmark(args)
    except MemoryError:
        sys.exit(f"error: out of memory at --batch-size {args.batch_size or 'of the training recipe'}: "
                 "try a smaller --batch-size")
    except KeyboardInterrupt:
        sys.exit("interrupted")


if __name__ == "__main__":
    sys.exit(main())
