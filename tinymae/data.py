"""The photos a run trains on: a seeded split, the colour statistics, crop + flip, normalisation, and where
they came from.

    RunPhotos          a run's training and validation photos, its normalisation, and `record`: what the
                       checkpoint keeps of them (the folder, every file with its class and a hash of its bytes,
                       the split, the statistics), so that evaluate, probe and fine-tuning take the run's own split
                       instead of recomputing one (photos_of_run finds them again)
    stratified_split   a seeded train / validation split that keeps each class's share in both parts
    channel_stats      the per-channel mean and std of the training photos, for normalize
    random_crop_flip   training augmentation: a random crop and a horizontal flip per photo
    center_crop        the deterministic crop of validation and evaluation
    normalize          uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x/255 - mean) / std, the input of patchify
    augmented_batches  an epoch of cropped, flipped, normalised batches (host arrays)
    mix_images, mixup_targets   fine-tuning's mixup

Why resize to 54 and crop 48 (plus flip), not the official RandomResizedCrop(scale=(0.2, 1)): that resamples
every photo at every step, a Python-level resize per photo in NumPy; decoding once (cached) and cropping makes
augmentation a slice copy. And 48-px photos have little detail to spare: at scale 0.2 a 21-px region would be
blown up to 48 px, mostly interpolation blur. A 48-px crop of a 54-px photo still moves objects by up to 6 px.
Everything here runs on the host and returns NumPy arrays; the training loop moves each batch to the device.
"""
import os
import sys

import numpy as np

from .backend import host_rng
from .errors import TinymaeError
from .model.patches import patchify
from .photos import Found, decode, find_photos, fingerprint


class RunPhotos:
    """A run's photos (host arrays): train_images (N, S_load, S_load, 3) uint8 and train_labels, val_images
    centre-cropped to img_size and val_labels, mean and std (3,), classes, and `record`."""

    def __init__(self, decoded, val, img_size, mean=None, std=None, seen=()):
        """decoded: photos.decode's; val: the validation indices; mean, std: a pre-training run's normalisation
        (default: this training split's); seen: hashes of photos an encoder trained on, never validated on."""
        is_val, hashes = np.zeros(len(decoded.labels), dtype=bool), [h[:16] for h in decoded.hashes]
        is_val[val] = True
        seen = is_val & np.isin(hashes, [h[:16] for h in seen])  # validated on, unless an encoder trained on it
        is_val &= ~seen
        train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        if len(train) < 1 or len(val) < 1:
            raise TinymaeError(f"{len(decoded.labels)} readable photos make {len(train)} training and {len(val)} "
                               "validation photos; each part needs at least one: use more photos (--per-class) or "
                               "another --val-fraction")
        self.classes, self.train_labels, self.val_labels = decoded.classes, decoded.labels[train], decoded.labels[val]
        self.train_images = decoded.images[train]  # (N_train, S_load, S_load, 3) uint8
        self.val_images = center_crop(decoded.images[val], img_size)  # (N_val, S, S, 3) uint8
        self.mean, self.std = (channel_stats(self.train_images) if mean is None else
                               (np.asarray(mean, np.float32), np.asarray(std, np.float32)))  # (3,), (3,) in [0, 1]
        self.record = {"root": decoded.root, "load_size": int(decoded.images.shape[1]),
                       "classes": list(decoded.classes),
                       "files": [os.path.relpath(p, decoded.root) for p in decoded.paths],
                       "labels": decoded.labels.tolist(), "hashes": hashes,
                       "val": val.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist(),
                       "fingerprint": fingerprint(decoded.paths, decoded.labels, decoded.hashes),
                       "n_train": int(len(train)), "n_val": int(len(val)), "skipped": len(decoded.skipped),
                       "moved_to_training": int(seen.sum())}

    def mean_patch(self, img_size, patch_size):
        """The mean-patch baseline: the training photos' average patch at each position, in pixels (L, P)."""
        pix = center_crop(self.train_images, img_size).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        return patchify(pix, patch_size).mean(axis=0)


def new_photos(data, load_size, img_size, seed, val_fraction, per_class=None, progress=True, **kwargs):
    """A new seeded split of the photos under `data` -> RunPhotos (kwargs: its mean, std and seen)."""
    decoded = decode(find_photos(data, per_class), load_size, progress)
    _, val = stratified_split(decoded.labels, val_fraction, seed)
    return RunPhotos(decoded, val, img_size, **kwargs)


def photos_of_run(record, data, img_size, progress=True):
    """The photos a run recorded, found again under `data` (default: where the run found them): RunPhotos with the
    run's own split and normalisation, or None when `data` holds other photos (or changed ones)."""
    try:
        found = find_photos(data or record["root"])
    except TinymaeError:
        if data:
            raise
        return None  # the run's folder is gone: the caller says which photos it needs
    where = {os.path.relpath(p, found.root): p for p in found.paths}
    if not all(f in where for f in record["files"]):
        return None
    paths = [where[f] for f in record["files"]]
    decoded = decode(Found(found.root, paths, np.array(record["labels"], dtype=np.int64), tuple(record["classes"])),
                     record["load_size"], progress)
    if [h[:16] for h in decoded.hashes] != record["hashes"] or decoded.skipped:
        return None
    return RunPhotos(decoded, record["val"], img_size, record["mean"], record["std"])


def encoder_photos(record, seed, data, img_size, val_fraction, per_class=None, progress=True, checkpoint=None):
    """The photos to probe or fine-tune a pre-trained encoder on: the run's own split (photos_of_run), or other
    photos split anew with the run's seed and normalisation, none it trained on among the validation photos."""
    photos = photos_of_run(record, data, img_size, progress) if per_class is None else None
    if photos is not None:
        return photos
    if data is None and per_class is None:  # the run's own folder, whose photos changed
        note_changed(record["root"], checkpoint, "splitting them anew, none it trained on among the validation photos")
    return new_photos(data or record["root"], record["load_size"], img_size, seed, val_fraction, per_class, progress,
                      mean=record["mean"], std=record["std"], seen=training_hashes(record))


def note_changed(root, checkpoint, then):
    print(f"note: the photos under {root} are not the ones {checkpoint} recorded (some changed or went): {then}",
          file=sys.stderr, flush=True)


def training_hashes(record):
    """The hashes of the photos a run trained on (every recorded photo but its validation ones)."""
    val = set(record["val"])
    return [h for i, h in enumerate(record["hashes"]) if i not in val]


def labelled_subset(labels, per_class, seed, classes):
    """Indices (sorted) of `per_class` photos of each class, drawn without replacement by `seed`."""
    rng = host_rng([seed, 0])  # a generator of its own: the subset does not move the batches
    chosen = []
    for label, name in enumerate(classes):
        idx = np.flatnonzero(labels == label)  # (n_class,)
        if per_class > len(idx):
            raise TinymaeError(f"--labels-per-class {per_class} asks for more {name} photos than the training split "
                               f"has ({len(idx)}); choose at most {len(idx)}")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def stratified_split(labels, val_fraction=0.2, seed=0):
    """A seeded split that keeps each class's share: per class (in label order), permute its indices and put
    round(n_class * val_fraction) of them in validation. -> sorted int64 (train_idx, val_idx)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)  # (N,)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))  # (n_class,)
        is_val[idx[:int(round(len(idx) * val_fraction))]] = True
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


def channel_stats(images, chunk=256):
    """Per-channel mean and std, float32 (3,) in [0, 1] units, of uint8 images (N, H, W, 3), summed in float64
    over chunks (memory: one chunk's copy). A channel that never varies cannot be normalised: an error."""
    total, total_sq = np.zeros(3), np.zeros(3)  # (3,), (3,)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].astype(np.float64)  # (chunk, H, W, 3)
        total += x.sum(axis=(0, 1, 2))
        total_sq += (x * x).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count  # (3,)
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))  # (3,)
    flat = [name for name, s in zip(("red", "green", "blue"), std) if s < 1e-3]
    if flat:
        raise TinymaeError(f"the {' and '.join(flat)} channel of the training photos is the same in every pixel, so "
                           "it cannot be normalised (its std is 0); train on photos with colour")
    return (mean / 255.0).astype(np.float32), (std / 255.0).astype(np.float32)


def crop_flip_draws(rng, n_images, size, out_size):
    """The random numbers of random_crop_flip: (tops, lefts, flips), host arrays (n,)."""
    if out_size > size:
        raise ValueError(f"cannot crop {out_size}x{out_size} from images of {size}x{size}")
    tops = rng.integers(0, size - out_size + 1, size=n_images)  # (n,)
    lefts = rng.integers(0, size - out_size + 1, size=n_images)  # (n,)
    return tops, lefts, rng.random(n_images) < 0.5  # flips (n,)


def random_crop_flip(images, out_size, rng):
    """uint8 (B, S, S, 3) -> (B, out_size, out_size, 3): a random crop and a horizontal flip with probability 0.5
    per photo, drawn from `rng`. A plain loop of slice copies: on the CPU faster than a gather, and easier to read
    (fast/cuda.py gathers on the device)."""
    tops, lefts, flips = crop_flip_draws(rng, len(images), images.shape[1], out_size)
    out = np.empty((len(images), out_size, out_size, 3), dtype=images.dtype)  # (B, out, out, 3)
    for i in range(len(images)):
        crop = images[i, tops[i]:tops[i] + out_size, lefts[i]:lefts[i] + out_size]  # (out, out, 3)
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def center_crop(images, out_size):
    """(B, H, W, 3) -> (B, out_size, out_size, 3), the middle of each photo."""
    H, W = images.shape[1:3]
    if out_size > min(H, W):
        raise ValueError(f"cannot crop {out_size}x{out_size} from images of {H}x{W}")
    top, left = (H - out_size) // 2, (W - out_size) // 2
    return np.ascontiguousarray(images[:, top:top + out_size, left:left + out_size])


def normalize(batch_uint8, mean, std):
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) = (x/255 - mean) / std, channels first as patchify expects."""
    if batch_uint8.dtype != np.uint8:  # floats would be divided by 255 a second time without any error
        raise ValueError(f"normalize expects uint8 images, got {batch_uint8.dtype}")
    x = batch_uint8.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # (B, 3, H, W)
    x /= 255.0
    x -= np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    x /= np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return x


def denormalize(x, mean, std):
    """Normalised host (B, 3, H, W) -> float32 in [0, 1] pixel units (not clipped)."""
    return (x * np.asarray(std, np.float32).reshape(3, 1, 1) + np.asarray(mean, np.float32).reshape(3, 1, 1))


def augmented_batches(images, mean, std, perm, batch_size, img_size, rng):
    """An epoch in the order of `perm`, the last partial batch dropped (as MAE's loader): for each batch, its
    indices (B,) and its photos cropped, flipped and normalised (B, 3, S, S). The caller draws the rest of a step
    (mask noise, ...) after the crops, so a run is the same whether batches are made ahead or not."""
    for i in range(len(perm) // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]  # (B,)
        yield idx, normalize(random_crop_flip(images[idx], img_size, rng), mean, std)


def mixup_draw(rng, alpha):
    """Mixup's one number per batch (Zhang et al., 2018; timm's Mixup, mode "batch"): lam ~ Beta(alpha, alpha)."""
    return np.float32(rng.beta(alpha, alpha))


def mix_images(imgs, lam):
    """(B, 3, S, S), host or device -> lam * imgs + (1 - lam) * the batch reversed (timm's x.flip(0))."""
    return lam * imgs + (1 - lam) * imgs[::-1]


def mixup_targets(labels, lam, smoothing, num_classes):
    """labels (B,) -> soft targets (B, C) of mixed photos, smoothing included (timm's mixup_target):
    lam * q(y) + (1 - lam) * q(y reversed), q(y) = (1 - smoothing) onehot(y) + smoothing / C."""
    smoothed = (1.0 - smoothing) * np.eye(num_classes, dtype=np.float32)[labels] + smoothing / num_classes  # (B, C)
    return (lam * smoothed + (1 - lam) * smoothed[::-1]).astype(np.float32)
