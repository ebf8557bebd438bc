"""Folders of photos -> decoded arrays (tinymae/photos.py): load_image on every kind of file, find_photos's folder
rules (PetImages, Kaggle's names, class folders of any names and depth, photos without classes), decode's
skipping and its cache keyed on the files' bytes, and the fingerprint of a run's photos.

Every broken or unusual file is made here in tmp_path with Pillow, and every cache goes to tmp_path.
"""
import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymae import photos
from tinymae.errors import TinymaeError

from test_data import load, make_class_folders, noise_image, write_image


def relative(paths, root):
    return [Path(p).relative_to(root).as_posix() for p in paths]


def assert_same_found(a, b):
    assert (a.root, a.paths, a.labels.tolist(), a.classes) == (b.root, b.paths, b.labels.tolist(), b.classes)


# ----------------------------------------------------------------------------------------------------
# load_image: every kind of file


def test_load_image_rgb_jpeg_gives_uint8_square(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=(40, 30))
    image = photos.load_image(path, 20)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8


def test_load_image_zero_byte_file_is_none(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert photos.load_image(path, 20) is None


def test_load_image_text_named_jpg_is_none(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture of a cat\n" * 20)
    assert photos.load_image(path, 20) is None


def test_load_image_truncated_jpeg_is_none(tmp_path):
    full = write_image(tmp_path / "full.jpg", size=(64, 64))
    cut = tmp_path / "cut.jpg"
    raw = full.read_bytes()
    cut.write_bytes(raw[:len(raw) // 2])
    assert photos.load_image(cut, 20) is None


def test_load_image_missing_file_is_none(tmp_path):
    assert photos.load_image(tmp_path / "nowhere.jpg", 20) is None


def test_load_image_png_bytes_named_jpg_loads(tmp_path):
    path = write_image(tmp_path / "really_a_png.jpg", fmt="PNG")
    image = photos.load_image(path, 20)
    assert image is not None and image.shape == (20, 20, 3)


@pytest.mark.parametrize("mode, fmt, suffix", [
    ("L", "JPEG", ".jpg"),
    ("CMYK", "JPEG", ".jpg"),
    ("RGBA", "PNG", ".png"),
    ("LA", "PNG", ".png"),
    ("P", "PNG", ".png"),
    ("P", "GIF", ".gif"),
    ("1", "BMP", ".bmp"),
    ("RGB", "WEBP", ".webp"),
])
def test_load_image_any_mode_becomes_rgb(tmp_path, mode, fmt, suffix):
    path = write_image(tmp_path / f"img{suffix}", mode=mode, fmt=fmt)
    with Image.open(path) as img:
        assert img.mode.startswith(mode[0])  # the file really holds that mode
    image = photos.load_image(path, 24)
    assert image is not None and image.shape == (24, 24, 3) and image.dtype == np.uint8


def test_load_image_grayscale_gives_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (32, 32), 100).save(path)
    image = photos.load_image(path, 16)
    assert np.all(image == 100)


def test_load_image_16bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((32, 32), 32896, dtype=np.uint16)).save(path)  # 32896 = 128 * 257
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")
    image = photos.load_image(path, 16)
    assert np.all(image == 128)  # Pillow's own convert would give 255 (clipped)


def test_load_image_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(path)
    assert np.all(photos.load_image(path, 16) == 255)


def test_load_image_transparent_palette_colour_becomes_white(tmp_path):
    path = tmp_path / "palette.png"
    Image.new("P", (32, 32), 0).save(path, transparency=0)  # palette entry 0 (black) is transparent
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info
    assert np.all(photos.load_image(path, 16) == 255)


def test_load_image_cmyk_colour_is_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink
    r, g, b = photos.load_image(path, 16).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_load_image_tiny_image_is_none_but_min_side_loads(tmp_path):
    tiny = write_image(tmp_path / "tiny.png", size=(4, 4), fmt="PNG")
    thin = write_image(tmp_path / "thin.png", size=(200, photos.MIN_SIDE - 1), fmt="PNG")
    ok = write_image(tmp_path / "ok.png", size=(photos.MIN_SIDE, photos.MIN_SIDE), fmt="PNG")
    assert photos.load_image(tiny, 20) is None
    assert photos.load_image(thin, 20) is None
    assert photos.load_image(ok, 20).shape == (20, 20, 3)


@pytest.mark.parametrize("max_pixels", [1000, 100])  # 32x32 = 1024 pixels: a warning at 1000, an error at 100
def test_load_image_decompression_bomb_is_none(tmp_path, monkeypatch, max_pixels):
    path = write_image(tmp_path / "bomb.png", size=(32, 32), fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes either
        assert photos.load_image(path, 20) is None
    assert "safety limit" in photos.skip_reason(path)


def test_load_image_large_jpeg_matches_full_decode(tmp_path):
    """The draft (reduced-scale JPEG decoding) shortcut must give nearly the same picture as a full
    decode + resize: same orientation, same aspect handling, no colour shift."""
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    fast = photos.load_image(path, 54).astype(np.int32)
    with Image.open(path) as img:
        slow = np.asarray(img.convert("RGB").resize((54, 54), Image.BICUBIC)).astype(np.int32)
    assert np.abs(fast - slow).mean() < 2.0


def test_prepare_image_of_an_open_image_is_what_load_image_gives(tmp_path):
    path = write_image(tmp_path / "a.png", size=(50, 40), mode="RGBA", fmt="PNG")
    with Image.open(path) as img:
        np.testing.assert_array_equal(photos.prepare_image(img, 20), photos.load_image(path, 20))


def test_skip_reason_says_why_in_a_few_words(tmp_path):
    tiny = write_image(tmp_path / "tiny.png", size=(4, 6), fmt="PNG")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    assert photos.skip_reason(tiny) == f"4 x 6 px, smaller than {photos.MIN_SIDE} px"
    assert photos.skip_reason(text).startswith("not a readable image")


# ----------------------------------------------------------------------------------------------------
# find_photos: which files are photos, and of which class


def test_find_photos_petimages_layout(tmp_path):
    """Microsoft's archive extracted: a folder holding no photo and one folder is looked into."""
    make_class_folders(tmp_path / "PetImages", n_per_class=2)
    (tmp_path / "PetImages" / "Cat" / "Thumbs.db").write_bytes(b"\0" * 10)  # as in the official archive
    (tmp_path / "readme[1].txt").write_text("hello")
    found = photos.find_photos(tmp_path)
    assert found.root == str(tmp_path / "PetImages") and found.classes == ("Cat", "Dog")
    assert relative(found.paths, tmp_path) == [
        "PetImages/Cat/0.jpg", "PetImages/Cat/1.jpg", "PetImages/Dog/0.jpg", "PetImages/Dog/1.jpg"]
    assert found.labels.dtype == np.int64 and found.labels.tolist() == [0, 0, 1, 1]
    assert_same_found(photos.find_photos(tmp_path / "PetImages"), found)  # pointing at PetImages itself: the same
    deeper = tmp_path / "downloads" / "catsdogs"
    shutil.copytree(tmp_path / "PetImages", deeper / "PetImages")
    assert photos.find_photos(tmp_path / "downloads").root == str(deeper / "PetImages")  # any number of levels


def test_find_photos_kaggle_names_give_the_classes(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / f"cat.{i}.jpg", seed=i)
        write_image(tmp_path / "train" / f"dog.{i}.jpg", seed=10 + i)
    found = photos.find_photos(tmp_path / "train")
    assert [os.path.basename(p) for p in found.paths] == [
        "cat.0.jpg", "cat.1.jpg", "cat.2.jpg", "dog.0.jpg", "dog.1.jpg", "dog.2.jpg"]
    assert found.classes == ("cat", "dog") and found.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert_same_found(photos.find_photos(tmp_path), found)  # the folder that holds only train/ is looked into


def test_find_photos_kaggle_names_of_any_classes(tmp_path):
    for name in ("zebra.1.png", "ant.10.JPG", "ant.2.jpg", "bee.0.jpeg"):
        write_image(tmp_path / name, fmt="PNG")
    found = photos.find_photos(tmp_path)
    assert found.classes == ("ant", "bee", "zebra")
    assert [(os.path.basename(p), label) for p, label in zip(found.paths, found.labels.tolist())] == [
        ("ant.10.JPG", 0), ("ant.2.jpg", 0), ("bee.0.jpeg", 1), ("zebra.1.png", 2)]


def test_a_flat_folder_where_not_every_name_is_kaggles_has_no_classes(tmp_path):
    for name in ("cat.0.jpg", "dog.0.jpg", "holiday.jpg"):
        write_image(tmp_path / name)
    found = photos.find_photos(tmp_path)
    assert found.classes == () and found.labels.tolist() == [0, 0, 0]
    only_dogs = tmp_path / "dogs"
    for name in ("dog.0.jpg", "dog.1.jpg"):
        write_image(only_dogs / name)
    assert photos.find_photos(only_dogs).classes == ()  # one name: no classes to tell apart


@pytest.mark.parametrize("names", [("cat", "dog"), ("Cats", "DOGS"), ("CAT", "Dogs"), ("cats", "dog")])
def test_find_photos_class_folders_any_case(tmp_path, names):
    make_class_folders(tmp_path, n_per_class=2, names=names)
    (tmp_path / names[0] / "notes.txt").write_text("not an image")
    (tmp_path / names[0] / "._0.jpg").write_bytes(b"macOS resource fork")
    write_image(tmp_path / names[1] / "UPPER.JPG", seed=7)  # extensions in any case
    found = photos.find_photos(tmp_path)
    assert found.classes == names and found.labels.tolist() == [0, 0, 1, 1, 1]
    assert found.paths == sorted(found.paths)
    assert all(os.path.isabs(p) for p in found.paths)


def test_find_photos_class_folders_of_any_names_and_any_number(tmp_path):
    make_class_folders(tmp_path, n_per_class=2, names=("planes", "birds", "boats"))
    found = photos.find_photos(tmp_path)
    assert found.root == str(tmp_path) and found.classes == ("birds", "boats", "planes")  # sorted
    assert relative(found.paths, tmp_path) == [f"{c}/{i}.jpg" for c in ("birds", "boats", "planes") for i in range(2)]
    assert found.labels.tolist() == [0, 0, 1, 1, 2, 2]
    make_class_folders(tmp_path, n_per_class=1, names=("zebras", "ants"))
    assert photos.find_photos(tmp_path).classes == ("ants", "birds", "boats", "planes", "zebras")


def test_find_photos_nested_folders_below_a_class(tmp_path):
    write_image(tmp_path / "cat" / "indoor" / "0.jpg")
    write_image(tmp_path / "cat" / "outdoor" / "garden" / "night" / "1.png", fmt="PNG")
    write_image(tmp_path / "cat" / "2.jpg")
    write_image(tmp_path / "cat" / ".thumbnails" / "3.jpg")  # hidden folders are not looked into
    write_image(tmp_path / "dog" / "2019" / "4.jpg")
    found = photos.find_photos(tmp_path)
    assert found.classes == ("cat", "dog")
    assert relative(found.paths, tmp_path) == [
        "cat/2.jpg", "cat/indoor/0.jpg", "cat/outdoor/garden/night/1.png", "dog/2019/4.jpg"]
    assert found.labels.tolist() == [0, 0, 0, 1]


def test_hidden_files_and_folders_are_never_photos(tmp_path):
    make_class_folders(tmp_path, n_per_class=1, names=("cat", "dog"))
    write_image(tmp_path / "cat" / ".hidden.jpg")
    write_image(tmp_path / "cat" / "._0.jpg")
    write_image(tmp_path / ".Trash" / "0.jpg")  # a hidden folder is not a class either
    found = photos.find_photos(tmp_path)
    assert relative(found.paths, tmp_path) == ["cat/0.jpg", "dog/0.jpg"] and found.classes == ("cat", "dog")


def test_links_to_folders_below_a_class_are_not_followed(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("../dog", root / "cat" / "the_dogs")  # would list the dogs twice
    os.symlink("..", root / "cat" / "up")  # would loop
    found = photos.find_photos(root)
    assert relative(found.paths, root) == ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg"]


def test_a_looping_link_with_a_photos_name_is_listed_then_skipped_with_its_reason(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("b.jpg", root / "dog" / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink("a.jpg", root / "dog" / "b.jpg")
    assert relative(photos.find_photos(root).paths, root) == [
        "cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg", "dog/a.jpg", "dog/b.jpg"]
    with pytest.warns(UserWarning, match="skipped 2 of 6") as record:
        ds = load(root, tmp_path, size=16)
    message = str(record[0].message)
    assert f"{root / 'dog' / 'a.jpg'} (not a readable image" in message and str(root / "dog" / "b.jpg") in message
    assert ds.skipped == [str(root / "dog" / "a.jpg"), str(root / "dog" / "b.jpg")] and len(ds.paths) == 4


def test_a_class_folder_that_loops_is_listed_then_skipped_with_its_reason(tmp_path):
    """cats -> cats: every stat of it fails (ELOOP). It is a class whose one 'photo' cannot be read: named in the
    warning, not silently dropped, and not mistaken for the only other class folder to look into."""
    root = tmp_path / "data"
    write_image(root / "dog" / "0.jpg")
    write_image(root / "dog" / "1.jpg", seed=1)
    os.symlink("cats", root / "cats")
    found = photos.find_photos(root)
    assert found.root == str(root) and found.classes == ("cats", "dog")
    assert relative(found.paths, root) == ["cats", "dog/0.jpg", "dog/1.jpg"] and found.labels.tolist() == [0, 1, 1]
    with pytest.warns(UserWarning, match="skipped 1 of 3") as record:
        ds = photos.decode(found, 16, progress=False, cache_dir=tmp_path / "cache")
    assert f"{root / 'cats'} (not a readable image" in str(record[0].message)
    assert ds.skipped == [str(root / "cats")] and ds.labels.tolist() == [1, 1]


def test_an_unlabelled_flat_folder_has_no_classes(tmp_path):
    root = tmp_path / "holiday"
    for i in range(4):
        write_image(root / f"IMG_{i:04d}.jpg", seed=i)
    found = photos.find_photos(root)
    assert found.classes == () and found.labels.dtype == np.int64 and found.labels.tolist() == [0, 0, 0, 0]
    assert relative(found.paths, root) == [f"IMG_{i:04d}.jpg" for i in range(4)]
    ds = load(root, tmp_path, size=16)
    assert ds.classes == () and ds.images.shape == (4, 16, 16, 3)


def test_an_unlabelled_tree_with_photos_at_its_root_counts_every_photo_below(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "2019" / "summer" / "beach" / "b.jpg")
    write_image(tmp_path / "2019" / "c.png", fmt="PNG")
    write_image(tmp_path / "2020" / "d.jpg")
    write_image(tmp_path / ".cache" / "e.jpg")
    found = photos.find_photos(tmp_path)
    assert found.classes == () and found.labels.tolist() == [0, 0, 0, 0]
    assert relative(found.paths, tmp_path) == ["2019/c.png", "2019/summer/beach/b.jpg", "2020/d.jpg", "a.jpg"]


def test_a_folder_holding_one_class_folder_only_is_looked_into(tmp_path):
    make_class_folders(tmp_path, n_per_class=2, names=("cat",))
    found = photos.find_photos(tmp_path)
    assert found.root == str(tmp_path / "cat") and found.classes == () and len(found.paths) == 2


def test_per_class_is_the_first_n_sorted_of_each_class(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=5)
    found = photos.find_photos(root, per_class=2)
    assert relative(found.paths, root) == ["Cat/0.jpg", "Cat/1.jpg", "Dog/0.jpg", "Dog/1.jpg"]
    assert found.labels.tolist() == [0, 0, 1, 1]
    ds = load(root, tmp_path, size=20, per_class=2)
    again = load(root, tmp_path, size=20, per_class=2, cache_dir=tmp_path / "other_cache")
    assert again.paths == ds.paths == found.paths
    np.testing.assert_array_equal(again.images, ds.images)


def test_per_class_of_photos_without_classes_is_the_first_n(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"{i}.jpg", seed=i)
    assert relative(photos.find_photos(tmp_path, per_class=3).paths, tmp_path) == ["0.jpg", "1.jpg", "2.jpg"]


def test_per_class_with_broken_files_gives_fewer(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=5)
    (root / "Cat" / "0.jpg").write_bytes(b"")  # first cat in sorted order is broken
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        ds = load(root, tmp_path, size=20, per_class=2)
    assert ds.labels.tolist() == [0, 1, 1]  # not topped up from Cat/2.jpg
    assert ds.skipped == [str(root / "Cat" / "0.jpg")]


def assert_one_line_error_naming(path, *words, root=None):
    with pytest.raises(TinymaeError) as e:
        photos.find_photos(root or path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message, message
    assert all(word in message for word in words), message
    return message


def test_a_missing_folder_is_a_one_line_error_naming_it(tmp_path):
    assert_one_line_error_naming(tmp_path / "no_such_folder", "does not exist", "--download")


def test_a_file_instead_of_a_folder_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "kagglecatsanddogs_5340.zip"
    path.write_bytes(b"PK")
    assert_one_line_error_naming(path, "is a file, not a folder")


def test_a_link_that_points_nowhere_is_a_one_line_error_naming_it(tmp_path):
    os.symlink("gone", tmp_path / "photos")
    assert_one_line_error_naming(tmp_path / "photos", "points nowhere")


def test_an_empty_folder_is_a_one_line_error_naming_it(tmp_path):
    assert_one_line_error_naming(tmp_path, "found no photos", ".jpg")


def test_a_folder_of_other_files_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "cat.0.txt").write_text("not a photo")
    assert_one_line_error_naming(tmp_path, "found no photos")


@pytest.fixture
def unreadable():
    """unreadable(folder): chmod 000 until the test ends; skips where that does not stop reading (root)."""
    locked = []

    def lock(folder):
        folder.chmod(0)
        locked.append(folder)
        if os.access(folder, os.R_OK):
            pytest.skip("chmod 000 does not stop this user (root) from reading a folder")
        return folder

    yield lock
    for folder in locked:
        folder.chmod(0o755)


def test_an_unreadable_folder_is_a_one_line_error_naming_it(tmp_path, unreadable):
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    assert_one_line_error_naming(unreadable(root), "cannot read", "permissions")


def test_an_unreadable_class_folder_is_a_one_line_error_naming_it(tmp_path, unreadable):
    """Not a class silently left out (the photos of the other classes would train alone)."""
    root = make_class_folders(tmp_path / "data", n_per_class=1, names=("birds", "boats", "planes"))
    assert_one_line_error_naming(unreadable(root / "boats"), "cannot read", "permissions", root=root)


def test_empty_class_folders_are_a_one_line_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"\0")
    assert_one_line_error_naming(tmp_path, "found no photos")


# ----------------------------------------------------------------------------------------------------
# decode: skipping broken files


def add_broken_files(folder):
    """Three unreadable files and one too-small one in `folder`; returns their paths."""
    folder = Path(folder)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    good = write_image(folder / "whole.jpg", size=(64, 64)).read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(good[:len(good) // 2])
    write_image(folder / "tiny.png", size=(4, 4), fmt="PNG")
    return [str(folder / n) for n in ("text.jpg", "tiny.png", "truncated.jpg", "zero.jpg")]


def test_decode_shapes_labels_and_hashes(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3, size=(50, 40), names=("birds", "boats"))
    ds = load(root, tmp_path, size=20)
    assert isinstance(ds, photos.Decoded) and ds.root == str(root) and ds.classes == ("birds", "boats")
    assert ds.images.shape == (6, 20, 20, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.paths == photos.find_photos(root).paths and ds.skipped == []
    assert ds.hashes == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in ds.paths]
    assert ds.hashes == [photos.file_hash(p) for p in ds.paths]
    np.testing.assert_array_equal(ds.images[4], photos.load_image(ds.paths[4], 20))


def test_decode_skips_broken_files_with_one_warning_and_their_reasons(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    broken = add_broken_files(root / "Cat")
    with pytest.warns(UserWarning) as record:
        ds = load(root, tmp_path, size=20)
    skip_warnings = [w for w in record if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1 and len(record) == 1
    message = str(skip_warnings[0].message)
    assert "skipped 4 of 10" in message
    assert all(p in message for p in broken)
    assert f"{broken[1]} (4 x 4 px, smaller than {photos.MIN_SIDE} px)" in message
    assert f"{broken[3]} (not a readable image" in message
    assert sorted(ds.skipped) == sorted(broken)
    assert len(ds.paths) == 6 and ds.images.shape[0] == 6 and len(ds.hashes) == 6 and not set(broken) & set(ds.paths)


def test_decode_warning_names_at_most_five_files(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    for i in range(8):
        (root / "Dog" / f"bad{i}.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 8 of 12") as record:
        load(root, tmp_path, size=20)
    assert len(record) == 1
    message = str(record[0].message)
    assert sum(f"bad{i}.jpg" in message for i in range(8)) == 5 and "..." in message


def test_decode_nothing_readable_is_an_error(tmp_path):
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "0.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(TinymaeError, match="none of the 2") as e:
        load(root, tmp_path)
    assert str(root) in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------------
# decode: the cache


def fail_if_called(path, size):
    raise AssertionError(f"load_image({path}) was called: the cache was not used")


def test_a_second_decode_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    add_broken_files(root / "Dog")
    with pytest.warns(UserWarning):
        first = load(root, tmp_path, size=20)
    monkeypatch.setattr(photos, "load_image", fail_if_called)
    with pytest.warns(UserWarning, match="skipped 4"):  # the cache remembers the skipped files, and says so again
        second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.labels.dtype == np.int64
    assert second.paths == first.paths and second.skipped == first.skipped and second.hashes == first.hashes
    cache_files = os.listdir(tmp_path / "cache")
    assert len(cache_files) == 1 and cache_files[0].endswith(".npz")  # and no temporary file left behind
    assert cache_files[0].startswith("data-20px-")


def test_decode_never_writes_into_the_data_folder(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))
    load(root, tmp_path)
    load(root, tmp_path)
    assert sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_decode_caches_under_tinymae_cache(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "env_cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    photos.decode(photos.find_photos(root), 16, progress=False)
    assert len(os.listdir(tmp_path / "env_cache")) == 1 and not (tmp_path / "home").exists()


def test_decode_caches_under_the_home_folder_without_tinymae_cache(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    monkeypatch.delenv("TINYMAE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    photos.decode(photos.find_photos(root), 16, progress=False)
    assert len(os.listdir(tmp_path / "home" / ".cache" / "tinymae")) == 1


def test_cache_invalidated_when_a_file_changes(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=20)
    changed = root / "Dog" / "1.jpg"
    noise_image(seed=999).save(changed)
    second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images[:3], first.images[:3])
    assert not np.array_equal(second.images[3], first.images[3])
    np.testing.assert_array_equal(second.images[3], photos.load_image(changed, 20))


def same_size_photos(folder):
    """Two different photos of exactly the same byte length (uncompressed BMPs of one size)."""
    a = write_image(folder / "a.bmp", seed=1, fmt="BMP")
    b = write_image(folder / "b.bmp", seed=2, fmt="BMP")
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


def replace_keeping_size_and_times(path, other):
    """Copy `other`'s bytes over `path` and put back `path`'s modification and access times."""
    stat = os.stat(path)
    shutil.copyfile(other, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns


def test_a_photo_replaced_by_another_of_the_same_size_with_its_time_kept_is_decoded_again(tmp_path):
    """The cache is keyed on the files' bytes, not on their sizes and modification times."""
    root = tmp_path / "data"
    a, b = same_size_photos(root)
    write_image(root / "c.jpg", seed=3)
    first = load(root, tmp_path, size=20)
    replace_keeping_size_and_times(a, tmp_path / "data" / "b.bmp")
    second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images[0], photos.load_image(b, 20))
    assert not np.array_equal(second.images[0], first.images[0])
    np.testing.assert_array_equal(second.images[1:], first.images[1:])
    assert second.hashes[0] == second.hashes[1] != first.hashes[0]


def test_a_photo_unreadable_at_first_decode_is_decoded_once_it_is_fixed(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    locked = root / "Dog" / "0.jpg"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("chmod 000 does not stop this user (root) from reading a file")
        with pytest.warns(UserWarning, match="skipped 1 of 4"):
            first = load(root, tmp_path, size=20)
        assert first.skipped == [str(locked)] and len(first.paths) == 3
    finally:
        locked.chmod(0o644)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not the skipped file of the cache made at the first decode
        second = load(root, tmp_path, size=20)
    assert second.skipped == [] and second.paths == photos.find_photos(root).paths
    np.testing.assert_array_equal(second.images[2], photos.load_image(locked, 20))


def test_the_caches_temporary_files_left_by_a_killed_process_are_removed_once_an_hour_old(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    old, recent, fresh = cache / ".tinymae-k1ll3d.tmp", cache / ".tinymae-wr1t1ng.tmp", cache / ".tinymae-n0w.tmp"
    for path, age_s in ((old, 3700), (recent, 3000), (fresh, 0)):
        path.write_bytes(b"half an npz")
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    other = cache / "notes.tmp"  # not one of ours
    other.write_text("keep")
    os.utime(other, (time.time() - 10 ** 6, time.time() - 10 ** 6))
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    load(root, tmp_path, size=16)  # decodes and writes the cache
    assert not old.exists() and recent.exists() and fresh.exists() and other.exists()
    assert len(list(cache.glob("data-16px-*.npz"))) == 1


def test_cache_invalidated_when_a_file_is_added(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    assert len(load(root, tmp_path).paths) == 4
    write_image(root / "Cat" / "9.jpg")
    assert len(load(root, tmp_path).paths) == 5


def test_cache_invalidated_when_size_or_per_class_changes(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    assert load(root, tmp_path, size=20).images.shape == (6, 20, 20, 3)
    assert load(root, tmp_path, size=24).images.shape == (6, 24, 24, 3)
    assert load(root, tmp_path, size=24, per_class=1).images.shape == (2, 24, 24, 3)
    assert len(os.listdir(tmp_path / "cache")) == 3


def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=20)
    (cache_file,) = (tmp_path / "cache").iterdir()
    raw = cache_file.read_bytes()
    cache_file.write_bytes(raw[:len(raw) // 3])  # as if a copy of it was cut short
    with pytest.warns(UserWarning, match="cache"):
        second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images, first.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = load(root, tmp_path, size=20)  # the rewritten cache reads cleanly
    np.testing.assert_array_equal(third.images, first.images)


def test_a_cache_of_the_wrong_shape_is_decoded_again(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=20)
    (cache_file,) = (tmp_path / "cache").iterdir()
    np.savez(cache_file, images=np.zeros((4, 10, 10, 3), np.uint8), ok=np.ones(4, bool))
    with pytest.warns(UserWarning, match="unreadable"):
        second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images, first.images)


def test_unwritable_cache_dir_warns_and_goes_on(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    not_a_folder = tmp_path / "cache_is_a_file"
    not_a_folder.write_text("")
    with pytest.warns(UserWarning, match="TINYMAE_CACHE"):
        ds = load(root, tmp_path, cache_dir=not_a_folder)
    assert ds.images.shape[0] == 4


# ----------------------------------------------------------------------------------------------------
# fingerprint


def fingerprint_of(ds):
    return photos.fingerprint(ds.paths, ds.labels, ds.hashes)


def old_content_fingerprint(paths, labels):
    """The fingerprint runs recorded before photos.py ("contents" kind): path below the shared folder, label, and
    the SHA-256 of the bytes, one line per photo."""
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    key = hashlib.sha256()
    for path, label in zip(paths, labels):
        content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        key.update(f"{os.path.relpath(path, root)}\t{label}\t{content}\n".encode("utf-8", "surrogateescape"))
    return key.hexdigest()[:16]


def test_fingerprint_is_kept_when_the_folder_moves(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    moved = tmp_path / "somewhere" / "else" / "photos"
    shutil.copytree(root, moved)
    assert fingerprint_of(load(root, tmp_path, size=16)) == fingerprint_of(load(moved, tmp_path, size=16))


def test_fingerprint_changes_when_a_photo_is_replaced_by_another_of_the_same_size(tmp_path):
    root = tmp_path / "data"
    a, b = same_size_photos(root)
    before = fingerprint_of(load(root, tmp_path, size=16))
    replace_keeping_size_and_times(a, b)
    assert fingerprint_of(load(root, tmp_path, size=16)) != before


def test_fingerprint_changes_with_a_label_or_a_photo_more(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    ds = load(root, tmp_path, size=16)
    assert photos.fingerprint(ds.paths, 1 - ds.labels, ds.hashes) != fingerprint_of(ds)
    write_image(root / "Dog" / "7.jpg", seed=77)
    assert fingerprint_of(load(root, tmp_path, size=16)) != fingerprint_of(ds)


def test_fingerprint_is_the_old_content_fingerprint_of_the_same_files(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    ds = load(root, tmp_path, size=16)
    assert fingerprint_of(ds) == old_content_fingerprint(ds.paths, ds.labels)
    write_image(tmp_path / "single" / "only.jpg")
    one = load(tmp_path / "single", tmp_path, size=16)  # one photo: its path below its own folder
    assert fingerprint_of(one) == old_content_fingerprint(one.paths, one.labels)
