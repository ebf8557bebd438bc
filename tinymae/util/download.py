"""Fetch Microsoft's Cats & Dogs archive (kagglecatsanddogs_5340.zip, about 800 MB) and extract it: what
--download does when the data folder holds no photos.

The photos are Microsoft Research's, for non-commercial research, not to be redistributed, which is why
tinymae's repository holds none. The archive is checked before anything is extracted (every member's CRC,
no path that leaves the folder), and a failed or interrupted download can simply be run again.
"""
import http.client
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile

from tqdm import tqdm

from .layouts import ARCHIVE_NAME, OFFICIAL_URL, DataError, folder_has_images


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
