"""The plan of the research sweep, as data: every job behind docs/results.md and docs/recipe.md, with its settings
and the jobs it needs first. experiments.py runs it; report.py reads what it left.

A job is one command of the package (python -m tinymae.pretrain, .probe, .finetune) or of the benchmarks
(train_torch.py), in its own folder under --out, and it is done when its done-file is there.
"""
import os
import shlex
import sys
from typing import NamedTuple

from tinymae.config import MODEL_CONFIGS, FinetuneConfig, PretrainConfig, flag_name
from tinymae.errors import TinymaeError
from tinymae.finetune import default_out

SEEDS = (0, 1, 2)
LONGER = (2, 4, 8)  # longer pre-trainings, in multiples of --epochs (100, 200, 400: the paper's Figure 7)
PARTIAL_BLOCKS = (0, 1, 2)  # Figure 9: fine-tune only the last K blocks
# Fine-tuning with every label: tinymae.finetune's defaults, then main_finetune.py's regularisation.
RECIPES = {"default": {}, "drop path": {"drop_path": 0.1}, "drop path + mixup": {"drop_path": 0.1, "mixup": 0.8}}
SEEDED_RECIPES = ("default", "drop path + mixup")  # the headline comparisons: over pre-training seeds as well
# The pre-training variants: the default ViT MAE with these settings (the paper's ablations).
ABLATIONS = {"mask0.25": {"mask_ratio": 0.25}, "mask0.5": {"mask_ratio": 0.5}, "mask0.9": {"mask_ratio": 0.9},
             "block": {"masking": "block"}, "block-mask0.5": {"masking": "block", "mask_ratio": 0.5},
             "grid": {"masking": "grid"}, "loss-all": {"loss_on": "all"}, "norm-pix": {"norm_pix_loss": True},
             "encoder-mask-tokens": {"encoder_mask_tokens": True}, "decoder-depth1": {"decoder_depth": 1},
             "decoder-depth4": {"decoder_depth": 4}, "decoder-width32": {"decoder_embed_dim": 32},
             "decoder-width128": {"decoder_embed_dim": 128}, "mlp": {"arch": "mlp"}}
# docs/recipe.md: one pre-training of the ViT per row, one setting changed from the row it names.
RECIPE = [("b256-w5", "batch 256, warm-up 5 epochs", None, dict(batch_size=256, warmup_epochs=5.0)),
          ("b128-w5", "batch 128", "b256-w5", dict(batch_size=128, warmup_epochs=5.0)),
          ("b128-w2.5", "warm-up 2.5 epochs", "b128-w5", dict(batch_size=128, warmup_epochs=2.5)),
          ("b64-w2.5", "batch 64", "b128-w2.5", dict(batch_size=64, warmup_epochs=2.5)),
          ("b64-w5", "warm-up 5 epochs", "b64-w2.5", dict(batch_size=64, warmup_epochs=5.0)),
          ("b32-w2.5", "batch 32: tinymae's ViT recipe", "b64-w2.5", dict(batch_size=32, warmup_epochs=2.5)),
          ("b16-w2.5", "batch 16", "b32-w2.5", dict(batch_size=16, warmup_epochs=2.5)),
          ("b64-w2.5-wd0", "no weight decay", "b64-w2.5", dict(batch_size=64, warmup_epochs=2.5, weight_decay=0.0)),
          ("b32-w2.5-wd0.1", "weight decay 0.1", "b32-w2.5", dict(batch_size=32, warmup_epochs=2.5, weight_decay=0.1)),
          ("b64-w2.5-beta0.999", "AdamW's beta2 0.999 (PyTorch's default) for MAE's 0.95", "b64-w2.5",
           dict(batch_size=64, warmup_epochs=2.5, beta2=0.999)),
          ("b32-w2.5-qkv", "qkv initialised as three projections (the JAX ViT)", "b32-w2.5",
           dict(batch_size=32, warmup_epochs=2.5, qkv_init="per-projection")),
          ("b128-w2.5-nocrop", "no crop: the whole photo resized to 48, flip only", "b128-w2.5",
           dict(batch_size=128, warmup_epochs=2.5, load_size=48)),
          ("b32-w2.5-nocrop", "no crop", "b32-w2.5", dict(batch_size=32, warmup_epochs=2.5, load_size=48)),
          ("torch-b32", "PyTorch instead of tinymae: the same model, recipe, photos, batches and masks", "b32-w2.5",
           dict(batch_size=32, gelu="tanh")),
          ("torch-b32-exact-gelu", "PyTorch with the exact (erf) GELU of timm's ViT", "torch-b32",
           dict(batch_size=32, gelu="exact"))]
PARTS = ("finetune", "schedule", "partial", "ablations", "every-label", "seeds", "recipe")
DONE = {"pretrain": "metrics.json", "probe": "probe.json", "finetune": "result.json", "torch": "torch.json"}


class Job(NamedTuple):
    id: str  # stable: the same arguments give the same ids
    kind: str  # pretrain, probe, finetune or torch
    part: str
    folder: str  # where it writes, under --out
    settings: dict  # the command's settings (flag names without the dashes)
    after: tuple  # the ids of the jobs it needs first

    @property
    def done(self):
        """The file whose presence marks the job done, under --out."""
        return os.path.join(self.folder if self.kind == "finetune" else self.folder.split("/")[0], DONE[self.kind])

    @property
    def provenance(self):
        """What ran the job, beside its done-file: a file of its own, as a probe runs in its pre-training's folder."""
        return os.path.join(os.path.dirname(self.done), f"provenance-{self.kind}.json")


def variant(name, epochs=None):
    """A pre-training variant's name: base, norm-pix, ..., with -ep<E> when it trains longer."""
    return name + (f"-ep{epochs}" if epochs else "")


def plan(args):
    """Every job of every part, in the order a sequential sweep runs them."""
    jobs, model = {}, model_flags(args.model)
    longest = args.epochs * LONGER[-1]

    def add(job):  # a job two parts plan stays in the first
        jobs.setdefault(job.id, job)

    def pretrain(part, name, seed, epochs=None, probe=True, **settings):
        run = f"{variant(name, epochs)}-seed{seed}"
        settings = {"arch": "vit", **ABLATIONS.get(name, {}), **settings}
        settings = {**{k: v for k, v in model.items() if k in MODEL_CONFIGS[settings["arch"]].__dataclass_fields__
                       or k in PretrainConfig.__dataclass_fields__}, **settings,
                    "epochs": epochs or args.epochs, "seed": seed, "per_class": args.per_class}
        add(Job(f"pretrain/{run}", "pretrain", part, run, settings, ()))
        if probe:
            add(Job(f"probe/{run}", "probe", part, run, {"seeds": args.probe_seeds, "baselines": run == "base-seed0"},
                    (f"pretrain/{run}",)))
        return run

    few, every = args.labels[0], None
    for s in SEEDS:
        pretrain("finetune", "base", s)
    for labels in (*args.labels[:-1], every):  # few labels (a batch of 128 would be one step an epoch) and all
        for s in SEEDS:
            for scratch in (False, True):
                add(finetune_job(args, "finetune", f"base-seed{s}", s, labels, scratch))
    for factor in LONGER:
        run = pretrain("schedule", "base", 0, args.epochs * factor)
        add(finetune_job(args, "schedule", run, 0, few))
        add(finetune_job(args, "schedule", run, 0, every))
    for run in ("base-seed0", f"base-ep{longest}-seed0"):
        for blocks in (k for k in PARTIAL_BLOCKS if k < model.get("depth", 4)):  # 4: the ViT's depth (config.py)
            add(finetune_job(args, "partial", run, 0, every, blocks=blocks))
    for s in SEEDS:  # seed 0 of every ablation first, then seeds 1 and 2
        for name, settings in ABLATIONS.items():
            run = pretrain("ablations" if s == 0 else "seeds", name, s)
            if settings.get("arch", "vit") == "vit":  # the MLP's encoder cannot see a whole photo to classify
                add(finetune_job(args, "ablations" if s == 0 else "seeds", run, s, few))
    for recipe in RECIPES:  # every label: one 400-epoch pre-training with fine-tuning seeds 0-2, and scratch
        for s in SEEDS:
            add(finetune_job(args, "every-label", f"base-ep{longest}-seed0", s, recipe=recipe))
            add(finetune_job(args, "every-label", f"base-seed{s}", s, scratch=True, recipe=recipe))
    for name in ("base", "norm-pix"):  # the headline comparisons over pre-training seeds as well
        for s in SEEDS:
            run = pretrain("every-label", name, s, longest, probe=False)
            for recipe in (SEEDED_RECIPES if name == "base" else ("drop path + mixup",)):
                for ft_seed in (SEEDS if s == 0 else (s,)):  # seed 0's pre-training with each fine-tuning seed
                    add(finetune_job(args, "every-label", run, ft_seed, recipe=recipe))
    for name, _, _, settings in RECIPE:
        if name.startswith("torch"):
            jobs[f"torch/recipe-{name}"] = Job(f"torch/recipe-{name}", "torch", "recipe", f"recipe-{name}",
                                               {**settings, "epochs": args.epochs, "per_class": args.per_class}, ())
        else:
            pretrain("recipe", f"recipe-{name}", 0, **settings)
    chosen = {job.id for job in jobs.values() if args.part in ("all", job.part)}
    needed = {dep for jid in chosen for dep in jobs[jid].after}  # a part's jobs need pre-trainings of other parts
    return [job for job in jobs.values() if job.id in chosen | needed]


def finetune_job(args, part, run, seed, labels=None, scratch=False, blocks=None, recipe="default"):
    """Fine-tuning the pre-training `run` with these settings (the batch: the recipe's 128 with every label; with
    few labels smaller, so that the warm-up and the cosine get the steps they need, for both initialisations)."""
    settings = {"epochs": args.epochs, "seed": seed, "labels_per_class": labels, "from_scratch": scratch,
                "trainable_blocks": blocks, "batch_size": 128 if labels is None else 64 if labels >= 200 else 32,
                "eval_every": 25, **RECIPES[recipe]}
    name = os.path.basename(default_out(FinetuneConfig(checkpoint="checkpoint.npz", **settings)))
    return Job(f"finetune/{run}/{name}", "finetune", part, f"{run}/{name}", settings, (f"pretrain/{run}",))


def model_flags(text):
    """--model's flags, as settings: '--embed-dim 16 --depth 1' -> {embed_dim: 16, depth: 1}, checked."""
    fields = {**PretrainConfig.__dataclass_fields__, **MODEL_CONFIGS["mlp"].__dataclass_fields__,
              **MODEL_CONFIGS["vit"].__dataclass_fields__}
    words = shlex.split(text)
    if len(words) % 2 or not all(w.startswith("--") for w in words[::2]):
        raise TinymaeError(f"--model takes flag-value pairs such as '--embed-dim 16 --depth 1', got {text!r}")
    settings = {}
    for flag, value in zip(words[::2], words[1::2]):
        name = flag[2:].replace("-", "_")
        if name not in fields or name in ("arch", "seed", "epochs", "per_class", "data", "out", "resume", "overwrite"):
            raise TinymaeError(f"--model: {flag} is not a setting the sweep lets you change")
        if fields[name].type is bool:  # bool("False") is True
            if value.lower() not in ("true", "false"):
                raise TinymaeError(f"--model: {flag} {value!r} is not true or false")
            settings[name] = value.lower() == "true"
            continue
        try:
            settings[name] = tuple(int(w) for w in value.split(",")) if fields[name].type is tuple else \
                fields[name].type(value)
        except ValueError:
            raise TinymaeError(f"--model: {flag} {value!r} is not a {fields[name].type.__name__}") from None
    return settings


def command(job, args):
    """The job's command line (a list), as the sequential sweep and every engine run it."""
    out, folder = os.path.join(args.out, job.folder.split("/")[0]), os.path.join(args.out, job.folder)
    checkpoint, done = os.path.join(out, "checkpoint.npz"), os.path.join(args.out, job.done)
    if job.kind == "torch":
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                              "train_torch.py")
        return [sys.executable, script, "--data", args.data, "--arch", "vit", "--json", done, *flags(job.settings)]
    base = {"pretrain": ["-m", "tinymae.pretrain", "--data", args.data, "--out", out],
            "probe": ["-m", "tinymae.probe", "--checkpoint", checkpoint, "--data", args.data, "--json", done,
                      "--overwrite"],
            "finetune": ["-m", "tinymae.finetune", "--checkpoint", checkpoint, "--data", args.data, "--out", folder]}
    resume = {"pretrain": checkpoint, "finetune": os.path.join(folder, "classifier.npz")}.get(job.kind, "")
    again = ["--resume"] if os.path.exists(resume) else []  # a killed job goes on where it was
    return [sys.executable, *base[job.kind], "--no-progress", *again, *flags(job.settings)]


def flags(settings):
    """{name: value} -> the command line's flags; None leaves a setting at its default."""
    words = []
    for name, value in settings.items():
        if isinstance(value, bool):
            words.append(flag_name(name) if value else "--no-" + name.replace("_", "-"))
        elif value is not None:
            words += [flag_name(name), ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return words
