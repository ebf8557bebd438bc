"""The data pipeline: Cats & Dogs photos on disk -> uint8 arrays -> normalised training batches.

Everything here runs on the host (NumPy + Pillow) and returns NumPy arrays; the training loop moves
each batch to the device. The steps, in the order a training run uses them:

    find_images        detect the folder layout, list the image files and their labels (0 = cat, 1 = dog)
    load_dataset       decode every file once, resize it to size x size, skip broken files, and cache the
                       result as an .npz, so the next run starts in a fraction of a second
    stratified_split   a seeded train / validation split that keeps the cat:dog ratio in both parts
    channel_stats      the per-channel mean and std of the training images, for normalize
    random_crop_flip   training augmentation: a random out_size crop and a horizontal flip per image
    center_crop        the deterministic crop used for validation and evaluation
    normalize          uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x/255 - mean) / std, the input of patchify
    denormalize        back to [0, 1] pixel units, to show reconstructions
    download_catsdogs  fetch and extract Microsoft's official archive

Why resize to 54 and crop 48 (plus flip), not the official MAE's RandomResizedCrop(scale=(0.2, 1)) + flip:
the official recipe resamples every image at every step, which in NumPy means a Python-level resize per
image per batch. Decoding and resizing once (cached), then taking a fixed-size crop, makes augmentation
a plain slice copy with no per-image resampling (about 2 ms for 256 images). And 48-px images have
little detail to spare: RandomResizedCrop at scale 0.2 would blow a ~21-px region up to 48 px, so the
model would mostly see interpolation blur. A 48-px crop of a 54-px image keeps 79% of the area (89% of
each side), which still moves every object by up to 6 px, enough for the translation augmentation the
crop is there for.
"""
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from .files import write_atomically

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared case-insensitively
OFFICIAL_URL = ("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                "kagglecatsanddogs_5340.zip")
ARCHIVE_NAME = "kagglecatsanddogs_5340.zip"
CLASSES = ("cat", "dog")  # label 0 = cat, 1 = dog

# Images whose smaller side is under 16 px are skipped. We train on 48-px crops of 54-px images, so such
# an image would be upscaled more than 3x: each of its pixels smeared over a 3x3 block or more, a whole
# patch painted from a handful of pixels. That is interpolation, not a photo, and there is nothing in it
# for the masked-patch reconstruction to learn.
MIN_SIDE = 16

# Bump this when the decoding (resampling, colour conversion, layout detection) changes, so that old
# caches are not reused with new code.
CACHE_VERSION = 1

LAYOUTS_HELP = """Accepted layouts:
  1. Microsoft's archive (kagglecatsanddogs_5340.zip), extracted: <folder>/PetImages/Cat/*.jpg and
     <folder>/PetImages/Dog/*.jpg (or point at the PetImages folder itself)
  2. the Kaggle competition's train folder: <folder>/train/cat.0.jpg, dog.0.jpg, ... (or point at the
     folder that holds the cat.N.jpg / dog.N.jpg files)
  3. one folder per class: <folder>/cat/ and <folder>/dog/ (any case; cats/ and dogs/ work too)
Image files end in """ + ", ".join(IMAGE_EXTENSIONS) + " (any case)."

DOWNLOAD_HELP = ("To get the data, run examples/train_catsdogs.py with --download (it fetches Microsoft's "
                 f"archive, about 800 MB), or download {OFFICIAL_URL} by hand, extract it, and pass the "
                 "extracted folder with --data.")


class DataError(Exception):
    """A problem with the data on disk (or its download), with a message that says what to do."""


# ----------------------------------------------------------------------------------------------------
# finding the files


def find_images(root):
    """Detect the layout under `root` and return (sorted file paths, int64 labels), 0 = cat, 1 = dog.

    Tries, in this order, the folders root, root/PetImages and root/train; in each, class folders
    (cat/, Dogs/, ...) first, then Kaggle-style file names (cat.0.jpg). The first folder holding any
    images decides. Paths are absolute and sorted, so the order (and everything seeded after it) is
    the same on every run.
    """
    root = os.path.abspath(os.fspath(root))
    if os.path.islink(root) and not os.path.exists(root):
        raise DataError(f"the data folder {root} is a symbolic link that points nowhere or to itself (a loop); "
                        "point --data at the real folder")
    if not os.path.exists(root):
        raise DataError(f"the data folder {root} does not exist. {DOWNLOAD_HELP}")
    if not os.path.isdir(root):
        raise DataError(f"{root} is a file, not a folder. If it is the downloaded archive, extract it and "
                        "pass the extracted folder.\n" + LAYOUTS_HELP)

    try:
        candidates = [root, _child_dir(root, "petimages"), _child_dir(root, "train")]
        for folder in candidates:
            if folder is None:
                continue
            files_by_label = _class_folder_images(folder)
            if not files_by_label[0] and not files_by_label[1]:
                files_by_label = _kaggle_named_images(folder)
            if files_by_label[0] or files_by_label[1]:
                return _check_both_classes(folder, files_by_label)
    except PermissionError as e:
        raise DataError(f"cannot read the folder {e.filename} ({e.strerror}); check its permissions.") from e

    entries = sorted(os.listdir(root))
    if not entries:
        raise DataError(f"the data folder {root} is empty.\n{LAYOUTS_HELP}\n{DOWNLOAD_HELP}")
    shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
    raise DataError(f"found no cat/dog images in a layout tinymae knows under {root} (it contains: {shown}).\n"
                    f"{LAYOUTS_HELP}")


def folder_has_images(root):
    """Whether `root` holds cat and dog images in a layout find_images reads (missing or empty: False)."""
    try:
        find_images(root)
        return True
    except DataError:
        return False


# Symbolic links that loop (cats -> cats, or a.jpg -> b.jpg -> a.jpg) make every stat of them fail with
# OSError (ELOOP). DirEntry.is_dir() and is_file() raise it instead of answering, so they are asked through
# _kind, which answers "unreadable". An unreadable entry that looks like an image (by its name) or like a
# class folder is listed anyway: its decoding then fails like that of any other broken file, so it is
# skipped, counted and named in load_dataset's warning instead of stopping the run or vanishing unseen.
# Nothing here recurses into sub-folders (only the fixed levels of the three layouts are read), so a link
# that points back up the tree cannot send the search round in circles.


def _kind(entry):
    """'dir', 'file', 'other' or 'unreadable' (a symbolic link that loops or that cannot be followed)."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        return "other"
    except OSError:
        return "unreadable"


def _child_dir(folder, lower_name):
    """The sub-folder of `folder` whose name is `lower_name` in any case, or None."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.lower() == lower_name and _kind(entry) == "dir":
            return entry.path
    return None


def _image_files(folder):
    """Image files directly in `folder` (and unreadable entries with an image's name, see _kind). Hidden
    files are left out: macOS's ._name.jpg companions carry a .jpg name but no image."""
    return [e.path for e in os.scandir(folder)
            if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
            and _kind(e) in ("file", "unreadable")]


def _class_folder_images(folder):
    """Layouts 1 and 3: {0: cat files, 1: dog files} from sub-folders named cat(s) / dog(s), any case.
    A class folder that cannot be followed (a looping link) is listed as one unreadable file (see _kind)."""
    files_by_label = {0: [], 1: []}
    for entry in os.scandir(folder):
        name = entry.name.lower()
        for label, class_name in enumerate(CLASSES):
            if name in (class_name, class_name + "s"):
                kind = _kind(entry)
                if kind == "dir":
                    files_by_label[label] += _image_files(entry.path)
                elif kind == "unreadable":
                    files_by_label[label].append(entry.path)
    return files_by_label


def _kaggle_named_images(folder):
    """Layout 2: {0: cat files, 1: dog files} from file names like cat.0.jpg / dog.12.jpg in `folder`."""
    files_by_label = {0: [], 1: []}
    for path in _image_files(folder):
        match = re.match(r"(cat|dog)\.", os.path.basename(path).lower())
        if match:
            files_by_label[CLASSES.index(match.group(1))].append(path)
    return files_by_label


def _check_both_classes(folder, files_by_label):
    """Sorted (paths, labels) if both classes have files, else a DataError saying which one is missing."""
    for label, other in ((0, 1), (1, 0)):
        if not files_by_label[other]:
            raise DataError(f"found only {CLASSES[label]} images ({len(files_by_label[label])} files) under "
                            f"{folder}, and no {CLASSES[other]} images. tinymae needs both cats and dogs.\n"
                            f"{LAYOUTS_HELP}")
    pairs = sorted((path, label) for label, files in files_by_label.items() for path in files)
    paths = [path for path, _ in pairs]
    labels = np.array([label for _, label in pairs], dtype=np.int64)  # (N,)
    return paths, labels


# ----------------------------------------------------------------------------------------------------
# decoding one file


def load_image(path, size):
    """Decode one file, convert it to RGB and resize it to (size, size): uint8 (size, size, 3), or None.

    None means "skip this file": not an image, truncated, empty, unreadable, a decompression bomb, or
    smaller than MIN_SIDE. The aspect ratio is not kept, as in the resized copies the data ships with.
    Pillow finds the format from the bytes, so a PNG behind a .jpg name loads fine.
    """
    try:
        with warnings.catch_warnings():
            # Pillow also warns about malformed metadata (EXIF) that we never read. Inside
            # catch_warnings Python forgets which warnings it has shown, so each one would print again
            # for every such file: silence them for the decode of this one file.
            warnings.simplefilter("ignore")
            # Pillow warns (rather than raises) for images between MAX_IMAGE_PIXELS and twice that;
            # a photo of a pet is never that big, so treat it as the bomb it probably is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min(img.size) < MIN_SIDE:
                    return None
                # For JPEGs, decode at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients, as long
                # as the result stays at least size x size: several times faster on large photos.
                img.draft("RGB", (size, size))
                rgb = _to_rgb(img)
                # reducing_gap: shrink by an integer factor first, then resample; Pillow's docs say a
                # gap of 3 is indistinguishable from a full bicubic resample.
                rgb = rgb.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
                return np.asarray(rgb, dtype=np.uint8)  # (size, size, 3)
    except Exception:
        # Malformed files make Pillow's plugins raise all sorts of errors (OSError for truncated data,
        # UnidentifiedImageError, SyntaxError, ValueError, EOFError, struct.error, ...). For a dataset of
        # web photos every one of them means the same thing: skip this file.
        return None


def _to_rgb(img):
    """Any Pillow mode (1, L, LA, P, RGBA, CMYK, I;16, ...) -> an RGB image (loads the pixels)."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        # 16-bit greyscale PNGs open as I;16 (or I) holding 0..65535, and Pillow's convert("RGB")
        # clips everything above 255 to white, so rescale to 8 bits by hand.
        gray = np.asarray(img, dtype=np.float64) / 257.0  # (H, W)
        img = Image.fromarray(np.clip(np.round(gray), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # The colour of fully transparent pixels is undefined (often black, sometimes junk), so paint
        # the image on white, as a viewer would show it, instead of just dropping the alpha channel.
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB")


# ----------------------------------------------------------------------------------------------------
# the decoded dataset, and its cache


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, S, S, 3), S = the load size
    labels: np.ndarray  # int64 (N,), 0 = cat, 1 = dog
    paths: list  # the N files kept, same order
    skipped: list  # files that could not be read or were smaller than MIN_SIDE


def load_dataset(root, size=54, per_class=None, cache_dir=None, progress=True):
    """Find, decode and resize every image under `root` (once: the result is cached); return a Dataset.

    per_class=N keeps the first N files of each class in sorted order (chosen before decoding, so it is
    fast); broken files among them are skipped, not replaced. cache_dir defaults to $TINYMAE_CACHE or
    ~/.cache/tinymae; the data folder itself is never written to (it may be read-only).
    """
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    if per_class is not None and (int(per_class) != per_class or per_class < 1):
        raise ValueError(f"per_class must be None (all images) or a positive whole number, got {per_class!r}")
    size = int(size)

    paths, labels = find_images(root)
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in range(len(CLASSES))])
        keep.sort()  # back to sorted-path order
        paths, labels = [paths[i] for i in keep], labels[keep]

    if cache_dir is None:
        cache_dir = os.environ.get("TINYMAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinymae")
    cache_path = _cache_path(cache_dir, root, paths, labels, size, per_class)

    dataset = _read_cache(cache_path, paths, labels, size)
    if dataset is None:
        dataset = _decode_all(paths, labels, size, progress)
        if len(dataset.paths) > 0:
            _write_cache(cache_path, dataset)

    _warn_skipped(dataset, len(paths), per_class)
    _check_decoded(dataset, root)
    return dataset


def _decode_all(paths, labels, size, progress):
    """Decode every file; keep the readable ones in order and list the rest as skipped."""
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # (N, S, S, 3)
    ok = np.zeros(len(paths), dtype=bool)  # (N,)
    for i, path in enumerate(tqdm(paths, desc="decoding images", unit="img", disable=not progress)):
        image = load_image(path, size)
        if image is not None:
            images[i] = image
            ok[i] = True
    return Dataset(images=images[ok], labels=labels[ok],
                   paths=[p for p, good in zip(paths, ok) if good],
                   skipped=[p for p, good in zip(paths, ok) if not good])


def _warn_skipped(dataset, n_files, per_class):
    if not dataset.skipped:
        return
    shown = ", ".join(dataset.skipped[:5]) + (", ..." if len(dataset.skipped) > 5 else "")
    message = (f"skipped {len(dataset.skipped)} of {n_files} image files that could not be read or are smaller "
               f"than {MIN_SIDE} px: {shown}")
    if per_class is not None:
        message += f" (so some classes have fewer than per_class={per_class} images)"
    warnings.warn(message, stacklevel=3)


def _check_decoded(dataset, root):
    """After skipping broken files, there must be something left, and both classes."""
    if len(dataset.paths) == 0:
        raise DataError(f"none of the {len(dataset.skipped)} image files under {root} could be read "
                        f"(for example {dataset.skipped[0]}). Are they really images? "
                        "Try opening one in an image viewer.")
    for label, class_name in enumerate(CLASSES):
        if not np.any(dataset.labels == label):
            raise DataError(f"every {class_name} image under {root} was unreadable or too small, so only "
                            f"{CLASSES[1 - label]} images remain; tinymae needs both cats and dogs.")


def _cache_path(cache_dir, root, paths, labels, size, per_class):
    """The cache file for exactly these files (each with its size and modification time) and settings:
    any change gives a new name, so a stale cache is never read."""
    key = hashlib.sha256()
    key.update(json.dumps([CACHE_VERSION, os.path.abspath(os.fspath(root)), size, per_class]).encode())
    for path, label in zip(paths, labels):
        try:
            stat = os.stat(path)
            file_size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # a looping link or a file removed since it was listed: decoding will skip it
            file_size, mtime = -1, -1
        key.update(f"\n{path}\t{label}\t{file_size}\t{mtime}".encode("utf-8", "surrogateescape"))
    name = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.basename(os.path.abspath(os.fspath(root))))[:40]
    return os.path.join(os.fspath(cache_dir), f"{name}-{size}px-{key.hexdigest()[:24]}.npz")


def _read_cache(cache_path, paths, labels, size):
    """The cached Dataset of exactly these files (paths, labels) at this size, or None when there is no
    cache file or it cannot be trusted.

    The file's name already encodes what it was made from, so a mismatch here means the file itself is
    damaged or was edited; the checks make sure nothing downstream sees images of the wrong size (a crop
    would fail much later, far from the cause) or labels that belong to other files."""
    if not os.path.exists(cache_path):
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as f:
            dataset = Dataset(images=f["images"], labels=f["labels"], paths=f["paths"].tolist(),
                              skipped=f["skipped"].tolist())
        n = len(dataset.paths)
        if dataset.images.dtype != np.uint8 or dataset.images.shape != (n, size, size, 3):
            raise ValueError(f"images are {dataset.images.dtype} {dataset.images.shape}, expected uint8 "
                             f"({n}, {size}, {size}, 3)")
        if dataset.labels.dtype.kind not in "iu" or dataset.labels.shape != (n,):
            raise ValueError(f"labels are {dataset.labels.dtype} {dataset.labels.shape}, expected {n} whole numbers")
        label_of = dict(zip(paths, labels.tolist()))
        kept_and_skipped = dataset.paths + dataset.skipped
        if sorted(kept_and_skipped) != sorted(paths):
            raise ValueError("it lists other files than the data folder holds")
        if any(label_of[path] != label for path, label in zip(dataset.paths, dataset.labels.tolist())):
            raise ValueError("its labels disagree with the files' classes")
        dataset.labels = dataset.labels.astype(np.int64)
        return dataset
    except Exception as e:
        # A cache is disposable: whatever is wrong with it (a truncated copy, a full disk, an edit),
        # decoding again and overwriting it is the fix.
        warnings.warn(f"ignoring the unreadable or stale cache file {cache_path} ({e}); decoding the images again")
        return None


def _write_cache(cache_path, dataset):
    """Save atomically (files.write_atomically), so a crash never leaves a half-written cache. A cache
    that cannot be written costs time, not the run: warn and go on."""
    def write(f):
        np.savez(f, images=dataset.images, labels=dataset.labels,
                 paths=np.array(dataset.paths, dtype=str), skipped=np.array(dataset.skipped, dtype=str))

    try:
        write_atomically(cache_path, write)
    except OSError as e:
        warnings.warn(f"cannot write the image cache {cache_path} ({e}), so the images will be decoded again "
                      "next time. Set TINYMAE_CACHE to a writable folder with free space to fix this.")


# ----------------------------------------------------------------------------------------------------
# split, statistics, augmentation, normalisation


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


def fingerprint(dataset):
    """A short hash of exactly which images a run uses: each kept file's path below the data folder,
    its size and its label, in order. The split, the normalisation statistics and the number of steps
    per epoch all follow from this list, so a resumed run must see the same one (moving or copying the
    whole folder keeps it; adding, removing or replacing a photo changes it)."""
    root = os.path.commonpath(dataset.paths) if len(dataset.paths) > 1 else os.path.dirname(dataset.paths[0])
    key = hashlib.sha256()
    for path, label in zip(dataset.paths, dataset.labels):
        size = os.stat(path).st_size if os.path.exists(path) else -1
        key.update(f"{os.path.relpath(path, root)}\t{size}\t{label}\n".encode("utf-8", "surrogateescape"))
    return key.hexdigest()[:16]


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


def random_crop_flip(images, out_size, rng):
    """Training augmentation: uint8 (B, S, S, 3) -> (B, out_size, out_size, 3), an independent random
    crop per image (offsets uniform in [0, S - out_size]) and a horizontal flip with probability 0.5,
    all drawn from the np.random.Generator `rng`.

    A plain loop of slice copies: 256 images of 54x54 take ~2 ms, faster than the fully vectorised
    gather (images[b, rows, cols] with index arrays, ~8 ms) and easier to read.
    """
    B, H, W = images.shape[:3]
    if out_size > H or out_size > W:
        raise ValueError(f"cannot crop {out_size}x{out_size} from images of {H}x{W}")
    tops = rng.integers(0, H - out_size + 1, size=B)  # (B,)
    lefts = rng.integers(0, W - out_size + 1, size=B)  # (B,)
    flips = rng.random(B) < 0.5  # (B,)
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


# ----------------------------------------------------------------------------------------------------
# downloading the official archive


def download_catsdogs(dest_dir, url=OFFICIAL_URL, progress=True):
    """Download Microsoft's Cats & Dogs archive (~800 MB) into dest_dir and extract it there.

    Returns dest_dir, which then holds PetImages/Cat and PetImages/Dog: pass it to load_dataset. The
    archive is written to <name>.part, checked, and only then renamed to its final name, so a file at the
    final path is always a complete, valid zip. If it is already there, the download is skipped; if an
    earlier call extracted it and the images are still there, everything is skipped.

    Safe to run again after any failure: the folder may already exist (empty, or with a half-extracted
    PetImages), a killed download may have left <name>.part (it is overwritten), a broken archive at the
    final path is downloaded again.
    """
    dest_dir = os.path.abspath(os.fspath(dest_dir))
    zip_path = os.path.join(dest_dir, ARCHIVE_NAME)
    done_marker = zip_path + ".extracted"  # written after a complete extraction
    try:
        os.makedirs(dest_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the download folder {dest_dir} ({e}). Pick a writable folder.") from e

    if os.path.exists(done_marker) and folder_has_images(dest_dir):
        # Extracted by an earlier call, from an archive checked then; it may since have been deleted
        # to save the 800 MB, which is fine. (If the images were deleted instead, extract or fetch again.)
        return dest_dir
    if os.path.exists(zip_path):
        try:
            _check_archive(zip_path, zip_path)
        except DataError as e:
            warnings.warn(f"{e}; downloading it again")
            os.remove(zip_path)
    if not os.path.exists(zip_path):
        _download(url, zip_path, progress)

    _extract(zip_path, dest_dir)
    with open(done_marker, "w") as f:
        f.write("extracted\n")
    return dest_dir


def _download(url, zip_path, progress):
    """Fetch url into zip_path + '.part', check it is a sound, safe zip, then rename it to zip_path."""
    part_path = zip_path + ".part"
    by_hand = f"download {url} by hand (in a browser), extract it, and pass the extracted folder with --data."
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part_path, "wb") as f:
            length = response.headers.get("Content-Length")
            expected = int(length) if length is not None and length.isdigit() else None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {ARCHIVE_NAME}", disable=not progress) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        # http.client returns a short body without complaint when the server closes the connection
        # early, so count the bytes ourselves.
        if expected is not None and received != expected:
            raise DataError(f"the download of {url} stopped early: got {received:,} of {expected:,} bytes")
        _check_archive(part_path, f"the file downloaded from {url}")
        os.replace(part_path, zip_path)
    except DataError as e:
        _remove_quietly(part_path)
        raise DataError(f"{e}. Run again to retry; if it keeps failing, {by_hand}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        _remove_quietly(part_path)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {url}: {reason}. Check your internet connection, or {by_hand}") from e
    except BaseException:  # Ctrl-C included: never leave a partial file behind
        _remove_quietly(part_path)
        raise


def _check_archive(path, what):
    """Raise DataError unless `path` is a zip whose every member passes its CRC check and stays inside the
    folder it is extracted to (no absolute paths, no '..'). `what` names the file in the message."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            names = archive.namelist()
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ... all mean a broken archive
        raise DataError(f"{what} is not a valid zip archive ({e})") from e
    if bad_member is not None:
        raise DataError(f"{what} is corrupt: its member {bad_member} fails its CRC check")
    for name in names:
        parts = re.split(r"[/\\]", name)
        if not [part for part in parts if part not in ("", ".")]:
            # zipfile's extractall fails on such a member with an IndexError (an empty name) or tries to
            # write the destination folder itself as a file ('.').
            raise DataError(f"{what} contains a member with an empty name ({name!r}), which no real archive "
                            "holds; refusing to extract it")
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise DataError(f"{what} contains the unsafe path {name!r} (absolute or with '..'), which would be "
                            "written outside the download folder; refusing to extract it")


def _extract(zip_path, dest_dir):
    """Extract a zip that _check_archive has passed (so no member can land outside dest_dir)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(dest_dir)
    except OSError as e:
        raise DataError(f"could not extract {zip_path} into {dest_dir} ({e}). Check the free disk space "
                        "and permissions, then run again.") from e
    except Exception as e:  # an archive zipfile cannot extract after all; _check_archive should have said so
        raise DataError(f"could not extract {zip_path} ({type(e).__name__}: {e}); delete it and run again to "
                        "download it anew") from e


def _remove_quietly(path):
    """Remove a left-over file if it is there; never raise (this runs while another error is reported)."""
    try:
        os.remove(path)
    except OSError:
        pass
