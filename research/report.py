"""docs/results.md and docs/recipe.md, written from results.json: one entry per finished job of the plan, its
numbers and its provenance (the photos' fingerprint, the tinymae version and commit, the machine, the date).

An entry is read from its job's done-file when the job's folder is under --out, and kept from an earlier sweep
when it is not: results.json keeps every result the project has measured, so a page is never written with less
in it (a page that would have fewer numbers than the one it replaces is refused). Results measured on other
photos are never mixed in. Every comparison on the pages is read by one rule, stated at the top of the page.
"""
import datetime
import json
import os
import statistics
from statistics import NormalDist

import numpy as np

from tinymae.errors import TinymaeError
from tinymae.util.figures import pyplot, save
from tinymae.util.files import write_atomically

from plan import ABLATIONS, LONGER, PARTIAL_BLOCKS, RECIPE, RECIPES, SEEDED_RECIPES, SEEDS, finetune_job, variant

CLAIMS = [  # (variant, what the paper found (ViT-L, 800 epochs, ImageNet-1K), its sign for the probe, for fine-tuning)
    ("mask0.25", "Figure 5: a mask ratio of 75% beats 25% by a wide margin, most of all in linear probing", -1, -1),
    ("mask0.5", "Figure 5: 75% beats 50% (a few points of linear probing)", -1, -1),
    ("mask0.9", "Figure 5: 90% is a little worse than 75%", -1, -1),
    ("block", "Table 1f: block-wise masking at 75% is worse than random (probe 63.9 vs 73.5; fine-tuning 82.8 vs 84.9)",
     -1, -1),
    ("block-mask0.5", "Table 1f: block-wise masking works at 50% (fine-tuning 83.9 vs 84.9 for random at 75%)", -1, -1),
    ("grid", "Table 1f: grid masking is worse than random (probe 66.0 vs 73.5; fine-tuning 84.0 vs 84.9)", -1, -1),
    ("loss-all", "Sec. 3: the loss on all patches is about 0.5% worse than on the removed ones", -1, -1),
    ("norm-pix", "Table 1d: normalised pixel targets are better (+0.5 fine-tuning, +0.4 probing)", +1, +1),
    ("encoder-mask-tokens", "Table 1c: [M] in the encoder costs 14 points of probing and 0.7 of fine-tuning", -1, -1),
    ("decoder-depth1", "Table 1a: a 1-block decoder probes worse than 2 blocks, fine-tuning the same", -1, None),
    ("decoder-depth4", "Table 1a: 4 decoder blocks probe better than 2, fine-tuning the same", +1, None),
    ("decoder-width32", "Table 1b: a narrower decoder probes worse, fine-tuning the same", -1, None),
    ("decoder-width128", "Table 1b: a wider decoder probes better", +1, None)]


# ----------------------------------------------------------------------------------------------
# results.json

def digest(job, done):
    """The numbers the pages use of a job's done-file."""
    if job.kind == "pretrain":
        final, h = done["final_validation"], done["history"]
        return {"ratio": final["ratio_to_mean_patch"], "psnr": final["masked_psnr"], "n_params": done["n_params"],
                "minutes": done["wall_time_s"] / 60, "epoch_s": statistics.median(e["epoch_time_s"] for e in h),
                "curve": [e["val_masked_mse"] for e in h], "n_train": done["data"]["n_train"],
                "n_val": done["data"]["n_val"], "arch": done["arch"], "config": done["config"],
                "settings": {k: done["settings"][k] for k in ("batch_size", "lr", "warmup_epochs", "weight_decay")}}
    if job.kind == "probe":
        return {"minutes": done.get("seconds", 0) / 60, "rows": [
            {k: row[k] for k in ("encoder", "features", "linear_probe_mean", "linear_probe_std", "knn")}
            for row in done["results"]]}
    if job.kind == "finetune":
        return {"accuracy": done["val_accuracy"], "minutes": done["wall_time_s"] / 60, "n_val": done["n_val"]}
    return {"ratio": done["ratio_to_mean_patch"], "minutes": done["wall_time_s"] / 60}  # torch


def update(jobs, args, photos):
    """results.json under --docs, with every job finished under --out read in."""
    path = os.path.join(args.docs, "results.json")
    try:
        with open(path) as f:
            ledger = json.load(f)
    except FileNotFoundError:
        ledger = {}
    other = [jid for jid, entry in ledger.items() if entry["provenance"]["photos"] != photos]
    if other:
        raise TinymaeError(f"{path} holds {len(other)} results measured on other photos (e.g. {other[0]}); --data "
                           f"{args.data} has the fingerprint {photos}: choose another --docs")
    for job in jobs:
        done = os.path.join(args.out, job.done)
        if os.path.exists(done):
            with open(done) as f:
                numbers = digest(job, json.load(f))
            if ledger.get(job.id, {}).get("result") != numbers:  # a new result: with what ran it (--run-job wrote it)
                ran = {"date": datetime.date.fromtimestamp(os.path.getmtime(done)).isoformat(), **ran_by(job, args)}
                ledger[job.id] = {"kind": job.kind, "result": numbers, "provenance": {"photos": photos, **ran}}
    text = json.dumps(dict(sorted(ledger.items())), indent=1, allow_nan=False)
    os.makedirs(args.docs, exist_ok=True)
    write_atomically(path, lambda f: f.write(text.encode()))
    return ledger


def ran_by(job, args):
    """What ran a job, or {} when that is not known. Earlier sweeps wrote one provenance.json per folder, and a probe
    overwrote its pre-training's record there: such a file counts only if it was written before the job's done-file
    (a job records what runs it as it starts; a probe starts after its pre-training is done)."""
    done, own = os.path.join(args.out, job.done), os.path.join(args.out, job.provenance)
    for path in (own, os.path.join(os.path.dirname(done), "provenance.json")):
        if os.path.exists(path) and (path == own or os.path.getmtime(path) <= os.path.getmtime(done)):
            with open(path) as f:
                return json.load(f)
    return {}


class Results:
    """What results.json holds, asked for by job: None for a job that has not run."""

    def __init__(self, ledger, args):
        self.ledger, self.args = ledger, args

    def get(self, jid, key):
        return self.ledger.get(jid, {"result": {}})["result"].get(key)

    def run(self, name, seed=0, epochs=None, key="ratio"):
        return self.get(f"pretrain/{variant(name, epochs)}-seed{seed}", key)

    def acc(self, run, seed, **kwargs):
        return self.get(finetune_job(self.args, "", run, seed, **kwargs).id, "accuracy")

    def probe(self, run, encoder="pre-trained", features=None, key="linear_probe_mean"):
        rows = self.get(f"probe/{run}", "rows") or []
        features = features or ("latent" if run.startswith("mlp") else "mean")
        return next((row[key] for row in rows if row["encoder"] == encoder and row["features"] == features), None)


# ----------------------------------------------------------------------------------------------
# the one rule

def spread(values):
    values = [v for v in values if v is not None]
    return values, (statistics.stdev(values) if len(values) > 1 else None)


def pct(values, n=True):
    """'58.7 ± 1.2 (3)' in percent over seeds (sample std), '58.7 (1)' for one value, '—' for none."""
    values, s = spread(values)
    if not values:
        return "—"
    text = f"{100 * np.mean(values):.1f}" + ("" if s is None else f" ± {100 * s:.1f}")
    return text + (f" ({len(values)})" if n else "")


def compare(a, b, sign, z):
    """The difference of two rows in points, read by the page's rule -> (text, reading)."""
    (a, sa), (b, sb) = spread(a), spread(b)
    if not a or not b:
        return "—", "not run yet"
    diff = 100 * (np.mean(a) - np.mean(b))
    if sa is None and sb is None:
        return f"{diff:+.1f}", "one seed each: no spread to read it by"
    se = 100 * np.sqrt((sa if sa is not None else sb) ** 2 / len(a) + (sb if sb is not None else sa) ** 2 / len(b))
    if abs(diff) <= z * se:
        return f"{diff:+.1f} ± {se:.1f}", "within the spread"
    return f"{diff:+.1f} ± {se:.1f}", "as the paper" if (diff > 0) == (sign > 0) else "the opposite of the paper"


def rule(m, z):
    return ("Every ± is the sample standard deviation over seeds (n − 1 in the denominator), over the seeds given "
            f"in brackets. A difference counts when it is larger than {z:.2f} standard errors, √(s₁²/n₁ + s₂²/n₂) "
            "(a row of one seed borrows the other's s): the two-sided 5% level of a normal distribution, divided among "
            f"the {m} comparisons this page makes (Bonferroni), so that the chance that any reading on the page is "
            "noise stays at 5%. *Within the spread* means smaller than that.")


# ----------------------------------------------------------------------------------------------
# the sections; `read(a, b, sign)` reads one comparison (counted, then read by the rule)

def sections(r, args, read):
    few, longest = args.labels[0], args.epochs * LONGER[-1]
    lines = ["## 1. Fine-tuning against training from scratch", "", "The whole pre-trained encoder fine-tuned "
             "(`python -m tinymae.finetune`), against the same network from random weights with the same recipe; "
             "accuracy on the pre-training run's validation photos; the MAE side fine-tunes the base run of the same "
             "seed.", "", "| labelled photos per class | MAE-initialised (%) | from scratch (%) | MAE − scratch "
             "(points) | reading |", "| --- | --- | --- | --- | --- |"]
    for labels in (*args.labels[:-1], None):
        mae = [r.acc(f"base-seed{s}", s, labels=labels) for s in SEEDS]
        scratch = [r.acc(f"base-seed{s}", s, labels=labels, scratch=True) for s in SEEDS]
        lines.append(f"| {labels or 'all'} | {pct(mae)} | {pct(scratch)} | {' | '.join(read(mae, scratch, +1))} |")

    lines += ["", "## 2. Longer pre-training (the paper's Figure 7)", "", "The base ViT pre-trained longer, its "
              "cosine stretched; the longer runs are one pre-training each (seed 0), except where the row says.", "",
              f"| pre-training epochs | × mean patch | linear probe (%) | fine-tuned, {few} per class (%) | "
              "fine-tuned, every label (%) | minutes |", "| --- | --- | --- | --- | --- | --- |"]
    rows = {}
    for epochs in (None, *(args.epochs * f for f in LONGER)):
        seeds = SEEDS if epochs is None else (0,)
        runs = [f"{variant('base', epochs)}-seed{s}" for s in seeds]
        ratio, minutes = spread([r.run("base", s, epochs) for s in seeds])[0], \
            spread([r.run("base", s, epochs, "minutes") for s in seeds])[0]
        rows[epochs] = ([r.probe(run) for run in runs], [r.acc(run, s, labels=few) for s, run in zip(seeds, runs)],
                        [r.acc(runs[0] if epochs else f"base-seed{s}", s) for s in SEEDS])
        lines.append(f"| {epochs or args.epochs} | {f'{np.mean(ratio):.3f}' if ratio else '—'} | "
                     f"{' | '.join(map(pct, rows[epochs]))} | {f'{np.mean(minutes):.0f}' if minutes else '—'} |")
    lines += ["", f"From {args.epochs} to {longest} epochs, in points: "]
    for i, name in enumerate(("linear probe", f"fine-tuning with {few} labels per class", "fine-tuning, every label")):
        lines.append(f"- {name}: {', '.join(read(rows[longest][i], rows[None][i], +1))}.")
    lines += ["", "![accuracy against pre-training epochs](schedule.png)"]

    lines += ["", "## 3. Fine-tuning only the last blocks (the paper's Figure 9)", "", "Every label, fine-tuning seed "
              "0; 0 blocks is a linear classifier on the pooled features, trained with the fine-tuning recipe.", "",
              "| encoder | " + " | ".join(f"{k} blocks" for k in PARTIAL_BLOCKS) + " | all blocks |",
              "| --- |" + " --- |" * (len(PARTIAL_BLOCKS) + 1)]
    for run, epochs in (("base-seed0", args.epochs), (f"base-ep{longest}-seed0", longest)):
        cells = [pct([r.acc(run, 0, blocks=k)], n=False) for k in PARTIAL_BLOCKS] + [pct([r.acc(run, 0)], n=False)]
        lines.append(f"| pre-trained {epochs} epochs | " + " | ".join(cells) + " |")
    lines += ["", "![accuracy against the number of fine-tuned blocks](partial.png)"]

    lines += ["", "## 4. With every label", "", f"A fine-tuning recipe per row (main_finetune.py's regularisation is "
              f"drop path and mixup), the network from scratch with it (seeds 0-2, each on its own split), and the MAE "
              f"pre-trained {longest} epochs and fine-tuned with it: one pre-training (seed 0) fine-tuned with seeds "
              "0-2, whose spread is the fine-tuning's alone; and pre-training seeds 0-2, each fine-tuned with its own "
              "seed, whose spread is the pre-training's and the fine-tuning's together.", "",
              f"| recipe | from scratch (%) | MAE {longest}, one pre-training (%) | MAE {longest}, pre-training seeds "
              f"(%) | MAE − scratch, one pre-training | reading | MAE − scratch, pre-training seeds | reading |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    long, seeded = f"base-ep{longest}-seed0", {}
    for recipe in RECIPES:
        scratch = [r.acc(f"base-seed{s}", s, scratch=True, recipe=recipe) for s in SEEDS]
        one = [r.acc(long, s, recipe=recipe) for s in SEEDS]
        seeded[recipe] = [r.acc(f"base-ep{longest}-seed{s}", s, recipe=recipe) for s in SEEDS]
        seeds = [pct(seeded[recipe]), *read(seeded[recipe], scratch, +1)] if recipe in SEEDED_RECIPES else \
            ["not planned"] * 3
        lines.append(f"| {recipe} | {pct(scratch)} | {pct(one)} | {seeds[0]} | "
                     f"{' | '.join(read(one, scratch, +1))} | {' | '.join(seeds[1:])} |")
    mixup = "drop path + mixup"
    one = [r.acc(f"norm-pix-ep{longest}-seed0", s, recipe=mixup) for s in SEEDS]
    seeds = [r.acc(f"norm-pix-ep{longest}-seed{s}", s, recipe=mixup) for s in SEEDS]
    lines += ["", f"The normalised-pixel target pre-trained {longest} epochs, fine-tuned with {mixup}, against the "
              f"pixel target with the same recipe (the paper's Table 1d):", "",
              "| | one pre-training (%) | pre-training seeds (%) | − pixel target, one pre-training | reading | "
              "− pixel target, pre-training seeds | reading |", "| --- | --- | --- | --- | --- | --- | --- |",
              f"| norm-pix | {pct(one)} | {pct(seeds)} | "
              f"{' | '.join(read(one, [r.acc(long, s, recipe=mixup) for s in SEEDS], +1))} "
              f"| {' | '.join(read(seeds, seeded[mixup], +1))} |"]

    lines += ["", "## 5. Linear probe of the frozen encoder", "", "Softmax regression and a cosine k-NN (k = 20) "
              "on frozen features (`python -m tinymae.probe`), on the validation photos; the base run over its "
              "pre-training seeds.", "", "| encoder | features | linear probe (%) | k-NN (%) |",
              "| --- | --- | --- | --- |"]
    for encoder, features, runs in (("ViT MAE", "mean", None), ("ViT MAE", "cls", None), ("random init", "mean", 1),
                                    ("random init", "cls", 1), ("raw pixels", "pixels", 1)):
        runs = [f"base-seed{s}" for s in (SEEDS if runs is None else (0,))]
        name = "pre-trained" if encoder == "ViT MAE" else encoder
        lines.append(f"| {encoder} | {features} | {pct([r.probe(x, name, features) for x in runs])} | "
                     f"{pct([r.probe(x, name, features, 'knn') for x in runs], n=False)} |")

    lines += ["", f"## 6. The ablations at {args.epochs} epochs", "", f"The default ViT MAE with one setting changed, "
              f"pre-trained, probed and fine-tuned with {few} labels per class over the seeds in brackets. *× mean "
              f"patch*: validation masked MSE over the mean-patch baseline, at each run's own mask (norm-pix's is "
              f"un-normalised with the true patch's statistics: not comparable). *s / epoch*: the median epoch of the "
              f"variant's fastest run.", "", f"| run | × mean patch | probe (%) | fine-tuned @{few} (%) | s / epoch | "
              "parameters |", "| --- | --- | --- | --- | --- | --- |"]
    table = {}
    for name in ("base", *ABLATIONS):
        runs = [f"{name}-seed{s}" for s in SEEDS]
        table[name] = ([r.probe(run) for run in runs], [r.acc(run, s, labels=few) for s, run in enumerate(runs)])
        ratio = spread([r.run(name, s) for s in SEEDS])[0]
        epoch_s = spread([r.run(name, s, key="epoch_s") for s in SEEDS])[0]
        lines.append(f"| {name} | {f'{np.mean(ratio):.3f}' if ratio else '—'} | {pct(table[name][0])} | "
                     f"{'no classifier' if name == 'mlp' else pct(table[name][1])} | "
                     f"{f'{min(epoch_s):.1f}' if epoch_s else '—'} | "
                     f"{r.run(name, key='n_params') or '—'} |")
    lines += ["", "Against the paper, one finding at a time (variant − base, in points):", ""]
    for name, claim, probe_sign, tune_sign in CLAIMS:
        probe = read(table[name][0], table["base"][0], probe_sign or 1)
        tuned = read(table[name][1], table["base"][1], tune_sign or 1)
        lines.append(f"- {claim}. Measured: probe {probe[0]} ({probe[1] if probe_sign else 'no direction claimed'}), "
                     f"fine-tuned {tuned[0]} ({tuned[1] if tune_sign else 'no direction claimed'}).")
    return lines + ["", "![linear probe and fine-tuning against the mask ratio](mask_ratio.png)", "",
                    "![validation masked MSE per epoch of the base and longer runs](curves.png)", "",
                    "![validation reconstructions of the base run](recon_base.png)"]


def runs_section(r, jobs):
    lines = ["## The runs", "", "Every pre-training run, its minutes, and those of its probe and fine-tunings (wall "
             "clock, whatever else the machine did), with where and when each was measured.", "",
             "| run | pre-training (min) | probe (min) | fine-tunings (min) | measured |",
             "| --- | --- | --- | --- | --- |"]
    for job in [job for job in jobs if job.kind == "pretrain" and job.part != "recipe"]:
        probe = f"probe/{job.folder}"
        tunings = [r.get(j.id, "minutes") for j in jobs if j.kind == "finetune" and j.after == (job.id,)]
        done = [m for m in tunings if m is not None]
        ran = r.ledger.get(job.id, {"provenance": {}})["provenance"]
        where = ", ".join(ran[k] for k in ("date", "tinymae", "commit") if ran.get(k))
        cells = [minutes(r.get(job.id, "minutes"), True, "not run yet"),
                 minutes(r.get(probe, "minutes"), any(j.id == probe for j in jobs)),
                 minutes(sum(done) if done else None, tunings)]
        lines.append(f"| {job.folder} | {' | '.join(cells)} | {where} |")
    return lines


def minutes(value, planned, missing="—"):
    """A cell of the runs table: its minutes, `missing` if planned and not run yet, or "not planned"."""
    return f"{value:.1f}" if value is not None else missing if planned else "not planned"


def recipe_page(r, args):
    lines = ["# The ViT MAE's recipe: what each detail is worth", "", "<!-- Written by research/experiments.py from "
             "results.json; do not edit by hand. -->", "", f"One pre-training per row (seed 0, {args.epochs} epochs), "
             "one setting changed from the row named in brackets. *× mean patch*: validation masked-patch MSE over "
             "the mean-patch baseline (lower is better); *probe*: the frozen encoder's mean patch token. The base "
             "recipe's spread over seeds (results.md) is the size of a difference worth reading; — has not run "
             "yet.", "",
             "| variant | what changed | × mean patch | change | linear probe (%) | minutes |",
             "| --- | --- | --- | --- | --- | --- |"]
    jid = {n: f"torch/recipe-{n}" if n.startswith("torch") else f"pretrain/recipe-{n}-seed0" for n, *_ in RECIPE}
    for name, what, base, _ in RECIPE:
        ratio, before = r.get(jid[name], "ratio"), base and r.get(jid[base], "ratio")
        change = "the base" if not base else "—" if ratio is None or not before else f"{ratio - before:+.3f}"
        probe = "not probed" if name.startswith("torch") else pct([r.probe(f"recipe-{name}-seed0")], n=False)
        shown = "—" if ratio is None else f"{ratio:.3f}"
        lines.append(f"| {name} | {what}{f' ({base})' if base else ''} | {shown} | "
                     f"{change} | {probe} | {r.get(jid[name], 'minutes') or 0:.0f} |")
    return lines


# ----------------------------------------------------------------------------------------------
# the figures

def plots(r, args, docs):
    """The figures that results.json can draw (the reconstructions need a run folder: recon())."""
    plt, longest = pyplot(), args.epochs * LONGER[-1]

    def line(ax, xs, values, label, marker):
        points = [(x, np.mean(v), np.std(v, ddof=1) if len(v) > 1 else 0) for x, v in zip(xs, map(
            lambda v: [100 * x for x in v if x is not None], values)) if v]
        if points:
            ax.errorbar(*zip(*points), marker=marker, capsize=3, label=label)
        return len(points) > 1  # one point is no trend: a figure of lines of one point is not drawn

    masks = [("mask0.25", 0.25), ("mask0.5", 0.5), ("base", 0.75), ("mask0.9", 0.9)]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = line(ax, [m for _, m in masks], [[r.probe(f"{n}-seed{s}") for s in SEEDS] for n, _ in masks], "probe", "o")
    drawn |= line(ax, [m for _, m in masks], [[r.acc(f"{n}-seed{s}", s, labels=args.labels[0]) for s in SEEDS]
                                              for n, _ in masks], f"fine-tuning, {args.labels[0]} per class", "s")
    ax.set(xlabel="mask ratio", ylabel="validation accuracy (%)")
    finish(fig, ax, drawn, os.path.join(docs, "mask_ratio.png"))

    epochs = [args.epochs * f for f in (1, *LONGER)]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = line(ax, epochs, [[r.acc(f"base-seed{s}" if e == args.epochs else f"base-ep{e}-seed0", s) for s in SEEDS]
                              for e in epochs], "fine-tuning, every label", "s")
    drawn |= line(ax, epochs, [[r.probe("base-seed0" if e == args.epochs else f"base-ep{e}-seed0")] for e in epochs],
                  "linear probe", "o")
    ax.set(xscale="log", xlabel="pre-training epochs", ylabel="validation accuracy (%)")
    finish(fig, ax, drawn, os.path.join(docs, "schedule.png"))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    drawn = False
    for run, epochs in (("base-seed0", args.epochs), (f"base-ep{longest}-seed0", longest)):
        drawn |= line(ax, range(len(PARTIAL_BLOCKS) + 1), [[r.acc(run, 0, blocks=k)] for k in PARTIAL_BLOCKS]
                      + [[r.acc(run, 0)]], f"pre-trained {epochs} epochs", "o")
    ax.set(xlabel="fine-tuned blocks (the last K of the encoder)", ylabel="validation accuracy (%)",
           xticks=range(len(PARTIAL_BLOCKS) + 1), xticklabels=[*map(str, PARTIAL_BLOCKS), "all"])
    finish(fig, ax, drawn, os.path.join(docs, "partial.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    runs = [("base", s, None) for s in SEEDS] + [("base", 0, args.epochs * f) for f in LONGER]
    for name, s, e in runs:
        curve = r.run(name, s, e, "curve")
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, linewidth=1, label=f"{variant(name, e)}-seed{s}")
    ax.set(xscale="log", xlabel="epoch", ylabel="validation masked MSE")
    finish(fig, ax, any(r.run(*run, "curve") for run in runs), os.path.join(docs, "curves.png"))


def finish(fig, ax, drawn, path):
    """Save a figure that has something in it (a figure of runs that have not run yet keeps the old file)."""
    if drawn:
        ax.legend(fontsize=7)
        save(fig, path)
    else:
        pyplot().close(fig)


def recon(args, docs):
    """recon_base.png, from the base run's checkpoint and photos, when its folder is here."""
    checkpoint = os.path.join(args.out, "base-seed0", "checkpoint.npz")
    if os.path.exists(checkpoint):
        from tinymae.evaluate import main as evaluate
        evaluate(["--checkpoint", checkpoint, "--data", args.data, "--figure", os.path.join(docs, "recon_base.png"),
                  "--figure-images", "6", "--overwrite", "--no-progress"])


def write_page(path, lines):
    """Write a page, unless it would replace one with more numbers in its tables."""
    text = "\n".join(lines) + "\n"
    def count(t):
        return sum(any(c.isdigit() for c in cell) for row in t.splitlines() if row.startswith("|")
                   for cell in row.split("|"))
    if os.path.exists(path):
        with open(path) as f:
            before = count(f.read())
        if count(text) < before:
            raise TinymaeError(f"{path} has {before} numbers in its tables and the page from results.json would have "
                               f"{count(text)}: it is kept. Write to another --docs")
    write_atomically(path, lambda f: f.write(text.encode()))


def write_report(jobs, args, photos):
    ledger = update(jobs, args, photos)
    r = Results(ledger, args)
    count = []
    sections(r, args, lambda a, b, sign: count.append(1) or ("", ""))
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * len(count)))
    intro = open(os.path.join(os.path.dirname(__file__), "results_intro.md")).read().strip().splitlines()
    plots(r, args, args.docs)
    recon(args, args.docs)
    page = intro + ["", f"- {rule(len(count), z)}", ""] + sections(r, args, lambda a, b, s: compare(a, b, s, z)) + \
        [""] + runs_section(r, jobs)
    figures = [line for line in page if line.startswith("![")]  # a figure not drawn yet is not linked
    missing = {line for line in figures if not os.path.exists(os.path.join(args.docs, line.split("](")[1][:-1]))}
    write_page(os.path.join(args.docs, "results.md"), [line for line in page if line not in missing])
    if any(jid.startswith(("pretrain/recipe-", "torch/recipe-")) for jid in ledger):
        write_page(os.path.join(args.docs, "recipe.md"), recipe_page(r, args))
    print(f"wrote results.md and results.json ({len(ledger)} results) in {args.docs}")
