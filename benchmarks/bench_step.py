"""Time tinymae's training step against the same model in PyTorch eager, after checking that both agree, and show
what each piece of tinymae's fast path buys on its own.

    python benchmarks/bench_step.py                       # both models at their training batch (MLP 256, ViT 32)
    python benchmarks/bench_step.py --arch vit --repeats 3 --kernels fast
    python benchmarks/bench_step.py --profile             # where a step's time goes instead, per function
    TINYMAE_BACKEND=cupy python benchmarks/bench_step.py  # on a GPU: against PyTorch on CUDA (fused AdamW)
    TINYMAE_BACKEND=cupy TINYMAE_FAST_GPU=1 python benchmarks/bench_step.py   # with the GPU's fast path

A step is what engine.train_one_epoch does per batch: forward and backward, AdamW, the loss read back to the host.
tinymae's contestants are fast.training_step's two choices (--kernels), "fast" (what training uses) and "reference"
(engine.Step with model/optim.py's AdamW), each checked against the PyTorch twin (torch_models.py), then timed
against it. benchmarks/README.md explains every figure.
"""
import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from functools import partial
from types import SimpleNamespace

import numpy as np
from threadpoolctl import threadpool_limits

from tinymae import fast
from tinymae.backend import host_rng
from tinymae.config import PretrainConfig
from tinymae.engine import Step, prefetched, train_one_epoch
from tinymae.errors import TinymaeError
from tinymae.fast import cpu, cuda
from tinymae.fast.optim import FlatAdamW
from tinymae.model import build_model
from tinymae.model.optim import AdamW
from tinymae.pretrain import Pretraining
from tinymae.util import cli

import common  # benchmarks/common.py, next to this script

# float32 agreement required: on the defaults the worst array is off by ~1e-6 of its largest value, the loss by
# ~1e-7 relative; a wrong gradient is off by O(1).
GRAD_TOL, LOSS_RTOL = 1e-4, 1e-5

# The pieces of the fast path, each on its own (piece_path), the reference they are measured against, all together.
CPU_PIECES = {"reference": "engine.Step + model/optim.py's AdamW: the plain reference",
              "DataParallel": "cpu.DataParallel alone (the batch in shards on every core), the reference AdamW",
              "FlatAdamW": "optim.FlatAdamW alone (one flat buffer, in cache-sized pieces), engine.Step",
              "keep_freed_memory": "cpu.keep_freed_memory alone (glibc keeps freed memory), the reference step",
              "fast": "all together: fast.training_step(model, 'fast')"}
GPU_PIECES = {"reference": CPU_PIECES["reference"],
              "FlatAdamW": "optim.FlatAdamW alone, unfused (the pieces of the CPU's flat AdamW), engine.Step",
              "fused_AdamW": "FlatAdamW(fused=True) alone: one kernel for every parameter",
              "fused_block": "model.block = cuda.BLOCK alone: the fused Transformer block",
              "resident_photos": "the photos resident on the device alone, each batch cut there (cuda.DeviceImages)",
              "fast": f"fast.training_step(model, 'fast') with TINYMAE_FAST_GPU={int(cuda.ENABLED)}"}


def check_correctness(model, imgs, noise, path, optimizer, device):
    """One step of fast.training_step's `path` and of the PyTorch twin from the same weights, batch and noise: print
    the agreement -> True if within tolerance."""
    from torch_models import compare_step, load_tinymae_params, max_rel_diff, tinymae_params
    twin, topt, _ = common.torch_contestant(model, imgs, noise, device)
    r = compare_step(model, twin, imgs, noise)  # model.forward and model.backward
    theirs = tinymae_params(twin, model.params, grad=True)
    # The step as it is timed, then AdamW from the very same gradients on both sides (the step's, copied into torch's
    # .grad): this compares the update rules, not the float32 noise of two backward passes (from the zero initial
    # biases a first step moves each parameter by about lr * sign(g), a coin toss for a gradient zero in theory).
    loss, grads = path.step.loss_and_grads(imgs, noise)
    diffs = {"gradients": r["grads"],
             "the step's": {n: max_rel_diff(g, theirs[n]) for n, g in grads.items()}}
    load_tinymae_params(twin, grads, grad=True)
    path.step.optimizer_step(optimizer, grads)
    topt.step()
    after = tinymae_params(twin, model.params)
    diffs["AdamW's"] = {n: max_rel_diff(v, after[n]) for n, v in model.params.items()}
    ours, theirs_loss = r["loss"]
    loss_rel = max(abs(ours - theirs_loss), abs(float(loss) - theirs_loss)) / abs(theirs_loss)
    worst = {what: max(d.items(), key=lambda item: item[1]) for what, d in diffs.items()}  # -> (name, rel diff)
    ok = (r["mask_equal"] and loss_rel <= LOSS_RTOL
          and max(r["pred"], *(d for _, d in worst.values())) <= GRAD_TOL)
    print(f"  loss rel diff {loss_rel:.1e} (tinymae {ours:.7f}, the step {float(loss):.7f}, torch {theirs_loss:.7f}); "
          f"mask {'identical' if r['mask_equal'] else 'DIFFERENT'}; pred max rel diff {r['pred']:.1e}")
    print("  max rel diff of " + "; ".join(f"{what} {d:.1e} ({name})" for what, (name, d) in worst.items())
          + f"\n  (the step: {path.step.describe()}; {type(optimizer).__name__}"
          + f"{'(fused=True)' if getattr(optimizer, 'fused', False) else ''} against torch.optim.AdamW"
          + f"{'(fused=True)' if topt.defaults.get('fused') else ''})")
    print(f"  -> {'PASS' if ok else 'FAIL'} (tolerance: loss {LOSS_RTOL:g} relative, arrays {GRAD_TOL:g} of their "
          "largest value)")
    return ok


# the pieces, each in a fresh process

def piece_path(piece, model, threads):
    """A fast.Path with one piece of the fast path in place over the reference (or all of them: 'fast')."""
    if piece == "fast":
        return fast.training_step(model, "fast", threads)
    step, optimizer = Step(model), AdamW
    if piece == "DataParallel":
        step = cpu.DataParallel(model, threads)
    elif piece in ("FlatAdamW", "fused_AdamW"):
        optimizer = partial(FlatAdamW, fused=piece == "fused_AdamW")
    elif piece == "keep_freed_memory":
        cpu.keep_freed_memory()
    elif piece == "fused_block":
        model.block = cuda.BLOCK
    return fast.Path(step, optimizer, piece == "resident_photos")


def training_loop(model, path, batch, steps, warmup):
    """engine.train_one_epoch over random uint8 photos, each batch made by pretrain.Pretraining.batches (prefetched;
    cut on the device where the path keeps the photos there) -> the stats of `steps` steps after `warmup`."""
    cfg, rng = model.config, host_rng(0)
    load, n = cfg.img_size * 9 // 8, max(steps, warmup) * batch  # the recipe's load size
    photos = SimpleNamespace(train_images=rng.integers(0, 256, (n, load, load, 3), dtype=np.uint8),
                             mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.25, np.float32))
    run = SimpleNamespace(photos=photos, model_cfg=cfg)  # what Pretraining's batches and prepare read
    optimizer, prepare = common.adamw(path.AdamW, model), partial(Pretraining.prepare, run) if path.resident else None

    def epoch(k):  # exactly k batches: train_one_epoch draws the rest of its generator, and counts that time
        batches = prefetched(Pretraining.batches(run, rng.permutation(n)[:k * batch], batch, rng, path.resident))
        return train_one_epoch(path.step, optimizer, batches, k, 0, lambda i: common.LR, "loop", False, prepare)
    if warmup:
        epoch(warmup)
    return epoch(steps)


def worker(args):
    """In a fresh process (--worker): one piece's training loop, or torch's steps -> one JSON line."""
    if args.worker == "torch":
        # tinymae's model and batch are not kept (not torch's memory): only the step's own arrays stay
        step = common.torch_contestant(*common.make_batch(args.arch, args.batch_size), common.torch_device())[2]
        before = common.proc_mb()
        for _ in range(args.warmup + args.block):
            step()
        return print(json.dumps({"memory": common.memory("torch", before)}))
    model = build_model(args.arch, {}, seed=0)
    path = piece_path(args.worker, model, args.threads)
    before = common.proc_mb()
    stats = training_loop(model, path, args.batch_size, args.block, args.warmup)
    path.step.close()
    print(json.dumps({"ms": 1e3 * stats["train_time_s"] / args.block, "memory": common.memory("tinymae", before),
                      "waiting_ms": 1e3 * stats["waiting_for_data_s"] / args.block}))


def in_fresh_process(what, arch, batch, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", what, "--arch", arch, "--batch-size", str(batch),
           "--block", str(args.block), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    return json.loads(common.run_child(cmd, f"the {what} process").strip().splitlines()[-1])


def bench_pieces(arch, batch, args):
    """Every piece in a fresh process per block, taking turns -> the table's lines, {piece: its last result}."""
    pieces = GPU_PIECES if common.on_gpu() else CPU_PIECES
    times, results = {piece: [] for piece in pieces}, {}
    for rep in range(args.repeats):
        for piece in list(pieces) if rep % 2 == 0 else list(pieces)[::-1]:
            results[piece] = in_fresh_process(piece, arch, batch, args)
            times[piece].append(results[piece]["ms"])
    lines = [f"\n{arch}, batch {batch}: what each piece of the fast path buys on its own (the training loop, "
             f"{args.block} steps after {args.warmup}, in a fresh process per block; {args.repeats} blocks each)",
             f"  {'piece':18} {'ms/step':>8}  {'speed over the reference':26} what"]
    for piece, what in pieces.items():
        ratio = "1.00" if piece == "reference" else common.speed(times[piece], times["reference"])
        lines.append(f"  {piece:18} {np.median(times[piece]):8.1f}  {ratio:26} {what}")
    return lines, results


# one model, and the report

def bench_model(arch, args, device, peak):
    """Check, time and measure one model -> (its lines of the table, its pieces' lines, whether it agreed)."""
    batch = args.batch_size or PretrainConfig(arch=arch).batch_size
    kernels = ("fast", "reference") if args.kernels == "both" else (args.kernels,)
    model, imgs, noise = common.make_batch(arch, batch)
    flops = common.step_flops(model, batch)
    print(f"\n== {arch}: {model.num_params():,} parameters, batch {batch}, {flops / 1e9:.2f} GFLOP per step ==")
    contestants, paths, ok = {}, [], True
    for k in kernels:  # each its own model: the fast AdamW moves the weights, and the GPU's sets model.block
        m, m_imgs, m_noise = common.make_batch(arch, batch)
        paths.append(fast.training_step(m, k, args.threads))
        optimizer = common.adamw(paths[-1].AdamW, m)
        if device is not None:
            print(f"correctness (tinymae {k} against torch: same weights, batch and mask, one step, float32):")
            ok &= check_correctness(m, m_imgs, m_noise, paths[-1], optimizer, device)
        contestants[f"tinymae {k}"] = partial(common.tinymae_step, paths[-1].step, optimizer, m_imgs, m_noise)
    if device is not None:
        contestants["torch"] = common.torch_contestant(model, imgs, noise, device)[2]
    times = common.time_steps(contestants, args.repeats, args.block, args.settle, args.warmup)
    launches = {}
    if common.on_gpu() and device is not None:
        launches = {name: common.kernel_launches(step) for name, step in contestants.items()}
    for path in paths:
        path.step.close()

    piece_lines, memory = [], {}
    if not args.no_pieces:
        piece_lines, results = bench_pieces(arch, batch, args)
        memory = {f"tinymae {k}": results[k]["memory"] for k in kernels}
        if device is not None:
            memory["torch"] = in_fresh_process("torch", arch, batch, args)["memory"]
        if "tinymae fast" in times:
            step_ms, loop = np.median(times["tinymae fast"]), results["fast"]
            print(f"training loop (tinymae fast, engine.train_one_epoch): {loop['ms']:.1f} ms/step, "
                  f"{100 * step_ms / loop['ms']:.0f}% of the step alone's speed ({step_ms:.1f} ms); the step waited "
                  f"{loop['waiting_ms']:.1f} ms per step for its batch")

    lines = []
    for name in contestants:
        ms = np.median(times[name])
        lines.append(f"{arch}/{batch:<7} {name:20} {ms:9.1f} {batch / ms * 1e3:8.0f} {flops / ms / 1e6:8.1f} "
                     f"{100 * flops / ms / 1e6 / peak:8.1f}% {memory.get(name, '-'):>20}"
                     + (f" {launches[name]:14.0f}" if launches else ""))
    for what, faster, slower in (("speed tinymae/torch", "tinymae " + kernels[0], "torch"),
                                 ("speed fast/reference", "tinymae fast", "tinymae reference")):
        if faster in times and slower in times:
            lines.append(f"{arch}/{batch:<7} {what:20} {common.speed(times[faster], times[slower])}   ({slower} ms / "
                         f"{faster} ms, median of the blocks' ratios)")
    return lines, piece_lines, ok


def benchmark(args):
    """The whole report; a TinymaeError when tinymae and torch disagree."""
    print("\n".join(common.describe_machine()))
    try:
        torch = None if args.no_torch else common.import_torch()
    except TinymaeError as e:
        torch = print(f"torch     {e}: the PyTorch comparison is skipped")
    device = torch and common.torch_device()
    if torch:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        print(f"torch     {torch.__version__}, {torch.get_num_threads()} threads" + ("" if device else ", no CUDA"))
    if device == "cuda":  # full float32 on both sides: cuDNN and cuBLAS default to TF32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if not common.on_gpu() and args.kernels != "reference":
        print("malloc    fast.training_step's keep_freed_memory() is process-wide: every contestant of this process "
              "gets it; the pieces table measures it on its own")
    n = 4096 if common.on_gpu() else 2048
    rates = common.matmul_rate(n, device)
    peak = max(rates.values())
    print(f"float32 matmul ({n}^3, best of 5): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))

    table, pieces, all_ok = [], [], True
    for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
        lines, piece_lines, ok = bench_model(arch, args, device, peak)
        table, pieces, all_ok = table + lines, pieces + piece_lines, all_ok and ok
    memory = "device MB" if common.on_gpu() else "peak RSS MB (step)"
    print(f"\n{'model/batch':11} {'contestant':20} {'ms/step':>9} {'img/s':>8} {'GFLOP/s':>8} {'% matmul':>9} "
          f"{memory:>20}" + (f" {'launches/step':>14}" if common.on_gpu() and device else ""))
    print("\n".join(table))
    print(f"(median of {args.repeats} blocks of {args.block - args.settle} counted steps, after {args.warmup} "
          f"warm-up; % matmul: of {peak:.0f} GFLOP/s; a speed above 1: the first named is faster)")
    print("\n".join(pieces))
    if not all_ok:
        raise TinymaeError("the correctness check FAILED: tinymae and torch disagree beyond float32 tolerance")


def profile(arch, args):
    """--profile: cProfile of --block steps on one core (it sees only its own thread: the plain step, BLAS on one
    thread, as on each of DataParallel's workers), per function by own time: each tinymae layer is one function."""
    batch = args.batch_size or PretrainConfig(arch=arch).batch_size
    kernels = "reference" if args.kernels == "reference" else "fast"
    model, imgs, noise = common.make_batch(arch, batch)
    path = fast.training_step(model, kernels, threads=1)
    step = partial(common.tinymae_step, path.step, common.adamw(path.AdamW, model), imgs, noise)
    with threadpool_limits(limits=1, user_api="blas"):
        step()
        profiler, t0 = cProfile.Profile(), time.perf_counter()
        profiler.runcall(lambda: [step() for _ in range(args.block)])
        step_ms = (time.perf_counter() - t0) / args.block * 1e3
    print(f"\n=== tinymae {arch}, {kernels}: {step_ms:.0f} ms per step under cProfile (batch {batch}, one core) ===")
    print(f"  {'function (own time: the NumPy work it does itself)':52} {'calls':>6} {'own ms':>7} {'cum ms':>7}")
    for (file, _, name), (_, calls, own, cum, _) in sorted(pstats.Stats(profiler).stats.items(),
                                                           key=lambda kv: -kv[1][2])[:15]:
        name = name if file == "~" else f"{os.path.splitext(os.path.basename(file))[0]}.{name}"
        print(f"  {name[:52]:52} {calls / args.block:6.0f} {own / args.block * 1e3:7.1f} {cum / args.block * 1e3:7.1f}")


def main(argv=None):
    p = common.ArgumentParser("bench_step", __doc__)
    p.add_argument("--arch", choices=("mlp", "vit", "both"), default="both", help="which model(s)")
    p.add_argument("--repeats", type=common.at_least(1), default=5, help="blocks per contestant, taking turns")
    p.add_argument("--block", type=common.at_least(1), default=6, help="consecutive steps per block")
    p.add_argument("--settle", type=common.at_least(0), default=2,
                   help="steps of each block not counted (the other library's thread pool still spins on the cores)")
    p.add_argument("--warmup", type=common.at_least(0), default=3, help="untimed steps per contestant first")
    p.add_argument("--batch-size", type=common.at_least(1), default=None,
                   help="images per step (default: each model's training batch, config.ARCH_RECIPE)")
    p.add_argument("--kernels", choices=("both", "fast", "reference"), default="both",
                   help="tinymae's contestants: fast.training_step's fast path, its reference, or both")
    p.add_argument("--threads", type=common.at_least(0), default=0,
                   help="BLAS threads of NumPy and torch, and the fast step's worker threads (0: every core)")
    p.add_argument("--no-torch", action="store_true", help="time tinymae only (torch is not imported)")
    p.add_argument("--no-pieces", action="store_true", help="skip the pieces and memory (the fresh processes)")
    p.add_argument("--profile", action="store_true", help="instead: where a step's time goes, per function (cProfile "
                                                          "of --block steps on one core)")
    p.add_argument("--worker", choices=(*CPU_PIECES, *GPU_PIECES, "torch"), help=argparse.SUPPRESS)  # see worker()
    args = p.parse_args(argv)
    if args.settle >= args.block and not (args.profile or args.worker):
        p.error(f"--settle {args.settle} leaves no counted step of a --block of {args.block}: make it smaller")

    def body():
        if args.threads:
            threadpool_limits(limits=args.threads, user_api="blas")
        try:
            if args.worker or not args.profile:
                return worker(args) if args.worker else benchmark(args)
            for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
                profile(arch, args)
        except MemoryError:
            raise TinymaeError(f"out of memory at --batch-size {args.batch_size or 'of the training recipe'}: try a "
                               "smaller --batch-size") from None
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
