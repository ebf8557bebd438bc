"""Folders of photos -> decoded uint8 arrays: which files are photos and of which class, decoding, the cache.

    find_photos(root)     the photo files under root, and their classes where the folder has them:
                          <root>/<class>/... (torchvision's ImageFolder: any names, any depth below a class),
                          or Kaggle's flat <class>.<n>.jpg names; otherwise no classes (a flat folder or a tree).
                          A folder that holds just one folder and no photo is looked into (PetImages/).
    decode(found, size)   every photo decoded once, in RGB, resized to size x size; broken files skipped, counted
                          and named; cached under $TINYMAE_CACHE or ~/.cache/tinymae, keyed on the files' bytes
    fingerprint(...)      which photos, of which class, with which bytes: what a run records and checks

Everything here runs on the host (NumPy and Pillow); data.py splits and normalises the decoded photos.
"""
import hashlib
import json
import os
import re
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import TinymaeError
from .util.files import InterruptBetweenSteps, remove_stale_temporaries, write_atomically

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared in any case
# A photo smaller than 16 px on a side would be upscaled more than 3x to 54 px: interpolation, not a photo.
MIN_SIDE = 16
CACHE_VERSION = 2  # bump when decoding changes, so that old caches are not reused
KAGGLE_NAME = re.compile(r"([A-Za-z]+)\.\d+\.[A-Za-z]+")  # cat.0.jpg, dog.12.jpg


class Found(NamedTuple):
    root: str  # the folder the paths are below
    paths: list  # sorted photo files
    labels: np.ndarray  # (N,) int64: the index of each photo's class in `classes` (0 without classes)
    classes: tuple  # class names, sorted; () for photos without classes


class Decoded(NamedTuple):
    root: str
    images: np.ndarray  # uint8 (N, S, S, 3), the readable photos
    labels: np.ndarray  # (N,) int64
    classes: tuple
    paths: list  # the N files kept
    hashes: list  # a hash of each kept file's bytes
    skipped: list  # the files that could not be read


def find_photos(root, per_class=None):
    """The photos under `root` (see the module's docstring); per_class: only the first N of each class."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        what = "is a link that points nowhere" if os.path.islink(root) else "is a file, not a folder" \
            if os.path.exists(root) else "does not exist"
        raise TinymaeError(f"the photo folder {root} {what}; pass a folder of photos with --data (or --download the "
                           "Cats and Dogs archive into it)")
    try:
        while True:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
            files = [e.path for e in entries if is_photo(e)]
            folders = [e for e in entries if not e.name.startswith(".") and not is_photo(e)  # a folder that loops
                       and _kind(e) in ("dir", "unreadable")  # counts, to be named below; one that leads back up
                       and not os.path.join(os.path.realpath(root), "").startswith(
                           os.path.join(os.path.realpath(e.path), ""))]
            if files or len(folders) != 1 or _kind(folders[0]) != "dir":
                break
            root = folders[0].path  # e.g. data/catsdogs/PetImages
        names = [KAGGLE_NAME.fullmatch(os.path.basename(p)) for p in files]
        if files and all(names) and len({m.group(1) for m in names}) > 1:  # Kaggle's train/cat.0.jpg
            by_class = {}
            for path, m in zip(files, names):
                by_class.setdefault(m.group(1), []).append(path)
        elif files or not folders:
            by_class = {"": files + [p for e in folders for p in _photos_below(e.path)]}
        else:  # class folders; a folder that loops is listed as one unreadable photo (see _kind)
            by_class = {e.name: _photos_below(e.path) if _kind(e) == "dir" else [e.path] for e in folders}
            by_class = {name: paths for name, paths in by_class.items() if paths}
    except PermissionError as e:
        raise TinymaeError(f"cannot read the folder {e.filename} ({e.strerror}); check its permissions") from None
    classes = tuple(sorted(name for name in by_class if name))
    pairs = sorted((path, classes.index(name) if name else 0)
                   for name, paths in by_class.items() for path in sorted(paths)[:per_class])
    if not pairs:
        raise TinymaeError(f"found no photos ({', '.join(IMAGE_EXTENSIONS)}) under {root}; pass a folder of photos "
                           "with --data")
    return Found(root, [p for p, _ in pairs], np.array([label for _, label in pairs], dtype=np.int64), classes)


def _kind(entry):
    """'dir', 'file', 'other', or 'unreadable' for a link that loops or cannot be followed: such an entry is listed
    anyway where it looks like a photo or a class, so that its decoding fails like any broken file's and is named."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
    except OSError:
        return "unreadable"


def is_photo(entry):
    """A file (or an unreadable link) with a photo's ending; hidden files (macOS's ._x.jpg) are not photos."""
    name = entry.name
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and _kind(entry) != "dir"


def _raise(error):
    raise error


def _photos_below(folder):
    """Every photo in `folder` and its sub-folders (links to folders are not followed: no loops)."""
    found = []
    for path, dirs, _ in os.walk(folder, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [e.path for e in os.scandir(path) if is_photo(e)]
    return found


# ----------------------------------------------------------------------------------------------
# decoding

def load_image(path, size):
    """Decode one file into RGB resized to size x size: uint8 (size, size, 3), or None to skip it (not an image,
    truncated, empty, unreadable, a decompression bomb, smaller than MIN_SIDE). Pillow reads the format from
    the bytes, so a PNG behind a .jpg name loads; the aspect ratio is not kept."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed metadata we never read
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a pet photo is never that big
            with Image.open(path) as img:
                return prepare_image(img, size) if min(img.size) >= MIN_SIDE else None
    except Exception:  # malformed files raise all sorts of errors; for web photos each means "skip it"
        return None


def prepare_image(img, size):
    """A Pillow image -> uint8 RGB (size, size, 3), resized bicubic (a JPEG decoded at 1/2, 1/4 or 1/8 scale first,
    where that still leaves at least size x size: several times faster)."""
    img.draft("RGB", (size, size))
    return np.asarray(_to_rgb(img).resize((size, size), Image.BICUBIC, reducing_gap=3.0), dtype=np.uint8)


def _to_rgb(img):
    """Any Pillow mode (1, L, P, RGBA, CMYK, I;16, ...) -> RGB."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit grey: convert("RGB") would clip at 255
        img = Image.fromarray(np.clip(np.round(np.asarray(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:  # transparent pixels: white, as a viewer shows
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return img.convert("RGB")


def file_hash(path):
    """A hash of a file's bytes; 'unreadable' (and the path) for one that cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return f"unreadable:{path}"


def decode(found, size, progress=True, cache_dir=None):
    """Every photo of `found` decoded at size x size, read from the cache when the files' bytes are the ones it
    was made from (a photo replaced by another, or fixed after a failed first decode, is decoded again)."""
    hashes = [file_hash(p) for p in found.paths]
    cache_dir = cache_dir or os.environ.get("TINYMAE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                             "tinymae")
    key = hashlib.sha256(json.dumps([CACHE_VERSION, size, hashes]).encode()).hexdigest()[:24]
    cache = os.path.join(cache_dir, f"{re.sub(r'[^A-Za-z0-9_-]', '_', os.path.basename(found.root))[:40]}-{size}px-"
                                    f"{key}.npz")
    needed = 2 * len(hashes) * size * size * 3
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else needed
    if needed > free:
        raise TinymaeError(f"{len(hashes)} photos decoded at {size} x {size} need about {needed / 2**30:.1f} GB of "
                           f"memory, and {free / 2**30:.1f} GB are free; choose a smaller --load-size or --per-class")
    try:
        with np.load(cache, allow_pickle=False) as f:
            images, ok = f["images"], f["ok"]
        if images.dtype != np.uint8 or images.shape != (int(ok.sum()), size, size, 3) or ok.shape != (len(hashes),):
            raise ValueError(f"it holds {images.dtype} {images.shape}")
    except Exception as e:  # no cache yet, or one that cannot be trusted: decode again
        if os.path.exists(cache):
            warnings.warn(f"decoding the photos again: the cache file {cache} is unreadable ({e})")
        images, ok = _decode_all(found.paths, size, progress)
        remove_stale_temporaries(cache_dir, older_than_s=3600)  # left by a process killed mid-write
        try:
            write_atomically(cache, lambda f: np.savez(f, images=images, ok=ok))
        except OSError as e:
            warnings.warn(f"cannot write the photo cache {cache} ({e}); set TINYMAE_CACHE to a writable folder")
    skipped = [p for p, good in zip(found.paths, ok) if not good]
    if skipped:
        shown = ", ".join(f"{p} ({skip_reason(p)})" for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} of {len(ok)} photo files: {shown}", stacklevel=2)
    if not ok.any():
        raise TinymaeError(f"none of the {len(ok)} photo files under {found.root} could be read (for example "
                           f"{skipped[0]}); are they really photos?")
    return Decoded(found.root, images, found.labels[ok], found.classes, [p for p, g in zip(found.paths, ok) if g],
                   [h for h, g in zip(hashes, ok) if g], skipped)


def _decode_all(paths, size, progress):
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # (N, S, S, 3)
    ok = np.zeros(len(paths), dtype=bool)  # (N,)
    with InterruptBetweenSteps() as interrupt:
        for i, path in enumerate(tqdm(paths, desc="decoding photos", unit="photo", disable=not progress)):
            interrupt.check()
            image = load_image(path, size)
            if image is not None:
                images[i], ok[i] = image, True
    return images[ok], ok


def skip_reason(path):
    """Why load_image skipped `path`, in a few words (asked only for the files a warning names)."""
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


def fingerprint(paths, labels, hashes):
    """A short hash of exactly which photos, of which class, with which bytes: each file's path below the folder
    they share, its label and the hash of its bytes, in order. Moving the whole folder keeps it; adding,
    removing or replacing a photo changes it."""
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    key = hashlib.sha256()
    for path, label, content in zip(paths, labels, hashes):
        key.update(f"{os.path.relpath(path, root)}\t{int(label)}\t{content}\n".encode("utf-8", "surrogateescape"))
    return key.hexdigest()[:16]
