"""The plan of research/experiments.py: every run behind docs/results.md, named, with its settings, in the
order the runs happen. The command (experiments.py) runs it; report.py, findings.py and plots.py read the
run folders it names."""
import shlex

from tinymae.config import MODEL_CONFIGS, PretrainConfig, flag_name

from runs import SweepError

SEEDS = (0, 1, 2)
EPOCHS = 50
SCHEDULE = (2, 4, 8)  # longer pre-trainings, in multiples of --epochs: 100, 200 and 400 epochs
PARTIAL_BLOCKS = (0, 1, 2)  # Figure 9: fine-tune only the last K blocks (all 4: the full fine-tuning)
DROP_PATH = 0.1  # main_finetune.py's ViT-B recipe
MIXUP = 0.8  # the same
# Fine-tuning with every label, as tinymae.finetune's defaults, then with main_finetune.py's regularisation.
RECIPES = ({}, {"drop_path": DROP_PATH}, {"drop_path": DROP_PATH, "mixup": MIXUP})
PROBE_SEEDS = 3

# The pre-training variants: the default ViT MAE with the settings shown (flag names without the dashes).
ABLATIONS = {
    "mask0.25": dict(mask_ratio=0.25),
    "mask0.5": dict(mask_ratio=0.5),
    "mask0.9": dict(mask_ratio=0.9),
    "loss-all": dict(loss_on="all"),
    "norm-pix": dict(norm_pix_loss=True),
    "encoder-mask-tokens": dict(encoder_mask_tokens=True),
    "decoder-depth1": dict(decoder_depth=1),
    "decoder-depth4": dict(decoder_depth=4),
    "decoder-width32": dict(decoder_embed_dim=32),
    "decoder-width128": dict(decoder_embed_dim=128),
    "mlp": dict(arch="mlp"),
}
PARTS = ("finetune", "schedule", "partial", "ablations", "every-label", "seeds")


def run_name(variant, seed):
    return f"{variant}-seed{seed}"


def schedule_variant(factor, args):
    """The base pre-training stretched to `factor` times --epochs (its cosine too): base-ep100, ..."""
    return "base" if factor == 1 else f"base-ep{factor * args.epochs}"


def pretrain_settings(variant, seed, args):
    """The settings of a pre-training run: {name: value}, as its command line would give them (the variant's
    own settings win over --model's). A variant named <name>-ep<E> is <name> pre-trained for E epochs."""
    name, _, epochs = variant.partition("-ep")
    variant_settings = {} if name == "base" else ABLATIONS[name]
    arch = variant_settings.get("arch", "vit")
    return {"arch": arch, "epochs": int(epochs) if epochs else args.epochs, **model_flags(args.model, arch),
            **variant_settings, "seed": seed, "per_class": args.per_class}


def batch_for(labels):
    """The fine-tuning batch: the recipe's 128 with every label; with 50 labels per class a batch of 128 would
    be one step per epoch, so smaller batches give few labels the optimiser steps that the warm-up and the
    cosine need. The same for both initialisations."""
    return 128 if labels is None else 64 if labels >= 200 else 32


def finetune_settings(args, labels, seed, scratch=False, blocks=None, drop_path=0.0, mixup=0.0):
    """A fine-tuning's settings; only the ones a variant sets, so that a result written before a setting
    existed is still recognised."""
    settings = {"eval_every": 25, "epochs": args.epochs, "from_scratch": scratch, "labels_per_class": labels,
                "batch_size": batch_for(labels), "seed": seed}
    if blocks is not None:
        settings["trainable_blocks"] = blocks
    if drop_path:
        settings["drop_path"] = drop_path
    if mixup:
        settings["mixup"] = mixup
    return settings


RESERVED = ("arch", "seed", "epochs", "per_class", "data", "out", "resume", "overwrite", "progress")


def model_flags(text, arch):
    """--model's flags that apply to `arch`, as settings: '--embed-dim 16 --depth 1' -> {embed_dim: 16, ...}.
    Recipe flags (--batch-size 8) apply to every run; a model flag of the other architecture is left out."""
    words = shlex.split(text)
    if len(words) % 2 or not all(w.startswith("--") for w in words[::2]):
        raise SweepError(f"--model takes flag-value pairs such as '--embed-dim 16 --depth 1', got {text!r}")
    model_fields = MODEL_CONFIGS[arch].__dataclass_fields__
    any_model = {**MODEL_CONFIGS["mlp"].__dataclass_fields__, **MODEL_CONFIGS["vit"].__dataclass_fields__}
    settings = {}
    for flag, value in zip(words[::2], words[1::2]):
        name = flag[2:].replace("-", "_")
        field = any_model.get(name) or PretrainConfig.__dataclass_fields__.get(name)
        if field is None or name in RESERVED:
            raise SweepError(f"--model: {flag} is not a setting it can change (the experiments choose "
                             f"{', '.join(flag_name(n) for n in RESERVED[:4])} themselves)")
        try:
            typed = tuple(int(w) for w in value.split(",")) if field.type is tuple else field.type(value)
        except ValueError:
            raise SweepError(f"--model: {flag} {value!r} is not a {field.type.__name__}") from None
        if name in model_fields or name not in any_model:
            settings[name] = typed
    return settings


# ----------------------------------------------------------------------------------------------
# the plan: every job of every part, in the order they run

def plan(args):
    """-> [(part, kind, run name, variant, seed, finetune settings or None)]; kind: pretrain, probe, finetune."""
    jobs = []

    def pretrained(part, variant, seed, probe=True):
        jobs.append((part, "pretrain", run_name(variant, seed), variant, seed, None))
        if probe:
            jobs.append((part, "probe", run_name(variant, seed), variant, seed, None))

    def finetuned(part, variant, seed, settings):
        jobs.append((part, "finetune", run_name(variant, seed), variant, seed, settings))

    few, every = args.labels[0], None
    longest = schedule_variant(SCHEDULE[-1], args)
    for s in SEEDS:
        pretrained("finetune", "base", s)
    for labels in args.labels[:-1]:  # few labels: 3 seeds (the MAE side fine-tunes the base run of its seed)
        for s in SEEDS:
            for scratch in (False, True):
                finetuned("finetune", "base", s, finetune_settings(args, labels, s, scratch=scratch))
    for scratch in (False, True):
        finetuned("finetune", "base", 0, finetune_settings(args, every, 0, scratch=scratch))

    for factor in SCHEDULE:
        pretrained("schedule", schedule_variant(factor, args), 0)
        finetuned("schedule", schedule_variant(factor, args), 0, finetune_settings(args, few, 0))
        finetuned("schedule", schedule_variant(factor, args), 0, finetune_settings(args, every, 0))

    for variant in ("base", longest):
        for blocks in PARTIAL_BLOCKS:
            finetuned("partial", variant, 0, finetune_settings(args, every, 0, blocks=blocks))

    for s in SEEDS:  # every variant once; the "seeds" part repeats them with seeds 1 and 2
        for variant in ABLATIONS:
            part = "ablations" if s == 0 else "seeds"
            pretrained(part, variant, s)
            if ABLATIONS[variant].get("arch", "vit") == "vit":  # the MLP cannot see a whole image to classify
                finetuned(part, variant, s, finetune_settings(args, few, s))
        if s == 0:
            for labels in args.labels[1:-1]:  # norm-pix, which the official scripts use, with more labels
                finetuned("ablations", "norm-pix", 0, finetune_settings(args, labels, 0))

    for s in SEEDS[1:]:
        finetuned("every-label", "base", s, finetune_settings(args, every, s))
        finetuned("every-label", "base", s, finetune_settings(args, every, s, scratch=True))
        finetuned("every-label", longest, 0, finetune_settings(args, every, s))
    for recipe in RECIPES[1:]:  # the fine-tuning recipe's regularisation, MAE-initialised and from scratch
        for s in SEEDS:
            finetuned("every-label", longest, 0, finetune_settings(args, every, s, **recipe))
            finetuned("every-label", "base", s, finetune_settings(args, every, s, scratch=True, **recipe))
    normpix_longest = longest.replace("base", "norm-pix")  # the normalised-pixel target, pre-trained as long
    pretrained("every-label", normpix_longest, 0)
    for s in SEEDS:
        finetuned("every-label", normpix_longest, 0, finetune_settings(args, every, s, **RECIPES[-1]))
    return jobs
