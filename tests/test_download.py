"""download_catsdogs against a local HTTP server (no internet): success, corrupt and cut-short
downloads, unreachable servers, unsafe archives, and skipping a download already done."""
import http.server
import io
import os
import socket
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymae.util import datasets, download, layouts
from tinymae.util.datasets import DataError


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


def official_like_zip():
    """The official archive's layout in miniature: PetImages/{Cat,Dog}/N.jpg plus its extra files."""
    members = {f"PetImages/{cls}/{i}.jpg": jpeg_bytes(10 * c + i)
               for c, cls in enumerate(("Cat", "Dog")) for i in range(3)}
    members["PetImages/Cat/Thumbs.db"] = b"\0" * 64
    members["readme[1].txt"] = b"Cats and dogs"
    return make_zip(members)


GOOD_ZIP = official_like_zip()
CORRUPT_ZIP = bytearray(GOOD_ZIP)
CORRUPT_ZIP[200:260] = bytes(60)  # inside the first member's compressed data: the CRC check fails
CORRUPT_ZIP = bytes(CORRUPT_ZIP)
TRAVERSAL_ZIP = make_zip({"PetImages/Cat/0.jpg": jpeg_bytes(0), "../escaped.txt": b"gotcha"})


def empty_name_zip():
    """A zip with a member whose name is empty (zipfile's writestr refuses "", a ZipInfo does not)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("PetImages/Cat/0.jpg", jpeg_bytes(0))
        archive.writestr(zipfile.ZipInfo(""), b"no name")
    return buffer.getvalue()


EMPTY_NAME_ZIP = empty_name_zip()
ABSOLUTE_ZIP = make_zip({"PetImages/Cat/0.jpg": jpeg_bytes(0), "/tmp/absolute.txt": b"gotcha"})


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the test zips; /short.zip announces the full length but sends half and hangs up."""
    routes = {"/good.zip": GOOD_ZIP, "/corrupt.zip": CORRUPT_ZIP, "/traversal.zip": TRAVERSAL_ZIP,
              "/absolute.zip": ABSOLUTE_ZIP, "/empty-name.zip": EMPTY_NAME_ZIP}

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
    return f"http://127.0.0.1:{port}/kagglecatsanddogs_5340.zip"


def assert_no_archive_left(dest):
    final = dest / layouts.ARCHIVE_NAME
    assert not final.exists(), "a failed download left a file at the final path"
    assert not (dest / (layouts.ARCHIVE_NAME + ".part")).exists(), "a failed download left its .part file"


def test_download_extracts_and_loads(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    root = download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    assert root == str(dest)
    assert (dest / layouts.ARCHIVE_NAME).is_file()
    assert not (dest / (layouts.ARCHIVE_NAME + ".part")).exists()
    assert sorted(os.listdir(dest / "PetImages" / "Dog")) == ["0.jpg", "1.jpg", "2.jpg"]
    ds = datasets.load_dataset(root, size=16, cache_dir=tmp_path / "cache", progress=False)
    assert ds.images.shape == (6, 16, 16, 3) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert requests == ["/good.zip"]


def test_download_skipped_when_already_there(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    # a second call must not touch the network: an unreachable URL would fail if it did
    assert download.download_catsdogs(dest, url=unreachable_url(), progress=False) == str(dest)
    assert requests == ["/good.zip"]


def test_download_extracts_an_archive_put_there_by_hand(tmp_path):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / layouts.ARCHIVE_NAME).write_bytes(GOOD_ZIP)
    download.download_catsdogs(dest, url=unreachable_url(), progress=False)
    assert (dest / "PetImages" / "Cat" / "0.jpg").is_file()


def test_download_replaces_a_broken_archive_found_there(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / layouts.ARCHIVE_NAME).write_bytes(GOOD_ZIP[:100])
    with pytest.warns(UserWarning, match="downloading it again"):
        download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    assert (dest / layouts.ARCHIVE_NAME).read_bytes() == GOOD_ZIP
    assert requests == ["/good.zip"]


def test_download_corrupt_zip_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError, match="corrupt") as e:
        download.download_catsdogs(dest, url=f"{base}/corrupt.zip", progress=False)
    assert f"{base}/corrupt.zip" in str(e.value)
    assert_no_archive_left(dest)
    assert not (dest / "PetImages").exists()


def test_download_cut_short_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError) as e:
        download.download_catsdogs(dest, url=f"{base}/short.zip", progress=False)
    assert f"{base}/short.zip" in str(e.value)
    assert_no_archive_left(dest)


def test_download_cut_short_without_length_leaves_nothing(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError, match="not a valid zip"):
        download.download_catsdogs(dest, url=f"{base}/no-length-cut.zip", progress=False)
    assert_no_archive_left(dest)


def test_download_http_error_names_the_url(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError) as e:
        download.download_catsdogs(dest, url=f"{base}/missing.zip", progress=False)
    assert f"{base}/missing.zip" in str(e.value) and "by hand" in str(e.value)
    assert_no_archive_left(dest)


def test_download_unreachable_url_names_the_url(tmp_path):
    url = unreachable_url()
    dest = tmp_path / "downloads"
    with pytest.raises(DataError) as e:
        download.download_catsdogs(dest, url=url, progress=False)
    assert url in str(e.value) and "by hand" in str(e.value)
    assert_no_archive_left(dest)


@pytest.mark.parametrize("route, bad_name", [("/traversal.zip", "../escaped.txt"),
                                             ("/absolute.zip", "/tmp/absolute.txt")])
def test_download_refuses_paths_outside_the_folder(tmp_path, server, route, bad_name):
    base, _ = server
    dest = tmp_path / "inner" / "downloads"
    with pytest.raises(DataError) as e:
        download.download_catsdogs(dest, url=base + route, progress=False)
    assert bad_name in str(e.value)
    assert_no_archive_left(dest)
    assert not (dest / "PetImages").exists() and not (tmp_path / "inner" / "escaped.txt").exists()


def test_download_not_repeated_after_the_zip_is_deleted(tmp_path, server):
    """Users delete the 800 MB archive once it is extracted; that must not trigger a new download."""
    base, requests = server
    dest = tmp_path / "downloads"
    download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    (dest / layouts.ARCHIVE_NAME).unlink()
    download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    assert requests == ["/good.zip"]


# ---- running again after a failure: whatever the last attempt left behind

def test_download_retry_after_a_failed_first_attempt(tmp_path, server):
    base, requests = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError):
        download.download_catsdogs(dest, url=unreachable_url(), progress=False)
    assert dest.is_dir() and os.listdir(dest) == []  # the first attempt leaves an empty folder
    assert not layouts.folder_has_images(dest)  # so pre-training (pretrain.py) downloads again
    assert download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False) == str(dest)
    assert layouts.folder_has_images(dest) and requests == ["/good.zip"]


def test_download_overwrites_a_left_over_part_file(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / (layouts.ARCHIVE_NAME + ".part")).write_bytes(GOOD_ZIP[:500])  # what a kill -9 mid-download leaves
    download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    assert (dest / layouts.ARCHIVE_NAME).read_bytes() == GOOD_ZIP
    assert not (dest / (layouts.ARCHIVE_NAME + ".part")).exists() and layouts.folder_has_images(dest)


def test_download_a_left_over_part_folder_is_a_clear_error(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    (dest / (layouts.ARCHIVE_NAME + ".part")).mkdir(parents=True)
    with pytest.raises(DataError, match="could not download"):
        download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)


def test_download_extracts_again_when_the_images_were_deleted(tmp_path, server):
    """The done-marker alone is no proof: pre-training asks for a download because it found no images."""
    base, requests = server
    dest = tmp_path / "downloads"
    download.download_catsdogs(dest, url=f"{base}/good.zip", progress=False)
    for image in (dest / "PetImages").rglob("*.jpg"):
        image.unlink()
    assert not layouts.folder_has_images(dest)
    download.download_catsdogs(dest, url=unreachable_url(), progress=False)  # from the archive still there
    assert layouts.folder_has_images(dest) and requests == ["/good.zip"]


# ---- odd archives

def test_download_refuses_an_archive_with_an_empty_member_name(tmp_path, server):
    base, _ = server
    dest = tmp_path / "downloads"
    with pytest.raises(DataError, match="empty name"):
        download.download_catsdogs(dest, url=f"{base}/empty-name.zip", progress=False)
    assert_no_archive_left(dest)


@pytest.mark.parametrize("name", ["", ".", "./"])
def test_check_archive_refuses_members_without_a_name(tmp_path, name):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("PetImages/Cat/0.jpg", jpeg_bytes(0))
        archive.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(DataError, match="empty name"):
        download._check_archive(str(path), "the archive")


def test_download_an_archive_by_hand_with_an_empty_member_name_is_refused(tmp_path):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / layouts.ARCHIVE_NAME).write_bytes(EMPTY_NAME_ZIP)
    with pytest.warns(UserWarning, match="empty name"), pytest.raises(DataError):
        download.download_catsdogs(dest, url=unreachable_url(), progress=False)
