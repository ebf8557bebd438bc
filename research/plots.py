"""The figures of docs/results.md, drawn from the run folders (report.Results reads them)."""
import os
import statistics

import numpy as np

from tinymae.config import PretrainConfig
from tinymae.data import PretrainData
from tinymae.evaluate import figure_batch
from tinymae.util.checkpoint import load_checkpoint
from tinymae.util.figures import pyplot, save_reconstructions

from plan import PARTIAL_BLOCKS, SCHEDULE, SEEDS, run_name, schedule_variant


def mean_std(values):
    """(mean, sample std) in percent of the values that exist, or None when none do."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return 100 * float(np.mean(values)), 100 * (statistics.stdev(values) if len(values) > 1 else 0.0)


def save(fig, plt, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def errorbar_line(ax, xs, points, label, marker):
    """Plot the points that exist ((mean, std) or None) with their seed spread as error bars."""
    kept = [(x, p) for x, p in zip(xs, points) if p is not None]
    if kept:
        ax.errorbar([x for x, _ in kept], [p[0] for _, p in kept], yerr=[p[1] for _, p in kept], marker=marker,
                    capsize=3, label=label)


def plot_mask_ratio(r, args, path):
    """Figure 5 in miniature: the linear probe and fine-tuning against the mask ratio, mean ± std over seeds."""
    variants = [v for v in ("mask0.25", "mask0.5", "base", "mask0.9") if r.metrics(run_name(v, 0)) is not None]
    if len(variants) < 2:
        return
    plt = pyplot()
    ratios = [0.75 if v == "base" else float(v[len("mask"):]) for v in variants]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    errorbar_line(ax, ratios, [mean_std([r.probe_accuracy(run_name(v, s)) for s in SEEDS]) for v in variants],
                  "linear probe", "o")
    errorbar_line(ax, ratios, [mean_std([r.accuracy(run_name(v, s), labels=args.labels[0], seed=s) for s in SEEDS])
                               for v in variants], f"fine-tuning, {args.labels[0]} labels per class", "s")
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xticks(ratios)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)  # off the error bars
    save(fig, plt, path)


def plot_schedule(r, args, path):
    """Figure 7 in miniature: accuracy against pre-training epochs."""
    factors = [f for f in (1, *SCHEDULE) if r.metrics(run_name(schedule_variant(f, args), 0)) is not None]
    if len(factors) < 2:
        return
    plt = pyplot()
    epochs = [f * args.epochs for f in factors]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    probe, few, every = [], [], []
    for f in factors:
        variant = schedule_variant(f, args)
        seeds = SEEDS if f == 1 else SEEDS[:1]
        probe.append(mean_std([r.probe_accuracy(run_name(variant, s)) for s in seeds]))
        few.append(mean_std([r.accuracy(run_name(variant, s), labels=args.labels[0], seed=s) for s in seeds]))
        every.append(mean_std([r.accuracy(run_name(variant, s if f == 1 else 0), labels=None, seed=s) for s in SEEDS]))
    errorbar_line(ax, epochs, every, "fine-tuning, every label", "s")
    errorbar_line(ax, epochs, few, f"fine-tuning, {args.labels[0]} labels per class", "^")
    errorbar_line(ax, epochs, probe, "linear probe", "o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs)
    ax.set_xticklabels([str(e) for e in epochs])
    ax.set_xlabel("pre-training epochs")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    save(fig, plt, path)


def plot_partial(r, args, path):
    """Figure 9 in miniature: accuracy against the number of fine-tuned blocks (0: a linear classifier)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = False
    for variant in ("base", schedule_variant(SCHEDULE[-1], args)):
        metrics = r.metrics(run_name(variant, 0))
        if metrics is None:
            continue
        depth = metrics["config"]["depth"]
        blocks = [*PARTIAL_BLOCKS, depth]
        points = [mean_std([r.accuracy(run_name(variant, 0), labels=None, seed=0, blocks=k)]) for k in PARTIAL_BLOCKS]
        points.append(mean_std([r.accuracy(run_name(variant, 0), labels=None, seed=0)]))
        errorbar_line(ax, blocks, points, f"pre-trained {metrics['settings']['epochs']} epochs", "o")
        drawn = drawn or any(p is not None for p in points)
    if not drawn:
        plt.close(fig)
        return
    ax.set_xticks(blocks, [*map(str, PARTIAL_BLOCKS), f"all {depth}"])  # whole numbers: a block is fine-tuned or not
    ax.set_xlabel("fine-tuned blocks (the last K of the encoder)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=8)
    save(fig, plt, path)


def plot_curves(r, args, path):
    """Validation masked MSE per epoch of the base runs and the longer ones."""
    runs = [run_name("base", s) for s in SEEDS] + [run_name(schedule_variant(f, args), 0) for f in SCHEDULE]
    runs = [run for run in runs if r.metrics(run) is not None]
    if not runs:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        history = r.metrics(run)["history"]
        ax.plot([h["epoch"] for h in history], [h["val_masked_mse"] for h in history], label=run, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation masked MSE")
    ax.legend(fontsize=7)
    save(fig, plt, path)


def save_run_reconstructions(run_dir, args, path, n_images=6):
    model, header, _ = load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))
    settings = {k: v for k, v in header["settings"].items() if k in PretrainConfig.__dataclass_fields__}
    data = PretrainData(PretrainConfig(**{**settings, "data": args.data, "progress": False}),
                        model.config.img_size, model.config.patch_size)
    imgs_pix, mask, pred_pix = figure_batch(model, data.val_images, data.mean, data.std, header["settings"]["seed"],
                                            n_images)
    title = f"{os.path.basename(run_dir)}, validation photos, epoch {header['epoch']}"
    save_reconstructions(path, imgs_pix, mask, pred_pix, model.config.patch_size, title=title)
