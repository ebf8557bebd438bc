"""docs/results.md from the run folders of research/experiments.py: every number on the page is read from a
file a run wrote (metrics.json, probe.json, result.json), and every comparison uses one rule (compare).
A run that has not finished yet is shown as such, never guessed."""
import datetime
import math
import os
import platform
import statistics

import numpy as np
from experiments import (ABLATIONS, DROP_PATH, PARTIAL_BLOCKS, SCHEDULE, SEEDS, finetune_settings, run_name,
                         schedule_variant)
from plots import plot_curves, plot_mask_ratio, plot_partial, plot_schedule, save_run_reconstructions
from runs import finished_finetune, probe_row, read_json, step_times, write_text

from tinymae import backend

RULE = ("Every ± is the sample standard deviation over seeds (n − 1 in the denominator). A difference between "
        "two rows counts when it is larger than twice its standard error, 2·√(s₁²/n₁ + s₂²/n₂); a row measured "
        "with one seed borrows the standard deviation of the row it is compared with. *Within the spread* "
        "means the difference is smaller than that.")


# ----------------------------------------------------------------------------------------------
# reading the run folders

class Results:
    """The finished runs under args.out: pre-training metrics, probes, fine-tuning results."""

    def __init__(self, args):
        self.args = args

    def metrics(self, run):
        return read_json(os.path.join(self.args.out, run, "metrics.json"))

    def probe(self, run):
        return read_json(os.path.join(self.args.out, run, "probe.json"))

    def finetuned(self, run, **kwargs):
        """A fine-tuning's result (finetune_settings' keyword arguments), or None if it has not finished."""
        checkpoint = os.path.join(self.args.out, run, "checkpoint.npz")
        return finished_finetune(checkpoint, self.args.data, finetune_settings(self.args, **kwargs))

    def accuracy(self, run, **kwargs):
        result = self.finetuned(run, **kwargs)
        return None if result is None else result["val_accuracy"]

    def probe_accuracy(self, run, features=None, encoder="pre-trained"):
        report, metrics = self.probe(run), self.metrics(run)
        if report is None or metrics is None:
            return None
        row = probe_row(report, encoder, features or ("mean" if metrics["arch"] == "vit" else "latent"))
        return None if row is None else row["linear_probe_mean"]

    def ratio(self, run):
        metrics = self.metrics(run)
        return None if metrics is None else metrics["final_validation"]["ratio_to_mean_patch"]


# ----------------------------------------------------------------------------------------------
# numbers and the one rule

def present(values):
    return [v for v in values if v is not None]


def pct(values, show_n=False):
    """'58.7 ± 1.2' in percent over seeds (sample std), '58.7' for one value, '—' for none."""
    values = present(values)
    if not values:
        return "—"
    n = f" ({len(values)})" if show_n else ""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}{n}"
    return f"{100 * np.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}{n}"


def compare(values, base):
    """The difference of two rows in points, read by the page's one rule -> (text, verdict) where verdict is
    +1 (higher beyond the spread), -1 (lower beyond it), 0 (within it) or None (no spread to read it against,
    or a row missing)."""
    a, b = present(values), present(base)
    if not a or not b:
        return "—", None
    diff = 100 * (np.mean(a) - np.mean(b))
    sa = statistics.stdev(a) if len(a) > 1 else None
    sb = statistics.stdev(b) if len(b) > 1 else None
    if sa is None and sb is None:
        return f"{diff:+.1f} (one seed each)", None
    sa, sb = (sb if sa is None else sa), (sa if sb is None else sb)
    se = 100 * math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))
    verdict = 0 if abs(diff) <= 2 * se else (1 if diff > 0 else -1)
    return f"{diff:+.1f} ± {se:.1f}", verdict


def reading(verdict, expected):
    """A verdict against the direction the paper found (expected: +1 or -1)."""
    if verdict is None:
        return "not resolved (no seed spread)"
    if verdict == 0:
        return "within the spread"
    return "as the paper" if verdict == expected else "the opposite of the paper"


# ----------------------------------------------------------------------------------------------
# the sections

def finetune_section(r, args):
    few = args.labels[:-1]
    lines = ["## 1. Fine-tuning: MAE pre-training against training from scratch", "",
             f"The paper's main protocol: fine-tune the whole pre-trained encoder on labelled photos "
             f"(`python -m tinymae.finetune`: global pooling, a fresh LayerNorm and head, label smoothing 0.1, AdamW "
             f"with layer-wise learning-rate decay 0.75, {args.epochs} epochs), against the same network trained "
             "from random initialisation with the same recipe. The labelled photos are drawn from the pre-training "
             "run's training split; accuracy is on its validation split. The MAE side fine-tunes the base "
             "pre-training run of the same seed.", "",
             "| labelled photos per class | MAE-initialised (%) | from scratch (%) | MAE − scratch (points) | reading |",
             "| --- | --- | --- | --- | --- |"]
    for labels in (*few, None):
        mae = [r.accuracy(run_name("base", s), labels=labels, seed=s) for s in SEEDS]
        scratch = [r.accuracy(run_name("base", s), labels=labels, seed=s, scratch=True) for s in SEEDS]
        text, verdict = compare(mae, scratch)
        lines.append(f"| {labels or 'all'} | {pct(mae, True)} | {pct(scratch, True)} | {text} | "
                     f"{reading(verdict, +1).replace('as the paper', 'MAE ahead, as in the paper')} |")
    m = r.metrics(run_name("base", 0)) or {}
    lines += ["", "(n): the number of seeds. The paper (Sec. 4, Table 3) fine-tunes ViT-B/L/H after 800-1600 "
                  "epochs of pre-training on 1.28 million images and finds MAE well ahead of training from scratch, "
                  f"most of all for large models; here the MAE has {m.get('n_params', 0) / 1e6:.2f} M parameters and "
                  f"pre-trains on {m.get('data', {}).get('n_train', '?')} photos."]
    return lines


def schedule_section(r, args):
    lines = ["## 2. Longer pre-training (the paper's Figure 7)", "",
             "The base ViT pre-trained for longer, its learning-rate schedule stretched to each length (the same "
             "warm-up, a longer cosine), as the paper does. Each longer run is one pre-training (seed 0): the "
             "spread of the 50-epoch rows over seeds is the yardstick.", "",
             f"| pre-training epochs | × mean patch | linear probe (%) | fine-tuned, {args.labels[0]} per class (%) | "
             "fine-tuned, every label (%) | pre-training (min) |", "| --- | --- | --- | --- | --- | --- |"]
    rows = []
    for factor in (1, *SCHEDULE):
        variant = schedule_variant(factor, args)
        pretrained = [run_name(variant, s) for s in (SEEDS if factor == 1 else SEEDS[:1])]
        ratios = present([r.ratio(run) for run in pretrained])
        probe = [r.probe_accuracy(run) for run in pretrained]
        few = [r.accuracy(run, labels=args.labels[0], seed=s) for s, run in enumerate(pretrained)]
        # every label: the base's own seeds; a longer run's one pre-training with 3 fine-tuning seeds
        every = [r.accuracy(run_name(variant, s if factor == 1 else 0), labels=None, seed=s) for s in SEEDS]
        minutes = present([(r.metrics(run) or {}).get("wall_time_s") for run in pretrained])
        rows.append((factor * args.epochs, probe, few, every))
        ratio = f"{np.mean(ratios):.3f}" if ratios else "—"
        time = f"{np.mean(minutes) / 60:.0f}" if minutes else "not run yet"
        lines.append(f"| {factor * args.epochs} | {ratio} | {pct(probe, True)} | {pct(few, True)} | "
                     f"{pct(every, True)} | {time} |")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        lines += ["", f"From {first[0]} to {last[0]} epochs, read by the rule at the top of the page:"]
        for name, i in (("linear probe", 1), (f"fine-tuning with {args.labels[0]} labels per class", 2),
                        ("fine-tuning with every label", 3)):
            text, verdict = compare(last[i], first[i])
            lines.append(f"- {name}: {text} points, {reading(verdict, +1)} (the paper: still rising at 1600 epochs).")
    if os.path.exists(os.path.join(args.docs, "schedule.png")):
        lines += ["", "![accuracy against pre-training epochs](schedule.png)"]
    return lines


def partial_section(r, args):
    longest = schedule_variant(SCHEDULE[-1], args)
    header = " | ".join(f"{k} block{'s' if k != 1 else ''}" for k in PARTIAL_BLOCKS)
    lines = ["## 3. Fine-tuning only the last blocks (the paper's Figure 9)", "",
             "Every label, fine-tuning seed 0: the encoder frozen except its last K blocks (with fc_norm and the "
             "head; 0 blocks is a linear classifier on the pooled features, trained with the fine-tuning recipe), "
             "against the whole encoder fine-tuned. The paper finds MAE's features strong but not linearly "
             "separable: accuracy climbs steeply from 0 to 1 block.", "",
             f"| encoder | {header} | all blocks |", "| --- |" + " --- |" * (len(PARTIAL_BLOCKS) + 1)]
    for variant in ("base", longest):
        epochs = (r.metrics(run_name(variant, 0)) or {}).get("settings", {}).get("epochs", "?")
        cells = [pct([r.accuracy(run_name(variant, 0), labels=None, seed=0, blocks=k)]) for k in PARTIAL_BLOCKS]
        cells.append(pct([r.accuracy(run_name(variant, 0), labels=None, seed=0)]))
        lines.append(f"| pre-trained {epochs} epochs | " + " | ".join(cells) + " |")
    if os.path.exists(os.path.join(args.docs, "partial.png")):
        lines += ["", "![accuracy against the number of fine-tuned blocks](partial.png)"]
    return lines


def every_label_section(r, args):
    longest = schedule_variant(SCHEDULE[-1], args)
    scratch = [r.accuracy(run_name("base", s), labels=None, seed=s, scratch=True) for s in SEEDS]
    rows = [(f"MAE, {args.epochs} epochs (pre-training seeds 0-2)",
             [r.accuracy(run_name("base", s), labels=None, seed=s) for s in SEEDS]),
            (f"MAE, {SCHEDULE[-1] * args.epochs} epochs (fine-tuning seeds 0-2)",
             [r.accuracy(run_name(longest, 0), labels=None, seed=s) for s in SEEDS]),
            (f"MAE, {SCHEDULE[-1] * args.epochs} epochs, drop path {DROP_PATH} (fine-tuning seeds 0-2)",
             [r.accuracy(run_name(longest, 0), labels=None, seed=s, drop_path=DROP_PATH) for s in SEEDS])]
    lines = ["## 4. With every label", "",
             "The paper's central claim is that pre-training makes the fine-tuned network better, with every "
             "label too. Each row against training from scratch (seeds 0-2):", "",
             "| initialisation | validation accuracy (%) | − scratch (points) | reading |", "| --- | --- | --- | --- |",
             f"| from scratch | {pct(scratch, True)} | | |"]
    best = None
    for name, values in rows:
        text, verdict = compare(values, scratch)
        lines.append(f"| {name} | {pct(values, True)} | {text} | {reading(verdict, +1)} |")
        if present(values) and (best is None or np.mean(present(values)) > best[1]):
            best = (name, np.mean(present(values)))
    if best is not None:
        lines += ["", f"The best of these reaches {100 * best[1]:.1f}% ({best[0]})."]
    return lines


def probe_section(r, args):
    bases = [run_name("base", s) for s in SEEDS]
    lines = ["## 5. Linear probe of the frozen encoder", "",
             "L2 logistic regression on frozen features (`python -m tinymae.probe`), cat against dog, on the "
             f"validation photos; each encoder probed with {args.probe_seeds} probe seeds; the base run over its "
             "pre-training seeds. "
             "k-NN: cosine similarity, k = 20 (or every training photo, when there are fewer).", "",
             "| encoder | features | linear probe (%) | k-NN (%) |", "| --- | --- | --- | --- |"]
    for features in ("mean", "cls"):
        probes = [r.probe_accuracy(run, features) for run in bases]
        knn = [(probe_row(r.probe(run), "pre-trained", features) or {}).get("knn20") for run in bases]
        lines.append(f"| ViT MAE, {args.epochs} epochs | {features} | {pct(probes, True)} | {pct(knn)} |")
    for encoder, features in (("random init", "mean"), ("random init", "cls"), ("raw pixels", "pixels")):
        row = probe_row(r.probe(bases[0]), encoder, features)
        if row:
            lines.append(f"| {encoder} | {features} | {pct([row['linear_probe_mean']])} | {pct([row['knn20']])} |")
    return lines


# The paper's findings that the ablations test: (run, what the paper found, the sign of variant - base it found
# for the linear probe and for fine-tuning; None where it claims no direction). The paper's numbers: ViT-L,
# 800 epochs, ImageNet-1K (fine-tuning / linear probing accuracy, %).
CLAIMS = [
    ("mask0.25", "Figure 5: a mask ratio of 75% beats 25% by a wide margin, most of all in linear probing", -1, -1),
    ("mask0.5", "Figure 5: 75% beats 50% (a few points of linear probing)", -1, -1),
    ("mask0.9", "Figure 5: 90% is a little worse than 75%", -1, -1),
    ("loss-all", "Sec. 3: the loss on all patches is about 0.5% worse than on the removed ones", -1, -1),
    ("norm-pix", "Table 1d: normalised pixel targets are better (+0.5 fine-tuning, +0.4 probing)", +1, +1),
    ("encoder-mask-tokens", "Table 1c: [M] in the encoder costs 14 points of probing and 0.7 of fine-tuning", -1, -1),
    ("decoder-depth1", "Table 1a: a 1-block decoder probes worse than 2 blocks (65.5 vs 70.0), fine-tuning "
                       "barely moves (84.8 vs 84.9)", -1, None),
    ("decoder-depth4", "Table 1a: 4 decoder blocks probe better than 2 (71.9 vs 70.0), fine-tuning the same", +1, None),
    ("decoder-width32", "Table 1b: a narrower decoder probes worse (width 128: 69.1, 256: 71.3, 512: 73.5), "
                        "fine-tuning the same", -1, None),
    ("decoder-width128", "Table 1b: a wider decoder probes better, up to 512 of the encoder's 1024", +1, None),
]


def verdict_of(readings):
    """One word for a finding from the readings of its measures (reading())."""
    agree, against = "as the paper" in readings, "the opposite of the paper" in readings
    if agree and against:
        return "Mixed: one measure each way."
    if agree:
        return "Reproduced."
    if against:
        return "The opposite of the paper."
    return "Not resolved at this scale (within the spread)."


def describe(settings):
    parts = ["ViT" if settings.get("arch") == "vit" else "MLP", f"mask {settings.get('mask_ratio', 0.75):g}"]
    if settings.get("loss_on") == "all":
        parts.append("loss on all patches")
    if settings.get("norm_pix_loss"):
        parts.append("norm-pix target")
    if settings.get("encoder_mask_tokens"):
        parts.append("encoder with [M]")
    if settings.get("arch") == "vit":
        parts.append(f"decoder {settings.get('decoder_depth')} x {settings.get('decoder_embed_dim')}")
    return ", ".join(parts)


def ablations_section(r, args, times):
    few = args.labels[0]
    lines = [f"## 6. The ablations at {args.epochs} epochs", "",
             "Each row is the default ViT MAE with one setting changed, pre-trained with the seeds shown in "
             "brackets, probed and fine-tuned with "
             f"{few} labels per class. *× mean patch*: validation masked-patch MSE over the mean-patch baseline (each "
             "run at its own mask ratio; for norm-pix the reconstruction is un-normalised with the true patch's mean "
             "and variance, so it is not comparable).", "",
             f"| run | settings | × mean patch | probe (%) | fine-tuned @{few} (%) | s / epoch | parameters |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    table = {}
    for variant in ("base", *ABLATIONS):
        runs = [run_name(variant, s) for s in SEEDS]
        done = [run for run in runs if r.metrics(run) is not None]
        probe = [r.probe_accuracy(run) for run in runs]
        tuned = [r.accuracy(run, labels=few, seed=s) for s, run in enumerate(runs)]
        table[variant] = (probe, tuned)
        if not done:
            lines.append(f"| {variant} | not run yet | | | | | |")
            continue
        m = r.metrics(done[0])
        per_epoch = statistics.median(h["epoch_time_s"] for run in done for h in r.metrics(run)["history"])
        lines.append(f"| {variant} | {describe({**m['config'], **m['settings']})} | "
                     f"{np.mean([r.ratio(run) for run in done]):.3f} | {pct(probe, True)} | {pct(tuned, True)} | "
                     f"{per_epoch:.1f} | {m['n_params']:,} |")
    lines += ["", "Against the paper, one finding at a time (variant − base, in points, read by the rule at the top):", ""]
    for variant, claim, probe_sign, tune_sign in CLAIMS:
        if not present(table[variant][0]):
            continue
        p_text, p_verdict = compare(table[variant][0], table["base"][0])
        f_text, f_verdict = compare(table[variant][1], table["base"][1])
        readings = {reading(v, sign) for v, sign in ((p_verdict, probe_sign), (f_verdict, tune_sign))
                    if v is not None and sign is not None}
        lines.append(f"- {claim}. Measured: probe {p_text}, fine-tuned {f_text}. **{verdict_of(readings)}**")
    if times and "base-seed0" in times and "encoder-mask-tokens-seed0" in times:
        base, tokens = times["base-seed0"]["step_s"], times["encoder-mask-tokens-seed0"]["step_s"]
        lines += ["", f"Speed (Table 2: an encoder that skips the mask tokens trains 2.8-4.1x faster): measured side by "
                      f"side here, the visible-only encoder's training step is {tokens / base:.1f}x faster "
                      f"({1000 * base:.0f} against {1000 * tokens:.0f} ms per batch)."]
    for png, caption in (("mask_ratio.png", "linear probe and fine-tuning against the mask ratio, mean ± std over seeds"),
                         ("curves.png", "validation masked MSE per epoch of the base and longer runs"),
                         ("recon_base.png", "validation reconstructions of the base run"),
                         ("recon_norm-pix.png", "validation reconstructions of the norm-pix run")):
        if os.path.exists(os.path.join(args.docs, png)):
            lines += ["", f"![{caption}]({png})"]
    return lines


def runs_section(r, jobs):
    lines = ["## The runs", "", "Every pre-training run, with the minutes it trained and the minutes its probe and "
             "fine-tunings took (wall clock, whatever else the machine was doing included).", "",
             "| run | seed | epochs | batch | pre-training (min) | probe (min) | fine-tunings (min) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in dict.fromkeys(job[2] for job in jobs if job[1] == "pretrain"):
        m = r.metrics(run)
        if m is None:
            lines.append(f"| {run} | | | | not run yet | | |")
            continue
        ft = [r.finetuned(run, **kw) for kw in finetune_kwargs(jobs, run)]
        ft_minutes = sum(x["wall_time_s"] for x in ft if x is not None) / 60
        probe = (r.probe(run) or {}).get("seconds")
        lines.append(f"| {run} | {m['settings']['seed']} | {m['settings']['epochs']} | {m['settings']['batch_size']} | "
                     f"{m['wall_time_s'] / 60:.1f} | {'—' if probe is None else f'{probe / 60:.1f}'} | {ft_minutes:.1f} |")
    return lines


def finetune_kwargs(jobs, run):
    """The finetune_settings keyword arguments of every fine-tuning job of `run`."""
    kwargs = []
    for _, kind, name, _, _, settings in jobs:
        if kind == "finetune" and name == run:
            kwargs.append(dict(labels=settings["labels_per_class"], seed=settings["seed"],
                               scratch=settings["from_scratch"], blocks=settings.get("trainable_blocks"),
                               drop_path=settings.get("drop_path", 0.0)))
    return kwargs


def write_report(jobs, args, command):
    r = Results(args)
    os.makedirs(args.docs, exist_ok=True)
    plot_mask_ratio(r, args, os.path.join(args.docs, "mask_ratio.png"))
    plot_schedule(r, args, os.path.join(args.docs, "schedule.png"))
    plot_partial(r, args, os.path.join(args.docs, "partial.png"))
    plot_curves(r, args, os.path.join(args.docs, "curves.png"))
    for variant, png in (("base", "recon_base.png"), ("norm-pix", "recon_norm-pix.png")):
        if r.metrics(run_name(variant, 0)) is not None:
            save_run_reconstructions(os.path.join(args.out, run_name(variant, 0)), args, os.path.join(args.docs, png))
    times = step_times(args.out, [run for run in ("base-seed0", "encoder-mask-tokens-seed0", "mlp-seed0")
                                  if r.metrics(run) is not None])
    first = r.metrics(run_name("base", 0)) or {}
    data, s, c = first.get("data", {}), first.get("settings", {}), first.get("config", {})
    lines = ["# Results: MAE's protocols and ablations on 48-pixel Cats & Dogs", "",
             "<!-- Generated by research/experiments.py from its run folders; do not edit by hand, rerun it. -->", "",
             f"Generated by `{command}` on {datetime.date.today().isoformat()} ({platform.machine()}, "
             f"{os.cpu_count()} CPU cores, NumPy {np.__version__}, backend `{backend.name}`).", "",
             f"- Data: {data.get('n_train', '?')} training / {data.get('n_val', '?')} validation photos, 48 x 48 crops "
             "in 6 x 6 patches (64 per photo).",
             f"- Pre-training: {args.epochs} epochs unless a row says otherwise (the paper: 800-1600), batch "
             f"{s.get('batch_size', '?')}, AdamW lr {s.get('lr', '?')}, warm-up {s.get('warmup_epochs', '?')} epochs, "
             f"weight decay {s.get('weight_decay', '?')}; a ViT of {c.get('depth', '?')} blocks of width "
             f"{c.get('embed_dim', '?')} with a decoder of {c.get('decoder_depth', '?')} blocks of width "
             f"{c.get('decoder_embed_dim', '?')} (docs/recipe.md: how this recipe was chosen).",
             f"- {RULE}", ""]
    for section in (finetune_section(r, args), schedule_section(r, args), partial_section(r, args),
                    every_label_section(r, args), probe_section(r, args), ablations_section(r, args, times),
                    runs_section(r, jobs)):
        lines += section + [""]
    write_text(os.path.join(args.docs, "results.md"), "\n".join(lines))
    print(f"wrote {os.path.join(args.docs, 'results.md')}")
