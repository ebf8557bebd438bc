"""The MAE paper's protocols and ablations on 48-pixel Cats & Dogs, at the full 50 epochs: docs/results.md.

    python examples/experiments.py                     # everything: both parts below (resumable)
    python examples/experiments.py --part ablations    # the ablation sweep with its probes
    python examples/experiments.py --part finetune     # the fine-tuning table

Run it from the repository root (the default --data, --out and --docs are relative to it). Every run
trains in its own folder under --out; a finished run is read back, an interrupted pre-training resumes,
so the command can be stopped at any point and started again. docs/results.md is then written from
those folders alone: every number in it comes from a file this command wrote.

He et al. (2022) measure MAE by fine-tuning (their headline numbers) and by linear probing, and study its
design on ImageNet with ViT-L. This asks the same questions of the default ViT MAE here (tinymae.config's
recipe, 50 epochs of pre-training):

  fine-tuning      MAE-initialised against from-scratch training of the same network, with every label,
                   200 and 50 labelled images per class, 3 seeds each (every label: 1) (tinymae.finetune, the official
                   main_finetune.py recipe, 50 epochs); the pre-trained side starts from the base run of
                   the same seed. Also from the norm_pix_loss pre-training, which the official scripts use.
  ablations        mask ratio 0.25 / 0.5 / 0.75 / 0.9 (Figure 5), loss on removed vs all patches (Sec. 3),
                   norm_pix_loss (Table 1d), an encoder that also processes mask tokens (Tables 1c and 2),
                   and the MLP MAE against the ViT; each encoder probed (tinymae.probe) and fine-tuned with
                   50 labels per class. The base run is pre-trained with 3 seeds: its spread is what every
                   difference is read against.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time

from sweep import DEFAULT_DATA, finetune_variant, pretrain_variant, probe_row, probe_variant

import numpy as np  # noqa: E402 (after sweep, which puts the repository on sys.path)

from tinymae import backend  # noqa: E402
from tinymae.backend import asarray, host_rng, to_numpy  # noqa: E402
from tinymae.checkpoint import load_checkpoint  # noqa: E402
from tinymae.config import FinetuneConfig, PretrainConfig  # noqa: E402
from tinymae.evaluate import figure_batch  # noqa: E402
from tinymae.figures import save_reconstructions  # noqa: E402
from tinymae.finetune import default_out  # noqa: E402
from tinymae.masking import masking_noise  # noqa: E402
from tinymae.optim import AdamW  # noqa: E402
from tinymae.parallel import DataParallel  # noqa: E402
from tinymae.pretrain import PretrainData  # noqa: E402

SEEDS = (0, 1, 2)
EPOCHS = 50
PROBE_SEEDS = 3
TIMING_ROUNDS = 5  # training steps per model, taking turns, for the side-by-side speed measurement

# ---- pre-training: each variant is the default ViT MAE with the settings shown (flag names) --------------
BASE = {"arch": "vit"}
ABLATIONS = {
    "mask0.25": dict(BASE, mask_ratio=0.25),
    "mask0.5": dict(BASE, mask_ratio=0.5),
    "mask0.9": dict(BASE, mask_ratio=0.9),
    "loss-all": dict(BASE, loss_on="all"),
    "norm-pix": dict(BASE, norm_pix_loss=True),
    "encoder-mask-tokens": dict(BASE, encoder_mask_tokens=True),
    "mlp": {"arch": "mlp"},
}
PRETRAIN = {**{f"base-seed{s}": dict(BASE, seed=s) for s in SEEDS}, **ABLATIONS}

# ---- fine-tuning: labelled images per class (None: every label) ----------------------------------------------
LABELS = (50, 200, None)
FINETUNE = {"eval_every": 25}  # the accuracies at the middle and the end: the end is the result


def seeds_for(labels):
    """Fine-tuning seeds per row: with every label a run is 20 times the images of the 200-label one (4,000
    photos against 400, at the same epochs), so that row is fine-tuned once, from seed 0."""
    return SEEDS[:1] if labels is None else SEEDS


def batch_for(labels):
    """The fine-tuning batch: the recipe's 128 with every label; with 50 labels per class a batch of 128 would
    be one step per epoch, so smaller batches give few labels the optimiser steps that the warm-up and the
    cosine need. The same for both initialisations."""
    return 128 if labels is None else 64 if labels >= 200 else 32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="the photo folder (any layout tinymae reads)")
    p.add_argument("--out", default=os.path.join("runs", "experiments"), help="one sub-folder per run")
    p.add_argument("--docs", default="docs", help="results.md and its figures are written here")
    p.add_argument("--part", choices=("all", "ablations", "finetune"), default="all", help="what to run")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every pre-training and fine-tuning")
    p.add_argument("--per-class", type=int, default=None, help="only the first N photos of each class (a quick try)")
    p.add_argument("--probe-seeds", type=int, default=PROBE_SEEDS, help="linear-probe repetitions (mean ± std)")
    p.add_argument("--labels", nargs="+", default=["50", "200", "all"],
                   help="labelled images per class of the fine-tuning table ('all': every label)")
    p.add_argument("--model", default="", help="extra model flags for every run, e.g. smaller models for a test")
    args = p.parse_args(argv)
    args.labels = [None if n == "all" else int(n) for n in args.labels]
    return args


def model_flags(args, arch):
    """--model's flags that apply to `arch`, as settings: e.g. '--embed-dim 16 --depth 1' -> {embed_dim: 16, ...}."""
    from tinymae.config import MODEL_CONFIGS
    words = shlex.split(args.model)
    fields = MODEL_CONFIGS[arch].__dataclass_fields__
    settings = {}
    for flag, value in zip(words[::2], words[1::2]):
        name = flag.lstrip("-").replace("-", "_")
        if name in fields:
            kind = fields[name].type
            settings[name] = tuple(int(w) for w in value.split(",")) if kind is tuple else kind(value)
        elif name in PretrainConfig.__dataclass_fields__:
            settings[name] = PretrainConfig.__dataclass_fields__[name].type(value)
    return settings


def pretrain_settings(name, args):
    settings = {"epochs": args.epochs, "per_class": args.per_class, **PRETRAIN[name]}
    return {**settings, **model_flags(args, settings["arch"])}


# ----------------------------------------------------------------------------------------------
# running

def elapsed(t0):
    seconds = int(time.perf_counter() - t0)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def run_pretraining(names, args, t0, verbose=True):
    """-> {name: {"metrics", "probe", "dir"}}: each pre-training variant trained (or read back) and probed."""
    results = {}
    for i, name in enumerate(names, start=1):
        run_dir = os.path.join(args.out, name)
        if verbose:
            print(f"\n[pre-training {i}/{len(names)}] {name}: {pretrain_settings(name, args)}  ({elapsed(t0)})",
                  flush=True)
        metrics, trained = pretrain_variant(run_dir, args.data, pretrain_settings(name, args))
        if not trained and verbose:
            print("    finished earlier: read back")
        report = probe_variant(run_dir, args.data, seeds=args.probe_seeds, baselines=name == "base-seed0",
                               per_class=args.per_class)
        results[name] = {"metrics": metrics, "probe": report, "dir": run_dir, "trained": trained}
    return results


def finetune_settings(args, scratch, labels, seed):
    return {**FINETUNE, "epochs": args.epochs, "from_scratch": scratch, "labels_per_class": labels,
            "batch_size": batch_for(labels), "seed": seed}


def finished_finetunes(jobs, args):
    """{job: result} of the fine-tuning jobs that finished, in this invocation or before."""
    done = {}
    for name, scratch, labels, seed in jobs:
        cfg = FinetuneConfig(**finetune_settings(args, scratch, labels, seed),
                             checkpoint=os.path.join(args.out, name, "checkpoint.npz"), data=args.data)
        path = os.path.join(default_out(cfg), "result.json")
        if os.path.exists(path):
            with open(path) as f:
                done[(name, scratch, labels, seed)] = json.load(f)
    return done


def run_finetuning(jobs, args, t0):
    """jobs: [(pre-training name, from_scratch, labels per class, seed)] -> {job: (result dict, whether it
    trained now)}."""
    results = {}
    for i, (name, scratch, labels, seed) in enumerate(jobs, start=1):
        settings = finetune_settings(args, scratch, labels, seed)
        what = f"{'scratch' if scratch else name}, {labels or 'all'} labels per class, seed {seed}"
        print(f"\n[fine-tuning {i}/{len(jobs)}] {what}  ({elapsed(t0)})", flush=True)
        result, ran = finetune_variant(os.path.join(args.out, name, "checkpoint.npz"), args.data, settings)
        print(f"    {'' if ran else 'finished earlier: '}validation accuracy {100 * result['val_accuracy']:.1f}%")
        results[(name, scratch, labels, seed)] = result, ran
    return results


def timings(args):
    """{part: {"seconds", "date"}} of the parts that ran in full (record_time)."""
    path = os.path.join(args.out, "timings.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def record_time(args, seconds):
    """Remember how long this part took (<out>/timings.json), for the page. Called only when every run of
    the part trained in this invocation: one that read finished runs back did not measure the part."""
    recorded = {**timings(args), args.part: {"seconds": seconds, "date": datetime.date.today().isoformat()}}
    with open(os.path.join(args.out, "timings.json"), "w") as f:
        json.dump(recorded, f, indent=2)


def time_steps(results, args):
    """Seconds per training step of each pre-trained model, measured side by side (cached in --out).

    A run's own epoch times depend on whatever else the machine was doing when it trained. Here the
    models take turns, one step each (forward, backward and AdamW on random images of the run's batch
    size, on every core as in training), for TIMING_ROUNDS rounds after one warm-up round, so every model
    meets the same load; the median step is reported."""
    names = list(results)
    cache_path = os.path.join(args.out, "step_times.json")
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cached = json.load(f)
        if cached["runs"] == names and cached["rounds"] == TIMING_ROUNDS:
            return cached["times"]
    models = {}
    for name in names:
        model, header, _ = load_checkpoint(os.path.join(results[name]["dir"], "checkpoint.npz"))
        batch = header["settings"]["batch_size"]
        # lr 0: the arithmetic of a real step, without changing the (throw-away) copy of the weights
        models[name] = (model, AdamW(model.params, lr=0.0, no_decay=model.no_decay), DataParallel(model), batch)
    rng = host_rng(0)
    seconds = {name: [] for name in names}
    for round_index in range(TIMING_ROUNDS + 1):
        for name, (model, optimizer, runner, batch) in models.items():
            cfg = model.config
            imgs = asarray(rng.standard_normal((batch, 3, cfg.img_size, cfg.img_size)), dtype="float32")
            noise = masking_noise(rng, batch, cfg.num_patches)  # (batch, L)
            t0 = time.perf_counter()
            loss, grads = runner.loss_and_grads(imgs, noise)
            runner.optimizer_step(optimizer, grads)
            to_numpy(loss)  # a copy to the host waits until a GPU has finished the step
            if round_index > 0:  # round 0 warms up: first-call allocations
                seconds[name].append(time.perf_counter() - t0)
    for _, _, runner, _ in models.values():
        runner.close()
    times = {name: {"batch": models[name][3], "step_s": statistics.median(seconds[name]),
                    "images_per_s": models[name][3] / statistics.median(seconds[name])} for name in names}
    with open(cache_path, "w") as f:
        json.dump({"runs": names, "rounds": TIMING_ROUNDS, "times": times}, f, indent=2)
    return times


# ----------------------------------------------------------------------------------------------
# reading the numbers

def pct(values):
    """'mean ± std' in percent over a list of fractions (std over the list: seeds), or one value."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def probe_acc(result, features=None):
    features = features or ("mean" if result["metrics"]["arch"] == "vit" else "latent")
    row = probe_row(result["probe"], "pre-trained", features)
    return None if row is None else row["linear_probe_mean"]


def ratio(result):
    return result["metrics"]["final_validation"]["ratio_to_mean_patch"]


def seconds_per_epoch(result):
    return statistics.median(h["epoch_time_s"] for h in result["metrics"]["history"])


def spread(values):
    """Half the range of a few seeds' numbers: a difference smaller than this is not read either way."""
    values = [v for v in values if v is not None]
    return (max(values) - min(values)) / 2 if len(values) > 1 else None


def describe(settings):
    parts = ["ViT" if settings.get("arch") == "vit" else "MLP", f"mask {settings.get('mask_ratio', 0.75):g}",
             "loss on all" if settings.get("loss_on") == "all" else "loss on removed",
             "norm-pix target" if settings.get("norm_pix_loss") else "pixel target"]
    if settings.get("encoder_mask_tokens"):
        parts.append("encoder with [M]")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# the page

def finetune_section(ft, results):
    lines = ["## 1. Fine-tuning: MAE pre-training against training from scratch", "",
             "The paper's main protocol: fine-tune the whole pre-trained encoder on labelled images "
             "(tinymae.finetune: global pooling, a fresh LayerNorm and head, label smoothing 0.1, AdamW with "
             "layer-wise learning-rate decay 0.75, 50 epochs), against the same network trained from random "
             "initialisation with the same recipe. The labelled images are drawn from the pre-training run's "
             "training split; accuracy is always on its validation split. Mean ± std over seeds 0, 1, 2 (the "
             "MAE side fine-tunes the pre-training run of the same seed); the every-label row, 20 times the "
             "images of the 200-label one, from seed 0 alone.", "",
             "| labelled images per class | batch | MAE-initialised (%) | from scratch (%) | MAE − scratch (points) | "
             "norm-pix MAE, seed 0 (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    findings, noises = [], []  # noises: the seed stds of the rows with several seeds, for the one-seed row
    for labels in sorted({job[2] for job in ft}, key=lambda n: float("inf") if n is None else n):
        batch = batch_for(labels)
        mae = [ft.get((f"base-seed{s}", False, labels, s), {}).get("val_accuracy") for s in seeds_for(labels)]
        scratch = [ft.get((f"base-seed{s}", True, labels, s), {}).get("val_accuracy") for s in seeds_for(labels)]
        norm_pix = ft.get(("norm-pix", False, labels, 0), {}).get("val_accuracy")
        diff = "—"
        if all(v is not None for v in mae + scratch):
            gain = 100 * (np.mean(mae) - np.mean(scratch))
            diff = f"{gain:+.1f}"
            if len(mae) > 1:
                noise = 100 * max(np.std(mae), np.std(scratch))
                noises.append(noise)
                spread_note = f"seed std up to {noise:.1f}"
            else:  # one seed: read against the spread the other rows measured
                noise = max(noises) if noises else None
                spread_note = "one seed" + (f"; the other rows' seed std is up to {noise:.1f}" if noise else "")
            verdict = ("no seed spread to read it against" if noise is None else "MAE pre-training helps"
                       if gain > 2 * noise else "MAE pre-training hurts" if gain < -2 * noise else
                       "no difference beyond the seed spread")
            what = "every label" if labels is None else f"{labels} label{'s' if labels != 1 else ''} per class"
            findings.append(f"- {what}: {gain:+.1f} points ({spread_note}): {verdict}.")
        lines.append(f"| {labels or 'all'} | {batch} | {pct(mae)} | {pct(scratch)} | {diff} | {pct([norm_pix])} |")
    lines += ["", "What it shows (a difference counts when it is more than twice the larger seed std):", ""] + findings
    lines += ["", "The paper (Sec. 4, Table 3) fine-tunes ViT-B/L/H for 50-100 epochs after 800-1600 epochs of "
                  "pre-training on 1.28 million images and finds MAE far ahead of training from scratch (ViT-L: "
                  "85.9% against 82.5%), most of all for large models and few labels. Here the pre-training saw "
                  "4,000 photos for 50 epochs, and the network has 0.8 M parameters."]
    return lines


def probe_section(results):
    lines = ["## 2. Linear probe: what the frozen encoder separates", "",
             "L2 logistic regression on frozen features (tinymae.probe), cat against dog, the 1,000 validation "
             "images; for the base run, mean ± std over its 3 pre-training seeds (each probed with "
             f"{PROBE_SEEDS} probe seeds). k-NN: cosine similarity, k = 20.", "",
             "| encoder | features | linear probe (%) | k-NN (%) |", "| --- | --- | --- | --- |"]
    bases = [results[f"base-seed{s}"] for s in SEEDS if f"base-seed{s}" in results]
    for features in ("mean", "cls"):
        accs = [probe_acc(r, features) for r in bases]
        knns = [probe_row(r["probe"], "pre-trained", features)["knn20"] for r in bases
                if probe_row(r["probe"], "pre-trained", features)]
        lines.append(f"| ViT MAE, 50 epochs | {features} | {pct(accs)} | {pct(knns)} |")
    if bases:
        for encoder, features in (("random init", "mean"), ("random init", "cls"), ("raw pixels", "pixels")):
            row = probe_row(bases[0]["probe"], encoder, features)
            if row:
                lines.append(f"| {encoder} | {features} | {pct([row['linear_probe_mean']])} | {pct([row['knn20']])} |")
    return lines


def ablation_rows(results, ft, names, few):
    rows = []
    for name in names:
        if name not in results:
            rows.append(f"| {name} | not run yet | | | | | |")
            continue
        r = results[name]
        settings = {**r["metrics"]["config"], **r["metrics"]["settings"]}
        seed = settings["seed"]
        acc = ft.get((name, False, few, seed), {}).get("val_accuracy")
        rows.append(f"| {name} | {describe(settings)} | {ratio(r):.3f} | {pct([probe_acc(r)])} | {pct([acc])} | "
                    f"{seconds_per_epoch(r):.1f} | {r['metrics']['n_params']:,} |")
    return rows


def ablations_section(results, ft, step_times, few):
    bases = [f"base-seed{s}" for s in SEEDS if f"base-seed{s}" in results]  # (the heading reads their epochs)
    lines = [f"## 3. The ablations at {results[bases[0]]['metrics']['settings']['epochs'] if bases else '?'} epochs", "",
             "Each row is one pre-training run (seed 0) of the default ViT MAE with one setting changed; the "
             "base run is repeated with seeds 0, 1, 2, and half its range is the spread a difference has to "
             "beat. *× mean patch*: validation masked-patch MSE over the mean-patch baseline (each run at its own "
             "mask ratio; for norm-pix the reconstruction is un-normalised with the true patch's mean and "
             "variance, so it is not comparable). *Probe*: linear probe on the mean patch token (MLP: its "
             f"latent). *Fine-tune @{few}*: validation accuracy after fine-tuning with {few} labels per class.", "",
             f"| run | settings | × mean patch | probe (%) | fine-tune @{few} (%) | s / epoch | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += ablation_rows(results, ft, bases + list(ABLATIONS), few)
    if not bases:
        return lines
    base_probe = [probe_acc(results[b]) for b in bases]
    base_ft = [ft.get((b, False, few, s), {}).get("val_accuracy") for b, s in zip(bases, SEEDS)]
    probe_spread, ft_spread = spread(base_probe), spread(base_ft)
    lines += ["", f"Base run over seeds {', '.join(map(str, SEEDS[:len(bases)]))}: probe {pct(base_probe)}, "
                  f"fine-tune @{few} {pct(base_ft)}, × mean patch "
                  f"{np.mean([ratio(results[b]) for b in bases]):.3f} ± {np.std([ratio(results[b]) for b in bases]):.3f}.",
              "", "Against the paper, one finding at a time (probe and fine-tune differences to the base run's mean, "
                  "in points; *within the spread* when smaller than half the base run's range over seeds):", ""]

    def diff(values, base_values, noise, expected):
        """'+2.3 (as the paper)': the difference to the base run in points, read against the seed spread and
        the direction the paper found (expected: +1 the variant is better, -1 worse, None no claim)."""
        if any(v is None for v in values) or not base_values or None in base_values:
            return None, None
        d = 100 * (np.mean(values) - np.mean(base_values))
        if noise is None or expected is None:
            return f"{d:+.1f}", None
        if abs(d) <= 100 * noise:
            return f"{d:+.1f} (within the spread)", "within"
        agrees = (d > 0) == (expected > 0)
        return f"{d:+.1f} ({'as the paper' if agrees else 'the opposite of the paper'})", agrees

    # (run, the paper's finding, the sign of variant - base the paper found: -1 the variant is worse)
    claims = [
        ("mask0.25", "Figure 5: a mask ratio of 75% beats 25% by a wide margin (~10 points of linear probing)", -1),
        ("mask0.5", "Figure 5: 75% beats 50% (a few points)", -1),
        ("mask0.9", "Figure 5: 90% is a little worse than 75%", -1),
        ("loss-all", "Sec. 3: the loss on all patches is ~0.5% worse than on removed patches", -1),
        ("norm-pix", "Table 1d: normalised pixel targets are +0.4 (probe) to +0.5 (fine-tune) points better", +1),
        ("encoder-mask-tokens", "Table 1c: [M] in the encoder costs 13.9 probe points and 0.7 fine-tuning points", -1),
        ("mlp", "(not the paper's) an MLP MAE against the ViT; the MLP is not fine-tuned: its encoder takes "
                "exactly 16 of the 64 patches, so it cannot see a whole image", None),
    ]
    for name, claim, expected in claims:
        if name not in results:
            continue
        seed = results[name]["metrics"]["settings"]["seed"]
        p, p_agrees = diff([probe_acc(results[name])], base_probe, probe_spread, expected)
        f, f_agrees = diff([ft.get((name, False, few, seed), {}).get("val_accuracy")], base_ft, ft_spread, expected)
        readings = {v for v in (p_agrees, f_agrees) if v is not None}
        verdict = ("" if not readings else
                   " **Reproduced.**" if readings <= {True, "within"} and True in readings else
                   " **Not reproduced: the opposite.**" if readings <= {False, "within"} and False in readings else
                   " **Mixed: one measure each way.**" if {True, False} <= readings else
                   " **Not resolved at this scale** (both within the seed spread).")
        lines.append(f"- {claim}. Measured, {name} against the base run: probe {p or '—'}, "
                     f"fine-tune @{few} {f or '—'}.{verdict}")
    if step_times and "base-seed0" in step_times and "encoder-mask-tokens" in step_times:
        speedup = step_times["encoder-mask-tokens"]["step_s"] / step_times["base-seed0"]["step_s"]
        lines += ["", f"Speed (Table 2: skipping the mask tokens trains 2.8-4.1x faster): measured side by side "
                      f"here, the visible-only encoder's training step is {speedup:.1f}x faster "
                      f"({1000 * step_times['base-seed0']['step_s']:.0f} against "
                      f"{1000 * step_times['encoder-mask-tokens']['step_s']:.0f} ms per batch)."]
    return lines


def runs_section(results, args):
    lines = ["## The runs", "",
             "| run | settings | seed | batch | epochs | training (min) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        s = {**r["metrics"]["config"], **r["metrics"]["settings"]}
        lines.append(f"| {name} | {describe(s)} | {s['seed']} | {s['batch_size']} | {s['epochs']} | "
                     f"{r['metrics']['wall_time_s'] / 60:.1f} |")
    return lines


def write_report(args, results, ft, step_times, command, seconds):
    few = args.labels[0]
    first = next(iter(results.values()), None)
    s = first["metrics"]["settings"] if first else {}
    data = first["metrics"]["data"] if first else {}
    parts = timings(args)
    lines = ["# Results: MAE's protocols and ablations on 48-pixel Cats & Dogs", "",
             "<!-- Generated by examples/experiments.py from the run folders; do not edit by hand, rerun it. -->", "",
             f"Generated by `{command}` on {datetime.date.today().isoformat()} "
             f"({platform.machine()}, {os.cpu_count()} CPU cores, NumPy {np.__version__}, backend `{backend.name}`); "
             f"this invocation took {seconds / 60:.0f} min (runs finished before were read back, not redone)."
             + "".join(f" The part `--part {part}` took {t['seconds'] / 60:.0f} min when it ran in full on {t['date']}."
                       for part, t in parts.items())
             + (" These are wall-clock times: whatever else ran on the machine then is in them, as it is in every "
                "run's minutes and seconds per epoch below." if parts else ""), "",
             f"- Data: `{args.data}`, {data.get('n_train', '?')} training / {data.get('n_val', '?')} validation images "
             "(48 x 48 crops, 6 x 6 patches, 64 per image).",
             f"- Pre-training: {args.epochs} epochs (the paper: 800-1600), batch {s.get('batch_size', '?')}, AdamW lr "
             f"{s.get('lr', '?')}, warm-up {s.get('warmup_epochs', '?')} epochs, weight decay {s.get('weight_decay', '?')}; "
             "the ViT has 4 blocks of width 128 and a decoder of 2 blocks of width 64 (docs/recipe.md: how "
             "this recipe was chosen).", ""]
    lines += finetune_section(ft, results) + [""]
    lines += probe_section(results) + [""]
    lines += ablations_section(results, ft, step_times, few) + [""]
    for png, caption in (("mask_ratio.png", "linear probe and fine-tuning against the mask ratio"),
                         ("curves.png", "validation masked MSE per epoch of every pre-training run"),
                         ("recon_base.png", "validation reconstructions of the base run"),
                         ("recon_norm-pix.png", "validation reconstructions of the norm-pix run")):
        if os.path.exists(os.path.join(args.docs, png)):
            lines += [f"![{caption}]({png})", ""]
    lines += runs_section(results, args) + [""]
    with open(os.path.join(args.docs, "results.md"), "w") as f:
        f.write("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# figures

def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    return plt


def plot_mask_ratio(results, ft, path, few):
    """Figure 5 in miniature: linear probe and fine-tuning (50 labels per class) against the mask ratio."""
    names = [n for n in ("mask0.25", "mask0.5", "base-seed0", "mask0.9") if n in results]
    if len(names) < 2:
        return
    plt = pyplot()
    ratios = [results[n]["metrics"]["config"]["mask_ratio"] for n in names]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(ratios, [100 * probe_acc(results[n]) for n in names], "o-", label="linear probe")
    ft50 = [ft.get((n, False, few, 0), {}).get("val_accuracy") for n in names]
    if all(v is not None for v in ft50):
        ax.plot(ratios, [100 * v for v in ft50], "s-", label=f"fine-tuning, {few} labels per class")
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_xticks(ratios)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(results, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        history = r["metrics"]["history"]
        ax.plot([h["epoch"] for h in history], [h["val_masked_mse"] for h in history], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation masked MSE")
    ax.set_title("(norm-pix: un-normalised with the true patch statistics, not comparable)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_run_reconstructions(result, args, path, n_images=6):
    model, header, _ = load_checkpoint(os.path.join(result["dir"], "checkpoint.npz"))
    settings = {k: v for k, v in header["settings"].items() if k in PretrainConfig.__dataclass_fields__}
    data = PretrainData(PretrainConfig(**{**settings, "data": args.data, "progress": False}),
                        model.config.img_size, model.config.patch_size)
    imgs_pix, mask, pred_pix = figure_batch(model, data.val_images, data.mean, data.std, header["settings"]["seed"],
                                            n_images)
    save_reconstructions(path, imgs_pix, mask, pred_pix, model.config.patch_size,
                         title=f"{describe({**header['config'], **header['settings']})}, epoch {header['epoch']}")


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    command = "python examples/experiments.py" + "".join(" " + shlex.quote(a) for a in
                                                         (sys.argv[1:] if argv is None else argv))
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.docs, exist_ok=True)
    t0 = time.perf_counter()
    bases = [f"base-seed{s}" for s in SEEDS]
    finetune_jobs = [(f"base-seed{s}", scratch, labels, s) for labels in args.labels for s in seeds_for(labels)
                     for scratch in (False, True)]
    finetune_jobs += [("norm-pix", False, labels, 0) for labels in args.labels if labels is not None]
    # Not the MLP: its encoder takes exactly 16 of the 64 patches (its input is 16 tokens wide), so it cannot
    # see a whole image to classify; its probe averages four complementary masks instead (tinymae/probe.py).
    ablation_jobs = [(name, False, args.labels[0], 0) for name in ABLATIONS if PRETRAIN[name]["arch"] == "vit"]
    ablation_jobs += [(b, False, args.labels[0], s) for b, s in zip(bases, SEEDS)]
    names = bases + (list(ABLATIONS) if args.part in ("all", "ablations") else ["norm-pix"])
    jobs = (finetune_jobs if args.part in ("all", "finetune") else []) + (
        [j for j in ablation_jobs if j not in finetune_jobs] if args.part in ("all", "ablations") else [])
    try:
        pretrained = run_pretraining(names, args, t0)
        finetuned = run_finetuning(jobs, args, t0)
        # the part's own runs (the fine-tuning part uses pre-training runs that the ablation part makes)
        trained = [ran for _, ran in finetuned.values()] + (
            [] if args.part == "finetune" else [r["trained"] for r in pretrained.values()])
        if trained and all(trained):
            record_time(args, time.perf_counter() - t0)
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted after {elapsed(t0)}. Finished runs are kept; start the same command again to "
                 "continue where it stopped.")
    # the page shows every run that has finished, whichever part was asked for this time
    every = run_pretraining([n for n in PRETRAIN if os.path.exists(os.path.join(args.out, n, "metrics.json"))],
                            args, t0, verbose=False)
    ft = finished_finetunes(finetune_jobs + ablation_jobs, args)
    print(f"\ntiming every model side by side, writing the report ({elapsed(t0)})", flush=True)
    step_times = time_steps({n: every[n] for n in ("base-seed0", "encoder-mask-tokens", "mlp") if n in every}, args)
    plot_mask_ratio(every, ft, os.path.join(args.docs, "mask_ratio.png"), args.labels[0])
    plot_curves(every, os.path.join(args.docs, "curves.png"))
    for name, png in (("base-seed0", "recon_base.png"), ("norm-pix", "recon_norm-pix.png")):
        if name in every:
            save_run_reconstructions(every[name], args, os.path.join(args.docs, png))
    write_report(args, every, ft, step_times, command, time.perf_counter() - t0)
    print(f"done in {elapsed(t0)}: {os.path.join(args.docs, 'results.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
