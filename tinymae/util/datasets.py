"""Cats & Dogs photos on disk -> decoded uint8 arrays: the plumbing below tinymae/data.py.

    load_image         decode one file, convert it to RGB, resize it (or skip it, with the reason)
    load_dataset       decode every photo find_images lists (util/layouts.py) once, skip broken files, and
                       cache the result as an .npz, so the next run starts in a fraction of a second
    fingerprint        a hash of the files' contents: which photos a run was trained on

util/download.py fetches Microsoft's archive. Everything here runs on the host (NumPy + Pillow). What a
learner reads (the split, the colour statistics, crop + flip and normalisation) is in tinymae/data.py.
"""
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from .files import InterruptBetweenSteps, write_atomically
from .layouts import CLASSES, DataError, find_images

# Images whose smaller side is under 16 px are skipped. We train on 48-px crops of 54-px images, so such
# an image would be upscaled more than 3x: each of its pixels smeared over a 3x3 block or more, a whole
# patch painted from a handful of pixels. That is interpolation, not a photo, and there is nothing in it
# for the masked-patch reconstruction to learn.
MIN_SIDE = 16

# Bump this when the decoding (resampling, colour conversion, layout detection) changes, so that old
# caches are not reused with new code.
CACHE_VERSION = 1

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

    _check_memory(len(paths), size)
    dataset = _read_cache(cache_path, paths, labels, size)
    if dataset is None:
        dataset = _decode_all(paths, labels, size, progress)
        if len(dataset.paths) > 0:
            _write_cache(cache_path, dataset)

    _warn_skipped(dataset, len(paths), per_class)
    _check_decoded(dataset, root)
    return dataset


def _check_memory(n_images, size):
    """DataError before decoding when the decoded photos (uint8, n x size x size x 3, twice over while they are
    split) would not fit in the memory this machine has free."""
    needed = 2 * n_images * size * size * 3
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not Linux: no cheap way to ask, so no check
        return
    if needed > free:
        raise DataError(f"{n_images} photos decoded at {size} x {size} pixels need about {needed / 2**30:.1f} GB of "
                        f"memory, and this machine has {free / 2**30:.1f} GB free; choose a smaller --load-size "
                        "(or --per-class)")


def _decode_all(paths, labels, size, progress):
    """Decode every file; keep the readable ones in order and list the rest as skipped."""
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # (N, S, S, 3)
    ok = np.zeros(len(paths), dtype=bool)  # (N,)
    with InterruptBetweenSteps() as interrupt:
        for i, path in enumerate(tqdm(paths, desc="decoding images", unit="img", disable=not progress)):
            interrupt.check()
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
    shown = ", ".join(f"{path} ({skip_reason(path)})" for path in dataset.skipped[:5])
    shown += ", ..." if len(dataset.skipped) > 5 else ""
    message = f"skipped {len(dataset.skipped)} of {n_files} image files: {shown}"
    if per_class is not None:
        message += f" (so some classes have fewer than per_class={per_class} images)"
    warnings.warn(message, stacklevel=3)


def skip_reason(path):
    """Why load_image skipped `path`, in a few words (asked again only for the files a warning names)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min(img.size) < MIN_SIDE:
                    return f"{img.size[0]} x {img.size[1]} px, smaller than {MIN_SIDE} px"
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"larger than Pillow's safety limit of {Image.MAX_IMAGE_PIXELS:,} pixels"
    except Exception as e:
        return f"not a readable image: {type(e).__name__}"
    return "not a readable image"


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


FINGERPRINT_KIND = "contents"  # recorded beside each fingerprint; runs from before it used "sizes"


def fingerprint(dataset, kind=FINGERPRINT_KIND):
    """A short hash of exactly which photos a run uses: each kept file's path below the data folder, its
    label and a hash of its bytes, in order. The split, the normalisation statistics and the number of
    steps per epoch all follow from this list, so a resumed run must see the same one (moving or copying
    the whole folder keeps it; adding, removing or replacing a photo, even by one of the same size,
    changes it). Reading the files' bytes costs a fraction of a second for thousands of photos.

    kind="sizes": the fingerprint of runs written before the contents were hashed (each file's size
    instead of a hash of its bytes), so that their checkpoints can still be resumed and fine-tuned."""
    root = os.path.commonpath(dataset.paths) if len(dataset.paths) > 1 else os.path.dirname(dataset.paths[0])
    key = hashlib.sha256()
    for path, label in zip(dataset.paths, dataset.labels):
        if kind == "sizes":
            line = f"{os.path.relpath(path, root)}\t{os.stat(path).st_size if os.path.exists(path) else -1}\t{label}\n"
        else:
            try:
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            except OSError:  # removed or unreadable since it was decoded
                content = "unreadable"
            line = f"{os.path.relpath(path, root)}\t{label}\t{content}\n"
        key.update(line.encode("utf-8", "surrogateescape"))
    return key.hexdigest()[:16]


def same_photos(recorded, dataset):
    """Whether `dataset` holds the photos a run recorded ({"fingerprint", "fingerprint_kind"} of its data
    header) -> (bool, the fingerprint of `dataset` in the recorded run's kind)."""
    kind = recorded.get("fingerprint_kind", "sizes")
    now = fingerprint(dataset, kind)
    return recorded.get("fingerprint") == now, now
