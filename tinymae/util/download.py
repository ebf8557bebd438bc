"""--download: Microsoft's Cats and Dogs archive (kagglecatsanddogs_5340.zip, about 800 MB), fetched and extracted
into an empty folder. The photos are Microsoft Research's, for non-commercial research, not to be redistributed,
which is why tinymae's repository holds none. The archive is checked before anything is extracted (every
member's CRC, no path that leaves the folder); a failed or interrupted download can simply be run again.
"""
import http.client
import os
import re
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from ..errors import TinymaeError
from ..photos import find_photos

ARCHIVE = "kagglecatsanddogs_5340.zip"
URL = f"https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/{ARCHIVE}"
BY_HAND = f"download {URL} in a browser, extract it, and pass the extracted folder with --data"
# What this download puts in its folder: the archive (and its part while fetching), the marker, what it extracts.
OURS = {ARCHIVE, ARCHIVE + ".part", ARCHIVE + ".extracted", "PetImages", "CDLA-Permissive-2.0.pdf", "readme[1].txt"}


def download_catsdogs(folder, progress=True, url=URL):
    """Fetch and extract the archive into `folder`, unless it holds photos already (the user's own, or the archive's
    once completely extracted). Only into a folder that is empty or holds nothing but this download's own files, so
    that nothing of the user's is mixed in; the archive is written as <name>.part and renamed once checked, and
    extracted once (a marker says so: an extraction cut short is done again)."""
    folder = os.path.abspath(folder)
    zip_path, marker = os.path.join(folder, ARCHIVE), os.path.join(folder, ARCHIVE + ".extracted")
    try:
        has_photos = bool(find_photos(folder))
    except TinymaeError:
        has_photos = False
    if os.path.exists(marker):
        if has_photos:
            return folder
        raise TinymaeError(f"{folder} holds the extracted archive but no photos: delete {marker} and PetImages/ to "
                           f"extract it again, or {BY_HAND}")
    if has_photos and not os.path.exists(zip_path):
        return folder  # the user's own photos
    others = sorted(set(os.listdir(folder)) - OURS) if os.path.isdir(folder) else []
    if others:
        raise TinymaeError(f"--download extracts into an empty folder, and {folder} holds {', '.join(others[:5])} but "
                           "no photos in a layout tinymae reads; pass --data an empty (or new) folder, or your photos "
                           "without --download")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise TinymaeError(f"cannot make the download folder {folder} ({e.strerror or e}); choose another --data") \
            from None
    if not os.path.exists(zip_path) or not check_archive(zip_path, zip_path, raise_error=False):
        fetch(url, zip_path, progress)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
    except Exception as e:  # a full disk, a permission
        raise TinymaeError(f"could not extract {zip_path} into {folder} ({e}); check the free space and run again")
    open(marker, "w").close()
    return folder


def fetch(url, zip_path, progress):
    """url -> zip_path + '.part', checked as a sound and safe zip, then renamed to zip_path."""
    part = zip_path + ".part"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
            length = response.headers.get("Content-Length")
            expected, received = int(length) if length and length.isdigit() else None, 0
            with tqdm(total=expected, unit="B", unit_scale=True, desc=f"downloading {ARCHIVE}",
                      disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:  # http.client ends a cut-off body without complaint
            raise TinymaeError(f"the download of {url} stopped early: got {received:,} of {expected:,} bytes")
        check_archive(part, f"the file downloaded from {url}")
        os.replace(part, zip_path)
    except BaseException as e:  # Ctrl-C included: never leave a partial file behind
        if os.path.isfile(part):
            os.remove(part)
        if isinstance(e, TinymaeError):
            raise TinymaeError(f"{e}. Run again to retry; if it keeps failing, {BY_HAND}") from None
        if isinstance(e, (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)):
            raise TinymaeError(f"could not download {url}: {getattr(e, 'reason', None) or e}. Check your connection, "
                               f"or {BY_HAND}") from None
        raise


def check_archive(path, what, raise_error=True):
    """Whether `path` is a zip whose every member passes its CRC check and stays inside the folder it is extracted
    to (no absolute path, no '..', no empty name); TinymaeError naming `what` if not (unless raise_error=False)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad, names = archive.testzip(), archive.namelist()
        if bad is not None:
            raise TinymaeError(f"{what} is corrupt: its member {bad} fails its CRC check")
        for name in names:
            parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
            if not parts or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
                raise TinymaeError(f"{what} contains the unsafe member name {name!r} (empty, absolute or with '..'); "
                                   "refusing to extract it")
    except TinymaeError:
        if raise_error:
            raise
        return False
    except Exception as e:  # BadZipFile, zlib.error, EOFError, ...: a broken archive
        if raise_error:
            raise TinymaeError(f"{what} is not a valid zip archive ({e})") from None
        return False
    return True
