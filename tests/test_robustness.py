"""What an adversarial user found, one group per finding: tiny splits, NaN results, output paths checked up
front, nonsense flags, symbolic-link loops, Ctrl-C, malformed checkpoints, stale image caches.

Every error a user can cause must end as one line (what, which file or value, what to do) and a non-zero
exit code, never a traceback. The download's retries and odd archives are tested in test_download.py
(which has the local HTTP server), the backend's one-line import error in test_backend.py.
"""
import json
import math
import os
import shutil
import threading
import tracemalloc

import numpy as np
import pytest

from tinymae import backend, evaluate, pretrain, probe
from tinymae.config import MLPConfig
from tinymae.model import build_model
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.util import checkpoint, datasets, layouts, metrics
from tinymae.util.checkpoint import CheckpointError, load_checkpoint, optimizer_state, read_checkpoint, save_checkpoint

from conftest import make_photos, train_tiny
from test_data import load, make_class_folders, write_image

# ----------------------------------------------------------------------------------------------
# shared: one tiny trained run, folders cut from its photos, doctored copies of its checkpoint

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny MLP pre-training run for the whole file: (photos folder, 10 per class; checkpoint path)."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        photos = make_photos(base, mp, per_class=10)
        train_tiny(base / "run", photos, "mlp", "--epochs", "1")
    return photos, base / "run" / "checkpoint.npz"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test decodes into its own image cache (so a monkeypatched decoder is really called)."""
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))


def some_photos(photos, dest, per_class):
    """A copy of the first `per_class` photos of each class of `photos` in dest/cat, dest/dog."""
    for name in ("cat", "dog"):
        (dest / name).mkdir(parents=True)
        for i in range(per_class):
            shutil.copy(photos / name / f"{i}.jpg", dest / name / f"{i}.jpg")
    return dest


def doctored(src, dst, header=None, arrays=None):
    """A copy of checkpoint `src` at `dst`, written with plain NumPy: header(old header) -> new header
    (any JSON value), and `arrays` ({key: array}) replacing or adding members."""
    with np.load(src, allow_pickle=False) as f:
        stored = {key: f[key] for key in f.files}
    if header is not None:
        stored["meta"] = np.array(json.dumps(header(json.loads(str(stored["meta"])))))
    stored.update(arrays or {})
    np.savez(dst, **stored)
    return dst


def assert_one_line(text):
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text, text


def tiny_mlp():
    return MaskedAutoencoderMLP(MLPConfig(img_size=12, patch_size=6, embed_dim=4, encoder_dims=(8,), decoder_dims=()))


# ----------------------------------------------------------------------------------------------
# 3. empty and tiny splits

def test_reconstruction_metrics_of_no_images_is_a_clear_error(xp):
    model = tiny_mlp()
    images = np.zeros((0, 12, 12, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="no images"):
        evaluate.reconstruction_metrics(model, images, [0.5] * 3, [0.25] * 3, mean_patch=np.zeros((4, 108), "float32"))


def test_knn_with_fewer_training_images_than_k_lets_them_all_vote(xp):
    rng = np.random.default_rng(0)
    X_train, y_train = rng.standard_normal((8, 5)).astype("float32"), np.array([0, 1] * 4)
    X_val, y_val = rng.standard_normal((3, 5)).astype("float32"), np.array([0, 1, 1])
    accuracy = probe.knn_accuracy(X_train, y_train, X_val, y_val)  # k = 20 > 8 training images
    assert accuracy == probe.knn_accuracy(X_train, y_train, X_val, y_val, k=8)
    # with every training image voting, 4 cats and 4 dogs tie, and ties go to dog
    assert accuracy == pytest.approx(2 / 3)


def test_knn_with_an_empty_validation_split_is_a_clear_error(xp):
    X = np.ones((4, 2), "float32")
    with pytest.raises(ValueError, match="needs training and validation images"):
        probe.knn_accuracy(X, np.array([0, 0, 1, 1]), X[:0], np.array([], dtype=int))


@pytest.mark.parametrize("per_class", [1, 2, 3])
def test_probe_on_a_folder_too_small_says_the_minimum(trained, tmp_path, capsys, per_class):
    photos, ckpt = trained
    small = some_photos(photos, tmp_path / "small", per_class)
    assert probe.main(["--checkpoint", str(ckpt), "--data", str(small), "--no-progress", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert_one_line(err)
    assert "at least 4 readable images of each class" in err and "validation" in err


def test_probe_on_a_small_folder_uses_every_training_image_as_neighbour(trained, tmp_path, capsys):
    photos, ckpt = trained
    small = some_photos(photos, tmp_path / "small", 5)  # 4 training + 1 validation image per class
    report_path = tmp_path / "new-folder" / "probe.json"  # (item 7: a folder that does not exist yet)
    assert probe.main(["--checkpoint", str(ckpt), "--data", str(small), "--no-progress", "--seeds", "1",
                       "--no-baselines", "--json", str(report_path)]) == 0
    assert "k-NN (k=8)" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["n_train"] == 8 and report["n_val"] == 2
    assert all(row["knn_k"] == 8 and 0 <= row["knn20"] <= 1 for row in report["results"])


# ----------------------------------------------------------------------------------------------
# 5. NaN results are never reported as numbers, nor printed as invalid JSON

def test_psnr_of_nan_is_nan_not_a_perfect_score():
    assert math.isnan(metrics.psnr(float("nan")))
    assert metrics.psnr(0.0) == float("inf")
    assert metrics.psnr(float("inf")) == float("-inf")
    assert metrics.psnr(0.01) == pytest.approx(20.0)


def test_reconstruction_metrics_of_a_nan_model_are_nan(xp):
    model = tiny_mlp()
    model.params["decoder_pred.w"] = model.params["decoder_pred.w"] * float("nan")
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    result = evaluate.reconstruction_metrics(model, images, [0.5] * 3, [0.25] * 3,
                                             mean_patch=np.full((4, 108), 0.5, "float32"))
    assert math.isnan(result["masked_mse"]) and math.isnan(result["masked_psnr"])
    assert evaluate.non_finite_numbers(result) == ["loss", "masked_mse", "masked_psnr", "ratio_to_mean_patch"]


def test_a_checkpoint_with_nan_weights_is_refused_when_loaded(trained, tmp_path, capsys):
    """The README: checkpoints are checked for finite numbers. A NaN weight is named on load, before any work."""
    photos, ckpt = trained
    nan_ckpt = doctored(ckpt, tmp_path / "nan.npz",
                        arrays={"param/decoder_pred.w": np.full_like(np.load(ckpt)["param/decoder_pred.w"], np.nan)})
    code = evaluate.main(["--checkpoint", str(nan_ckpt), "--data", str(photos), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line(err)
    assert "'decoder_pred.w' holds NaN or infinite values" in err and "earlier checkpoint" in err


def test_evaluate_refuses_reconstructions_that_are_not_finite(trained, tmp_path, capsys):
    """Finite weights so large that the reconstructions overflow: no NaN pretending to be JSON on stdout."""
    photos, ckpt = trained
    huge = doctored(ckpt, tmp_path / "huge.npz",
                    arrays={"param/decoder_pred.w": np.full_like(np.load(ckpt)["param/decoder_pred.w"], 3e38)})
    code = evaluate.main(["--checkpoint", str(huge), "--data", str(photos), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""  # nothing on stdout: no NaN pretending to be JSON
    assert_one_line(err)
    assert "not finite" in err and "earlier checkpoint" in err


def test_evaluate_prints_strict_json_when_it_succeeds(trained, capsys):
    photos, ckpt = trained
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(photos), "--no-progress"]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["n_images"] == 20 and math.isfinite(result["masked_psnr"])


# ----------------------------------------------------------------------------------------------
# 7. output paths are checked before any work; a figure never costs the numbers

def no_work(*args, **kwargs):
    raise AssertionError("the command started working before checking its output path")


@pytest.mark.parametrize("where", ["a-folder", "under-a-file", "bad-ending"])
def test_evaluate_refuses_a_figure_path_it_cannot_write_before_any_work(trained, tmp_path, monkeypatch, capsys, where):
    photos, ckpt = trained
    (tmp_path / "a-file").write_text("x")
    figure = {"a-folder": tmp_path, "under-a-file": tmp_path / "a-file" / "e.png",
              "bad-ending": tmp_path / "e.xyz"}[where]
    monkeypatch.setattr(evaluate, "load_checkpoint", no_work)
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--checkpoint", str(ckpt), "--data", str(photos), "--figure", str(figure)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --figure: {figure}" in err and "Traceback" not in err


def test_evaluate_figure_in_a_folder_that_does_not_exist_yet(trained, tmp_path, capsys):
    photos, ckpt = trained
    figure = tmp_path / "missing_dir" / "e.png"
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(photos), "--figure", str(figure),
                          "--figure-images", "2", "--no-progress"]) == 0
    assert figure.stat().st_size > 0 and json.loads(capsys.readouterr().out)["figure"] == str(figure)


def test_evaluate_keeps_the_numbers_when_the_figure_fails(trained, tmp_path, monkeypatch, capsys):
    photos, ckpt = trained

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tinymae.util.figures.save_reconstructions", disk_full)
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(photos), "--figure", str(tmp_path / "e.png"),
                          "--no-progress"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["figure"] is None and result["masked_mse"] > 0
    assert "could not save the figure" in err and "No space left" in err


@pytest.mark.parametrize("where", ["a-folder", "under-a-file"])
def test_probe_refuses_a_json_path_it_cannot_write_before_any_work(trained, tmp_path, monkeypatch, capsys, where):
    photos, ckpt = trained
    (tmp_path / "a-file").write_text("x")
    report = {"a-folder": tmp_path, "under-a-file": tmp_path / "a-file" / "r.json"}[where]
    monkeypatch.setattr(probe, "run_probe", no_work)
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--checkpoint", str(ckpt), "--data", str(photos), "--json", str(report)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --json: {report}" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# 8. numeric flags are checked by argparse, naming the flag

@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--per-class", "0"),
                                         ("--figure-images", "-1"), ("--figure-images", "0"), ("--mask-seed", "-1")])
def test_evaluate_refuses_nonsense_numbers(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--checkpoint", "c.npz", "--data", "d", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be at least" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--seeds", "-1"), ("--per-class", "0")])
def test_probe_refuses_nonsense_numbers(flag, value, monkeypatch, capsys):
    monkeypatch.setattr(probe, "run_probe", no_work)
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--checkpoint", "c.npz", "--data", "d", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be at least 1" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# 10. symbolic links that loop

def test_a_looping_class_folder_link_is_skipped_and_named(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("cats", root / "cats")  # cats -> cats: every stat of it fails with ELOOP
    with pytest.warns(UserWarning, match="skipped 1 of 5") as record:
        ds = load(root, tmp_path, size=16)
    assert str(root / "cats") in str(record[0].message)
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.skipped == [str(root / "cats")]


def test_looping_image_links_are_skipped_and_named(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("b.jpg", root / "dog" / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink("a.jpg", root / "dog" / "b.jpg")
    with pytest.warns(UserWarning, match="skipped 2 of 6") as record:
        ds = load(root, tmp_path, size=16)
    message = str(record[0].message)
    assert str(root / "dog" / "a.jpg") in message and str(root / "dog" / "b.jpg") in message
    assert len(ds.paths) == 4
    (cache_file,) = os.listdir(tmp_path / "cache")  # the unstat-able links did not disturb the cache's name
    assert cache_file.startswith("data-16px-")


def test_looping_kaggle_named_links_are_skipped(tmp_path):
    root = tmp_path / "train"
    for i in range(2):
        write_image(root / f"cat.{i}.jpg", seed=i)
        write_image(root / f"dog.{i}.jpg", seed=10 + i)
    os.symlink("cat.9.jpg", root / "cat.9.jpg")
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        ds = load(root, tmp_path, size=16)
    assert ds.labels.tolist() == [0, 0, 1, 1]


def test_links_that_point_back_up_the_tree_do_not_recurse(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("..", root / "cat" / "up")  # cat/up -> the data folder
    os.symlink(".", root / "PetImages")  # PetImages -> the data folder itself
    os.symlink(str(root), root / "train")
    paths, labels = layouts.find_images(root)
    assert labels.tolist() == [0, 0, 1, 1] and all(p.endswith(".jpg") for p in paths)


def test_a_data_folder_that_is_a_looping_link_says_so(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(datasets.DataError, match="points nowhere or to itself"):
        layouts.find_images(tmp_path / "loop")


# ----------------------------------------------------------------------------------------------
# 11. Ctrl-C: one line, exit code 130

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def run_and_interrupt(command, argv):
    """command(argv) -> its exit code; a KeyboardInterrupt that escapes fails the test (and not the session)."""
    try:
        return command(argv)
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped the command: the user sees a traceback")


def test_evaluate_ctrl_c_while_decoding_is_one_line(trained, monkeypatch, capsys):
    photos, ckpt = trained
    monkeypatch.setattr(datasets, "load_image", interrupt)
    assert run_and_interrupt(evaluate.main, ["--checkpoint", str(ckpt), "--data", str(photos), "--no-progress"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "interrupted"


def test_evaluate_ctrl_c_while_drawing_is_one_line(trained, tmp_path, monkeypatch, capsys):
    photos, ckpt = trained
    monkeypatch.setattr("tinymae.util.figures.save_reconstructions", interrupt)
    assert run_and_interrupt(evaluate.main, ["--checkpoint", str(ckpt), "--data", str(photos),
                                             "--figure", str(tmp_path / "e.png"), "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_probe_ctrl_c_while_decoding_is_one_line(trained, monkeypatch, capsys):
    photos, ckpt = trained
    monkeypatch.setattr(datasets, "load_image", interrupt)
    assert run_and_interrupt(probe.main, ["--checkpoint", str(ckpt), "--data", str(photos), "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


# ----------------------------------------------------------------------------------------------
# 13. checkpoints: a malformed header, an unused giant member, a pipe, random bytes

def drop(key):
    return lambda h: {k: v for k, v in h.items() if k != key}


def with_config(**changes):
    return lambda h: {**h, "config": {**h["config"], **changes}}


def with_data(**changes):
    return lambda h: {**h, "data": {**h["data"], **changes}}


BAD_HEADERS = {
    "a-json-list": (lambda h: [h], "not an object"),
    "format-2": (lambda h: {**h, "format": 2}, "format 2"),
    "unknown-arch": (lambda h: {**h, "arch": "resnet"}, "unknown architecture 'resnet'"),
    "no-config": (drop("config"), "no model config"),
    "config-a-list": (lambda h: {**h, "config": [6]}, "model config that is a JSON list"),
    "patch-size-0": (with_config(patch_size=0), "patch_size must be at least 1"),
    "patch-size-text": (with_config(patch_size="6"), "model config tinymae cannot build"),
    "setting-of-the-vit": (with_config(depth=2), "do not apply to the mlp model"),
    "rng-state-junk": (lambda h: {**h, "rng_state": {"bit_generator": "PCG64", "state": "x"}},
                       "random generator state"),
    "rng-state-missing": (drop("rng_state"), "random generator state"),
    "no-data": (drop("data"), "no data statistics"),
    "std-zero": (with_data(std=[0.0, 0.0, 0.0]), "std must be above 0"),
    "mean-two-values": (with_data(mean=[0.5, 0.5]), "three finite numbers"),
    "load-size-too-small": (with_data(load_size=4), "load_size of 4"),
    "settings-a-list": (lambda h: {**h, "settings": []}, "run settings"),
    "val-fraction-1.5": (lambda h: {**h, "settings": {**h["settings"], "val_fraction": 1.5}}, "--val-fraction"),
    "epoch-negative": (lambda h: {**h, "epoch": -1}, "an epoch of -1"),
    "no-history": (drop("history"), "history"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_malformed_header_is_a_one_line_checkpoint_error(trained, tmp_path, case):
    edit, message = BAD_HEADERS[case]
    path = doctored(trained[1], tmp_path / "bad.npz", header=edit)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert_one_line(str(info.value))


@pytest.mark.parametrize("meta, message", [(np.arange(3), "not a JSON text"), (np.array("{oops"), "not valid JSON"),
                                           (np.array("[" * 100000), "not valid JSON")])
def test_a_meta_member_that_is_no_json_object_is_refused(trained, tmp_path, meta, message):
    path = doctored(trained[1], tmp_path / "bad.npz", arrays={"meta": meta})
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_evaluate_and_probe_report_a_malformed_header_in_one_line(trained, tmp_path, capsys):
    photos, ckpt = trained
    path = doctored(ckpt, tmp_path / "bad.npz", header=with_config(patch_size=0))
    for command in (evaluate.main, probe.main):
        assert command(["--checkpoint", str(path), "--data", str(photos), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert_one_line(err)
        assert err.startswith("error: ") and "patch_size must be at least 1" in err


def test_resume_from_a_checkpoint_with_a_bad_random_state_is_one_line(trained, tmp_path, capsys):
    photos, ckpt = trained
    out = tmp_path / "run"
    out.mkdir()
    doctored(ckpt, out / "checkpoint.npz", header=lambda h: {**h, "rng_state": [1, 2]})
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    assert exit_info.value.code not in (0, None)
    assert_one_line(str(exit_info.value.code))
    assert "random generator state" in str(exit_info.value.code)


def test_random_bytes_are_not_a_checkpoint_and_no_pickle_advice_is_given(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable tinymae checkpoint") as info:
        read_checkpoint(path)
    assert "pickle" not in str(info.value)
    assert_one_line(str(info.value))


def test_a_member_holding_python_objects_is_refused_without_pickle_advice(trained, tmp_path):
    path = tmp_path / "objects.npz"
    with np.load(trained[1], allow_pickle=False) as f:
        stored = {key: f[key] for key in f.files}
    objects = np.empty(stored["param/decoder_pred.b"].shape, dtype=object)  # the right shape, Python objects inside
    objects[:] = [{"evil": i} for i in range(objects.size)]
    stored["param/decoder_pred.b"] = objects
    np.savez(path, **stored)  # np.savez pickles the object array
    with pytest.raises(CheckpointError, match="Python objects") as info:
        load_checkpoint(path)
    assert "allow_pickle" not in str(info.value)


def test_a_folder_and_a_pipe_are_refused_before_opening(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)
    fifo = tmp_path / "checkpoint.npz"
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            read_checkpoint(fifo)
        except CheckpointError as e:
            result["error"] = str(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # it blocked in open(): let it go (a writer that closes at once), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_checkpoint blocked on a named pipe")
    assert "not a regular file" in result.get("error", "")


def test_only_the_members_used_are_decompressed(trained, tmp_path):
    """A small file with a giant, highly compressible member nobody reads must not cost its size in memory;
    nor may a parameter of a wrong, giant shape (its shape is read from its header first)."""
    giant = np.zeros((8192, 8192), dtype=np.uint8)  # 64 MiB, compresses to ~64 KiB
    with np.load(trained[1], allow_pickle=False) as f:
        stored = {key: f[key] for key in f.files}
    path = tmp_path / "giant-extra.npz"
    np.savez_compressed(path, **stored, **{"extra/giant": giant})
    wrong = tmp_path / "giant-param.npz"
    np.savez_compressed(wrong, **{**stored, "param/decoder_pred.b": giant})
    del giant
    assert path.stat().st_size < 4 * 2 ** 20

    tracemalloc.start()
    try:
        model, header, arrays = load_checkpoint(path)
        assert "extra/giant" in arrays and header["epoch"] == 1
        with pytest.raises(CheckpointError, match="'decoder_pred.b' has shape \\(8192, 8192\\)"):
            load_checkpoint(wrong)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20, f"loading took {peak / 2 ** 20:.0f} MiB"


def test_the_lazy_arrays_keep_what_pretrain_and_evaluate_read(trained):
    header, arrays = read_checkpoint(trained[1])
    assert {"settings", "data", "rng_state", "history", "epoch", "wall_time_s"} <= set(header)
    assert "extra/mean_patch" in arrays and "meta" not in arrays
    assert type(arrays["extra/mean_patch"]) is np.ndarray
    state = optimizer_state(arrays)
    assert int(state["t"]) > 0 and all(type(v) is np.ndarray for v in state.values())
    model = build_model(header["arch"], header["config"])
    checkpoint.load_params(model, arrays, trained[1])
    np.testing.assert_array_equal(backend.to_numpy(model.params["decoder_pred.w"]), arrays["param/decoder_pred.w"])


def test_a_checkpoint_saved_without_run_metadata_still_loads(tmp_path):
    model = tiny_mlp()
    save_checkpoint(tmp_path / "c.npz", model)
    loaded, header, _ = load_checkpoint(tmp_path / "c.npz")
    assert header["arch"] == "mlp" and set(loaded.params) == set(model.params)


# ----------------------------------------------------------------------------------------------
# 16. an image cache that does not match what was asked for is decoded again

def rewrite_cache(tmp_path, **changes):
    (cache_file,) = (tmp_path / "cache").iterdir()
    with np.load(cache_file, allow_pickle=False) as f:
        stored = {key: f[key] for key in f.files}
    stored.update(changes)
    with open(cache_file, "wb") as f:
        np.savez(f, **stored)
    return stored


@pytest.mark.parametrize("change", ["images-10x10", "images-float", "labels-swapped", "paths-of-other-files"])
def test_a_doctored_cache_is_stale_and_decoded_again(tmp_path, change):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=16)
    stored = rewrite_cache(tmp_path)
    edits = {"images-10x10": {"images": np.zeros((4, 10, 10, 3), np.uint8)},
             "images-float": {"images": stored["images"].astype(np.float32)},
             "labels-swapped": {"labels": 1 - stored["labels"]},
             "paths-of-other-files": {"paths": np.array([p.replace("0.jpg", "7.jpg") for p in stored["paths"]])}}
    rewrite_cache(tmp_path, **edits[change])
    with pytest.warns(UserWarning, match="stale cache"):
        second = load(root, tmp_path, size=16)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.paths == first.paths
