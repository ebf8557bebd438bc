"""Which details of the ViT MAE's pre-training recipe matter on 48-pixel Cats & Dogs: one factor at a time.

    python examples/recipe.py                      # every variant, 50 epochs each; writes docs/recipe.md
    python examples/recipe.py --only b128-w2.5     # some of them (the page shows every finished one)

Every variant is the default ViT MAE (4 blocks of width 128, 4 heads; decoder 2 blocks of 64; mask ratio
0.75; AdamW lr 0.005, betas 0.9 / 0.95, weight decay 0.05; 50 epochs; a 48-pixel crop of the 54-pixel
image and a flip) with one setting changed from the row it is compared to. Each trains in its own folder
under --out (resumable: stop and start again), then its frozen encoder is probed (tinymae.probe, the mean
of its patch tokens, 3 probe seeds), and docs/recipe.md is written from those files alone.
"""
import argparse
import datetime
import os
import platform
import shlex
import sys
import time

from sweep import DEFAULT_DATA, pretrain_variant, probe_row, probe_variant

EPOCHS = 50
# Each variant: its settings (command-line names) and the row it changes one thing of.
VARIANTS = [
    ("b256-w5", "batch 256, warm-up 5 epochs (15 steps an epoch)", None,
     dict(batch_size=256, warmup_epochs=5.0)),
    ("b128-w5", "batch 128 (31 steps an epoch)", "b256-w5",
     dict(batch_size=128, warmup_epochs=5.0)),
    ("b128-w2.5", "batch 128, warm-up 2.5 epochs", "b128-w5",
     dict(batch_size=128, warmup_epochs=2.5)),
    ("b64-w2.5", "batch 64 (62 steps an epoch), warm-up 2.5 epochs", "b128-w2.5",
     dict(batch_size=64, warmup_epochs=2.5)),
    ("b64-w5", "batch 64, warm-up 5 epochs", "b64-w2.5",
     dict(batch_size=64, warmup_epochs=5.0)),
    ("b128-w2.5-nocrop", "batch 128, warm-up 2.5, no crop (54 -> 48 resize, flip only)", "b128-w2.5",
     dict(batch_size=128, warmup_epochs=2.5, load_size=48)),
    ("b64-w2.5-wd0", "batch 64, warm-up 2.5, no weight decay", "b64-w2.5",
     dict(batch_size=64, warmup_epochs=2.5, weight_decay=0.0)),
    ("b32-w2.5", "batch 32 (125 steps an epoch), warm-up 2.5", "b64-w2.5",
     dict(batch_size=32, warmup_epochs=2.5)),
    ("b64-w2.5-beta0.999", "batch 64, warm-up 2.5, AdamW beta2 0.999 (PyTorch's default) instead of MAE's 0.95",
     "b64-w2.5", dict(batch_size=64, warmup_epochs=2.5, beta2=0.999)),
    ("b16-w2.5", "batch 16 (250 steps an epoch), warm-up 2.5", "b32-w2.5",
     dict(batch_size=16, warmup_epochs=2.5)),
    ("b32-w2.5-wd0.1", "batch 32, warm-up 2.5, weight decay 0.1", "b32-w2.5",
     dict(batch_size=32, warmup_epochs=2.5, weight_decay=0.1)),
    ("b32-w2.5-nocrop", "batch 32, warm-up 2.5, no crop", "b32-w2.5",
     dict(batch_size=32, warmup_epochs=2.5, load_size=48)),
    ("b32-w2.5-qkv", "batch 32, warm-up 2.5, qkv initialised as three projections", "b32-w2.5",
     dict(batch_size=32, warmup_epochs=2.5, qkv_init="per-projection")),
]
NAMES = [name for name, *_ in VARIANTS]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="the photo folder")
    p.add_argument("--out", default=os.path.join("runs", "recipe"), help="one sub-folder per variant")
    p.add_argument("--docs", default="docs", help="recipe.md is written here")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"only these ({', '.join(NAMES)})")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every variant")
    p.add_argument("--seed", type=int, default=0, help="seed of every variant")
    p.add_argument("--per-class", type=int, default=None, help="only the first N images of each class (a quick try)")
    return p.parse_args(argv)


def settings_of(name, args):
    settings = dict(next(s for n, _, _, s in VARIANTS if n == name))
    return {"arch": "vit", "epochs": args.epochs, "seed": args.seed, "per_class": args.per_class, **settings}


def row(name, what, base, results, random_init):
    if name not in results:
        return f"| {name} | {what} | not run yet | | | | |"
    metrics, report = results[name]
    final = metrics["final_validation"]
    probe = probe_row(report, "pre-trained", "mean")
    change = ""
    if base in results:
        change = f"{final['ratio_to_mean_patch'] - results[base][0]['final_validation']['ratio_to_mean_patch']:+.3f}"
    minutes = metrics["wall_time_s"] / 60
    return (f"| {name} | {what} | {final['ratio_to_mean_patch']:.3f} | {change or '—'} | "
            f"{final['masked_psnr']:.2f} | {100 * probe['linear_probe_mean']:.1f} ± {100 * probe['linear_probe_std']:.1f}"
            f" ({100 * (probe['linear_probe_mean'] - random_init):+.1f}) | {minutes:.1f} |")


def write_page(args, results, command, seconds):
    first = next((results[n] for n in NAMES if n in results), None)
    random_row = probe_row(first[1], "random init", "mean") if first else None
    random_init = random_row["linear_probe_mean"] if random_row else float("nan")
    lines = [
        "# The ViT MAE's recipe: what each detail is worth", "",
        f"Generated by `{command}` on {datetime.date.today()} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs) in {seconds / 60:.0f} min; every number below comes from the run folders it "
        "wrote. Each row is one pre-training run of the default ViT MAE "
        f"(seed {args.seed}, {args.epochs} epochs) with one setting changed from the row named in "
        "*compared to*.", "",
        f"*× mean patch*: masked-patch MSE on the {first[0]['data']['n_val'] if first else 0:,} validation images, in "
        "pixels, over the mean-patch "
        "baseline (lower is better). *Linear probe*: cat vs dog from the frozen encoder's mean patch token, "
        f"mean ± std over 3 probe seeds, and in brackets the gain over a randomly initialised encoder of the same "
        f"shape ({100 * random_init:.1f}%).", "",
        "| variant | what changed | × mean patch | vs compared to | PSNR (dB) | linear probe (%) | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, what, base, _ in VARIANTS:
        lines.append(row(name, what + (f" (compared to {base})" if base else ""), base, results, random_init))
    os.makedirs(args.docs, exist_ok=True)
    with open(os.path.join(args.docs, "recipe.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    args = parse_args(argv)
    command = "python examples/recipe.py" + "".join(f" {a}" for a in map(shlex.quote, argv or sys.argv[1:]))
    t0 = time.perf_counter()
    names = args.only or NAMES
    results = {}
    for i, name in enumerate(NAMES):
        run_dir = os.path.join(args.out, name)
        if name not in names and not os.path.exists(os.path.join(run_dir, "metrics.json")):
            continue
        print(f"[{i + 1}/{len(NAMES)}] {name}: {settings_of(name, args)}", flush=True)
        metrics, _ = pretrain_variant(run_dir, args.data, settings_of(name, args))
        report = probe_variant(run_dir, args.data, baselines=name == NAMES[0], per_class=args.per_class)
        results[name] = (metrics, report)
        print(f"    {name}: {metrics['final_validation']['ratio_to_mean_patch']:.3f}x mean patch", flush=True)
    write_page(args, results, command, time.perf_counter() - t0)
    print(f"wrote {os.path.join(args.docs, 'recipe.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
