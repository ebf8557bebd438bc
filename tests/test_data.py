"""The host-side data pipeline (tinymae/data.py): layouts, decoding, skipping, cache, split, stats,
augmentation, normalisation.

Every broken or unusual file is made here in tmp_path with Pillow. Every load passes a cache_dir in
tmp_path, so nothing is written to the user's home. The last tests read the shared development data
and skip, with the reason, where it is absent.
"""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymae import data
from tinymae.util import datasets, layouts
from tinymae.util.datasets import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------------
# helpers that write images


def noise_image(size=(32, 32), seed=0, mode="RGB"):
    """A random-pixel Pillow image (random, so crops and resizes of it are easy to tell apart)."""
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def write_image(path, size=(32, 32), seed=0, mode="RGB", fmt="JPEG"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(size, seed, mode).save(path, format=fmt)
    return path


def make_class_folders(root, n_per_class=3, names=("Cat", "Dog"), size=(32, 32)):
    """root/<names[0]>/0.jpg ... and root/<names[1]>/0.jpg ...; returns root."""
    for c, name in enumerate(names):
        for i in range(n_per_class):
            write_image(Path(root) / name / f"{i}.jpg", size=size, seed=100 * c + i)
    return Path(root)


def load(root, tmp_path, **kwargs):
    """load_dataset with a cache in tmp_path and no progress bar."""
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("progress", False)
    return datasets.load_dataset(root, **kwargs)


# ----------------------------------------------------------------------------------------------------
# load_image: every kind of file


def test_load_image_rgb_jpeg_gives_uint8_square(tmp_path):
    path = write_image(tmp_path / "a.jpg", size=(40, 30))
    image = datasets.load_image(path, 20)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8


def test_load_image_zero_byte_file_is_none(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert datasets.load_image(path, 20) is None


def test_load_image_text_named_jpg_is_none(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture of a cat\n" * 20)
    assert datasets.load_image(path, 20) is None


def test_load_image_truncated_jpeg_is_none(tmp_path):
    full = write_image(tmp_path / "full.jpg", size=(64, 64))
    cut = tmp_path / "cut.jpg"
    raw = full.read_bytes()
    cut.write_bytes(raw[:len(raw) // 2])
    assert datasets.load_image(cut, 20) is None


def test_load_image_missing_file_is_none(tmp_path):
    assert datasets.load_image(tmp_path / "nowhere.jpg", 20) is None


def test_load_image_png_bytes_named_jpg_loads(tmp_path):
    path = write_image(tmp_path / "really_a_png.jpg", fmt="PNG")
    image = datasets.load_image(path, 20)
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
    assert Image.open(path).mode.startswith(mode[0])  # the file really holds that mode
    image = datasets.load_image(path, 24)
    assert image is not None and image.shape == (24, 24, 3) and image.dtype == np.uint8


def test_load_image_grayscale_gives_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (32, 32), 100).save(path)
    image = datasets.load_image(path, 16)
    assert np.all(image == 100)


def test_load_image_16bit_png_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((32, 32), 32896, dtype=np.uint16)).save(path)  # 32896 = 128 * 257
    assert Image.open(path).mode in ("I;16", "I")
    image = datasets.load_image(path, 16)
    assert np.all(image == 128)  # Pillow's own convert would give 255 (clipped)


def test_load_image_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(path)
    assert np.all(datasets.load_image(path, 16) == 255)


def test_load_image_cmyk_colour_is_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink
    r, g, b = datasets.load_image(path, 16).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_load_image_tiny_image_is_none_but_min_side_loads(tmp_path):
    tiny = write_image(tmp_path / "tiny.png", size=(4, 4), fmt="PNG")
    thin = write_image(tmp_path / "thin.png", size=(200, datasets.MIN_SIDE - 1), fmt="PNG")
    ok = write_image(tmp_path / "ok.png", size=(datasets.MIN_SIDE, datasets.MIN_SIDE), fmt="PNG")
    assert datasets.load_image(tiny, 20) is None
    assert datasets.load_image(thin, 20) is None
    assert datasets.load_image(ok, 20).shape == (20, 20, 3)


@pytest.mark.parametrize("max_pixels", [1000, 100])  # 32x32 = 1024 pixels: a warning at 1000, an error at 100
def test_load_image_decompression_bomb_is_none(tmp_path, monkeypatch, max_pixels):
    path = write_image(tmp_path / "bomb.png", size=(32, 32), fmt="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning escapes either
        assert datasets.load_image(path, 20) is None


def test_load_image_large_jpeg_matches_full_decode(tmp_path):
    """The draft (reduced-scale JPEG decoding) shortcut must give nearly the same picture as a full
    decode + resize: same orientation, same aspect handling, no colour shift."""
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    fast = datasets.load_image(path, 54).astype(np.int32)
    slow = np.asarray(Image.open(path).convert("RGB").resize((54, 54), Image.BICUBIC)).astype(np.int32)
    assert np.abs(fast - slow).mean() < 2.0


# ----------------------------------------------------------------------------------------------------
# find_images: layouts and the errors when none matches


def test_find_images_petimages_layout(tmp_path):
    make_class_folders(tmp_path / "PetImages", n_per_class=2)
    (tmp_path / "PetImages" / "Cat" / "Thumbs.db").write_bytes(b"\0" * 10)  # as in the official archive
    (tmp_path / "readme[1].txt").write_text("hello")
    paths, labels = layouts.find_images(tmp_path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == [
        "PetImages/Cat/0.jpg", "PetImages/Cat/1.jpg", "PetImages/Dog/0.jpg", "PetImages/Dog/1.jpg"]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1]
    # pointing at PetImages itself works too, with the same files
    assert layouts.find_images(tmp_path / "PetImages")[0] == paths


def test_find_images_kaggle_layout(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / f"cat.{i}.jpg", seed=i)
        write_image(tmp_path / "train" / f"dog.{i}.jpg", seed=10 + i)
    write_image(tmp_path / "test1" / "1.jpg")  # the unlabelled test folder is ignored
    paths, labels = layouts.find_images(tmp_path)
    assert [os.path.basename(p) for p in paths] == [
        "cat.0.jpg", "cat.1.jpg", "cat.2.jpg", "dog.0.jpg", "dog.1.jpg", "dog.2.jpg"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert layouts.find_images(tmp_path / "train")[0] == paths


@pytest.mark.parametrize("names", [("cat", "dog"), ("Cats", "DOGS"), ("CAT", "Dogs"), ("cats", "dog")])
def test_find_images_class_folders_any_case(tmp_path, names):
    make_class_folders(tmp_path, n_per_class=2, names=names)
    (tmp_path / names[0] / "notes.txt").write_text("not an image")
    (tmp_path / names[0] / "._0.jpg").write_bytes(b"macOS resource fork")
    write_image(tmp_path / names[1] / "UPPER.JPG", seed=7)  # extensions in any case
    paths, labels = layouts.find_images(tmp_path)
    assert labels.tolist() == [0, 0, 1, 1, 1]
    assert paths == sorted(paths)
    assert all(os.path.isabs(p) for p in paths)


def test_find_images_missing_folder_says_how_to_download(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError) as e:
        layouts.find_images(missing)
    assert str(missing) in str(e.value)
    assert "--download" in str(e.value) and layouts.OFFICIAL_URL in str(e.value)


def test_find_images_empty_folder_names_path_and_layouts(tmp_path):
    with pytest.raises(DataError) as e:
        layouts.find_images(tmp_path)
    message = str(e.value)
    assert str(tmp_path) in message and "empty" in message
    assert "PetImages" in message and "cat.0.jpg" in message and "cat/" in message


def test_find_images_unknown_layout_lists_contents_and_layouts(tmp_path):
    write_image(tmp_path / "birds" / "0.jpg")
    write_image(tmp_path / "photo.jpg")
    with pytest.raises(DataError) as e:
        layouts.find_images(tmp_path)
    message = str(e.value)
    assert str(tmp_path) in message and "birds" in message and "photo.jpg" in message
    assert "PetImages" in message and "cat.0.jpg" in message


def test_find_images_empty_class_folders_are_no_layout(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError, match="Accepted layouts"):
        layouts.find_images(tmp_path)


def test_find_images_file_instead_of_folder(tmp_path):
    path = tmp_path / "kagglecatsanddogs_5340.zip"
    path.write_bytes(b"PK")
    with pytest.raises(DataError, match="extract"):
        layouts.find_images(path)


def test_find_images_one_class_folder_only(tmp_path):
    make_class_folders(tmp_path / "PetImages", n_per_class=2, names=("Cat", "Dog"))
    for p in (tmp_path / "PetImages" / "Dog").iterdir():
        p.unlink()
    with pytest.raises(DataError) as e:
        layouts.find_images(tmp_path)
    message = str(e.value)
    assert "only cat images" in message and "both cats and dogs" in message
    assert str(tmp_path / "PetImages") in message


def test_find_images_one_class_kaggle_names_only(tmp_path):
    write_image(tmp_path / "dog.0.jpg")
    write_image(tmp_path / "dog.1.jpg")
    with pytest.raises(DataError, match="only dog images"):
        layouts.find_images(tmp_path)


# ----------------------------------------------------------------------------------------------------
# load_dataset: skipping, subsets, cache


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


def test_load_dataset_shapes_and_labels(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3, size=(50, 40))
    ds = load(root, tmp_path, size=20)
    assert ds.images.shape == (6, 20, 20, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.paths == layouts.find_images(root)[0] and ds.skipped == []
    np.testing.assert_array_equal(ds.images[4], datasets.load_image(ds.paths[4], 20))


def test_load_dataset_skips_broken_files_with_one_warning(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    broken = add_broken_files(root / "Cat")
    with pytest.warns(UserWarning) as record:
        ds = load(root, tmp_path, size=20)
    skip_warnings = [w for w in record if "skipped" in str(w.message)]
    assert len(skip_warnings) == 1
    message = str(skip_warnings[0].message)
    assert "skipped 4 of 10" in message
    assert all(p in message for p in broken)
    assert sorted(ds.skipped) == sorted(broken)
    assert len(ds.paths) == 6 and ds.images.shape[0] == 6 and not set(broken) & set(ds.paths)


def test_load_dataset_warning_names_at_most_five_files(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    for i in range(8):
        (root / "Dog" / f"bad{i}.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 8 of 12") as record:
        load(root, tmp_path, size=20)
    message = str(record[0].message)
    assert sum(f"bad{i}.jpg" in message for i in range(8)) == 5 and "..." in message


def test_load_dataset_nothing_readable(tmp_path):
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        (root / name / "0.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(DataError, match="none of the 2"):
        load(root, tmp_path)


def test_load_dataset_one_class_left_after_skipping(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    for p in (root / "Dog").iterdir():
        p.write_bytes(b"broken")
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(DataError) as e:
        load(root, tmp_path)
    assert "dog" in str(e.value) and "both cats and dogs" in str(e.value)


def test_load_dataset_per_class_is_first_n_sorted(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=5)
    ds = load(root, tmp_path, size=20, per_class=2)
    names = [Path(p).relative_to(root).as_posix() for p in ds.paths]
    assert names == ["Cat/0.jpg", "Cat/1.jpg", "Dog/0.jpg", "Dog/1.jpg"]
    again = load(root, tmp_path, size=20, per_class=2, cache_dir=tmp_path / "other_cache")
    assert again.paths == ds.paths
    np.testing.assert_array_equal(again.images, ds.images)


def test_load_dataset_per_class_with_broken_files_gives_fewer(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=5)
    (root / "Cat" / "0.jpg").write_bytes(b"")  # first cat in sorted order is broken
    with pytest.warns(UserWarning, match="per_class=2"):
        ds = load(root, tmp_path, size=20, per_class=2)
    assert ds.labels.tolist() == [0, 1, 1]  # not topped up from Cat/2.jpg
    assert ds.skipped == [str(root / "Cat" / "0.jpg")]


def test_load_dataset_rejects_bad_settings(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    with pytest.raises(ValueError, match="size"):
        load(root, tmp_path, size=0)
    with pytest.raises(ValueError, match="per_class"):
        load(root, tmp_path, per_class=0)


def fail_if_called(path, size):
    raise AssertionError(f"load_image({path}) was called: the cache was not used")


def test_load_dataset_second_call_uses_cache(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "data", n_per_class=3)
    add_broken_files(root / "Dog")
    with pytest.warns(UserWarning):
        first = load(root, tmp_path, size=20)
    monkeypatch.setattr(datasets, "load_image", fail_if_called)
    with pytest.warns(UserWarning, match="skipped 4"):  # the cache remembers the skipped files, and says so again
        second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.labels.dtype == np.int64
    assert second.paths == first.paths and second.skipped == first.skipped
    cache_files = os.listdir(tmp_path / "cache")
    assert len(cache_files) == 1 and cache_files[0].endswith(".npz")  # and no temporary file left behind


def test_load_dataset_never_writes_into_data_folder(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    before = sorted(str(p) for p in root.rglob("*"))
    load(root, tmp_path)
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_load_dataset_default_cache_dir_is_tinymae_cache(tmp_path, monkeypatch):
    root = make_class_folders(tmp_path / "data", n_per_class=1)
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "env_cache"))
    datasets.load_dataset(root, progress=False)
    assert len(os.listdir(tmp_path / "env_cache")) == 1


def test_cache_invalidated_when_a_file_changes(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=20)
    changed = root / "Dog" / "1.jpg"
    noise_image(seed=999).save(changed)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # even on coarse-mtime filesystems
    second = load(root, tmp_path, size=20)
    np.testing.assert_array_equal(second.images[:3], first.images[:3])
    assert not np.array_equal(second.images[3], first.images[3])
    np.testing.assert_array_equal(second.images[3], datasets.load_image(changed, 20))


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


def test_unwritable_cache_dir_warns_and_goes_on(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    not_a_folder = tmp_path / "cache_is_a_file"
    not_a_folder.write_text("")
    with pytest.warns(UserWarning, match="TINYMAE_CACHE"):
        ds = load(root, tmp_path, cache_dir=not_a_folder)
    assert ds.images.shape[0] == 4


# ----------------------------------------------------------------------------------------------------
# stratified_split


def test_stratified_split_properties():
    labels = np.array([0] * 50 + [1] * 30)
    np.random.default_rng(5).shuffle(labels)
    train_idx, val_idx = data.stratified_split(labels, val_fraction=0.2, seed=0)
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)  # sorted, no repeats
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(80))
    assert np.sum(labels[val_idx] == 0) == 10 and np.sum(labels[val_idx] == 1) == 6


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1], 40)
    a = data.stratified_split(labels, 0.25, seed=3)
    b = data.stratified_split(labels, 0.25, seed=3)
    c = data.stratified_split(labels, 0.25, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_edge_fractions():
    labels = np.repeat([0, 1], 5)
    train_idx, val_idx = data.stratified_split(labels, 0.0)
    assert len(val_idx) == 0 and train_idx.tolist() == list(range(10))
    with pytest.raises(ValueError, match="val_fraction"):
        data.stratified_split(labels, 1.0)


# ----------------------------------------------------------------------------------------------------
# channel_stats, crops, normalisation


def random_images(n=7, size=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_channel_stats_match_numpy():
    images = random_images(n=7)
    images[..., 2] //= 4  # make the channels differ
    mean, std = data.channel_stats(images, chunk=3)  # chunks of 3, 3, 1
    x = images.astype(np.float64) / 255
    assert mean.dtype == np.float32 and mean.shape == (3,) and std.dtype == np.float32 and std.shape == (3,)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-5)


def test_channel_stats_of_constant_images():
    mean, std = data.channel_stats(np.full((4, 5, 5, 3), 51, dtype=np.uint8))
    np.testing.assert_allclose(mean, 0.2, rtol=1e-6)
    np.testing.assert_allclose(std, 0.0, atol=1e-6)


def test_random_crop_flip_gives_real_subwindows():
    S, out = 12, 8
    images = random_images(n=40, size=S, seed=1)
    crops = data.random_crop_flip(images, out, np.random.default_rng(0))
    assert crops.shape == (40, out, out, 3) and crops.dtype == np.uint8
    for image, crop in zip(images, crops):
        windows = [image[y:y + out, x:x + out] for y in range(S - out + 1) for x in range(S - out + 1)]
        candidates = windows + [w[:, ::-1] for w in windows]
        assert any(np.array_equal(crop, c) for c in candidates)


def find_crop(image, crop):
    """(top, left, flipped) of `crop` inside `image` (random pixels make it unique)."""
    out, S = crop.shape[0], image.shape[0]
    for y in range(S - out + 1):
        for x in range(S - out + 1):
            window = image[y:y + out, x:x + out]
            if np.array_equal(crop, window):
                return y, x, False
            if np.array_equal(crop, window[:, ::-1]):
                return y, x, True
    raise AssertionError("the crop is not a window of its image")


def test_random_crop_flip_offsets_and_flip_rate():
    S, out, n = 10, 7, 400
    image = random_images(n=1, size=S, seed=2)[0]
    images = np.repeat(image[None], n, axis=0)
    crops = data.random_crop_flip(images, out, np.random.default_rng(1))
    found = [find_crop(image, crop) for crop in crops]
    tops = {y for y, _, _ in found}
    lefts = {x for _, x, _ in found}
    assert tops == set(range(S - out + 1)) and lefts == set(range(S - out + 1))  # every offset, both ends
    n_flipped = sum(flipped for _, _, flipped in found)
    assert 150 < n_flipped < 250  # Binomial(400, 0.5): mean 200, std 10


def test_random_crop_flip_is_deterministic_per_seed():
    images = random_images(n=16, size=12)
    a = data.random_crop_flip(images, 8, np.random.default_rng(7))
    b = data.random_crop_flip(images, 8, np.random.default_rng(7))
    c = data.random_crop_flip(images, 8, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_crop_flip_full_size_and_too_large():
    images = random_images(n=6, size=8)
    crops = data.random_crop_flip(images, 8, np.random.default_rng(0))
    for image, crop in zip(images, crops):
        assert np.array_equal(crop, image) or np.array_equal(crop, image[:, ::-1])
    with pytest.raises(ValueError, match="cannot crop"):
        data.random_crop_flip(images, 9, np.random.default_rng(0))


def test_center_crop():
    images = random_images(n=3, size=11)
    crops = data.center_crop(images, 6)  # margins: 2 above/left, 3 below/right
    np.testing.assert_array_equal(crops, images[:, 2:8, 2:8])
    assert crops.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(data.center_crop(images, 11), images)


def test_normalize_layout_dtype_and_values():
    batch = random_images(n=2, size=4)
    mean = np.array([0.5, 0.4, 0.3], dtype=np.float32)
    std = np.array([0.2, 0.25, 0.3], dtype=np.float32)
    x = data.normalize(batch, mean, std)
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    expected = (batch.astype(np.float64) / 255 - mean) / std  # (B, H, W, 3)
    np.testing.assert_allclose(x, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


def test_normalize_denormalize_round_trip():
    batch = random_images(n=3, size=5)
    mean, std = data.channel_stats(batch)
    x = data.denormalize(data.normalize(batch, mean, std), mean, std)
    assert x.dtype == np.float32 and x.shape == (3, 3, 5, 5)
    np.testing.assert_allclose(x * 255, batch.transpose(0, 3, 1, 2), atol=1e-3)


def test_normalize_refuses_floats_and_denormalize_refuses_non_numpy():
    with pytest.raises(ValueError, match="uint8"):
        data.normalize(np.zeros((1, 4, 4, 3), dtype=np.float32), [0.5] * 3, [0.2] * 3)
    with pytest.raises(TypeError, match="NumPy"):
        data.denormalize([[[[0.0]]]], [0.5] * 3, [0.2] * 3)


# ----------------------------------------------------------------------------------------------------
# the shared development data (skipped where it is absent)


def shared(subpath):
    path = SHARED_DATA / subpath
    if not path.is_dir():
        pytest.skip(f"the shared development data is not at {path}")
    return path


def test_real_kaggle_sample_loads(tmp_path):
    root = shared("kaggle-sample/train")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = load(root, tmp_path, size=54)
    # all 120 decode today; if a file goes bad, the warning says which, and the rest must still load
    assert len(ds.paths) + len(ds.skipped) == 120, [str(w.message) for w in record]
    assert len(ds.paths) >= 110
    assert ds.images.shape == (len(ds.paths), 54, 54, 3)
    assert set(ds.labels.tolist()) == {0, 1}
    assert ds.images.std() > 20  # real photos, not blank arrays


def test_real_catsdogs_per_class(tmp_path):
    root = shared("catsdogs")
    ds = load(root, tmp_path, size=54, per_class=50)
    assert ds.images.shape == (100, 54, 54, 3) and ds.skipped == []
    assert np.bincount(ds.labels).tolist() == [50, 50]
    assert all("PetImages" in p for p in ds.paths)
