"""The data a run trains on: a seeded split, the colour statistics, crop + flip, normalisation.

    PretrainData       the run's photos (util/datasets.py decodes and caches them), split 80:20 within
                       each class, the training split's colour statistics and its average patch
    FinetuneData       the same split rebuilt for fine-tuning, and N labelled photos per class of it
    stratified_split   a seeded train / validation split that keeps the cat:dog ratio in both parts
    channel_stats      the per-channel mean and std of the training images, for normalize
    random_crop_flip   training augmentation: a random out_size crop and a horizontal flip per image
    center_crop        the deterministic crop used for validation and evaluation
    normalize          uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x/255 - mean) / std, the input of patchify
    denormalize        back to [0, 1] pixel units, to show reconstructions
    augmented_batches  an epoch of cropped, flipped, normalised batches (host arrays)
    mix_images         fine-tuning's mixup: each image blended with another, and mixup_targets their labels

Why resize to 54 and crop 48 (plus flip), not the official MAE's RandomResizedCrop(scale=(0.2, 1)) + flip:
the official recipe resamples every image at every step, which in NumPy means a Python-level resize per
image per batch. Decoding and resizing once (cached), then taking a fixed-size crop, makes augmentation
a plain slice copy with no per-image resampling. And 48-px images have little detail to spare:
RandomResizedCrop at scale 0.2 would blow a ~21-px region up to 48 px, so the model would mostly see
interpolation blur. A 48-px crop of a 54-px image keeps 79% of the area (89% of each side), which still
moves every object by up to 6 px, enough for the translation augmentation the crop is there for.

Everything here runs on the host and returns NumPy arrays; the training loop moves each batch to the device.
"""
import numpy as np

from .backend import host_rng
from .config import PretrainConfig
from .model.patches import patchify
from .util.datasets import CLASSES, FINGERPRINT_KIND, DataError, fingerprint, load_dataset, same_photos
from .util.download import download_catsdogs
from .util.layouts import folder_has_images


class PretrainData:
    """The run's images and the statistics everything else is measured with (all host arrays).

    cfg: the run's settings (config.PretrainConfig: data, download, per_class, val_fraction, load_size,
    seed, progress)."""

    def __init__(self, cfg, img_size, patch_size):
        load_size = cfg.load_size or img_size * 9 // 8
        if load_size < img_size:
            raise DataError(f"--load-size {load_size} is smaller than --img-size {img_size}")
        if cfg.download and not folder_has_images(cfg.data):
            download_catsdogs(cfg.data, progress=cfg.progress)
        dataset = load_dataset(cfg.data, size=load_size, per_class=cfg.per_class, progress=cfg.progress)
        train_idx, val_idx = stratified_split(dataset.labels, cfg.val_fraction, seed=cfg.seed)
        if len(train_idx) < 1 or len(val_idx) < 1:
            raise DataError(f"{len(dataset.labels)} readable images make {len(train_idx)} training and "
                            f"{len(val_idx)} validation images with --val-fraction {cfg.val_fraction}; each split "
                            "needs at least one image per class: use more images (--per-class) or another "
                            "--val-fraction")
        self.dataset = dataset
        self.train_images = dataset.images[train_idx]  # (N_train, S_load, S_load, 3) uint8
        self.val_images = center_crop(dataset.images[val_idx], img_size)  # (N_val, S, S, 3) uint8
        self.train_labels, self.val_labels = dataset.labels[train_idx], dataset.labels[val_idx]  # 0 cat, 1 dog
        self.mean, self.std = channel_stats(self.train_images)  # (3,), (3,) in [0, 1] units, training split only
        # The mean-patch baseline: the training images' average patch at each position, in pixels.
        train_pix = center_crop(self.train_images, img_size).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        self.mean_patch = patchify(train_pix, patch_size).mean(axis=0)  # (L, P)
        self.info = {"load_size": load_size, "mean": self.mean.tolist(), "std": self.std.tolist(),
                     "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
                     "skipped_files": len(dataset.skipped), "fingerprint": fingerprint(dataset),
                     "fingerprint_kind": FINGERPRINT_KIND}


def labelled_subset(labels, per_class, seed):
    """Indices (sorted) of `per_class` images of each class, drawn without replacement by `seed`.

    labels: (N,) host int64, 0 = cat, 1 = dog. DataError if a class has fewer images."""
    rng = host_rng([seed, 0])  # a generator of its own (see finetune): the subset does not move the batches
    chosen = []
    for label, name in enumerate(CLASSES):
        idx = np.flatnonzero(labels == label)  # (n_class,)
        if per_class > len(idx):
            raise DataError(f"--labels-per-class {per_class} asks for more {name} images than the pre-training "
                            f"run's training split has ({len(idx)}); choose at most {len(idx)}")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


class FinetuneData:
    """The labelled training images, the validation images and the normalisation, all host arrays.

    Rebuilt exactly as pre-training built them (data.PretrainData with the checkpoint's settings), so
    that the validation images are ones the encoder never saw in pre-training, and images are normalised
    with the statistics it was trained with."""

    def __init__(self, cfg, header, img_size, patch_size):
        saved = header["settings"]
        settings = {k: v for k, v in saved.items() if k in PretrainConfig.__dataclass_fields__}
        settings.update(data=cfg.data, download=False, progress=cfg.progress)
        split = PretrainData(PretrainConfig(**settings), img_size, patch_size)
        same, now = same_photos(header["data"], split.dataset)
        if not same:
            raise DataError(
                f"the images under {cfg.data} are not the ones {cfg.checkpoint} was pre-trained on (it used "
                f"{header['data'].get('n_train', 0) + header['data'].get('n_val', 0)} images with fingerprint "
                f"{header['data'].get('fingerprint')}; now {split.info['n_train'] + split.info['n_val']} with "
                f"{now}). Its split and normalisation would not hold: point --data at the pre-training images")
        self.labelled = (np.arange(len(split.train_labels)) if cfg.labels_per_class is None
                         else labelled_subset(split.train_labels, cfg.labels_per_class, cfg.seed))  # (n,)
        self.train_images = split.train_images[self.labelled]  # (n, S_load, S_load, 3) uint8
        self.train_labels = split.train_labels[self.labelled]  # (n,) int64
        self.val_images, self.val_labels = split.val_images, split.val_labels  # (N_val, S, S, 3) centre-cropped
        self.mean, self.std = split.mean, split.std  # (3,), (3,) the pre-training statistics
        self.info = {**split.info, "n_labelled": int(len(self.labelled))}


def stratified_split(labels, val_fraction=0.2, seed=0):
    """Seeded train/validation split that keeps each class's share: for each class (in label order),
    permute its indices and put round(n_class * val_fraction) of them in validation.
    Returns sorted int64 (train_idx, val_idx), disjoint and together covering range(len(labels))."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))  # (n_class,)
        val_parts.append(idx[:int(round(len(idx) * val_fraction))])
    is_val = np.zeros(len(labels), dtype=bool)  # (N,)
    if val_parts:
        is_val[np.concatenate(val_parts)] = True
    train_idx = np.flatnonzero(~is_val).astype(np.int64)
    val_idx = np.flatnonzero(is_val).astype(np.int64)
    return train_idx, val_idx


def channel_stats(images, chunk=256):
    """Per-channel mean and std, float32 (3,), in [0, 1] pixel units, of uint8 images (N, H, W, 3).

    Sums run over chunks of images in float64, so memory stays at one chunk's float64 copy (~18 MB for
    256 images of 54x54) rather than eight times the whole dataset. std = sqrt(E[x^2] - E[x]^2) is safe
    here: pixel values are at most 255, so float64 holds these sums almost exactly.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    total = np.zeros(3)  # (3,)
    total_sq = np.zeros(3)  # (3,)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].astype(np.float64)  # (chunk, H, W, 3)
        total += x.sum(axis=(0, 1, 2))
        total_sq += (x * x).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count  # (3,)
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))  # (3,)
    return (mean / 255.0).astype(np.float32), (std / 255.0).astype(np.float32)


def crop_flip_draws(rng, n_images, size, out_size):
    """The random numbers of random_crop_flip for n_images images of size x size: (tops, lefts, flips),
    host arrays (n,), offsets uniform in [0, size - out_size], each flip with probability 0.5."""
    if out_size > size:
        raise ValueError(f"cannot crop {out_size}x{out_size} from images of {size}x{size}")
    tops = rng.integers(0, size - out_size + 1, size=n_images)  # (n,)
    lefts = rng.integers(0, size - out_size + 1, size=n_images)  # (n,)
    flips = rng.random(n_images) < 0.5  # (n,)
    return tops, lefts, flips


def random_crop_flip(images, out_size, rng):
    """Training augmentation: uint8 (B, S, S, 3) -> (B, out_size, out_size, 3), an independent random
    crop per image and a horizontal flip with probability 0.5, all drawn from the np.random.Generator `rng`
    (crop_flip_draws). A plain loop of slice copies: on the CPU faster than a vectorised gather, and easier
    to read (fast/data.py does the gather, on the device)."""
    B, H, W = images.shape[:3]
    if H != W:
        raise ValueError(f"random_crop_flip takes square images, got {H}x{W}")
    tops, lefts, flips = crop_flip_draws(rng, B, H, out_size)
    out = np.empty((B, out_size, out_size, 3), dtype=images.dtype)  # (B, out, out, 3)
    for i in range(B):
        crop = images[i, tops[i]:tops[i] + out_size, lefts[i]:lefts[i] + out_size]  # (out, out, 3)
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def center_crop(images, out_size):
    """Deterministic central crop for validation and evaluation: (B, H, W, 3) -> (B, out_size, out_size, 3)."""
    H, W = images.shape[1:3]
    if out_size > H or out_size > W:
        raise ValueError(f"cannot crop {out_size}x{out_size} from images of {H}x{W}")
    top, left = (H - out_size) // 2, (W - out_size) // 2
    return np.ascontiguousarray(images[:, top:top + out_size, left:left + out_size])  # (B, out, out, 3)


def normalize(batch_uint8, mean, std):
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) = (x/255 - mean) / std, channels first as patchify expects."""
    if batch_uint8.dtype != np.uint8:
        # Floats here would be divided by 255 a second time without any error; refuse them.
        raise ValueError(f"normalize expects uint8 images, got {batch_uint8.dtype}")
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)  # (3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)  # (3, 1, 1)
    x = batch_uint8.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # (B, 3, H, W)
    x /= 255.0
    x -= mean
    x /= std
    return x


def denormalize(x, mean, std):
    """Normalised (B, 3, H, W) -> float32 (B, 3, H, W) in [0, 1] pixel units (not clipped). Host NumPy only."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"denormalize takes a host NumPy array, got {type(x).__name__}; "
                        "copy device arrays to the host first (backend.to_numpy)")
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)  # (3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)  # (3, 1, 1)
    return (x.astype(np.float32) * std + mean).astype(np.float32, copy=False)  # (B, 3, H, W)


def augmented_batches(images, mean, std, perm, batch_size, img_size, rng):
    """An epoch of training batches in the order of `perm`, the last partial batch dropped (as MAE's loader):
    for each, the indices into `images` (B,) and the images cropped, flipped and normalised (B, 3, S, S)
    float32. The crops and flips are drawn from `rng`; the caller draws the rest of the step (mask noise,
    ...) after them, in a fixed order, so a run is the same whether batches are made ahead or not."""
    for i in range(len(perm) // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]  # (B,)
        batch = random_crop_flip(images[idx], img_size, rng)  # (B, S, S, 3) uint8
        yield idx, normalize(batch, mean, std)


def mixup_draw(rng, alpha):
    """Mixup's one number for a batch (Zhang et al., 2018; timm's Mixup, mode "batch"): lam ~ Beta(alpha,
    alpha), as float32, so that host and device mix the same way."""
    return np.float32(rng.beta(alpha, alpha))


def mix_images(imgs, lam):
    """imgs (B, 3, S, S), host or device -> lam * imgs + (1 - lam) * imgs in reverse order, as timm mixes each
    image with the batch's flipped order (x.flip(0))."""
    return lam * imgs + (1 - lam) * imgs[::-1]  # (B, 3, S, S)


def mixup_targets(labels, lam, smoothing, num_classes):
    """labels (B,) -> the soft targets (B, C) of mixed images, label smoothing included (timm's mixup_target):
    lam * q(y) + (1 - lam) * q(y reversed), q(y) = (1 - smoothing) onehot(y) + smoothing / C. Host arrays."""
    onehot = np.eye(num_classes, dtype=np.float32)[labels]  # (B, C)
    smoothed = (1.0 - smoothing) * onehot + smoothing / num_classes  # (B, C)
    return (lam * smoothed + (1 - lam) * smoothed[::-1]).astype(np.float32)  # (B, C)
