"""The ablations section of docs/results.md: each variant's row, and each of the paper's findings read against
the base run by report.compare, the page's one rule."""
import os
import statistics

import numpy as np

from plan import ABLATIONS, SEEDS, run_name
from stats import compare, not_run_yet, pct, present, reading

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
             "and variance, so it is not comparable). *s / epoch*: the median epoch of the variant's fastest run (some "
             "seeds shared the machine with another run).", "",
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
        # the least-loaded run's: seeds that shared the machine with another run took up to twice as long
        per_epoch = min(statistics.median(h["epoch_time_s"] for h in r.metrics(run)["history"]) for run in done)
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
                    if v not in (None, "missing") and sign is not None}
        seeds = len(present(table[variant][0]))
        verdict = verdict_of(readings)  # one sentence, ending in a full stop
        decided = bool(readings & {"as the paper", "the opposite of the paper"})
        if seeds == 1 and decided:  # a verdict that one seed cannot carry alone
            verdict = f"**{verdict.rstrip('.')}** (one seed so far: {not_run_yet(table[variant][0], SEEDS)})."
        else:
            verdict = f"**{verdict}**"
        lines.append(f"- {claim}. Measured ({seeds} seed{'s' * (seeds > 1)}): probe {p_text}, fine-tuned {f_text}. "
                     f"{verdict}")
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


