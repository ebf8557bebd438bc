"""Every setting of tinymae in one place: its default, its help, its bounds.

nanoGPT keeps its model's settings in a small dataclass and derives its command-line overrides from it; here every
setting is declared once, below, and the rest derives from it: the flags and their help (util/cli.py), the checks
before any work (check), a checkpoint's header, what a resumed run may change (on_resume="new"). Bounds are
intervals, "[0, 1)": check() tests every value against them (and that a float is finite), naming the flag.

    MAEConfig, MLPConfig, ViTConfig       the models (model/mae_mlp.py, model/mae_vit.py)
    TrainConfig                           what pre-training and fine-tuning share: AdamW, the schedule, the run
    PretrainConfig, FinetuneConfig        python -m tinymae.pretrain, tinymae.finetune
    EvaluateConfig, ProbeConfig, PredictConfig
"""
import math
import re
from dataclasses import asdict, dataclass, field, fields

from .errors import TinymaeError

MAX_PARAMS = 200_000_000  # a typo in a width is one line, not a machine out of memory


def setting(default, help, bounds=None, choices=None, on_resume="kept", flag=True, required=False, positional=False):
    return field(default=default, metadata=dict(help=help, bounds=bounds, choices=choices, on_resume=on_resume,
                                                flag=flag, required=required, positional=positional))


def flag_name(name):
    return "--" + name.replace("_", "-")


def check(cfg):
    """TinymaeError naming the flag for a value outside its bounds or choices, or a float that is not finite; then
    the config's checks of settings that depend on each other (validate)."""
    for f in fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        what = flag_name(f.name) if meta.get("flag") else f.name
        if value is None and meta.get("required"):
            raise TinymaeError(f"{what} is required: {meta['help']}")
        for v in value if isinstance(value, (tuple, list)) else () if value is None else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise TinymaeError(f"{what} must be a finite number, got {v}")
            if meta.get("choices") and v not in meta["choices"]:
                raise TinymaeError(f"{what} must be one of {', '.join(map(str, meta['choices']))}, got {v!r}")
            if meta.get("bounds") and not within(v, meta["bounds"]):
                raise TinymaeError(f"{what} must be in {meta['bounds']}, got {v}")
    cfg.validate()


def within(value, bounds):
    """Whether value lies in an interval written "[a, b)", "(0, 1]", ..."""
    low_open, low, high, high_open = re.fullmatch(r"([\[(])(.+), (.+)([\])])", bounds).groups()
    low, high = float(low), float(high)
    return (low < value if low_open == "(" else low <= value) and (value < high if high_open == ")" else value <= high)


@dataclass
class Settings:
    def validate(self):
        pass

    def to_dict(self):
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# the models

@dataclass
class MAEConfig(Settings):
    img_size: int = setting(48, "image side in pixels", "[1, 512]")
    patch_size: int = setting(6, "patch side in pixels (48 / 6 = 8 x 8 = 64 patches)", "[1, 512]")
    in_chans: int = setting(3, "colour channels", "[3, 3]", flag=False)
    mask_ratio: float = setting(0.75, "share of the patches removed (the paper's 75%)", "(0, 1)")
    masking: str = setting("random", "which patches are removed (the paper's Table 1f): random, block-wise (BEiT) or "
                                     "a regular grid (one of every 2 x 2 kept)", choices=("random", "block", "grid"))
    norm_pix_loss: bool = setting(False, "predict per-patch normalised pixels (the paper's Table 1d)")
    loss_on: str = setting("masked", "the loss on the removed patches only (the paper) or on all patches",
                           choices=("masked", "all"))

    @property
    def num_patches(self):  # L
        return (self.img_size // self.patch_size) ** 2

    @property
    def patch_dim(self):  # P = p*p*3
        return self.patch_size ** 2 * self.in_chans

    @property
    def len_keep(self):  # K, as random_masking computes it
        return int(self.num_patches * (1 - self.mask_ratio))

    def validate(self):
        side = self.img_size // self.patch_size
        if self.img_size % self.patch_size:
            raise TinymaeError(f"--img-size {self.img_size} is not a multiple of --patch-size {self.patch_size}")
        if not 1 <= self.len_keep < self.num_patches:
            raise TinymaeError(f"--mask-ratio {self.mask_ratio} keeps {self.len_keep} of the {self.num_patches} "
                               "patches; it must keep at least one and remove at least one")
        if self.masking == "grid" and (self.mask_ratio != 0.75 or side % 2):
            raise TinymaeError(f"--masking grid keeps one patch of every 2 x 2: it needs --mask-ratio 0.75 and an even "
                               f"number of patches on a side (here {side})")
        if self.param_count() > MAX_PARAMS:
            raise TinymaeError(f"these model settings make {self.param_count():,} parameters; tinymae builds at most "
                               f"{MAX_PARAMS:,}: choose smaller widths or sizes")


@dataclass
class MLPConfig(MAEConfig):
    # mask_ratio is part of this architecture: the encoder's input width is K * embed_dim.
    embed_dim: int = setting(64, "width of each token before the K visible tokens are flattened", "[1, 65536]")
    encoder_dims: tuple = setting((512, 512, 256), "mlp: widths of the encoder's layers; the last is the latent",
                                  "[1, 65536]")
    decoder_dims: tuple = setting((512,), "mlp: widths of the decoder's hidden layers", "[1, 65536]")

    def validate(self):
        if not self.encoder_dims:
            raise TinymaeError("--encoder-dims needs at least one width (its last is the latent)")
        super().validate()

    def param_count(self):
        """The number of parameters MaskedAutoencoderMLP builds (tested equal)."""
        E, L, P = self.embed_dim, self.num_patches, self.patch_dim
        dims = [self.len_keep * E, *self.encoder_dims, *self.decoder_dims, L * P]
        return P * E + E + sum(a * b + b for a, b in zip(dims, dims[1:]))


@dataclass
class ViTConfig(MAEConfig):
    embed_dim: int = setting(128, "encoder width D", "[4, 65536]")
    depth: int = setting(4, "vit: encoder blocks", "[1, 64]")
    num_heads: int = setting(4, "vit: encoder attention heads (each D / num_heads wide)", "[1, 1024]")
    decoder_embed_dim: int = setting(64, "vit: decoder width", "[4, 65536]")
    decoder_depth: int = setting(2, "vit: decoder blocks", "[1, 64]")
    decoder_num_heads: int = setting(4, "vit: decoder attention heads", "[1, 1024]")
    mlp_ratio: float = setting(4.0, "vit: each block's MLP width, relative to the block's", "[0.25, 16]")
    qkv_init: str = setting("fused", "vit: xavier-uniform qkv weight as one fused Linear (models_mae.py) or as three "
                                     "projections (the JAX ViT)", choices=("fused", "per-projection"))
    encoder_mask_tokens: bool = setting(False, "vit ablation (the paper's Table 1c): the encoder also processes the "
                                               "removed positions as mask tokens (model/ablations.py)")

    def validate(self):
        for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if getattr(self, width) % getattr(self, heads) or getattr(self, width) % 4:
                raise TinymaeError(f"{flag_name(width)} {getattr(self, width)} must be divisible by {flag_name(heads)} "
                                   f"{getattr(self, heads)} (the head width) and by 4 (the sin-cos position table)")
        super().validate()

    def param_count(self):
        """The number of parameters MaskedAutoencoderViT builds (tested equal)."""
        def blocks(dim, depth):
            hidden = int(dim * self.mlp_ratio)
            return depth * (4 * dim + 3 * dim * dim + 3 * dim + dim * dim + dim + 2 * dim * hidden + hidden + dim)
        D, Dd, P = self.embed_dim, self.decoder_embed_dim, self.patch_dim
        encoder = P * D + D + D + blocks(D, self.depth) + 2 * D  # patch_embed, cls_token, blocks, norm
        decoder = D * Dd + Dd + Dd + blocks(Dd, self.decoder_depth) + 2 * Dd + Dd * P + P
        return encoder + decoder + (D - Dd if self.encoder_mask_tokens else 0)  # the ablation's [M] is the encoder's


MODEL_CONFIGS = {"mlp": MLPConfig, "vit": ViTConfig}


def model_config(arch, settings):
    """The checked config of `arch` from a dict of settings (a command line's, or a checkpoint's)."""
    if arch not in MODEL_CONFIGS:
        raise TinymaeError(f"unknown architecture {arch!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    unknown = sorted(set(settings) - {f.name for f in fields(MODEL_CONFIGS[arch])})
    if unknown:
        raise TinymaeError(f"--arch {arch} has no {', '.join(map(flag_name, unknown))}")
    # JSON has no tuples: the widths saved in a checkpoint come back as lists.
    cfg = MODEL_CONFIGS[arch](**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    check(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------
# the runs

# Pre-training defaults that depend on the architecture: the ViT learns best from many small steps at this scale
# (docs/archive/recipe-2026-11-28/recipe.md); the MLP is almost all large matrix products: large batches.
ARCH_RECIPE = {"mlp": {"batch_size": 256, "warmup_epochs": 5.0}, "vit": {"batch_size": 32, "warmup_epochs": 2.5}}


@dataclass
class TrainConfig(Settings):
    out: str = setting(None, "the run's folder", on_resume="new")
    epochs: int = setting(50, "passes over the training photos (a resumed run may train longer)", "[1, 100000]",
                          on_resume="new")
    batch_size: int = setting(128, "photos per step", "[1, 65536]")
    lr: float = setting(0.005, "peak learning rate of AdamW (a resumed run may take a lower one)", "(0, 10]",
                        on_resume="new")
    min_lr: float = setting(0.0, "learning rate at the end of the cosine", "[0, 10]")
    warmup_epochs: float = setting(5.0, "epochs of linear learning-rate warm-up", "[0, 100000]")
    weight_decay: float = setting(0.05, "AdamW's decoupled weight decay (none on biases and norms)", "[0, 10]")
    seed: int = setting(0, "seeds the split, the weights, the batches and the augmentation", "[0, 4294967295]")
    kernels: str = setting("fast", "fast: the step on every core (tinymae/fast/); reference: the plain formulas of "
                                   "tinymae/model/, one batch at a time", choices=("fast", "reference"),
                           on_resume="new")
    threads: int = setting(0, "worker threads of the fast step on the CPU: 0 = one per core", "[0, 1024]",
                           on_resume="new")
    resume: bool = setting(False, "continue the run in --out from its checkpoint", on_resume="new")
    overwrite: bool = setting(False, "replace the run in --out, and what was derived from it", on_resume="new")
    progress: bool = setting(True, "progress bars (--no-progress: one line per epoch)", on_resume="new")

    def validate(self):
        if self.min_lr > self.lr:
            raise TinymaeError(f"--min-lr {self.min_lr} must not be above --lr {self.lr}")


@dataclass
class PretrainConfig(TrainConfig):
    """MAE pre-training, as main_pretrain.py of the official MAE, scaled to 48-pixel photos."""
    data: str = setting("data/catsdogs", "a folder of photos, with a sub-folder per class or not", on_resume="new")
    download: bool = setting(False, "if --data holds no photos, download Microsoft's Cats and Dogs archive (~800 MB) "
                                    "into it first", on_resume="new")
    out: str = setting(None, "the run's folder (default: runs/<arch>)", on_resume="new")
    per_class: int = setting(None, "only the first N photos of each class (default: all)", "[1, 10000000]")
    val_fraction: float = setting(0.2, "share of each class held out for validation", "(0, 1)")
    load_size: int = setting(None, "photos are resized to this side, then cropped to --img-size (default: img_size * "
                                   "9 / 8)", "[1, 1024]")
    arch: str = setting("mlp", "mlp: an MLP encoder and decoder; vit: the paper's Vision Transformer MAE",
                        choices=tuple(MODEL_CONFIGS))
    batch_size: int = setting(None, "photos per step (default: mlp 256, vit 32)", "[1, 65536]")
    warmup_epochs: float = setting(None, "epochs of linear learning-rate warm-up (default: mlp 5, vit 2.5)",
                                   "[0, 100000]")
    beta2: float = setting(0.95, "AdamW's second-moment decay (MAE's pre-training; PyTorch's default is 0.999)",
                           "(0, 1)")
    figure_images: int = setting(8, "validation photos in reconstructions.png (0: no figure)", "[0, 64]",
                                 on_resume="new")

    def __post_init__(self):
        for name, value in ARCH_RECIPE.get(self.arch, {}).items():  # the architecture's defaults, where unset
            setattr(self, name, value if getattr(self, name) is None else getattr(self, name))
        self.out = self.out or f"runs/{self.arch}"


@dataclass
class FinetuneConfig(TrainConfig):
    """Supervised fine-tuning of a pre-trained ViT encoder, as main_finetune.py of the official MAE."""
    checkpoint: str = setting(None, "checkpoint.npz of a ViT pre-training run", required=True)
    data: str = setting(None, "photos in class folders, <data>/<class>/... (default: the pre-training run's own photos "
                              "and split); other photos are split anew", on_resume="new")
    out: str = setting(None, "the run's folder (default: <checkpoint's folder>/finetune-<settings>)", on_resume="new")
    val_fraction: float = setting(0.2, "share of each class held out, for photos other than the pre-training run's",
                                  "(0, 1)")
    test_data: str = setting(None, "also report the accuracy on every photo of this folder (class folders)",
                             on_resume="new")
    from_scratch: bool = setting(False, "train the same network from random weights (the paper's baseline)")
    labels_per_class: int = setting(None, "fine-tune on N labelled photos per class (default: all)", "[1, 10000000]")
    trainable_blocks: int = setting(None, "train only the last K encoder blocks, fc_norm and the head (Figure 9; 0: a "
                                          "linear classifier on the frozen encoder; default: every block)", "[0, 64]")
    mixup: float = setting(0.0, "mixup's alpha: each batch blended with itself reversed (ViT-B recipe: 0.8; 0: off)",
                           "[0, 10]")
    drop_path: float = setting(0.0, "stochastic depth's highest rate, rising from 0 at the first block (ViT-B "
                                    "recipe: 0.1)", "[0, 1)")
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine", "[0, 10]")
    layer_decay: float = setting(0.75, "layer-wise learning-rate decay (the official param_groups_lrd)", "(0, 1]")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy", "[0, 1)")
    eval_every: int = setting(1, "measure the accuracies every N epochs (and after the last)", "[1, 100000]",
                              on_resume="new")
    json: str = setting(None, "also write the result to this .json file", on_resume="new")


@dataclass
class EvaluateConfig(Settings):
    checkpoint: str = setting(None, "checkpoint.npz of a pre-training run", required=True)
    data: str = setting(None, "photos to measure on (default: the run's own validation photos); of another folder, "
                              "every photo the run did not train on")
    mask_seed: int = setting(0, "seed of the fixed masks", "[0, 4294967295]")
    batch_size: int = setting(256, "photos per forward pass", "[1, 65536]")
    per_class: int = setting(None, "only the first N photos of each class of another folder", "[1, 10000000]")
    figure: str = setting(None, "also draw the four-column reconstruction figure here (.png unless another ending)")
    figure_images: int = setting(8, "rows in the figure, photos spread over the set", "[1, 64]")
    overwrite: bool = setting(False, "replace an existing --figure file")
    progress: bool = setting(True, "a progress bar while decoding")


@dataclass
class ProbeConfig(Settings):
    checkpoint: str = setting(None, "checkpoint.npz of a pre-training run", required=True)
    data: str = setting(None, "photos in class folders (default: the run's own photos and split); other photos are "
                              "split anew")
    val_fraction: float = setting(0.2, "share of each class held out, for photos other than the run's", "(0, 1)")
    seeds: int = setting(3, "probe repetitions, for mean +- std", "[1, 100]")
    per_class: int = setting(None, "only the first N photos of each class of another folder", "[1, 10000000]")
    baselines: bool = setting(True, "also probe raw pixels and a randomly initialised encoder")
    json: str = setting(None, "also write the report to this .json file")
    overwrite: bool = setting(False, "replace an existing --json file")
    progress: bool = setting(True, "progress bars")


@dataclass
class PredictConfig(Settings):
    checkpoint: str = setting(None, "classifier.npz of a fine-tuning run (python -m tinymae.finetune)", required=True)
    photos: tuple = setting((), "photo files to classify", required=True, positional=True)
    json: bool = setting(False, "one JSON object per photo instead of a line of text")
