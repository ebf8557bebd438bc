"""Every setting of tinymae, in one place: the models' shapes and the training recipes.

nanoGPT keeps its model's settings in a small dataclass and derives its command-line overrides from it.
tinymae does that for every setting: the command-line flags of `tinymae.pretrain` and `tinymae.finetune`,
the header of a checkpoint, what a resumed run keeps, and the experiments' variants are all built from
the dataclasses below (util/cli.py builds the flags). A new setting is one new line here, with its help
text; nothing else to edit.

    MAEConfig        what every MAE here shares: image and patch size, mask ratio, the loss
    MLPConfig        + the MLP's widths                          (mae_mlp.MaskedAutoencoderMLP)
    ViTConfig        + the Vision Transformer's shape            (mae_vit.MaskedAutoencoderViT)
    PretrainConfig   the pre-training recipe and run             (tinymae.pretrain)
    FinetuneConfig   the fine-tuning recipe and run              (tinymae.finetune)

Each field is declared with `setting(default, help)`. Recipe fields that a resumed run may change (say,
more epochs) are marked `on_resume="new"`; every other field of a resumed run comes from its checkpoint.
"""
import math
from dataclasses import asdict, dataclass, field, fields


def setting(default, help, choices=None, on_resume="kept", flag=True):
    """A dataclass field with its command-line help. on_resume: "kept" (a resumed run keeps the
    checkpoint's value) or "new" (a resumed run takes the value given now); flag=False: no CLI flag."""
    return field(default=default, metadata={"help": help, "choices": choices, "on_resume": on_resume, "flag": flag})


# ----------------------------------------------------------------------------------------------
# the models

# Sizes beyond these are refused before anything is allocated: tinymae trains small models on small photos,
# and a typo (an image side of 100000) should be one line, not a MemoryError or a machine out of memory.
MAX_IMG_SIZE = 512  # pixels on a side
MAX_PARAMS = 200_000_000  # parameters of a model (x 4 bytes, x 3 with AdamW's moments)

@dataclass
class MAEConfig:
    img_size: int = setting(48, "image side in pixels")
    patch_size: int = setting(6, "patch side in pixels (48 / 6 = 8 x 8 = 64 patches)")
    in_chans: int = setting(3, "colour channels", flag=False)
    mask_ratio: float = setting(0.75, "share of the patches removed (the paper's 75%: the encoder sees 16 of 64)")
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

    def to_dict(self):
        return asdict(self)

    def validate(self):
        """Raise ValueError, naming the setting, for settings no MAE here can be built with."""
        check_finite(self)
        for name in ("img_size", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.img_size > MAX_IMG_SIZE:
            raise ValueError(f"img_size must be at most {MAX_IMG_SIZE} pixels (tinymae trains on small photos), "
                             f"got {self.img_size}")
        for f in fields(self):  # every setting declared with its choices (loss_on, qkv_init, ...)
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is not None and value not in choices:
                listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
                raise ValueError(f"{f.name} must be {listed}, got {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be above 0 and below 1, got {self.mask_ratio}")
        if self.len_keep < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} leaves no visible patch of the {self.num_patches}")
        if self.len_keep == self.num_patches:
            raise ValueError(f"mask_ratio {self.mask_ratio} removes no patch of the {self.num_patches}")


@dataclass
class MLPConfig(MAEConfig):
    # For this model mask_ratio is part of the architecture: the encoder's input width is K * embed_dim.
    embed_dim: int = setting(64, "width of each token before the K visible tokens are flattened")
    encoder_dims: tuple = setting((512, 512, 256), "mlp: widths of the encoder's Linear + ReLU layers; the last "
                                                   "is the latent")
    decoder_dims: tuple = setting((512,), "mlp: widths of the decoder's hidden Linear + ReLU layers")

    def validate(self):
        super().validate()
        for name in ("embed_dim", "encoder_dims", "decoder_dims"):
            widths = getattr(self, name)
            if any(w < 1 for w in (widths if isinstance(widths, tuple) else (widths,))):
                raise ValueError(f"{name} must be positive widths, got {widths}")
        if not self.encoder_dims:
            raise ValueError("encoder_dims needs at least one layer (its last width is the latent)")
        check_size(self, self.param_count())

    def param_count(self):
        """The number of parameters MaskedAutoencoderMLP builds from these settings (tested equal)."""
        E, L, P = self.embed_dim, self.num_patches, self.patch_dim
        dims = [self.len_keep * E, *self.encoder_dims, *self.decoder_dims, L * P]
        return P * E + E + sum(a * b + b for a, b in zip(dims, dims[1:]))


@dataclass
class ViTConfig(MAEConfig):
    embed_dim: int = setting(128, "encoder width D")
    depth: int = setting(4, "vit: encoder blocks")
    num_heads: int = setting(4, "vit: encoder attention heads (each D / num_heads wide)")
    decoder_embed_dim: int = setting(64, "vit: decoder width")
    decoder_depth: int = setting(2, "vit: decoder blocks")
    decoder_num_heads: int = setting(4, "vit: decoder attention heads")
    mlp_ratio: float = setting(4.0, "vit: hidden width of each block's MLP, relative to the block's width")
    qkv_init: str = setting("fused", "vit: xavier-uniform init of the qkv weight as one fused Linear (models_mae.py) "
                                     "or as three projections (the JAX ViT)", choices=("fused", "per-projection"))
    # The paper's Table 1c ablation "encoder w/ [M]" (ablations.py): slower and worse; off for MAE proper.
    encoder_mask_tokens: bool = setting(False, "vit ablation (the paper's Table 1c): the encoder also processes "
                                               "the removed positions, as mask tokens")

    def validate(self):
        super().validate()
        for width_name, heads_name, depth_name in (("embed_dim", "num_heads", "depth"),
                                                   ("decoder_embed_dim", "decoder_num_heads", "decoder_depth")):
            width, heads, depth = getattr(self, width_name), getattr(self, heads_name), getattr(self, depth_name)
            if width < 1 or heads < 1 or depth < 1:
                raise ValueError(f"{width_name}, {heads_name} and {depth_name} must be at least 1, "
                                 f"got {width}, {heads}, {depth}")
            if width % heads:
                raise ValueError(f"{width_name}={width} must be divisible by {heads_name}={heads} (the head width)")
            if width % 4:
                raise ValueError(f"{width_name}={width} must be divisible by 4 (the 2-D sin-cos position embedding)")
        if not 0.25 <= self.mlp_ratio <= 16:
            raise ValueError(f"mlp_ratio must be between 0.25 and 16 (the MLP's hidden width relative to the block's; "
                             f"the paper's is 4), got {self.mlp_ratio}")
        check_size(self, self.param_count())

    def param_count(self):
        """The number of parameters MaskedAutoencoderViT builds from these settings (tested equal)."""
        def blocks(dim, depth):
            hidden = int(dim * self.mlp_ratio)
            return depth * (4 * dim + 3 * dim * dim + 3 * dim + dim * dim + dim + 2 * dim * hidden + hidden + dim)
        D, Dd, P = self.embed_dim, self.decoder_embed_dim, self.patch_dim
        encoder = P * D + D + D + blocks(D, self.depth) + 2 * D  # patch_embed, cls_token, blocks, norm
        decoder = D * Dd + Dd + Dd + blocks(Dd, self.decoder_depth) + 2 * Dd + Dd * P + P
        return encoder + decoder + (D - Dd if self.encoder_mask_tokens else 0)  # the ablation's [M] is the encoder's


MODEL_CONFIGS = {"mlp": MLPConfig, "vit": ViTConfig}


def model_config(arch, settings):
    """The config dataclass of `arch` from a dict of settings; unknown names are a clear error."""
    if arch not in MODEL_CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    config_class = MODEL_CONFIGS[arch]
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"settings {unknown} do not apply to the {arch} model (it takes {sorted(known)})")
    # JSON has no tuples: lists saved in a checkpoint come back as lists.
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


# ----------------------------------------------------------------------------------------------
# the recipes

# The pre-training defaults that depend on the architecture. The ViT learns best from many small steps at
# this scale (docs/recipe.md measures batch size, warm-up and the rest, one at a time); the MLP is almost
# all large matrix products, which run best on large batches, and reaches its quality with them.
ARCH_RECIPE = {"mlp": {"batch_size": 256, "warmup_epochs": 5.0},
               "vit": {"batch_size": 32, "warmup_epochs": 2.5}}


def per_arch(name):
    """'mlp 256, vit 32': a setting's default for each architecture, for the help texts."""
    return ", ".join(f"{arch} {defaults[name]:g}" for arch, defaults in ARCH_RECIPE.items())


@dataclass
class PretrainConfig:
    """MAE pre-training, as main_pretrain.py of the official MAE, scaled to 48-pixel photos."""
    # data and output
    data: str = setting("data/catsdogs", "image folder: Microsoft's PetImages archive (extracted), the Kaggle "
                                         "train/ folder, or cat/ + dog/ folders", on_resume="new")
    download: bool = setting(False, "if --data holds no images, download Microsoft's archive (~800 MB) into it first",
                             on_resume="new")
    out: str = setting(None, "output folder (default: runs/<arch>)", on_resume="new")
    per_class: int = setting(None, "use only the first N images of each class (default: all)")
    val_fraction: float = setting(0.2, "share of each class held out for validation")
    load_size: int = setting(None, "images are resized to this side, then cropped to img_size (default: "
                                   "img_size * 9 / 8)")
    # model
    arch: str = setting("mlp", "mlp: an MLP encoder and decoder; vit: the paper's Vision Transformer MAE",
                        choices=tuple(MODEL_CONFIGS))
    # optimisation (the paper's Table 8, scaled)
    epochs: int = setting(50, "passes over the training split (a resumed run may train longer)", on_resume="new")
    batch_size: int = setting(None, f"images per step (default: {per_arch('batch_size')})")
    lr: float = setting(0.005, "peak learning rate of AdamW (a resumed run may take a new one, e.g. a lower one "
                               "after a divergence)", on_resume="new")
    min_lr: float = setting(0.0, "learning rate at the end of the cosine")
    warmup_epochs: float = setting(None, f"epochs of linear learning-rate warm-up (default: {per_arch('warmup_epochs')})")
    weight_decay: float = setting(0.05, "AdamW's decoupled weight decay (none on biases and norms)")
    beta2: float = setting(0.95, "AdamW's second-moment decay (MAE's pre-training: 0.95; PyTorch's default: 0.999)")
    seed: int = setting(0, "seeds the split, the weights, the batches and the masks")
    # the run
    threads: int = setting(0, "CPU threads for the NumPy backend: 0 = one per core; 1 = the plain single-threaded "
                              "step (parallel.py)")
    figure_images: int = setting(8, "validation images in reconstructions.png (0: no figure)", on_resume="new")
    resume: bool = setting(False, "continue from <out>/checkpoint.npz", on_resume="new")
    overwrite: bool = setting(False, "replace an existing run in --out instead of refusing", on_resume="new")
    progress: bool = setting(True, "progress bars (--no-progress: one line per epoch only)", on_resume="new")

    def __post_init__(self):
        """The architecture's defaults (ARCH_RECIPE) for the settings left unset."""
        for name, value in ARCH_RECIPE.get(self.arch, {}).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self):
        """Raise ValueError, naming the flag, for a recipe that cannot train (before any work is done)."""
        check_recipe(self)
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"--per-class must be at least 1 (or left out for every image), got {self.per_class}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.figure_images < 0:
            raise ValueError(f"--figure-images must be 0 (no figure) or more, got {self.figure_images}")
        if not 0.0 < self.beta2 < 1.0:
            raise ValueError(f"--beta2 must be between 0 and 1, got {self.beta2}")
        if self.load_size is not None and not 1 <= self.load_size <= 2 * MAX_IMG_SIZE:
            raise ValueError(f"--load-size must be between 1 and {2 * MAX_IMG_SIZE} pixels (the photos are decoded "
                             f"at this size and kept in memory), got {self.load_size}")
        if self.figure_images > 64:
            raise ValueError(f"--figure-images must be at most 64 (rows of one figure), got {self.figure_images}")


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning of a pre-trained ViT encoder, as main_finetune.py of the official MAE."""
    checkpoint: str = setting(None, "checkpoint.npz of a ViT pre-training run (python -m tinymae.pretrain "
                                    "--arch vit)")
    data: str = setting(None, "the image folder that run was pre-trained on (same split, same statistics)")
    test_data: str = setting(None, "also report accuracy on every readable image of this folder (any layout)")
    out: str = setting(None, "output folder (default: <checkpoint's folder>/finetune[-scratch][-N<labels>]-seed<S>)")
    from_scratch: bool = setting(False, "train the same network from random initialisation (the paper's baseline)")
    labels_per_class: int = setting(None, "fine-tune on N labelled images per class of the pre-training split "
                                          "(default: all)")
    trainable_blocks: int = setting(None, "partial fine-tuning (the paper's Figure 9): train only the last K encoder "
                                          "blocks, fc_norm and the head; 0: fc_norm and the head alone, a linear "
                                          "classifier on the frozen encoder (default: every block)")
    mixup: float = setting(0.0, "mixup's alpha: each batch blended with itself reversed by lam ~ Beta(alpha, alpha), "
                                "the labels likewise (main_finetune.py's ViT-B recipe: 0.8; 0: off)")
    drop_path: float = setting(0.0, "stochastic depth: the highest rate at which a block's residual branches are "
                                    "skipped per image while training, rising from 0 at the first block "
                                    "(main_finetune.py's ViT-B recipe: 0.1)")
    epochs: int = setting(50, "passes over the labelled images")
    batch_size: int = setting(128, "images per step")
    lr: float = setting(0.005, "peak learning rate (main_finetune.py's blr 5e-4 x batch / 256, raised for "
                               "this small model)")
    min_lr: float = setting(1e-6, "learning rate at the end of the cosine")
    warmup_epochs: float = setting(5.0, "epochs of linear learning-rate warm-up")
    weight_decay: float = setting(0.05, "AdamW's decoupled weight decay (none on 1-D parameters and the cls token)")
    layer_decay: float = setting(0.75, "layer-wise learning-rate decay (the official param_groups_lrd)")
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy")
    seed: int = setting(0, "seeds the labelled subset, the head, the batches and the augmentation")
    threads: int = setting(0, "CPU threads for the NumPy backend: 0 = one per core")
    eval_every: int = setting(1, "measure the training and validation accuracy every N epochs (and after the last)")
    json: str = setting(None, "also write the result to this file")
    overwrite: bool = setting(False, "replace an existing result in --out instead of refusing")
    progress: bool = setting(True, "progress bars")

    def validate(self):
        """Raise ValueError, naming the flag, for a recipe that cannot train (before any work is done)."""
        check_recipe(self)
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ValueError(f"--labels-per-class must be at least 1 (or left out for every label), "
                             f"got {self.labels_per_class}")
        if self.trainable_blocks is not None and self.trainable_blocks < 0:
            raise ValueError(f"--trainable-blocks must be 0 or more (or left out for every block), "
                             f"got {self.trainable_blocks}")
        if not 0.0 <= self.mixup <= 10.0:
            raise ValueError(f"--mixup must be between 0 (off) and 10, got {self.mixup}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"--drop-path must be at least 0 and below 1, got {self.drop_path}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.eval_every < 1:
            raise ValueError(f"--eval-every must be at least 1, got {self.eval_every}")


def check_finite(cfg):
    """ValueError naming the setting for a float setting that is not a finite number (nan, inf)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag_name(f.name)} must be a finite number, got {value}")


def check_size(cfg, params):
    """ValueError for a model too big for this engine (MAX_PARAMS), before anything is allocated."""
    if params > MAX_PARAMS:
        raise ValueError(f"these model settings make {params:,} parameters ({12 * params / 2 ** 30:.1f} GB with "
                         f"AdamW's moments); tinymae builds at most {MAX_PARAMS:,}: choose smaller widths or sizes")


def check_recipe(cfg):
    """The optimisation settings both recipes share: ValueError naming the flag for nonsense values."""
    check_finite(cfg)
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{flag_name(name)} must be at least 1, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr} (a negative rate climbs the loss, "
                         "zero never moves)")
    if not 0.0 <= cfg.min_lr <= cfg.lr:
        raise ValueError(f"--min-lr must be between 0 and --lr ({cfg.lr}), got {cfg.min_lr}")
    if not cfg.warmup_epochs >= 0:
        raise ValueError(f"--warmup-epochs must be 0 or more, got {cfg.warmup_epochs}")
    if cfg.weight_decay < 0:
        raise ValueError(f"--weight-decay must be 0 or more, got {cfg.weight_decay}")
    if cfg.seed < 0:
        raise ValueError(f"--seed must be 0 or more (NumPy's generators take no negative seed), got {cfg.seed}")
    if cfg.threads < 0:
        raise ValueError(f"--threads must be 0 (one per core) or more, got {cfg.threads}")
    if cfg.epochs > 100_000 or cfg.batch_size > 65_536 or cfg.threads > 1024:
        raise ValueError(f"--epochs (at most 100000), --batch-size (at most 65536) or --threads (at most 1024) is "
                         f"out of range: {cfg.epochs}, {cfg.batch_size}, {cfg.threads}")


# ----------------------------------------------------------------------------------------------
# the flag of a setting, as messages name it (util/cli.py builds the command lines)

def flag_name(name):
    return "--" + name.replace("_", "-")
