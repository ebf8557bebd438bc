"""The paper's ablations in miniature: train every variant, probe it, and write docs/results.md.

    python examples/experiments.py                                  # the whole sweep, about 30 min on 2 CPU cores
    python examples/experiments.py --only vit-base vit-norm-pix     # a subset (the report shows what exists)
    python examples/experiments.py --data data/catsdogs             # photos somewhere else

Run it from the repository root (the default paths --data, --out and --docs are relative to it).

He et al. (2022) study MAE's design choices on ImageNet with ViT-L. This sweep asks the same questions of
our 48 x 48 Cats & Dogs model, with far fewer epochs:

    mask ratio 0.25 / 0.5 / 0.75 / 0.9          Figure 5: 75% is best for linear probing
    loss on removed patches vs on all patches   Sec. 3, footnote: the loss on all pixels is ~0.5% worse
    norm_pix_loss on vs off                     Table 1d: normalised pixel targets are a little better
    encoder on visible tokens vs with [M]       Table 1c (quality) and Table 2 (2.8-4.1x faster training)
    MLP vs ViT at equal epochs                  the task's own model against the paper's

Every run is one call of examples/train_catsdogs.py in its own folder under --out, so each is isolated
and resumable: a run whose metrics.json exists is skipped; one with only a checkpoint.npz (interrupted)
is continued with --resume. Stop the sweep at any point and start the same command again. The run
"vit-base" (ViT, mask 0.75, loss on removed patches, raw-pixel targets, encoder on visible tokens only)
is the baseline row of every table, so the sweep trains 8 models, not 12.

After training, each encoder is frozen and probed (tinymae.probe: a linear probe, mean +- std over a few
seeds, and k-NN; cached as probe.json in the run's folder); the raw-pixel and random-encoder baselines are
probed once, with vit-base. Reconstruction errors come from each run's metrics.json (validation images,
removed patches only, fixed masks), times per epoch from its history. Then docs/results.md is written
from those files alone, with the figures next to it: nothing in it is typed by hand.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

from tinymae import backend, config
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.checkpoint import load_checkpoint, read_checkpoint
from tinymae.data import center_crop, load_dataset, stratified_split
from tinymae.evaluate import figure_batch
from tinymae.figures import save_reconstructions
from tinymae.masking import masking_noise
from tinymae.optim import AdamW
from tinymae.probe import run_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(ROOT, "examples", "train_catsdogs.py")

# ---- the sweep's settings (each has a flag below) -----------------------------------------------
DEFAULT_DATA = os.path.join("..", "shared", "data", "catsdogs")  # where the README's commands find the photos
# Epochs of every run. One epoch of all 8 runs costs ~11.4x a vit-base epoch (mask ratio 0.25 and the encoder
# with mask tokens ~2.5-3x each, MLP ~0.15x), ~95 s on 2 CPU cores (measured side by side); the probes, the
# side-by-side timing and the figures add ~7 min. 15 epochs: ~31 min, leaving room under the 45-minute
# budget for a busier machine.
DEFAULT_EPOCHS = 15
DEFAULT_SEED = 0
PROBE_SEEDS = 3  # linear-probe repetitions for mean +- std
TIMING_ROUNDS = 5  # interleaved training steps per model for the side-by-side speed measurement

# The runs. Each dict states every setting that differs between runs; everything else is the training
# script's default recipe. "vit-base" is the paper's MAE and the shared baseline of every table.
BASE = {"arch": "vit", "mask_ratio": 0.75, "loss_on": "masked", "norm_pix_loss": False,
        "encoder_mask_tokens": False}
RUNS = [
    dict(BASE, name="vit-base"),
    dict(BASE, name="vit-mask0.25", mask_ratio=0.25),
    dict(BASE, name="vit-mask0.5", mask_ratio=0.5),
    dict(BASE, name="vit-mask0.9", mask_ratio=0.9),
    dict(BASE, name="vit-loss-all", loss_on="all"),
    dict(BASE, name="vit-norm-pix", norm_pix_loss=True),
    dict(BASE, name="vit-encoder-mask-tokens", encoder_mask_tokens=True),
    dict(BASE, name="mlp", arch="mlp"),
]
RUN_NAMES = [run["name"] for run in RUNS]

# Settings compared with a finished or interrupted run's own record before it is reused.
CHECKED_SETTINGS = ("arch", "mask_ratio", "loss_on", "norm_pix_loss", "encoder_mask_tokens", "epochs", "seed",
                    "per_class", "warmup_epochs")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Run the MAE paper's ablations in miniature (mask ratio, loss on removed vs all patches, "
                    "norm_pix_loss, encoder with or without mask tokens, MLP vs ViT) and write docs/results.md "
                    "with tables and plots. Resumable: finished runs are skipped, interrupted ones continued.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="photo folder (any layout train_catsdogs.py reads); get one with "
                        "'python examples/train_catsdogs.py --data data/catsdogs --download --epochs 1'")
    p.add_argument("--out", default=os.path.join("runs", "experiments"), help="one sub-folder per run goes here")
    p.add_argument("--docs", default="docs", help="results.md and its figures are written here")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs of every run (reduced from 50)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up of every run; None: a tenth of --epochs, as the training script's 5 of 50")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of every run (split, weights, batches, masks)")
    p.add_argument("--per-class", type=int, default=None, help="use only the first N images of each class")
    p.add_argument("--only", nargs="+", choices=RUN_NAMES, metavar="NAME",
                   help=f"train and probe only these runs ({', '.join(RUN_NAMES)}); the report still shows every "
                        "finished run in --out")
    p.add_argument("--probe-seeds", type=int, default=PROBE_SEEDS, help="linear-probe repetitions for mean +- std")
    p.add_argument("--train-args", default="",
                   help="extra flags for every train_catsdogs.py call, e.g. smaller models for a quick test")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.probe_seeds < 1:
        p.error("--probe-seeds must be at least 1")
    if args.warmup_epochs is None:
        args.warmup_epochs = args.epochs / 10
    return args


# ----------------------------------------------------------------------------------------------
# running one training

def train_command(run, args, resume):
    """The train_catsdogs.py command line of `run` (a list of arguments)."""
    cmd = [sys.executable, TRAIN_SCRIPT, "--data", args.data, "--out", os.path.join(args.out, run["name"]),
           "--arch", run["arch"], "--epochs", str(args.epochs), "--warmup-epochs", str(args.warmup_epochs),
           "--seed", str(args.seed), "--mask-ratio", str(run["mask_ratio"]), "--loss-on", run["loss_on"],
           "--no-progress"]
    if run["norm_pix_loss"]:
        cmd.append("--norm-pix-loss")
    if run["encoder_mask_tokens"]:
        cmd.append("--encoder-mask-tokens")
    if args.per_class is not None:
        cmd += ["--per-class", str(args.per_class)]
    cmd += arch_flags(shlex.split(args.train_args), run["arch"])
    if resume:
        cmd.append("--resume")
    return cmd


def arch_flags(flags, arch):
    """The flags of --train-args that apply to `arch`: model sizes of the other architecture are dropped."""
    other = {config.flag_name(f) for f in config.MODEL_CONFIGS["vit" if arch == "mlp" else "mlp"].__dataclass_fields__}
    other -= {config.flag_name(f) for f in config.MODEL_CONFIGS[arch].__dataclass_fields__}
    kept, i = [], 0
    while i < len(flags):
        if flags[i] in other:
            i += 2  # the flag and its value
        else:
            kept.append(flags[i])
            i += 1
    return kept


def recorded_settings(run_dir):
    """The settings a run was trained with (metrics.json, else the checkpoint's header), or None."""
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        return {**metrics["config"], **metrics["settings"]}
    checkpoint_path = os.path.join(run_dir, "checkpoint.npz")
    if os.path.exists(checkpoint_path):
        header, _ = read_checkpoint(checkpoint_path)
        return {**header["config"], **header["settings"]}
    return None


def check_reusable(run, args, run_dir):
    """Refuse to reuse a run folder trained with other settings: its numbers would be silently wrong."""
    saved = recorded_settings(run_dir)
    if saved is None:
        return
    wanted = {"arch": run["arch"], "mask_ratio": run["mask_ratio"], "loss_on": run["loss_on"],
              "norm_pix_loss": run["norm_pix_loss"], "encoder_mask_tokens": run["encoder_mask_tokens"],
              "epochs": args.epochs, "seed": args.seed, "per_class": args.per_class,
              "warmup_epochs": args.warmup_epochs}
    saved.setdefault("encoder_mask_tokens", False)  # the MLP has no such setting
    different = [f"{k} {saved.get(k)!r} (now {wanted[k]!r})" for k in CHECKED_SETTINGS if saved.get(k) != wanted[k]]
    if different:
        sys.exit(f"error: {run_dir} was trained with other settings: {', '.join(different)}. "
                 f"Delete that folder to train it again, or choose another --out.")


def train(run, args, log_path):
    """Run train_catsdogs.py for `run`, its output streamed through and saved to log_path. -> exit code."""
    run_dir = os.path.join(args.out, run["name"])
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
    cmd = train_command(run, args, resume)
    os.makedirs(run_dir, exist_ok=True)
    print(("resuming: " if resume else "") + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    with open(log_path, "a") as log:
        log.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            print("    " + line, end="", flush=True)
            log.write(line)
        return process.wait()


# ----------------------------------------------------------------------------------------------
# probing and figures of one finished run

def probe(run, args, with_baselines):
    """The run's linear-probe report, computed once and cached as probe.json in its folder."""
    run_dir = os.path.join(args.out, run["name"])
    probe_path = os.path.join(run_dir, "probe.json")
    if os.path.exists(probe_path):
        with open(probe_path) as f:
            report = json.load(f)
        has_baselines = any(r["encoder"] == "raw pixels" for r in report["results"])
        if len(report["seeds"]) == args.probe_seeds and (has_baselines or not with_baselines):
            return report  # otherwise probed with other settings: probe again
    t0 = time.perf_counter()
    report = run_probe(os.path.join(run_dir, "checkpoint.npz"), args.data, seeds=tuple(range(args.probe_seeds)),
                       per_class=args.per_class, progress=False, baselines=with_baselines)
    report["probe_time_s"] = time.perf_counter() - t0
    with open(probe_path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def validation_images(checkpoint_path, data, per_class):
    """The run's validation images exactly as train_catsdogs.py made them (same split, centre crop)."""
    model, header, _ = load_checkpoint(checkpoint_path)
    settings = header["settings"]
    dataset = load_dataset(data, size=header["data"]["load_size"], per_class=per_class, progress=False)
    _, val_idx = stratified_split(dataset.labels, settings["val_fraction"], seed=settings["seed"])
    return model, header, center_crop(dataset.images[val_idx], model.config.img_size)


def save_run_reconstructions(run, args, path, n_images=6):
    """Validation reconstructions in pixels (for norm_pix_loss: un-normalised with each patch's own mean and
    variance, as the official demo and tinymae.evaluate do)."""
    model, header, val_images = validation_images(os.path.join(args.out, run["name"], "checkpoint.npz"),
                                                  args.data, args.per_class)
    stats = header["data"]
    imgs_pix, mask, pred_pix = figure_batch(model, val_images, stats["mean"], stats["std"], header["settings"]["seed"],
                                            n_images)
    save_reconstructions(path, imgs_pix, mask, pred_pix, model.config.patch_size,
                         title=f"{run['name']}: {describe(run)}, epoch {header['epoch']}")


def time_steps(names, args, rounds=TIMING_ROUNDS):
    """Seconds per training step of each finished run's model, measured side by side, cached in --out.

    A run's own epoch times depend on whatever else the machine was doing while it trained, and the runs
    train one after another. Here the models take turns, one step each (forward, backward, AdamW on a batch
    of random images of the run's batch size), for `rounds` rounds after one warm-up round, so every model
    meets the same load; the median step is reported. Returns {name: {"batch", "step_s", "images_per_s"}}.
    """
    cache_path = os.path.join(args.out, "step_times.json")
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if cached["runs"] == names and cached["rounds"] == rounds:
            return cached["times"]
    models = {}
    for name in names:
        model, header, _ = load_checkpoint(os.path.join(args.out, name, "checkpoint.npz"))
        batch = min(header["settings"]["batch_size"], header["data"]["n_train"])
        # lr 0: the arithmetic of a real step, without changing the (throw-away) copy of the weights
        models[name] = (model, AdamW(model.params, lr=0.0, no_decay=model.no_decay), batch)
    rng = host_rng(args.seed)
    seconds = {name: [] for name in names}
    for round_index in range(rounds + 1):
        for name, (model, optimizer, batch) in models.items():
            cfg = model.config
            imgs = asarray(rng.standard_normal((batch, 3, cfg.img_size, cfg.img_size)), dtype="float32")
            noise = masking_noise(rng, batch, cfg.num_patches)  # (batch, L)
            t0 = time.perf_counter()
            loss, _, _, cache = model.forward(imgs, noise)
            optimizer.step(model.backward(1.0, cache))
            last_updated = list(model.params.values())[-1]
            to_numpy(last_updated[..., :1])  # a copy to the host waits until a GPU has finished the step
            if round_index > 0:  # round 0 warms up: first-call allocations
                seconds[name].append(time.perf_counter() - t0)
    result = {name: {"batch": models[name][2], "step_s": statistics.median(seconds[name]),
                     "images_per_s": models[name][2] / statistics.median(seconds[name])} for name in names}
    with open(cache_path, "w") as f:
        json.dump({"runs": names, "rounds": rounds, "times": result}, f, indent=2)
    return result


# ----------------------------------------------------------------------------------------------
# reading results back

def describe(run):
    """The settings of a run in words, for table rows and titles."""
    parts = ["ViT" if run["arch"] == "vit" else "MLP", f"mask {run['mask_ratio']:g}",
             "loss on removed" if run["loss_on"] == "masked" else "loss on all",
             "norm-pix target" if run["norm_pix_loss"] else "pixel target"]
    if run["arch"] == "vit":
        parts.append("encoder with [M]" if run["encoder_mask_tokens"] else "encoder visible-only")
    return ", ".join(parts)


def load_results(args):
    """{run name: {"run", "metrics", "probe"}} for every run with a metrics.json in --out."""
    results = {}
    for run in RUNS:
        run_dir = os.path.join(args.out, run["name"])
        metrics_path = os.path.join(run_dir, "metrics.json")
        if not os.path.exists(metrics_path):
            continue
        with open(metrics_path) as f:
            metrics = json.load(f)
        report = None
        if os.path.exists(os.path.join(run_dir, "probe.json")):
            with open(os.path.join(run_dir, "probe.json")) as f:
                report = json.load(f)
        results[run["name"]] = {"run": run, "metrics": metrics, "probe": report}
    return results


def probe_row(report, encoder, features):
    """One row of a probe report, or None."""
    if report is None:
        return None
    for row in report["results"]:
        if row["encoder"] == encoder and row["features"] == features:
            return row
    return None


def main_features(result):
    """The features a run is judged by: the cls token for the ViT (as the paper's linear probe), the
    averaged latent for the MLP (it has no tokens to pool)."""
    return "cls" if result["run"]["arch"] == "vit" else "latent"


def probe_accuracy(result, features=None):
    row = probe_row(result["probe"], "pre-trained", features or main_features(result))
    return None if row is None else row["linear_probe_mean"]


def median_epoch(result, key):
    return statistics.median(h[key] for h in result["metrics"]["history"])


# ----------------------------------------------------------------------------------------------
# the report

def pct(row, key="linear_probe_mean", std_key="linear_probe_std"):
    if row is None:
        return "—"
    if std_key is None:
        return f"{100 * row[key]:.1f}"
    return f"{100 * row[key]:.1f} ± {100 * row[std_key]:.1f}"


def table(results, names, varied_header, varied):
    """Markdown rows for the runs `names`: the varied setting, the full settings, seed, and every metric."""
    lines = [f"| run | {varied_header} | settings | seed | masked MSE | PSNR (dB) | × mean patch | "
             "linear probe, cls (MLP: latent) (%) | linear probe, mean-pooled (%) | k-NN (%) | s / epoch | "
             "train img/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        if name not in results:
            lines.append(f"| {name} | — | not run yet | | | | | | | | | |")
            continue
        result = results[name]
        run, metrics = result["run"], result["metrics"]
        final = metrics["final_validation"]
        features = main_features(result)
        main_row = probe_row(result["probe"], "pre-trained", features)
        mean_row = probe_row(result["probe"], "pre-trained", "mean")
        lines.append(
            f"| {name} | {varied(run)} | {describe(run)} | {metrics['settings']['seed']} | {final['masked_mse']:.5f} | "
            f"{final['masked_psnr']:.2f} | {final['ratio_to_mean_patch']:.3f} | {pct(main_row)} | {pct(mean_row)} | "
            f"{pct(main_row, 'knn20', None)} | {median_epoch(result, 'epoch_time_s'):.1f} | "
            f"{median_epoch(result, 'train_images_per_s'):.0f} |")
    return lines


def compare(results, a, b):
    """Linear-probe accuracy of run a minus run b, in points; None when either is missing."""
    if a not in results or b not in results:
        return None
    acc_a, acc_b = probe_accuracy(results[a]), probe_accuracy(results[b])
    if acc_a is None or acc_b is None:
        return None
    return 100 * (acc_a - acc_b)


def verdict(diff):
    """Does a measured difference (points) go the paper's way? Under 1 point we do not read it either way."""
    if round(abs(diff), 1) < 1.0:  # as printed, with one decimal
        return "under 1 point: no measurable difference at this scale"
    return "the paper's direction" if diff > 0 else "the opposite of the paper"


def times(x):
    return f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def noise_note(results):
    """How big a difference has to be before we read anything into it."""
    stds = [row["linear_probe_std"] for r in results.values() if r["probe"] for row in r["probe"]["results"]]
    spread = 100 * max(stds) if stds else 0.0
    return ("Each row is one pre-training run with one seed. The ± is the standard deviation over the probe's "
            f"seeds only (at most {spread:.1f} points here); the spread between pre-training seeds was not "
            "measured and is likely larger, so differences of a point or two are not evidence either way.")


def mask_ratio_section(results, docs):
    names = ["vit-mask0.25", "vit-mask0.5", "vit-base", "vit-mask0.9"]
    lines = ["## 1. Mask ratio (the paper's Figure 5)", "",
             "The paper (Sec. 4.1, Fig. 5) finds a high mask ratio best: 75% for both fine-tuning and linear "
             "probing, with linear-probe accuracy climbing steeply from low ratios (a ~20-point range) and "
             "dropping again towards 90%. Masked MSE is measured at each run's own ratio, so it also reflects "
             "how much of the image was visible: it is not a like-for-like quality measure across rows.", ""]
    lines += table(results, names, "mask ratio", lambda run: f"{run['mask_ratio']:g}")
    done = [n for n in names if n in results and probe_accuracy(results[n]) is not None]
    if done:
        ranked = sorted(done, key=lambda n: probe_accuracy(results[n]), reverse=True)
        accs = [100 * probe_accuracy(results[n]) for n in done]
        best = results[ranked[0]]["run"]["mask_ratio"]
        text = f"Measured: the best linear probe is at mask ratio {best:g} ({max(accs):.1f}%)"
        if len(ranked) > 1 and round(max(accs) - 100 * probe_accuracy(results[ranked[1]]), 1) < 1.0:
            runner_up = results[ranked[1]]
            text += (f", but {runner_up['run']['mask_ratio']:g} is within a point of it "
                     f"({100 * probe_accuracy(runner_up):.1f}%): no clear optimum at this scale")
        elif best == 0.75:
            text += ", as in the paper"
        else:
            text += ", so this miniature does not reproduce the paper's 75% optimum"
        text += (f". Across ratios the probe spans {min(accs):.1f}-{max(accs):.1f}% "
                 f"({max(accs) - min(accs):.1f} points; ~20 in the paper).")
        lines += ["", text]
    if os.path.exists(os.path.join(docs, "mask_ratio.png")):
        lines += ["", "![masked MSE and linear-probe accuracy against the mask ratio](mask_ratio.png)"]
    return lines


def loss_section(results):
    names = ["vit-base", "vit-loss-all"]
    lines = ["## 2. Loss on removed patches only vs on all patches (the paper's Sec. 3, footnote)", "",
             "The paper computes the loss on removed patches only and notes that the loss on all pixels costs "
             "about 0.5% accuracy. The masked MSE below is on removed patches for both rows.", ""]
    lines += table(results, names, "loss on",
                   lambda run: "removed patches" if run["loss_on"] == "masked" else "all patches")
    diff = compare(results, "vit-base", "vit-loss-all")
    if diff is not None:
        lines += ["", f"Measured: the loss on removed patches only gives {diff:+.1f} points of linear-probe accuracy "
                      f"over the loss on all patches ({verdict(diff)}; the paper's gap is ~0.5)."]
        mse_base = results["vit-base"]["metrics"]["final_validation"]["masked_mse"]
        mse_all = results["vit-loss-all"]["metrics"]["final_validation"]["masked_mse"]
        lines += [f"On removed patches the all-patch loss reconstructs {'worse' if mse_all > mse_base else 'better'} "
                  f"(masked MSE {mse_all:.5f} vs {mse_base:.5f}): part of its effort goes to copying visible patches."]
    return lines


def norm_pix_section(results, docs):
    names = ["vit-base", "vit-norm-pix"]
    lines = ["## 3. Normalised pixel targets, norm_pix_loss (the paper's Table 1d)", "",
             "The paper's Table 1d: predicting each patch's pixels normalised by that patch's mean and standard "
             "deviation gains +0.5 (fine-tuning) and +0.4 (linear probe) points over raw pixels. Reconstructions of "
             "the norm-pix model are shown un-normalised, with the true patch's mean and variance (as the official "
             "demo does): that hands the model each removed patch's average colour and contrast, so **its masked "
             "MSE is not comparable with the other rows**.", ""]
    lines += table(results, names, "target", lambda run: "normalised pixels" if run["norm_pix_loss"] else "pixels")
    diff = compare(results, "vit-norm-pix", "vit-base")
    if diff is not None:
        lines += ["", f"Measured: norm_pix_loss changes linear-probe accuracy by {diff:+.1f} points ({verdict(diff)}; "
                      "the paper's +0.4)."]
    for name in names:
        if os.path.exists(os.path.join(docs, f"recon_{name}.png")):
            lines += ["", f"![{name}: validation reconstructions](recon_{name}.png)"]
    return lines


def encoder_section(results, step_times):
    names = ["vit-base", "vit-encoder-mask-tokens"]
    lines = ["## 4. Encoder on visible tokens only vs encoder with mask tokens (Tables 1c and 2)", "",
             "The paper's encoder never sees a removed patch; the ablation feeds the encoder all patches, mask "
             "tokens in place of the removed ones. Table 1c: with [M] in the encoder the linear probe falls from "
             "73.5% to 59.6% (fine-tuning 84.9 to 84.2) at 3.3x the encoder FLOPs; Table 2: skipping the mask "
             "tokens makes training 2.8-4.1x faster (ViT-L and ViT-H on 128 TPU-v3 cores).", ""]
    lines += table(results, names, "encoder input", lambda run: "all 64 tokens, [M] for removed"
                   if run["encoder_mask_tokens"] else "16 visible tokens")
    if all(n in results for n in names):
        epoch_fast = median_epoch(results["vit-base"], "train_images_per_s")
        epoch_slow = median_epoch(results["vit-encoder-mask-tokens"], "train_images_per_s")
        lines += ["", f"Measured during the runs: {epoch_fast:.0f} against {epoch_slow:.0f} training images per "
                      f"second (median over epochs), {times(epoch_fast / epoch_slow)}; the two runs trained at "
                      "different times, so the load on the machine may differ between them."]
        if all(n in step_times for n in names):
            speedup = step_times["vit-encoder-mask-tokens"]["step_s"] / step_times["vit-base"]["step_s"]
            inside = 2.8 <= speedup <= 4.1
            lines += [f"Measured side by side (the two models taking turns, one training step each, median of "
                      f"{TIMING_ROUNDS}; table below): the visible-only encoder trains {times(speedup)} faster, "
                      + ("inside the paper's 2.8-4.1x." if inside else
                         "outside the paper's 2.8-4.1x (another machine, a far smaller model, and a decoder that "
                         "is a larger share of the cost here).")]
        diff = compare(results, "vit-base", "vit-encoder-mask-tokens")
        if diff is not None:
            lines += [f"Linear probe: visible-only is {diff:+.1f} points against the encoder with [M] "
                      f"({verdict(diff)}; the paper's +13.9)."]
    if step_times:
        base = step_times.get("vit-base")
        lines += ["", "Training speed of every run's model, measured side by side after the sweep (forward, backward "
                      "and AdamW on random images; the models take turns, one step each):", "",
                  "| run | settings | batch | step (ms) | img/s | time vs vit-base |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, t in step_times.items():
            relative = f"{t['step_s'] / base['step_s']:.2f}x" if base else "—"
            lines.append(f"| {name} | {describe(results[name]['run'])} | {t['batch']} | {1000 * t['step_s']:.0f} | "
                         f"{t['images_per_s']:.0f} | {relative} |")
    return lines


def mlp_section(results, step_times):
    names = ["vit-base", "mlp"]
    lines = ["## 5. MLP vs ViT at equal epochs", "",
             "Not a claim of the paper: the task's MLP MAE (it flattens the 16 visible tokens into one vector) "
             "against the paper's ViT, same data, epochs, seed and recipe. The MLP has no cls token: its probe "
             "features are its latent, averaged over four complementary masks (tinymae/probe.py).", ""]
    lines += table(results, names, "architecture", lambda run: "ViT" if run["arch"] == "vit" else "MLP")
    if all(n in results for n in names):
        vit, mlp = results["vit-base"], results["mlp"]
        if all(n in step_times for n in names):  # side by side, see section 4
            speed = step_times["vit-base"]["step_s"] / step_times["mlp"]["step_s"]
        else:
            speed = median_epoch(mlp, "train_images_per_s") / median_epoch(vit, "train_images_per_s")
        lines += ["", f"Measured: masked MSE {vit['metrics']['final_validation']['masked_mse']:.5f} (ViT) against "
                      f"{mlp['metrics']['final_validation']['masked_mse']:.5f} (MLP); the MLP trains "
                      f"{times(speed)} as many images per second, with {mlp['metrics']['n_params']:,} parameters "
                      f"against the ViT's {vit['metrics']['n_params']:,}."]
        diff = compare(results, "vit-base", "mlp")
        if diff is not None:
            lines += [f"Linear probe: the ViT is {diff:+.1f} points against the MLP."]
    return lines


def baselines_section(results):
    lines = ["## Reference points", "",
             "The same probe on raw pixels and on a randomly initialised encoder of vit-base's shape: what the "
             "features are worth without pre-training.", ""]
    if "vit-base" not in results:
        return lines + ["vit-base has not been run yet."]
    base = results["vit-base"]
    lines += ["| features | linear probe (%) | k-NN (%) |", "| --- | --- | --- |"]
    for encoder, features in (("raw pixels", "pixels"), ("random init", "cls"), ("random init", "mean"),
                              ("pre-trained", "cls"), ("pre-trained", "mean")):
        row = probe_row(base["probe"], encoder, features)
        if row is not None:
            label = "raw pixels" if encoder == "raw pixels" else f"{encoder} ViT, {features}"
            lines.append(f"| {label} | {pct(row)} | {pct(row, 'knn20', None)} |")
    lines += ["", "Guesses for vit-base's removed validation patches that need no network (tinymae/metrics.py); "
                  "a trained model should beat all three.", "",
              "| reconstruction baseline | masked MSE | PSNR (dB) |", "| --- | --- | --- |"]
    for name, values in base["metrics"]["final_validation"]["baselines"].items():
        lines.append(f"| {name.replace('_', ' ')} | {values['masked_mse']:.5f} | {values['masked_psnr']:.2f} |")
    lines.append(f"| vit-base itself | {base['metrics']['final_validation']['masked_mse']:.5f} | "
                 f"{base['metrics']['final_validation']['masked_psnr']:.2f} |")
    trained, random_init = (probe_row(base["probe"], encoder, "cls") for encoder in ("pre-trained", "random init"))
    pixels = probe_row(base["probe"], "raw pixels", "pixels")
    if trained and random_init and pixels:
        gain = 100 * (trained["linear_probe_mean"] - random_init["linear_probe_mean"])
        over_pixels = 100 * (trained["linear_probe_mean"] - pixels["linear_probe_mean"])
        lines += ["", f"Measured: pre-training moves vit-base's cls-token probe by {gain:+.1f} points against the "
                      f"same ViT at random initialisation and by {over_pixels:+.1f} against raw pixels"
                      + (" (under a point either way: no measurable gain from pre-training at this scale)."
                         if max(round(abs(gain), 1), round(abs(over_pixels), 1)) < 1.0 else ".")]
    return lines


def runs_section(results, args):
    lines = ["## The runs", "",
             "Each run is one call of the training script (the exact call is the first line of its train.log); "
             "times are wall-clock on this machine, including the per-epoch validation.", "",
             "| run | settings | seed | epochs | parameters | training (min) | probe (min) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        metrics = result["metrics"]
        probe_time = result["probe"].get("probe_time_s") if result["probe"] else None
        lines.append(f"| {name} | {describe(result['run'])} | {metrics['settings']['seed']} | "
                     f"{metrics['settings']['epochs']} | {metrics['n_params']:,} | {metrics['wall_time_s'] / 60:.1f} | "
                     f"{'—' if probe_time is None else f'{probe_time / 60:.1f}'} |")
    return lines


def write_report(args, results, step_times, command, sweep_time, load_at_start):
    """docs/results.md from the run folders' files."""
    any_result = next(iter(results.values()), None)
    data_info = any_result["metrics"]["data"] if any_result else {}
    settings = any_result["metrics"]["settings"] if any_result else {}
    lines = ["# Results: the MAE paper's ablations in miniature", "",
             "<!-- Generated by examples/experiments.py from the run folders; do not edit by hand, rerun it. -->", "",
             f"Generated by `{command}` on {datetime.date.today().isoformat()}.", "",
             f"- Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores; Python "
             f"{platform.python_version()}, NumPy {np.__version__}; tinymae backend `{backend.name}`.",
             f"- Data: `{args.data}`, {data_info.get('n_train', '?')} training / {data_info.get('n_val', '?')} "
             f"validation images (48 x 48 crops, 6 x 6 patches, 64 per image).",
             f"- Every run: {args.epochs} epoch{'s' if args.epochs != 1 else ''} (the paper: 800-1600), linear "
             f"warm-up {args.warmup_epochs:g} epochs, "
             f"batch {settings.get('batch_size', '?')}, AdamW lr {settings.get('lr', '?')}, weight decay "
             f"{settings.get('weight_decay', '?')}, seed {args.seed}; ViT: {settings.get('depth', '?')} encoder blocks "
             f"of width {settings.get('embed_dim') or 128}, {settings.get('decoder_depth', '?')} decoder blocks "
             f"of width "
             f"{settings.get('decoder_embed_dim', '?')}." + (f" Extra training flags: `{args.train_args}`."
                                                              if args.train_args else ""),
             f"- Linear probe: L2 logistic regression on frozen features, {args.probe_seeds} seeds (mean ± std), "
             "and cosine k-NN with k = 20, on the same validation split (tinymae/probe.py).",
             f"- Masked MSE: validation images, removed patches only, [0, 1] pixel units, fixed masks (seed "
             f"{args.seed}); × mean patch is its ratio to the training set's average patch at each position.",
             f"- This invocation took {sweep_time / 60:.1f} min (runs already finished were not redone); the "
             f"1-minute load average was {load_at_start:.1f} when it started (other work slows every timing).", "",
             noise_note(results), ""]
    lines += mask_ratio_section(results, args.docs) + [""]
    lines += loss_section(results) + [""]
    lines += norm_pix_section(results, args.docs) + [""]
    lines += encoder_section(results, step_times) + [""]
    lines += mlp_section(results, step_times) + [""]
    lines += baselines_section(results) + [""]
    if os.path.exists(os.path.join(args.docs, "curves.png")):
        lines += ["## Training curves", "", "![validation masked MSE per epoch for every run](curves.png)", ""]
    lines += runs_section(results, args) + [""]
    with open(os.path.join(args.docs, "results.md"), "w") as f:
        f.write("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# the plots

def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    return plt


def plot_mask_ratio(results, path):
    """Figure 5 in miniature: masked MSE and linear-probe accuracy against the mask ratio."""
    names = [n for n in ("vit-mask0.25", "vit-mask0.5", "vit-base", "vit-mask0.9") if n in results]
    if not names:
        return
    plt = pyplot()
    ratios = [results[n]["run"]["mask_ratio"] for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(ratios, [results[n]["metrics"]["final_validation"]["masked_mse"] for n in names], "o-", label="ViT MAE")
    baselines = [results[n]["metrics"]["final_validation"]["baselines"]["mean_patch"]["masked_mse"] for n in names]
    ax1.plot(ratios, baselines, "--", color="gray", label="mean-patch baseline")
    ax1.set_xlabel("mask ratio")
    ax1.set_ylabel("validation masked MSE")
    ax1.set_title("reconstruction of removed patches", fontsize=9)
    ax1.legend(fontsize=8)
    for features, label in (("cls", "cls token"), ("mean", "mean-pooled tokens")):
        rows = [probe_row(results[n]["probe"], "pre-trained", features) for n in names]
        points = [(r, row) for r, row in zip(ratios, rows) if row is not None]
        if points:
            ax2.errorbar([r for r, _ in points], [100 * row["linear_probe_mean"] for _, row in points],
                         yerr=[100 * row["linear_probe_std"] for _, row in points], marker="o", capsize=3, label=label)
    pixels = probe_row(results["vit-base"]["probe"], "raw pixels", "pixels") if "vit-base" in results else None
    if pixels is not None:
        ax2.axhline(100 * pixels["linear_probe_mean"], color="gray", linestyle="--", label="raw pixels")
    ax2.set_xlabel("mask ratio")
    ax2.set_ylabel("linear probe accuracy (%)")
    ax2.set_title("cat vs dog, frozen encoder", fontsize=9)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(ratios)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(results, path):
    """Validation masked MSE per epoch, one line per run."""
    if not results:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, result in results.items():
        history = result["metrics"]["history"]
        ax.plot([h["epoch"] for h in history], [h["val_masked_mse"] for h in history], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation masked MSE")
    ax.set_title("(norm-pix: un-normalised with the true patch statistics, not comparable)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------

def elapsed(t0):
    seconds = int(time.perf_counter() - t0)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def main(argv=None):
    args = parse_args(argv)
    command = "python examples/experiments.py" + "".join(" " + shlex.quote(a) for a in
                                                         (sys.argv[1:] if argv is None else argv))
    if not os.path.isdir(args.data):
        sys.exit(f"error: no photo folder at {args.data}. Pass --data with your Cats & Dogs folder, or download it "
                 "first: python examples/train_catsdogs.py --data data/catsdogs --download --epochs 1")
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.docs, exist_ok=True)
    todo = [run for run in RUNS if args.only is None or run["name"] in args.only]
    t0 = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    failed = []
    print(f"{len(todo)} runs of {args.epochs} epochs in {args.out}; report in {os.path.join(args.docs, 'results.md')}")

    try:
        for i, run in enumerate(todo, start=1):
            run_dir = os.path.join(args.out, run["name"])
            print(f"\n[run {i}/{len(todo)}] {run['name']}: {describe(run)}  (elapsed {elapsed(t0)})", flush=True)
            check_reusable(run, args, run_dir)
            if os.path.exists(os.path.join(run_dir, "metrics.json")):
                print("    finished earlier: skipping the training")
            else:
                code = train(run, args, os.path.join(run_dir, "train.log"))
                if code != 0:
                    print(f"    training failed (exit code {code}); see {os.path.join(run_dir, 'train.log')}")
                    failed.append(run["name"])
                    continue
            print(f"    probing the frozen encoder (elapsed {elapsed(t0)})", flush=True)
            report = probe(run, args, with_baselines=run["name"] == "vit-base")
            for row in report["results"]:
                print(f"    {row['encoder']:<12} {row['features']:<7} linear probe "
                      f"{100 * row['linear_probe_mean']:.1f} ± {100 * row['linear_probe_std']:.1f} %, "
                      f"k-NN {100 * row['knn20']:.1f} %")
            if run["name"] in ("vit-base", "vit-norm-pix"):
                save_run_reconstructions(run, args, os.path.join(args.docs, f"recon_{run['name']}.png"))
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted after {elapsed(t0)}. Finished runs are kept; start the same command again to "
                 "continue from where it stopped.")

    print(f"\nwriting the report (elapsed {elapsed(t0)})")
    results = load_results(args)
    print(f"timing every model side by side (elapsed {elapsed(t0)})", flush=True)
    step_times = time_steps(list(results), args)
    plot_mask_ratio(results, os.path.join(args.docs, "mask_ratio.png"))
    plot_curves(results, os.path.join(args.docs, "curves.png"))
    write_report(args, results, step_times, command, time.perf_counter() - t0, load_at_start)
    print(f"done in {elapsed(t0)}: {len(results)} of {len(RUNS)} runs in the report "
          f"{os.path.join(args.docs, 'results.md')}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
