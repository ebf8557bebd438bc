"""docs/results.md from the run folders of research/experiments.py: every number on the page is read from a
file a run wrote (metrics.json, probe.json, result.json), and every comparison uses one rule (compare).
A run that has not finished yet is shown as such, never guessed."""
import datetime
import os
import platform

import numpy as np

from tinymae import backend

from findings import ablations_section
from plan import PARTIAL_BLOCKS, RECIPES, SCHEDULE, SEEDS, finetune_settings, run_name, schedule_variant
from plots import plot_curves, plot_mask_ratio, plot_partial, plot_schedule, save_run_reconstructions
from runs import finished_finetune, probe_row, read_json, step_times, write_text
from stats import RULE, compare, not_run_yet, pct, present, reading

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
        lines += ["", f"From {first[0]} to {last[0]} epochs, in points, read by the rule at the top of the page:"]
        for name, i in (("linear probe", 1), (f"fine-tuning with {args.labels[0]} labels per class", 2),
                        ("fine-tuning with every label", 3)):
            text, verdict = compare(last[i], first[i])
            lines.append(f"- {name}: {text}, {reading(verdict, +1)} (the paper: still rising at 1600 epochs).")
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


def recipe_name(recipe):
    parts = [f"drop path {recipe['drop_path']:g}" if "drop_path" in recipe else "",
             f"mixup {recipe['mixup']:g}" if "mixup" in recipe else ""]
    return " + ".join(p for p in parts if p) or "the default recipe"


def every_label_section(r, args):
    longest = schedule_variant(SCHEDULE[-1], args)
    epochs = SCHEDULE[-1] * args.epochs
    lines = ["## 4. With every label", "",
             "The paper's central claim is that pre-training makes the fine-tuned network better, with every label "
             "too. Each row: a fine-tuning recipe, the network trained from scratch with it (seeds 0-2), and the MAE "
             f"pre-trained for {epochs} epochs and fine-tuned with it (fine-tuning seeds 0-2), read against scratch. "
             "main_finetune.py's regularisation is drop path and mixup (tinymae.finetune --drop-path, --mixup).", "",
             f"| fine-tuning recipe | from scratch (%) | MAE, {args.epochs} epochs (%) | MAE, {epochs} epochs (%) | "
             f"MAE {epochs} − scratch (points) | reading |", "| --- | --- | --- | --- | --- | --- |"]

    def fine_tunings(variant, recipe):  # one pre-training (seed 0), fine-tuned with each seed
        return [r.accuracy(run_name(variant, 0), labels=None, seed=s, **recipe) for s in SEEDS]

    candidates = []  # (name, accuracies over seeds): the rows the best mean is picked from
    pixel_target = {}  # recipe name -> the longest pre-training's fine-tunings, read once
    for recipe in RECIPES:
        scratch = [r.accuracy(run_name("base", s), labels=None, seed=s, scratch=True, **recipe) for s in SEEDS]
        short = ([r.accuracy(run_name("base", s), labels=None, seed=s) for s in SEEDS] if not recipe else [])
        long = pixel_target[recipe_name(recipe)] = fine_tunings(longest, recipe)
        text, verdict = compare(long, scratch)
        lines.append(f"| {recipe_name(recipe)} | {pct(scratch, True)} | {pct(short, True) if not recipe else ''} | "
                     f"{pct(long, True)} | {text} | {reading(verdict, +1)} |")
        candidates += [(f"MAE {epochs} epochs, {recipe_name(recipe)}", long),
                       (f"from scratch, {recipe_name(recipe)}", scratch)]
    normpix = fine_tunings(longest.replace("base", "norm-pix"), RECIPES[-1])
    missing = not_run_yet(normpix, SEEDS)
    sentence = (f"The normalised-pixel target pre-trained for {epochs} epochs, fine-tuned with "
                f"{recipe_name(RECIPES[-1])}: ")
    if not present(normpix):
        sentence += f"fine-tuning {missing}."
    else:
        seeds = f"fine-tuning {missing}" if missing else f"fine-tuning seeds {SEEDS[0]}-{SEEDS[-1]}"
        sentence += f"{pct(normpix)}% ({seeds})"
        text, verdict = compare(normpix, pixel_target[recipe_name(RECIPES[-1])])
        if verdict != "missing":
            sentence += (f"; against the pixel target with the same recipe: {text} points, {reading(verdict, +1)} "
                         "(the paper's Table 1d; each side is one pre-training, so the spread is over fine-tuning "
                         "seeds only)")
        sentence += "."
    lines += ["", sentence]
    candidates.append((f"norm-pix MAE {epochs} epochs, {recipe_name(RECIPES[-1])}", normpix))
    measured = [(name, present(values)) for name, values in candidates if present(values)]
    if measured:  # the first of equal means wins, as the rows are listed
        name, values = max(measured, key=lambda c: np.mean(c[1]))
        n = len(values)
        lines += ["", f"The best mean over seeds here: {100 * np.mean(values):.1f}% ({name}, {n} seed{'s' * (n > 1)})."]
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
                               drop_path=settings.get("drop_path", 0.0), mixup=settings.get("mixup", 0.0)))
    return kwargs


FIGURES = ("mask_ratio.png", "schedule.png", "partial.png", "curves.png", "recon_base.png", "recon_norm-pix.png")


def write_report(jobs, args, command):
    r = Results(args)
    os.makedirs(args.docs, exist_ok=True)
    for png in FIGURES:  # a figure the finished runs cannot draw yet must not linger from an older page
        if os.path.exists(os.path.join(args.docs, png)):
            os.remove(os.path.join(args.docs, png))
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
