"""Which details of the ViT MAE's pre-training recipe matter on 48-pixel Cats & Dogs: one factor at a time.

    python research/recipe.py --data data/catsdogs                   # every variant, 50 epochs each: docs/recipe.md
    python research/recipe.py --data data/catsdogs --only b128-w2.5  # some of them (the page shows every finished one)

Every variant is the ViT MAE of tinymae.config (4 blocks of width 128, 4 heads; decoder 2 blocks of 64;
mask ratio 0.75; AdamW lr 0.005, betas 0.9 / 0.95, weight decay 0.05; 50 epochs; a 48-pixel crop of the
54-pixel image and a flip) with one setting changed from the row it is compared to. Each trains in its own
folder under --out (resumable: stop and start again), then its frozen encoder is probed (tinymae.probe,
the mean of its patch tokens, 3 probe seeds), and docs/recipe.md is written from those files alone.

The last rows train the same model and recipe in PyTorch (benchmarks/train_torch.py: the same images,
batches, masks, initial weights and metric; only the engine differs), once with the GELU tinymae computes
and once with torch's exact one. They need PyTorch (the test extra); without it they are listed as not run.
"""
import argparse
import datetime
import importlib.util
import os
import platform
import shlex
import subprocess
import sys

from runs import DEFAULT_DATA, RUN_ERRORS, pretrain_variant, probe_row, probe_variant, read_json, write_text

TRAIN_TORCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "train_torch.py")

EPOCHS = 50
# Each variant: name, what changed (in words), the row it is compared to, and its settings (flag names).
# "engine": "torch" rows run benchmarks/train_torch.py with the settings as its flags.
VARIANTS = [
    ("b256-w5", "batch 256 (15 steps an epoch), warm-up 5 epochs", None,
     dict(batch_size=256, warmup_epochs=5.0)),
    ("b128-w5", "batch 128 (31 steps an epoch)", "b256-w5", dict(batch_size=128, warmup_epochs=5.0)),
    ("b128-w2.5", "warm-up 2.5 epochs", "b128-w5", dict(batch_size=128, warmup_epochs=2.5)),
    ("b64-w2.5", "batch 64 (62 steps an epoch)", "b128-w2.5", dict(batch_size=64, warmup_epochs=2.5)),
    ("b64-w5", "warm-up 5 epochs", "b64-w2.5", dict(batch_size=64, warmup_epochs=5.0)),
    ("b32-w2.5", "batch 32 (125 steps an epoch): tinymae's ViT recipe", "b64-w2.5",
     dict(batch_size=32, warmup_epochs=2.5)),
    ("b16-w2.5", "batch 16 (250 steps an epoch)", "b32-w2.5", dict(batch_size=16, warmup_epochs=2.5)),
    ("b64-w2.5-wd0", "no weight decay", "b64-w2.5", dict(batch_size=64, warmup_epochs=2.5, weight_decay=0.0)),
    ("b32-w2.5-wd0.1", "weight decay 0.1", "b32-w2.5", dict(batch_size=32, warmup_epochs=2.5, weight_decay=0.1)),
    ("b64-w2.5-beta0.999", "AdamW beta2 0.999 (PyTorch's default) instead of MAE's 0.95", "b64-w2.5",
     dict(batch_size=64, warmup_epochs=2.5, beta2=0.999)),
    ("b32-w2.5-qkv", "qkv initialised as three projections (the JAX ViT) instead of one fused Linear", "b32-w2.5",
     dict(batch_size=32, warmup_epochs=2.5, qkv_init="per-projection")),
    ("b128-w2.5-nocrop", "no crop: the whole photo resized to 48, flip only", "b128-w2.5",
     dict(batch_size=128, warmup_epochs=2.5, load_size=48)),
    ("b32-w2.5-nocrop", "no crop", "b32-w2.5", dict(batch_size=32, warmup_epochs=2.5, load_size=48)),
    ("torch-b32", "PyTorch instead of tinymae: the same model, recipe, data, batches and masks", "b32-w2.5",
     dict(engine="torch", batch_size=32, gelu="tanh")),
    ("torch-b32-exact-gelu", "PyTorch with the exact (erf) GELU of timm's ViT", "torch-b32",
     dict(engine="torch", batch_size=32, gelu="exact")),
]
NAMES = [name for name, *_ in VARIANTS]
NO_CROP = {"b128-w2.5-nocrop", "b32-w2.5-nocrop"}  # their validation images are other images (see the page)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python research/recipe.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="the photo folder")
    p.add_argument("--out", default=os.path.join("runs", "recipe"), help="one sub-folder per variant")
    p.add_argument("--docs", default="docs", help="recipe.md is written here")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"only these ({', '.join(NAMES)})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every variant")
    p.add_argument("--seed", type=int, default=0, help="seed of every variant")
    p.add_argument("--per-class", type=int, default=None, help="only the first N images of each class (a quick try)")
    args = p.parse_args(argv)
    for name, least in (("epochs", 1), ("seed", 0), ("per_class", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            p.error(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    for name in ("out", "docs"):
        if os.path.isfile(getattr(args, name)):
            p.error(f"--{name} {getattr(args, name)} is a file; give a folder")
    return args


def settings_of(name, args):
    settings = dict(next(s for n, _, _, s in VARIANTS if n == name))
    return {"arch": "vit", "epochs": args.epochs, "seed": args.seed, "per_class": args.per_class, **settings}


def run_torch(name, args, run_dir):
    """A PyTorch row: benchmarks/train_torch.py, its result cached as torch.json. -> the result, or None
    when PyTorch is not installed."""
    path = os.path.join(run_dir, "torch.json")
    result = read_json(path)
    if result is not None:
        return result
    if importlib.util.find_spec("torch") is None:
        print(f"    {name}: PyTorch is not installed (pip install -e '.[test]'); not run")
        return None
    s = settings_of(name, args)
    os.makedirs(run_dir, exist_ok=True)
    argv = ["--data", args.data, "--arch", "vit", "--epochs", str(s["epochs"]), "--batch-size", str(s["batch_size"]),
            "--seed", str(s["seed"]), "--gelu", s["gelu"], "--json", path]
    argv += ["--per-class", str(s["per_class"])] if s["per_class"] else []
    done = subprocess.run([sys.executable, TRAIN_TORCH, *argv])  # a benchmark script, run as a user runs it
    if done.returncode != 0:
        raise SystemExit(f"error: {TRAIN_TORCH} failed for {name} (exit status {done.returncode}); see above")
    return read_json(path)


def run_ratio(result):
    metrics, _ = result
    return metrics["final_validation"]["ratio_to_mean_patch"] if "final_validation" in metrics \
        else metrics["ratio_to_mean_patch"]


def row(name, what, base, results, random_init):
    if name not in results:
        return f"| {name} | {what} | not run yet | | | | |"
    metrics, report = results[name]
    ratio = run_ratio(results[name])
    change = f"{ratio - run_ratio(results[base]):+.3f}" if base in results else "—"
    if name in NO_CROP:
        change += " (other images)"
    if "final_validation" in metrics:  # a tinymae run
        psnr = f"{metrics['final_validation']['masked_psnr']:.2f}"
        probe = probe_row(report, "pre-trained", "mean")
        probe_text = (f"{100 * probe['linear_probe_mean']:.1f} ± {100 * probe['linear_probe_std']:.1f} "
                      f"({100 * (probe['linear_probe_mean'] - random_init):+.1f})")
    else:  # a PyTorch run: no checkpoint to probe
        psnr, probe_text = "—", "—"
    return (f"| {name} | {what} | {ratio:.3f} | {change} | {psnr} | {probe_text} | "
            f"{metrics['wall_time_s'] / 60:.1f} |")


def findings(results):
    """The page's conclusions, read from the numbers (a line per factor that was measured)."""
    def r(name):
        return run_ratio(results[name]) if name in results else None

    lines = []
    if all(r(n) is not None for n in ("b256-w5", "b128-w5", "b64-w2.5", "b32-w2.5", "b16-w2.5")):
        lines.append(f"- **The number of optimiser steps is what matters most.** At a fixed learning rate and 50 "
                     f"epochs, halving the batch from 256 to 128 to 64 to 32 moves the ratio {r('b256-w5'):.3f} -> "
                     f"{r('b128-w5'):.3f} -> {r('b64-w2.5'):.3f} -> {r('b32-w2.5'):.3f}; batch 16 gives "
                     f"{r('b16-w2.5'):.3f}: the gain has run out by then, and each epoch is slower.")
    if all(r(n) is not None for n in ("b128-w5", "b128-w2.5", "b64-w5", "b64-w2.5")):
        lines.append(f"- The warm-up's length does not matter here: 5 against 2.5 epochs gives {r('b128-w5'):.3f} "
                     f"against {r('b128-w2.5'):.3f} at batch 128 and {r('b64-w5'):.3f} against {r('b64-w2.5'):.3f} "
                     "at batch 64.")
    if all(r(n) is not None for n in ("b64-w2.5", "b64-w2.5-wd0", "b32-w2.5-wd0.1", "b32-w2.5")):
        lines.append(f"- Some weight decay helps a little: none gives {r('b64-w2.5-wd0'):.3f} against "
                     f"{r('b64-w2.5'):.3f} (0.05); 0.1 gives {r('b32-w2.5-wd0.1'):.3f} against {r('b32-w2.5'):.3f}.")
    if r("b64-w2.5-beta0.999") is not None and r("b64-w2.5") is not None:
        lines.append(f"- MAE's beta2 0.95 matters: PyTorch's default 0.999 gives {r('b64-w2.5-beta0.999'):.3f} "
                     f"against {r('b64-w2.5'):.3f}.")
    if r("b32-w2.5-qkv") is not None and r("b32-w2.5") is not None:
        lines.append(f"- models_mae.py's fused xavier init of qkv is the better one: three separate projections "
                     f"give {r('b32-w2.5-qkv'):.3f} against {r('b32-w2.5'):.3f}.")
    if r("b32-w2.5-nocrop") is not None and "b32-w2.5" in results:
        same_psnr = (results["b32-w2.5-nocrop"][0]["final_validation"]["masked_psnr"],
                     results["b32-w2.5"][0]["final_validation"]["masked_psnr"])
        lines.append(f"- The crop: without it the ratio reads {r('b32-w2.5-nocrop'):.3f}, but on other validation "
                     "images (whole photos resized to 48 instead of the central 48 of 54 pixels, which changes the "
                     f"mean-patch baseline); the reconstruction itself is no better (PSNR {same_psnr[0]:.2f} against "
                     f"{same_psnr[1]:.2f} dB). The crop stays: it is the augmentation the paper's recipe has.")
    if r("torch-b32") is not None and r("b32-w2.5") is not None:
        lines.append(f"- **The engine is not a factor**: the same model and recipe in PyTorch, on the same images, "
                     f"batches, masks and initial weights, ends at {r('torch-b32'):.3f} against tinymae's "
                     f"{r('b32-w2.5'):.3f}.")
    if r("torch-b32-exact-gelu") is not None and r("torch-b32") is not None:
        lines.append(f"- The exact GELU against the tanh form tinymae computes: {r('torch-b32-exact-gelu'):.3f} "
                     f"against {r('torch-b32'):.3f} (both in PyTorch).")
    return lines


def write_page(args, results, command):
    first = next((results[n] for n in NAMES if n in results and "final_validation" in results[n][0]), None)
    random_row = probe_row(first[1], "random init", "mean") if first else None
    random_init = random_row["linear_probe_mean"] if random_row else float("nan")
    n_val = first[0]["data"]["n_val"] if first else 0
    machine = platform.processor() or platform.machine()
    lines = [
        "# The ViT MAE's recipe: what each detail is worth", "",
        "<!-- Generated by research/recipe.py from its run folders; do not edit by hand, rerun it. -->", "",
        f"Generated by `{command}` on {datetime.date.today()} ({machine}, {os.cpu_count()} CPUs). "
        f"Each row is one pre-training run of the ViT MAE (seed {args.seed}, {args.epochs} epochs) with one setting "
        "changed from the row named in *compared to*.", "",
        f"*× mean patch*: masked-patch MSE on the {n_val:,} validation images, in pixels, over the mean-patch "
        "baseline (lower is better). *Linear probe*: cat vs dog from the frozen encoder's mean patch token, "
        "mean ± std over the probe seeds, and in brackets the gain over a randomly initialised encoder of the same "
        f"shape ({100 * random_init:.1f}%). *Minutes*: the run's epochs, training and validation, on this machine "
        "(other work on it slows them).", "",
        "| variant | what changed (compared to) | × mean patch | change | PSNR (dB) | linear probe (%) | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, what, base, _ in VARIANTS:
        lines.append(row(name, what + (f" ({base})" if base else ""), base, results, random_init))
    lines += ["", "## What the rows say", "",
              "One run per row: the base recipe's spread over pre-training seeds (docs/results.md, three seeds) "
              "is the size of a difference worth reading; the smaller ones below are noise.", ""] + findings(results)
    lines += ["", "tinymae's ViT recipe is the b32-w2.5 row: batch 32, a warm-up of 2.5 epochs, everything else as "
                  "the paper's pre-training (config.ARCH_RECIPE; the MLP keeps batches of 256). docs/results.md "
                  "repeats it with three seeds."]
    write_text(os.path.join(args.docs, "recipe.md"), "\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    command = "python research/recipe.py" + "".join(f" {a}" for a in map(shlex.quote, argv or sys.argv[1:]))
    names = args.only or NAMES
    results = {}
    try:
        for i, name in enumerate(NAMES):
            run_dir = os.path.join(args.out, name)
            finished = os.path.exists(os.path.join(run_dir, "metrics.json")) or os.path.exists(
                os.path.join(run_dir, "torch.json"))
            if name not in names and not finished:
                continue
            settings = settings_of(name, args)
            print(f"[{i + 1}/{len(NAMES)}] {name}: {settings}", flush=True)
            if settings.get("engine") == "torch":
                result = run_torch(name, args, run_dir)
                if result is not None:
                    results[name] = (result, None)
                continue
            metrics, _ = pretrain_variant(run_dir, args.data, settings)
            report = probe_variant(run_dir, args.data, baselines=name == NAMES[0], per_class=args.per_class)
            results[name] = (metrics, report)
            print(f"    {name}: {metrics['final_validation']['ratio_to_mean_patch']:.3f}x mean patch", flush=True)
        write_page(args, results, command)
    except RUN_ERRORS as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("\ninterrupted. Finished runs are kept; run the same command again to continue.", file=sys.stderr)
        return 130
    print(f"wrote {os.path.join(args.docs, 'recipe.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
