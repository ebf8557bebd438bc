"""The photos a run trains on (tinymae/data.py): RunPhotos and its provenance record, new_photos and photos_of_run,
the seen photos kept out of validation, labelled_subset, the split, the colour statistics, augmentation and
normalisation. Which files are photos, their decoding and the cache are photos.py's, tested in test_photos.py.

The helpers that write photos live here (test_photos.py and test_robustness.py import them). Every photo is made
in tmp_path with Pillow, and every cache goes to tmp_path. The last tests read the shared development data and
skip, with the reason, where it is absent.
"""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymae import data, photos
from tinymae.errors import TinymaeError

from conftest import make_photos

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------------
# helpers that write photos (shared with test_photos.py and test_robustness.py)


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
    """root/<names[0]>/0.jpg ... and root/<names[1]>/0.jpg ... (any number of names); returns root."""
    for c, name in enumerate(names):
        for i in range(n_per_class):
            write_image(Path(root) / name / f"{i}.jpg", size=size, seed=100 * c + i)
    return Path(root)


def load(root, tmp_path, size=54, per_class=None, **kwargs):
    """photos.decode(photos.find_photos(root, per_class), size) with a cache in tmp_path and no progress bar."""
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("progress", False)
    return photos.decode(photos.find_photos(root, per_class), size, **kwargs)


# ----------------------------------------------------------------------------------------------------
# RunPhotos, new_photos and the record a run keeps of its photos

LOAD, CROP = 18, 16  # tiny photos: resized to 18 px, cropped to 16


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """5 photos of cat/ and 5 of dog/ (conftest.make_photos; the cache goes to tmp_path)."""
    return make_photos(tmp_path, monkeypatch, per_class=5)


def run_photos(folder, seed=0, val_fraction=0.4, **kwargs):
    return data.new_photos(folder, LOAD, CROP, seed, val_fraction, progress=False, **kwargs)


def test_new_photos_splits_crops_and_normalises(folder):
    run = run_photos(folder)
    assert run.classes == ("cat", "dog")
    assert run.train_images.shape == (6, LOAD, LOAD, 3) and run.train_images.dtype == np.uint8
    assert run.val_images.shape == (4, CROP, CROP, 3) and run.val_images.dtype == np.uint8
    assert run.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and run.val_labels.tolist() == [0, 0, 1, 1]
    mean, std = data.channel_stats(run.train_images)  # the training split's own statistics
    np.testing.assert_array_equal(run.mean, mean)
    np.testing.assert_array_equal(run.std, std)
    assert run.mean_patch(CROP, 4).shape == (16, 4 * 4 * 3)


def test_the_record_lists_every_file_with_its_label_hash_and_the_split(folder):
    """What a checkpoint keeps: each file relative to the folder, its class and a hash of its bytes, the
    validation indices and the normalisation; plain JSON."""
    run = run_photos(folder)
    record = run.record
    files = [f"{c}/{i}.jpg" for c in ("cat", "dog") for i in range(5)]
    assert record["root"] == str(folder) and record["load_size"] == LOAD and record["classes"] == ["cat", "dog"]
    assert record["files"] == files and record["labels"] == [0] * 5 + [1] * 5
    assert record["hashes"] == [photos.file_hash(folder / f)[:16] for f in files]
    _, val = data.stratified_split(np.array(record["labels"]), 0.4, 0)
    assert record["val"] == val.tolist()
    assert record["n_train"] == 6 and record["n_val"] == 4 and record["skipped"] == 0
    assert record["moved_to_training"] == 0
    np.testing.assert_allclose(record["mean"], run.mean)
    np.testing.assert_allclose(record["std"], run.std)
    paths = [str(folder / f) for f in files]
    assert record["fingerprint"] == photos.fingerprint(paths, record["labels"], [photos.file_hash(p) for p in paths])
    assert json.loads(json.dumps(record)) == record


def test_the_record_holds_the_skipped_count_and_not_the_skipped_files(folder):
    (folder / "dog" / "broken.jpg").write_bytes(b"not a photo")
    with pytest.warns(UserWarning, match="skipped 1 of 11"):
        run = run_photos(folder)
    assert run.record["skipped"] == 1 and "dog/broken.jpg" not in run.record["files"]
    assert len(run.record["files"]) == len(run.record["hashes"]) == len(run.record["labels"]) == 10


def test_photos_of_run_finds_the_same_photos_under_a_moved_copy(folder, tmp_path):
    run = run_photos(folder)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(folder, moved)
    again = data.photos_of_run(run.record, str(moved), CROP, progress=False)
    assert again is not None
    assert again.record["root"] == str(moved)
    assert dict(again.record, root=None) == dict(run.record, root=None)  # the same files, split and statistics
    np.testing.assert_array_equal(again.train_images, run.train_images)
    np.testing.assert_array_equal(again.val_images, run.val_images)
    np.testing.assert_array_equal(again.val_labels, run.val_labels)
    np.testing.assert_array_equal(again.mean, run.mean)


def test_photos_of_run_defaults_to_the_recorded_folder(folder):
    run = run_photos(folder, seed=3)
    again = data.photos_of_run(run.record, None, CROP, progress=False)
    assert again is not None and again.record["val"] == run.record["val"]


def test_photos_of_run_keeps_the_runs_statistics(folder):
    """Given a record, the normalisation is the run's, not recomputed (here a record edited to tell them apart)."""
    record = dict(run_photos(folder).record, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    again = data.photos_of_run(record, str(folder), CROP, progress=False)
    np.testing.assert_allclose(again.mean, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(again.std, [0.4, 0.5, 0.6])


def test_photos_of_run_is_none_for_another_folder(folder, tmp_path, monkeypatch):
    run = run_photos(folder)
    same_names = make_photos(tmp_path, monkeypatch, per_class=5, name="other", seed=1)  # cat/0.jpg ..., other bytes
    assert data.photos_of_run(run.record, str(same_names), CROP, progress=False) is None
    other_names = make_photos(tmp_path, monkeypatch, per_class=5, classes=("bird", "boat"), name="third")
    assert data.photos_of_run(run.record, str(other_names), CROP, progress=False) is None


def test_photos_of_run_is_none_when_one_photos_bytes_changed(folder):
    run = run_photos(folder)
    noise_image((60, 60), seed=7).save(folder / "dog" / "3.jpg")
    assert data.photos_of_run(run.record, str(folder), CROP, progress=False) is None


def test_photos_of_run_is_none_when_a_recorded_photo_is_gone(folder):
    run = run_photos(folder)
    (folder / "cat" / "2.jpg").unlink()
    assert data.photos_of_run(run.record, str(folder), CROP, progress=False) is None


def test_photos_of_run_when_the_runs_folder_is_gone(folder, tmp_path):
    """The recorded folder gone: None (the caller says which photos it needs); a --data folder that is not there:
    the error naming it."""
    run = run_photos(folder)
    shutil.rmtree(folder)
    assert data.photos_of_run(run.record, None, CROP, progress=False) is None
    with pytest.raises(TinymaeError, match="does not exist"):
        data.photos_of_run(run.record, str(tmp_path / "missing"), CROP, progress=False)


def test_per_class_records_only_those_photos_and_the_full_folder_still_has_them(folder):
    run = run_photos(folder, per_class=3, val_fraction=0.34)
    assert run.record["files"] == [f"{c}/{i}.jpg" for c in ("cat", "dog") for i in range(3)]
    assert len(run.record["hashes"]) == 6 and run.record["n_train"] + run.record["n_val"] == 6
    again = data.photos_of_run(run.record, str(folder), CROP, progress=False)  # 5 per class there: 2 extra each
    assert again is not None and again.record["files"] == run.record["files"]
    assert again.record["val"] == run.record["val"]
    np.testing.assert_array_equal(again.train_images, run.train_images)
    np.testing.assert_array_equal(again.val_images, run.val_images)


def test_a_seen_photo_is_never_validated_on_it_goes_to_training(folder):
    """seen: the photos an encoder trained on. A split that would validate on one of them puts it in training."""
    plain = run_photos(folder, seed=2)
    moved = plain.record["val"][1]
    path = folder / plain.record["files"][moved]
    run = run_photos(folder, seed=2, seen=[photos.file_hash(path)])  # a full hash or its first 16 characters
    assert moved not in run.record["val"] and run.record["val"] == [i for i in plain.record["val"] if i != moved]
    assert run.record["moved_to_training"] == 1
    assert run.record["n_train"] == plain.record["n_train"] + 1 and run.record["n_val"] == plain.record["n_val"] - 1
    assert moved in [i for i in range(10) if i not in run.record["val"]]
    assert run.record["hashes"][moved] in data.training_hashes(run.record)


def test_seen_training_photos_of_another_run_are_kept_out_of_validation(folder):
    """A second split (another seed) given the first run's training photos as seen validates only on photos the
    first run validated on; the others it would have validated on are moved to its training part."""
    first = run_photos(folder, seed=0)
    seen = data.training_hashes(first.record)
    assert seen == [h for i, h in enumerate(first.record["hashes"]) if i not in first.record["val"]] and len(seen) == 6
    first_val, labels = set(first.record["val"]), np.array(first.record["labels"])
    # a seed whose plain split validates on some of the first run's validation photos and some of its training ones
    seed = next(s for s in range(1, 100) if 0 < len(set(data.stratified_split(labels, 0.4, s)[1]) & first_val) < 4)
    plain_val = set(data.stratified_split(labels, 0.4, seed)[1].tolist())
    second = run_photos(folder, seed=seed, seen=seen)
    assert set(second.record["val"]) == plain_val & first_val
    assert second.record["moved_to_training"] == len(plain_val - first_val) > 0
    assert second.record["n_train"] == 10 - len(plain_val & first_val)


def test_every_photo_seen_leaves_no_validation_photo_an_error(folder):
    everything = [photos.file_hash(p) for p in sorted(folder.rglob("*.jpg"))]
    with pytest.raises(TinymaeError, match="0 validation"):
        run_photos(folder, seen=everything)


def test_too_few_photos_for_a_split_is_an_error(folder):
    with pytest.raises(TinymaeError, match="each part needs at least one"):
        run_photos(folder, val_fraction=0.01)


# ----------------------------------------------------------------------------------------------------
# labelled_subset


def test_labelled_subset_draws_n_of_each_class_seeded():
    labels = np.repeat([0, 1, 2], [5, 6, 7])
    classes = ("birds", "boats", "planes")
    subset = data.labelled_subset(labels, 3, seed=0, classes=classes)
    assert subset.tolist() == sorted(set(subset.tolist())) and len(subset) == 9
    assert np.bincount(labels[subset]).tolist() == [3, 3, 3]
    np.testing.assert_array_equal(subset, data.labelled_subset(labels, 3, seed=0, classes=classes))
    assert any(not np.array_equal(subset, data.labelled_subset(labels, 3, seed=s, classes=classes)) for s in (1, 2))
    np.testing.assert_array_equal(data.labelled_subset(labels[:5], 5, seed=4, classes=("birds",)), np.arange(5))


def test_labelled_subset_too_few_of_a_class_names_it():
    labels = np.repeat([0, 1, 2], [5, 6, 4])
    with pytest.raises(TinymaeError) as e:
        data.labelled_subset(labels, 5, seed=0, classes=("birds", "boats", "planes"))
    assert "planes" in str(e.value) and "(4)" in str(e.value) and "at most 4" in str(e.value)


def test_labelled_subset_does_not_move_the_global_generators():
    state = np.random.get_state()[1].copy()
    data.labelled_subset(np.repeat([0, 1], 4), 2, seed=0, classes=("cat", "dog"))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


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


def test_stratified_split_keeps_each_share_of_any_number_of_classes():
    labels = np.repeat([0, 1, 2, 3], [10, 20, 5, 15])
    _, val_idx = data.stratified_split(labels, 0.2, seed=1)
    assert np.bincount(labels[val_idx]).tolist() == [2, 4, 1, 3]


def test_stratified_split_is_seeded():
    labels = np.repeat([0, 1], 40)
    a = data.stratified_split(labels, 0.25, seed=3)
    b = data.stratified_split(labels, 0.25, seed=3)
    c = data.stratified_split(labels, 0.25, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_of_no_validation_fraction():
    train_idx, val_idx = data.stratified_split(np.repeat([0, 1], 5), 0.0)
    assert len(val_idx) == 0 and train_idx.tolist() == list(range(10))


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


def test_photos_with_a_constant_channel_no_blue_are_a_data_error_named_as_such():
    images = random_images(n=4)
    images[..., 2] = 0  # no blue anywhere
    with pytest.raises(TinymaeError) as e:
        data.channel_stats(images)
    message = str(e.value)
    assert "blue" in message and "red" not in message and "green" not in message
    assert "cannot be normalised" in message


def test_flat_grey_photos_are_a_data_error_naming_every_channel():
    with pytest.raises(TinymaeError) as e:
        data.channel_stats(np.full((4, 5, 5, 3), 51, dtype=np.uint8))
    assert all(name in str(e.value) for name in ("red", "green", "blue")) and "cannot be normalised" in str(e.value)


def test_a_channel_that_varies_by_one_step_in_one_pixel_is_not_constant():
    images = random_images(n=7)
    images[..., 1] = 100
    images[3, 4, 5, 1] = 101
    mean, std = data.channel_stats(images)
    assert std[1] > 0 and np.isclose(mean[1], 100 / 255, atol=1e-3)


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
    with pytest.raises(ValueError, match="cannot crop"):
        data.center_crop(images, 12)


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


def test_normalize_refuses_floats():
    with pytest.raises(ValueError, match="uint8"):
        data.normalize(np.zeros((1, 4, 4, 3), dtype=np.float32), [0.5] * 3, [0.2] * 3)


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
    assert ds.classes == ("cat", "dog") and set(ds.labels.tolist()) == {0, 1}
    assert ds.images.shape == (len(ds.paths), 54, 54, 3)
    assert ds.images.std() > 20  # real photos, not blank arrays


def test_real_catsdogs_per_class(tmp_path):
    root = shared("catsdogs")
    ds = load(root, tmp_path, size=54, per_class=50)
    assert ds.images.shape == (100, 54, 54, 3) and ds.skipped == []
    assert ds.root == str(root / "PetImages") and ds.classes == ("Cat", "Dog")
    assert np.bincount(ds.labels).tolist() == [50, 50]
    assert all("PetImages" in p for p in ds.paths)


def test_real_catsdogs_run_photos_found_again(tmp_path, monkeypatch):
    root = shared("catsdogs")
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    run = data.new_photos(root, 54, 48, seed=0, val_fraction=0.2, per_class=20, progress=False)
    assert run.record["root"] == str(root / "PetImages") and run.record["classes"] == ["Cat", "Dog"]
    assert all(f.startswith(("Cat/", "Dog/")) for f in run.record["files"]) and len(run.record["files"]) == 40
    assert run.record["n_train"] == 32 and run.record["n_val"] == 8
    again = data.photos_of_run(run.record, None, 48, progress=False)
    assert again is not None and again.record == run.record
