"""--download (tinymae/util/download.py) against a local HTTP server (no internet): success, corrupt and cut-short
downloads, unreachable servers, unsafe archives, folders that already hold photos or someone else's files, and
running again after whatever a failed or interrupted attempt left behind."""
import http.server
import io
import os
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymae import photos
from tinymae.errors import TinymaeError
from tinymae.util import download

ARCHIVE, MARKER = download.ARCHIVE, download.ARCHIVE + ".extracted"


def jpeg_bytes(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_zip(members):
    """A zip (bytes) holding {name: bytes}; names are stored as given, '..' and all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# What the official archive holds besides PetImages/: it extracts them beside it.
EXTRAS = {"CDLA-Permissive-2.0.pdf": b"%PDF-1.4 the licence", "readme[1].txt": b"Cats and dogs"}


def official_like_zip(photos_in_it=True, extras=True):
    """The official archive's layout in miniature: PetImages/{Cat,Dog}/N.jpg, Thumbs.db files and its extra files
    (photos_in_it=False: everything but the photos)."""
    members = {f"PetImages/{cls}/{i}.jpg": jpeg_bytes(10 * c + i)
               for c, cls in enumerate(("Cat", "Dog")) for i in range(3) if photos_in_it}
    members.update({"PetImages/Cat/Thumbs.db": b"\0" * 64, "PetImages/Dog/Thumbs.db": b"\0" * 64})
    members.update(EXTRAS if extras else {})
    return make_zip(members)


GOOD_ZIP = official_like_zip()
NO_PHOTOS_ZIP = official_like_zip(photos_in_it=False)
NO_PHOTOS_NO_EXTRAS_ZIP = official_like_zip(photos_in_it=False, extras=False)
CORRUPT_ZIP = bytearray(GOOD_ZIP)
CORRUPT_ZIP[200:260] = bytes(60)  # inside the first member's compressed data: the CRC check fails
CORRUPT_ZIP = bytes(CORRUPT_ZIP)
TRAVERSAL_ZIP = make_zip({"PetImages/Cat/0.jpg": jpeg_bytes(0), "../escaped.txt": b"gotcha"})
ABSOLUTE_ZIP = make_zip({"PetImages/Cat/0.jpg": jpeg_bytes(0), "/tmp/absolute.txt": b"gotcha"})


def empty_name_zip():
    """A zip with a member whose name is empty (zipfile's writestr refuses "", a ZipInfo does not)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("PetImages/Cat/0.jpg", jpeg_bytes(0))
        archive.writestr(zipfile.ZipInfo(""), b"no name")
    return buffer.getvalue()


EMPTY_NAME_ZIP = empty_name_zip()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the test zips; /short.zip announces the full length but sends half and hangs up."""
    routes = {"/good.zip": GOOD_ZIP, "/corrupt.zip": CORRUPT_ZIP, "/traversal.zip": TRAVERSAL_ZIP,
              "/absolute.zip": ABSOLUTE_ZIP, "/empty-name.zip": EMPTY_NAME_ZIP, "/no-photos.zip": NO_PHOTOS_ZIP,
              "/no-photos-no-extras.zip": NO_PHOTOS_NO_EXTRAS_ZIP}

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path == "/short.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD_ZIP)))
            self.end_headers()
            self.wfile.write(GOOD_ZIP[:len(GOOD_ZIP) // 2])
            self.close_connection = True
            return
        if self.path == "/no-length-cut.zip":  # no Content-Length: only the zip check can notice
            self.send_response(200)
            self.end_headers()
            self.wfile.write(GOOD_ZIP[:len(GOOD_ZIP) // 2])
            self.close_connection = True
            return
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    """A local HTTP server in a thread; yields (base URL, list of paths requested)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    # a short poll interval: shutdown() waits for the next poll, 0.5 s by default, in every test
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def unreachable_url():
    """A URL on a local port nobody listens on (bound, then released), so the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE}"


def get(dest, url):
    return download.download_catsdogs(dest, progress=False, url=url)


def has_photos(folder):
    try:
        photos.find_photos(folder)
        return True
    except TinymaeError:
        return False


def listing(folder):
    """Every path below `folder`, relative to it, with each file's bytes."""
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read() if n in files else None
            for d, dirs, files in os.walk(folder) for n in dirs + files}


def assert_no_archive_left(dest):
    assert not (dest / ARCHIVE).exists(), "a failed download left a file at the final path"
    assert not (dest / (ARCHIVE + ".part")).exists(), "a failed download left its .part file"


# ----------------------------------------------------------------------------------------------------
# a download that works, and one that is not needed


def test_download_extracts_and_loads(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    root = get(dest, f"{base}/good.zip")
    assert root == str(dest)
    assert (dest / ARCHIVE).read_bytes() == GOOD_ZIP and (dest / MARKER).is_file()
    assert not (dest / (ARCHIVE + ".part")).exists()
    assert sorted(os.listdir(dest / "PetImages" / "Dog")) == ["0.jpg", "1.jpg", "2.jpg", "Thumbs.db"]
    ds = photos.decode(photos.find_photos(root), 16, progress=False, cache_dir=tmp_path / "cache")
    assert ds.images.shape == (6, 16, 16, 3) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.classes == ("Cat", "Dog") and ds.root == str(dest / "PetImages")
    assert requests == ["/good.zip"]


def test_download_skipped_when_already_there(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    get(dest, f"{base}/good.zip")
    before = listing(dest)
    # a second call must not touch the network: an unreachable URL would fail if it did
    assert get(dest, unreachable_url()) == str(dest)
    assert requests == ["/good.zip"] and listing(dest) == before


@pytest.mark.parametrize("layout", ["class folders", "flat", "kaggle names"])
def test_a_folder_that_already_holds_photos_is_left_alone(tmp_path, server, layout):
    """Whatever its layout, and whatever else it holds: nothing fetched, nothing written."""
    base, requests = server
    dest = tmp_path / "mine"
    names = {"class folders": ["birds/0.jpg", "boats/sea/1.jpg"], "flat": ["0.jpg", "1.jpg"],
             "kaggle names": ["cat.0.jpg", "dog.0.jpg"]}[layout]
    for i, name in enumerate(names):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(jpeg_bytes(i))
    (dest / "notes.txt").write_text("mine")
    before = listing(dest)
    assert get(dest, f"{base}/good.zip") == str(dest)
    assert requests == [] and listing(dest) == before


def test_download_extracts_an_archive_put_there_by_hand(tmp_path):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / ARCHIVE).write_bytes(GOOD_ZIP)
    get(dest, unreachable_url())
    assert (dest / "PetImages" / "Cat" / "0.jpg").is_file() and (dest / MARKER).is_file()


def test_download_replaces_a_broken_archive_found_there(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / ARCHIVE).write_bytes(GOOD_ZIP[:100])
    get(dest, f"{base}/good.zip")
    assert (dest / ARCHIVE).read_bytes() == GOOD_ZIP and has_photos(dest)
    assert requests == ["/good.zip"]


def test_download_not_repeated_after_the_zip_is_deleted(tmp_path, server):
    """Users delete the 800 MB archive once it is extracted; that must not trigger a new download."""
    base, requests = server
    dest = tmp_path / "downloads"
    get(dest, f"{base}/good.zip")
    (dest / ARCHIVE).unlink()
    get(dest, f"{base}/good.zip")
    assert requests == ["/good.zip"] and not (dest / ARCHIVE).exists()


# ----------------------------------------------------------------------------------------------------
# downloads that fail leave nothing behind


def test_download_corrupt_zip_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError, match="corrupt") as e:
        get(dest, f"{base}/corrupt.zip")
    assert f"{base}/corrupt.zip" in str(e.value) and "Run again" in str(e.value)
    assert_no_archive_left(dest)
    assert not (dest / "PetImages").exists()


def test_download_cut_short_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError, match="stopped early") as e:
        get(dest, f"{base}/short.zip")
    assert f"{base}/short.zip" in str(e.value)
    assert_no_archive_left(dest)


def test_download_cut_short_without_length_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError, match="not a valid zip"):
        get(dest, f"{base}/no-length-cut.zip")
    assert_no_archive_left(dest)


def test_download_http_error_names_the_url(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError) as e:
        get(dest, f"{base}/missing.zip")
    assert f"{base}/missing.zip" in str(e.value) and download.BY_HAND in str(e.value)
    assert_no_archive_left(dest)


def test_download_unreachable_url_names_the_url(tmp_path):
    url = unreachable_url()
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError) as e:
        get(dest, url)
    assert url in str(e.value) and download.BY_HAND in str(e.value) and "\n" not in str(e.value)
    assert_no_archive_left(dest)


def test_an_interrupted_download_leaves_no_part_file(tmp_path, server, monkeypatch):
    """Ctrl-C while the archive is checked (after it was written): the KeyboardInterrupt goes on, the .part goes."""
    base, _ = server
    dest = tmp_path / "downloads"

    def interrupt(*args, **kwargs):
        assert (dest / (ARCHIVE + ".part")).is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "check_archive", interrupt)
    with pytest.raises(KeyboardInterrupt):
        get(dest, f"{base}/good.zip")
    assert_no_archive_left(dest)


@pytest.mark.parametrize("route, bad_name", [("/traversal.zip", "../escaped.txt"),
                                             ("/absolute.zip", "/tmp/absolute.txt")])
def test_download_refuses_paths_outside_the_folder(tmp_path, server, route, bad_name):
    base, _ = server
    dest = tmp_path / "inner" / "downloads"
    with pytest.raises(TinymaeError) as e:
        get(dest, base + route)
    assert bad_name in str(e.value) and "unsafe" in str(e.value)
    assert_no_archive_left(dest)
    assert not (dest / "PetImages").exists() and not (tmp_path / "inner" / "escaped.txt").exists()


def test_fetch_writes_the_checked_archive_under_its_final_name(tmp_path, server):
    base, requests = server
    zip_path = tmp_path / ARCHIVE
    download.fetch(f"{base}/good.zip", str(zip_path), progress=False)
    assert zip_path.read_bytes() == GOOD_ZIP and os.listdir(tmp_path) == [ARCHIVE] and requests == ["/good.zip"]


# ----------------------------------------------------------------------------------------------------
# folders that are not for a download


@pytest.mark.parametrize("theirs", ["an empty cat/ folder", "notes.txt", "notes.txt and the archive"])
def test_download_into_a_folder_holding_someone_elses_files_is_refused(tmp_path, server, theirs):
    """Refused in one line naming what is there, before anything is fetched or extracted."""
    base, requests = server
    dest = tmp_path / "downloads"
    dest.mkdir()
    if theirs == "an empty cat/ folder":
        (dest / "cat").mkdir()
    else:
        (dest / "notes.txt").write_text("mine")
    if theirs.endswith("the archive"):
        (dest / ARCHIVE).write_bytes(GOOD_ZIP)
    before = listing(dest)
    with pytest.raises(TinymaeError) as e:
        get(dest, f"{base}/good.zip")
    message = str(e.value)
    assert "\n" not in message and str(dest) in message and ("cat" if "cat/" in theirs else "notes.txt") in message
    assert requests == [] and listing(dest) == before  # nothing fetched, nothing extracted


def test_download_into_a_path_that_is_a_file_is_a_one_line_error(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    dest.write_text("a file")
    with pytest.raises(TinymaeError) as e:
        get(dest, f"{base}/good.zip")
    assert str(dest) in str(e.value) and "\n" not in str(e.value)
    assert requests == [] and dest.read_text() == "a file"


# ----------------------------------------------------------------------------------------------------
# running again after a failure: whatever the last attempt left behind


def test_download_retry_after_a_failed_first_attempt(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError):
        get(dest, unreachable_url())
    assert dest.is_dir() and os.listdir(dest) == []  # the first attempt leaves an empty folder
    assert not has_photos(dest)
    assert get(dest, f"{base}/good.zip") == str(dest)
    assert has_photos(dest) and requests == ["/good.zip"]


def test_download_overwrites_a_left_over_part_file(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / (ARCHIVE + ".part")).write_bytes(GOOD_ZIP[:500])  # what a kill -9 mid-download leaves
    get(dest, f"{base}/good.zip")
    assert (dest / ARCHIVE).read_bytes() == GOOD_ZIP
    assert not (dest / (ARCHIVE + ".part")).exists() and has_photos(dest)


def test_download_a_left_over_part_folder_is_a_clear_error(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    (dest / (ARCHIVE + ".part")).mkdir(parents=True)
    with pytest.raises(TinymaeError, match="could not download"):
        get(dest, f"{base}/good.zip")


@pytest.mark.parametrize("route", ["/no-photos.zip", "/no-photos-no-extras.zip"])
def test_after_an_extraction_that_yields_no_photos_a_retry_does_not_extract_again(tmp_path, server, route):
    """Nor fetch again: it says how to start over. With or without the files the official archive holds beside
    PetImages/ (its licence and readme)."""
    base, requests = server
    dest = tmp_path / "downloads"
    assert get(dest, base + route) == str(dest)
    assert (dest / MARKER).is_file() and not has_photos(dest)
    (dest / "PetImages" / "Cat" / "Thumbs.db").unlink()  # would come back if it extracted again
    before = listing(dest)
    with pytest.raises(TinymaeError) as e:
        get(dest, base + route)
    message = str(e.value)
    assert "\n" not in message and str(dest / MARKER) in message and "delete" in message and "PetImages" in message
    assert requests == [route] and listing(dest) == before


def test_a_retry_after_the_photos_were_deleted_does_not_extract_again(tmp_path, server):
    """Photos deleted after a complete extraction: the marker says the archive was extracted; starting over is the
    user's choice, which the error tells how to make."""
    base, requests = server
    dest = tmp_path / "downloads"
    get(dest, f"{base}/good.zip")
    for image in (dest / "PetImages").rglob("*.jpg"):
        image.unlink()
    with pytest.raises(TinymaeError, match="delete"):
        get(dest, unreachable_url())
    assert not has_photos(dest) and requests == ["/good.zip"]
    (dest / MARKER).unlink()
    get(dest, unreachable_url())  # started over as the error said: from the archive still there
    assert has_photos(dest) and len(photos.find_photos(dest).paths) == 6


def test_an_extraction_cut_short_is_finished_on_the_next_run(tmp_path):
    """A run killed while extracting leaves the archive, part of PetImages/ and no marker: the next run extracts
    again, instead of training on the photos that happened to be written."""
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / ARCHIVE).write_bytes(GOOD_ZIP)
    with zipfile.ZipFile(dest / ARCHIVE) as archive:
        archive.extractall(dest, members=[n for n in archive.namelist() if not n.startswith("PetImages/Dog/")][:3])
    assert has_photos(dest) and not (dest / MARKER).exists()
    get(dest, unreachable_url())
    assert (dest / MARKER).is_file() and len(photos.find_photos(dest).paths) == 6


# ----------------------------------------------------------------------------------------------------
# odd archives


def test_download_refuses_an_archive_with_an_empty_member_name(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(TinymaeError, match="empty"):
        get(dest, f"{base}/empty-name.zip")
    assert_no_archive_left(dest)


@pytest.mark.parametrize("name", ["", ".", "./"])
def test_check_archive_refuses_members_without_a_name(tmp_path, name):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("PetImages/Cat/0.jpg", jpeg_bytes(0))
        archive.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(TinymaeError, match="empty") as e:
        download.check_archive(str(path), "the archive")
    assert "the archive" in str(e.value) and repr(name) in str(e.value)
    assert download.check_archive(str(path), "the archive", raise_error=False) is False


def test_check_archive_passes_a_sound_archive_and_fails_a_broken_one(tmp_path):
    good, broken = tmp_path / "good.zip", tmp_path / "broken.zip"
    good.write_bytes(GOOD_ZIP)
    broken.write_bytes(CORRUPT_ZIP)
    assert download.check_archive(str(good), "good") is True
    assert download.check_archive(str(broken), "broken", raise_error=False) is False
    with pytest.raises(TinymaeError, match="broken is corrupt"):
        download.check_archive(str(broken), "broken")


def test_download_an_archive_by_hand_with_an_empty_member_name_is_not_extracted(tmp_path):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / ARCHIVE).write_bytes(EMPTY_NAME_ZIP)
    with pytest.raises(TinymaeError):  # treated as broken: fetched again, here from nowhere
        get(dest, unreachable_url())
    assert not (dest / "PetImages").exists() and not (dest / MARKER).exists()
