"""Which files under a data folder are the photos, and of which class: the three layouts people have.

    1. Microsoft's archive (kagglecatsanddogs_5340.zip), extracted: <folder>/PetImages/Cat, .../Dog
    2. the Kaggle competition's train folder: cat.0.jpg, dog.0.jpg, ...
    3. one folder per class: cat/ and dog/ (any case; cats/ and dogs/ too)

find_images returns the sorted paths and labels (0 = cat, 1 = dog); util/datasets.py decodes them.
"""
import os
import re

import numpy as np

CLASSES = ("cat", "dog")  # label 0 = cat, 1 = dog
ARCHIVE_NAME = "kagglecatsanddogs_5340.zip"
OFFICIAL_URL = ("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                "kagglecatsanddogs_5340.zip")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared case-insensitively

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
