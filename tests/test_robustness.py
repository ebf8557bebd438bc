"""What an adversarial user found, one group per finding: NaN results, output paths checked up front, nonsense
flags, symbolic-link loops, Ctrl-C, malformed checkpoints, doctored photo caches.

Every error a user can cause must end as one line (what, which file or value, what to do) and a non-zero exit
status (util/cli.run: 1, or 130 for Ctrl-C), never a traceback. The download's retries and odd archives are
tested in test_download.py, the backend's one-line import error in test_backend.py, the run folder (overwrite,
resume, the lock, provenance) in test_provenance.py.
"""
import io
import json
import math
import os
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from tinymae import evaluate, photos, pretrain, probe
from tinymae.backend import to_numpy
from tinymae.errors import TinymaeError
from tinymae.model import build_model
from tinymae.util import metrics
from tinymae.util.checkpoint import Checkpoint, read_checkpoint

from conftest import make_photos, train_tiny
from test_data import load, make_class_folders, write_image

# ----------------------------------------------------------------------------------------------
# shared: one tiny trained run, doctored copies of its checkpoint

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny MLP pre-training run for the whole file: (photos folder, 10 per class; checkpoint path)."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        folder = make_photos(base, mp, per_class=10)
        train_tiny(base / "run", folder, "mlp", "--epochs", "1")
    return folder, base / "run" / "checkpoint.npz"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test decodes into its own photo cache (so a monkeypatched decoder is really called)."""
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))


def stored_arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def doctored(src, dst, header=None, arrays=None):
    """A copy of checkpoint `src` at `dst`, written with plain NumPy: header(old header) -> new header
    (any JSON value), and `arrays` ({key: array}) replacing or adding members."""
    stored = stored_arrays(src)
    if header is not None:
        stored["meta"] = np.array(json.dumps(header(json.loads(str(stored["meta"])))))
    stored.update(arrays or {})
    np.savez(dst, **stored)
    return dst


def with_claimed_member(src, dst, key, shape, dtype="float32", payload=b""):
    """A copy of checkpoint `src` whose member `key` is a small compressed .npy that claims `shape` in its header
    (written by hand) and holds only `payload` after it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            if name != key + ".npy":
                new.writestr(name, old.read(name))
        new.writestr(key + ".npy", header.getvalue() + payload)
    return dst


def assert_one_line(text, *expected):
    assert text.strip() and "Traceback" not in text, text
    assert len([line for line in text.splitlines() if line.strip()]) == 1, text
    for part in expected:
        assert part in text, text


def tiny_mlp():
    return build_model("mlp", {"img_size": 12, "patch_size": 6, "embed_dim": 4, "encoder_dims": (8,),
                               "decoder_dims": ()})


def no_work(*args, **kwargs):
    raise AssertionError("the command started working before checking its flags and output paths")


# ----------------------------------------------------------------------------------------------
# tiny splits

def test_knn_with_fewer_training_images_than_k_lets_them_all_vote(xp):
    rng = np.random.default_rng(0)
    X_train, y_train = rng.standard_normal((8, 5)).astype("float32"), np.array([0, 1] * 4)
    X_val, y_val = rng.standard_normal((3, 5)).astype("float32"), np.array([0, 1, 1])
    accuracy = probe.knn_accuracy(X_train, y_train, X_val, y_val, 2)  # k = 20 > 8 training images
    assert accuracy == probe.knn_accuracy(X_train, y_train, X_val, y_val, 2, k=8)
    # with every training image voting, 4 cats and 4 dogs tie, and ties go to the lower class: cat
    assert accuracy == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------------------
# NaN results are never reported as numbers, nor printed as invalid JSON

def test_psnr_of_nan_is_nan_not_a_perfect_score():
    assert math.isnan(metrics.psnr(float("nan")))
    assert metrics.psnr(0.0) == float("inf")
    assert metrics.psnr(float("inf")) == float("-inf")
    assert metrics.psnr(0.01) == pytest.approx(20.0)


def test_reconstruction_metrics_of_a_nan_model_are_nan(xp):
    model = tiny_mlp()
    model.params["decoder_pred.w"][...] = float("nan")
    images = np.random.default_rng(0).integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    result = evaluate.reconstruction_metrics(model, images, [0.5] * 3, [0.25] * 3,
                                             mean_patch=np.full((4, 108), 0.5, "float32"))
    assert math.isnan(result["loss"]) and math.isnan(result["masked_mse"]) and math.isnan(result["masked_psnr"])
    assert math.isnan(result["ratio_to_mean_patch"])
    assert result["baselines"]["mean_patch"]["masked_mse"] > 0  # the baselines do not depend on the model


def test_a_checkpoint_with_nan_weights_is_refused_when_loaded(trained, tmp_path, capsys):
    """A NaN weight is named on load, before any work."""
    folder, ckpt = trained
    weights = stored_arrays(ckpt)["param/decoder_pred.w"]
    nan_ckpt = doctored(ckpt, tmp_path / "nan.npz", arrays={"param/decoder_pred.w": np.full_like(weights, np.nan)})
    code = evaluate.main(["--checkpoint", str(nan_ckpt), "--data", str(folder), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert_one_line(err, f"{nan_ckpt}: param/decoder_pred.w holds NaN or infinite values", "earlier checkpoint")


def test_evaluate_refuses_reconstructions_that_are_not_finite(trained, tmp_path, capsys):
    """Finite weights so large that the reconstructions overflow: no NaN pretending to be JSON on stdout."""
    folder, ckpt = trained
    weights = stored_arrays(ckpt)["param/decoder_pred.w"]
    huge = doctored(ckpt, tmp_path / "huge.npz", arrays={"param/decoder_pred.w": np.full_like(weights, 3e38)})
    with np.errstate(over="ignore", invalid="ignore"):
        code = evaluate.main(["--checkpoint", str(huge), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""  # nothing on stdout
    assert_one_line(err, "error: ", str(huge), "not finite", "earlier checkpoint")


def test_evaluate_prints_strict_json_when_it_succeeds(trained, capsys):
    folder, ckpt = trained
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(folder), "--no-progress"]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["n_images"] == len(read_checkpoint(ckpt)[0]["data"]["val"]) == 4
    assert math.isfinite(result["masked_psnr"]) and result["figure"] is None


# ----------------------------------------------------------------------------------------------
# output paths are checked before any work; a figure never costs the numbers

@pytest.mark.parametrize("where, problem", [("a-folder", "is a folder"), ("under-a-file", ": cannot write into"),
                                            ("existing", "already exists"), ("bad-ending", "")])
def test_evaluate_refuses_a_figure_path_it_cannot_write_before_any_work(trained, tmp_path, monkeypatch, capsys, where,
                                                                        problem):
    folder, ckpt = trained
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder.png").mkdir()
    (tmp_path / "old.png").write_text("x")
    figure = {"a-folder": tmp_path / "a-folder.png", "under-a-file": tmp_path / "a-file" / "e.png",
              "existing": tmp_path / "old.png", "bad-ending": tmp_path / "e.xyz"}[where]  # xyz: matplotlib cannot
    monkeypatch.setattr(evaluate, "read_checkpoint", no_work)
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(folder), "--figure", str(figure)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "error: --figure", str(figure.parent if where == "under-a-file" else figure), problem)
    assert (tmp_path / "a-file").read_text() == "x" and (tmp_path / "old.png").read_text() == "x"


def test_evaluate_figure_in_a_folder_that_does_not_exist_yet(trained, tmp_path, capsys):
    folder, ckpt = trained
    figure = tmp_path / "missing_dir" / "e.png"
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(folder), "--figure", str(figure),
                          "--figure-images", "2", "--no-progress"]) == 0
    assert figure.stat().st_size > 0 and json.loads(capsys.readouterr().out)["figure"] == str(figure)


def test_evaluate_keeps_the_numbers_when_the_figure_fails(trained, tmp_path, monkeypatch, capsys):
    folder, ckpt = trained

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tinymae.util.figures.save_reconstructions", disk_full)
    code = evaluate.main(["--checkpoint", str(ckpt), "--figure", str(tmp_path / "e.png"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1  # the figure failed, and the exit status says so
    result = json.loads(out)  # but the numbers were printed first, whole
    assert result["masked_mse"] > 0 and result["n_images"] == 4
    assert_one_line(err, "error: No space left on device")
    assert not (tmp_path / "e.png").exists()


@pytest.mark.parametrize("where, problem", [("a-folder", "is a folder"), ("under-a-file", ": cannot write into"),
                                            ("existing", "already exists")])
def test_probe_refuses_a_json_path_it_cannot_write_before_any_work(trained, tmp_path, monkeypatch, capsys, where,
                                                                   problem):
    folder, ckpt = trained
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "old.json").write_text("x")
    report = {"a-folder": tmp_path, "under-a-file": tmp_path / "a-file" / "r.json",
              "existing": tmp_path / "old.json"}[where]
    monkeypatch.setattr(probe, "run_probe", no_work)
    assert probe.main(["--checkpoint", str(ckpt), "--data", str(folder), "--json", str(report)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, "error: --json", str(report.parent if where == "under-a-file" else report), problem)
    assert (tmp_path / "a-file").read_text() == "x" and (tmp_path / "old.json").read_text() == "x"


# ----------------------------------------------------------------------------------------------
# numeric flags are checked against their declared bounds, naming the flag

@pytest.mark.parametrize("flag, value, bounds", [
    ("--batch-size", "0", "[1, 65536]"), ("--batch-size", "-3", "[1, 65536]"), ("--per-class", "0", "[1, 10000000]"),
    ("--figure-images", "-1", "[1, 64]"), ("--figure-images", "0", "[1, 64]"), ("--mask-seed", "-1", "[0, 4294967295]"),
])
def test_evaluate_refuses_nonsense_numbers(flag, value, bounds, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "read_checkpoint", no_work)
    assert evaluate.main(["--checkpoint", "c.npz", "--data", "d", flag, value]) == 1
    assert_one_line(capsys.readouterr().err, f"error: {flag} must be in {bounds}, got {value}")


@pytest.mark.parametrize("flag, value, bounds", [("--seeds", "0", "[1, 100]"), ("--seeds", "-1", "[1, 100]"),
                                                 ("--per-class", "0", "[1, 10000000]"),
                                                 ("--val-fraction", "1.0", "(0, 1)")])
def test_probe_refuses_nonsense_numbers(flag, value, bounds, monkeypatch, capsys):
    monkeypatch.setattr(probe, "run_probe", no_work)
    assert probe.main(["--checkpoint", "c.npz", "--data", "d", flag, value]) == 1
    assert_one_line(capsys.readouterr().err, f"error: {flag} must be in {bounds}, got {value}")


def test_a_flag_argparse_cannot_parse_is_its_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--checkpoint", "c.npz", "--batch-size", "many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: invalid int value: 'many'" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# symbolic links that loop

def test_a_looping_class_folder_link_is_skipped_and_named(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("cats", root / "cats")  # cats -> cats: every stat of it fails with ELOOP
    with pytest.warns(UserWarning, match="skipped 1 of 5") as record:
        decoded = load(root, tmp_path, size=16)
    assert str(root / "cats") in str(record[0].message)
    assert decoded.skipped == [str(root / "cats")] and len(decoded.paths) == 4
    assert [decoded.classes[label] for label in decoded.labels] == ["cat", "cat", "dog", "dog"]


def test_looping_photo_links_are_skipped_and_named(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("b.jpg", root / "dog" / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink("a.jpg", root / "dog" / "b.jpg")
    with pytest.warns(UserWarning, match="skipped 2 of 6") as record:
        decoded = load(root, tmp_path, size=16)
    message = str(record[0].message)
    assert str(root / "dog" / "a.jpg") in message and str(root / "dog" / "b.jpg") in message
    assert len(decoded.paths) == 4 and decoded.labels.tolist() == [0, 0, 1, 1]
    (cache_file,) = os.listdir(tmp_path / "cache")  # the links that cannot be read did not disturb the cache's name
    assert cache_file.startswith("data-16px-")


def test_looping_kaggle_named_links_are_skipped_and_named(tmp_path):
    root = tmp_path / "train"
    for i in range(2):
        write_image(root / f"cat.{i}.jpg", seed=i)
        write_image(root / f"dog.{i}.jpg", seed=10 + i)
    os.symlink("cat.9.jpg", root / "cat.9.jpg")
    with pytest.warns(UserWarning, match="skipped 1 of 5") as record:
        decoded = load(root, tmp_path, size=16)
    assert str(root / "cat.9.jpg") in str(record[0].message)
    assert decoded.classes == ("cat", "dog") and decoded.labels.tolist() == [0, 0, 1, 1]


def test_links_that_point_back_up_the_tree_do_not_recurse(tmp_path):
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink("..", root / "cat" / "up")  # cat/up -> the data folder
    found = photos.find_photos(root)
    assert found.classes == ("cat", "dog") and found.labels.tolist() == [0, 0, 1, 1]
    assert all(p.endswith(".jpg") and os.sep + "up" + os.sep not in p for p in found.paths)


def test_a_link_back_to_the_data_folder_is_not_a_class(tmp_path):
    """PetImages -> . and train -> <the data folder>: following them would list every photo again, under a class
    of the link's name, so that one photo would have three labels."""
    root = make_class_folders(tmp_path / "data", n_per_class=2, names=("cat", "dog"))
    os.symlink(".", root / "PetImages")
    os.symlink(str(root), root / "train")
    found = photos.find_photos(root)
    assert len({os.path.realpath(p) for p in found.paths}) == len(found.paths)  # no photo twice
    assert found.classes == ("cat", "dog") and found.labels.tolist() == [0, 0, 1, 1]


def test_a_data_folder_that_is_a_looping_link_says_so(tmp_path):
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(TinymaeError, match="is a link that points nowhere") as info:
        photos.find_photos(tmp_path / "loop")
    assert str(tmp_path / "loop") in str(info.value) and "--data" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Ctrl-C: one line, exit status 130

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def run_and_interrupt(command, argv):
    """command(argv) -> its exit status; a KeyboardInterrupt that escapes fails the test (and not the session)."""
    try:
        return command(argv)
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped the command: the user sees a traceback")


@pytest.mark.parametrize("command", [evaluate.main, probe.main], ids=["evaluate", "probe"])
def test_ctrl_c_while_decoding_is_one_line(trained, monkeypatch, capsys, command):
    folder, ckpt = trained
    monkeypatch.setattr(photos, "load_image", interrupt)
    assert run_and_interrupt(command, ["--checkpoint", str(ckpt), "--data", str(folder), "--no-progress"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "interrupted"


def test_evaluate_ctrl_c_while_drawing_is_one_line(trained, tmp_path, monkeypatch, capsys):
    folder, ckpt = trained
    monkeypatch.setattr("tinymae.util.figures.save_reconstructions", interrupt)
    assert run_and_interrupt(evaluate.main, ["--checkpoint", str(ckpt), "--data", str(folder),
                                             "--figure", str(tmp_path / "e.png"), "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert not (tmp_path / "e.png").exists()


# ----------------------------------------------------------------------------------------------
# checkpoints: a malformed header, a member that is not what it claims, a pipe, random bytes

def drop(key):
    return lambda h: {k: v for k, v in h.items() if k != key}


def with_config(**changes):
    return lambda h: {**h, "config": {**h["config"], **changes}}


def with_data(**changes):
    return lambda h: {**h, "data": {**h["data"], **changes}}


BAD_HEADERS = {
    "a-json-list": (lambda h: [h], "a header that is not a JSON object"),
    "format-1": (lambda h: {**h, "format": 1}, "checkpoint format 1, and this tinymae reads 2"),
    "no-format": (drop("format"), "checkpoint format None"),
    "kind-unknown": (lambda h: {**h, "kind": "resnet"}, "no kind, model config or settings"),
    "unknown-arch": (lambda h: {**h, "arch": "resnet"}, "unknown architecture 'resnet'"),
    "no-config": (drop("config"), "no kind, model config or settings"),
    "config-a-list": (lambda h: {**h, "config": [6]}, "no kind, model config or settings"),
    "patch-size-0": (with_config(patch_size=0), "--patch-size must be in [1, 512], got 0"),
    "patch-size-text": (with_config(patch_size="6"), "settings this tinymae cannot use"),
    "setting-of-the-vit": (with_config(depth=2), "--arch mlp has no --depth"),
    "settings-a-list": (lambda h: {**h, "settings": []}, "no kind, model config or settings"),
    "val-fraction-1.5": (lambda h: {**h, "settings": {**h["settings"], "val_fraction": 1.5}},
                         "--val-fraction must be in (0, 1), got 1.5"),
    "rng-state-junk": (lambda h: {**h, "rng_state": {"bit_generator": "PCG64", "state": "x"}},
                       "random generator state"),
    "rng-state-missing": (drop("rng_state"), "random generator state"),
    "no-data": (drop("data"), "no record of its photos"),
    "files-not-names": (with_data(files=[1, 2]), "no record of its photos"),
    "labels-of-another-length": (with_data(labels=[0]), "a damaged record of its photos"),
    "val-out-of-range": (with_data(val=[10 ** 6]), "a damaged record of its photos"),
    "no-fingerprint": (lambda h: {**h, "data": {k: v for k, v in h["data"].items() if k != "fingerprint"}},
                       "a damaged record of its photos"),
    "std-zero": (with_data(std=[0.0, 0.0, 0.0]), "std above 0"),
    "mean-two-values": (with_data(mean=[0.5, 0.5]), "three finite numbers"),
    "mean-nan": (with_data(mean=[float("nan"), 0.5, 0.5]), "three finite numbers"),
    "load-size-too-small": (with_data(load_size=4), "a load_size below img_size"),
    "n-val-zero": (with_data(n_val=0), "a data n_val of 0"),
    "epoch-negative": (lambda h: {**h, "epoch": -1}, "no epoch or run id"),
    "no-run-id": (drop("run_id"), "no epoch or run id"),
    "no-history": (drop("history"), "a history that is not numbers per epoch"),
    "history-with-text": (lambda h: {**h, "history": [{"epoch": 1, "train_loss": "low"}]},
                          "a history that is not numbers per epoch"),
    "no-wall-time": (drop("wall_time_s"), "no wall time"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_malformed_header_is_a_one_line_checkpoint_error(trained, tmp_path, case):
    edit, message = BAD_HEADERS[case]
    path = doctored(trained[1], tmp_path / "bad.npz", header=edit)
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    assert_one_line(str(info.value), message, str(path), "it is not a checkpoint this tinymae wrote")


@pytest.mark.parametrize("meta, message", [(np.arange(3), "has meta of int64 (3,)"),
                                           (np.array("{oops"), "has a header that is not JSON"),
                                           (np.array("[" * 100000), "has a header that is not JSON"),
                                           (np.array("[1, 2]"), "a header that is not a JSON object"),
                                           (np.array("null"), "a header that is not a JSON object")])
def test_a_meta_member_that_is_no_json_object_is_refused(trained, tmp_path, meta, message):
    path = doctored(trained[1], tmp_path / "bad.npz", arrays={"meta": meta})
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    assert_one_line(str(info.value), message, str(path))


def test_a_checkpoint_without_a_header_is_refused(trained, tmp_path):
    path = tmp_path / "no-meta.npz"
    np.savez(path, **{k: v for k, v in stored_arrays(trained[1]).items() if k != "meta"})
    with pytest.raises(TinymaeError, match="holds no 'meta' header"):
        read_checkpoint(path)


def test_evaluate_and_probe_report_a_malformed_header_in_one_line(trained, tmp_path, capsys):
    folder, ckpt = trained
    path = doctored(ckpt, tmp_path / "bad.npz", header=with_config(patch_size=0))
    for command in (evaluate.main, probe.main):
        assert command(["--checkpoint", str(path), "--data", str(folder), "--no-progress"]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ")
        assert_one_line(err, str(path), "--patch-size must be in [1, 512], got 0")


def test_resume_from_a_checkpoint_with_a_bad_random_state_is_one_line(trained, tmp_path, capsys):
    folder, ckpt = trained
    out = tmp_path / "run"
    out.mkdir()
    doctored(ckpt, out / "checkpoint.npz", header=lambda h: {**h, "rng_state": [1, 2]})
    assert pretrain.main(["--data", str(folder), "--out", str(out), "--resume", "--no-progress"]) == 1
    assert_one_line(capsys.readouterr().err, "error: ", str(out / "checkpoint.npz"), "random generator state")


def test_a_checkpoint_of_the_other_kind_is_refused_saying_which_it_is(trained):
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(trained[1], "finetune")
    assert_one_line(str(info.value), "holds a pre-training run's checkpoint", "this needs a fine-tuned classifier")


def test_random_bytes_are_not_a_checkpoint_and_no_pickle_advice_is_given(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    assert_one_line(str(info.value), f"{path} is not an .npz archive")
    assert "pickle" not in str(info.value)


@pytest.mark.parametrize("key", ["param/decoder_pred.b", "meta"])
def test_a_member_holding_python_objects_is_refused_without_pickle_advice(trained, tmp_path, key):
    stored = stored_arrays(trained[1])
    objects = np.empty(stored[key].shape, dtype=object)  # the right shape, Python objects inside
    objects.ravel()[:] = [{"evil": i} for i in range(objects.size)]
    stored[key] = objects
    path = tmp_path / "objects.npz"
    np.savez(path, **stored)  # np.savez pickles the object array
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    assert_one_line(str(info.value), str(path), key)
    assert "pickle" not in str(info.value)


def test_a_folder_and_a_pipe_are_refused_before_opening(tmp_path):
    with pytest.raises(TinymaeError, match="is a folder"):
        read_checkpoint(tmp_path)
    fifo = tmp_path / "checkpoint.npz"
    os.mkfifo(fifo)
    result = {}

    def read():
        try:
            read_checkpoint(fifo)
        except TinymaeError as e:
            result["error"] = str(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # it blocked in open(): let it go (a writer that closes at once), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_checkpoint blocked on a named pipe")
    assert "is not a regular file" in result.get("error", "") and str(fifo) in result["error"]


def test_read_checkpoint_gives_the_weights_adamws_state_and_the_mean_patch_as_host_arrays(trained):
    stored = stored_arrays(trained[1])
    header, model, arrays = read_checkpoint(trained[1], "pretrain", optimizer=True)
    assert {"settings", "data", "rng_state", "history", "epoch", "wall_time_s", "run_id"} <= set(header)
    assert "meta" not in arrays and not any(key.startswith("param/") for key in arrays)  # the weights are in model
    assert set(arrays) == {key for key in stored if key.startswith(("opt/", "extra/"))}
    assert all(type(v) is np.ndarray for v in arrays.values()) and int(arrays["opt/t"]) > 0
    for name, p in model.params.items():
        np.testing.assert_array_equal(to_numpy(p), stored[f"param/{name}"], err_msg=name)
    _, _, without_optimizer = read_checkpoint(trained[1])
    assert set(without_optimizer) == {"extra/mean_patch"}  # only what is asked for is read


HUGE = (512 * 1024 * 1024,)  # 2 GiB of float32, claimed by a member of a few bytes


def test_an_array_claiming_a_huge_shape_is_refused_from_its_header_before_its_data(trained, tmp_path, capsys):
    """evaluate reads extra/mean_patch: its .npy header claims 2 GiB; the refusal comes from the header, in one line,
    at once and without allocating the claimed size."""
    folder, ckpt = trained
    path = with_claimed_member(ckpt, tmp_path / "huge.npz", "extra/mean_patch", HUGE, payload=bytes(2 ** 20))
    assert path.stat().st_size < ckpt.stat().st_size + 2 ** 16  # the claimed 2 GiB cost a few bytes
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        code = evaluate.main(["--checkpoint", str(path), "--data", str(folder), "--no-progress"])
        seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert_one_line(err, f"error: {path} has extra/mean_patch of float32 ({HUGE[0]},), where the model needs")
    assert seconds < 5 and peak < 64 * 2 ** 20, f"{seconds:.1f} s, {peak / 2 ** 20:.0f} MiB"


@pytest.mark.parametrize("key", ["param/decoder_pred.b", "opt/m.decoder_pred.b", "opt/t"])
def test_a_weight_or_optimiser_state_of_a_giant_shape_is_refused_from_its_header(trained, tmp_path, key):
    path = with_claimed_member(trained[1], tmp_path / "giant.npz", key, (8192, 8192), "uint8",
                               payload=bytes(2 ** 20))
    tracemalloc.start()
    try:
        with pytest.raises(TinymaeError) as info:
            read_checkpoint(path, "pretrain", optimizer=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line(str(info.value), f"has {key} of uint8 (8192, 8192), where the model needs")
    assert peak < 16 * 2 ** 20, f"reading took {peak / 2 ** 20:.0f} MiB"


def test_a_member_the_model_does_not_need_is_never_read(trained, tmp_path):
    """A member nobody reads may claim any size and hold anything: it costs nothing."""
    path = with_claimed_member(trained[1], tmp_path / "unused.npz", "extra/giant", HUGE, payload=b"garbage")
    tracemalloc.start()
    try:
        header, model, arrays = read_checkpoint(path, "pretrain", optimizer=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert header["epoch"] == 1 and "extra/giant" not in arrays
    assert peak < 16 * 2 ** 20, f"reading took {peak / 2 ** 20:.0f} MiB"
    with Checkpoint(path) as ckpt, pytest.raises(TinymaeError, match="extra/giant of float32"):
        ckpt.read({"extra/giant": None})  # asked for with any shape: still at most 1 GB


def test_a_member_that_holds_less_than_its_header_claims_is_one_line(trained, tmp_path):
    mean_patch = stored_arrays(trained[1])["extra/mean_patch"]
    path = with_claimed_member(trained[1], tmp_path / "short.npz", "extra/mean_patch", mean_patch.shape,
                               payload=mean_patch.tobytes()[:100])
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    assert_one_line(str(info.value), "has an array extra/mean_patch that cannot be read", str(path))


# ----------------------------------------------------------------------------------------------
# a photo cache that does not hold what was asked for is decoded again

def rewrite_cache(tmp_path, write):
    (cache_file,) = (tmp_path / "cache").iterdir()
    with np.load(cache_file, allow_pickle=False) as f:
        stored = {key: f[key] for key in f.files}
    with open(cache_file, "wb") as f:
        write(f, stored)


@pytest.mark.parametrize("change", ["images-10x10", "images-float", "ok-of-another-length", "no-ok", "python-objects",
                                    "random-bytes"])
def test_a_doctored_cache_is_decoded_again(tmp_path, change):
    root = make_class_folders(tmp_path / "data", n_per_class=2)
    first = load(root, tmp_path, size=16)
    objects = np.empty(4, dtype=object)
    edits = {"images-10x10": lambda s: {**s, "images": np.zeros((4, 10, 10, 3), np.uint8)},
             "images-float": lambda s: {**s, "images": s["images"].astype(np.float32)},
             "ok-of-another-length": lambda s: {**s, "ok": np.ones(3, dtype=bool)},
             "no-ok": lambda s: {"images": s["images"]},
             "python-objects": lambda s: {**s, "images": objects}}
    if change == "random-bytes":
        rewrite_cache(tmp_path, lambda f, s: f.write(np.random.default_rng(0).bytes(1000)))
    else:
        rewrite_cache(tmp_path, lambda f, s: np.savez(f, **edits[change](s)))
    with pytest.warns(UserWarning, match="decoding the photos again"):
        second = load(root, tmp_path, size=16)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.paths == first.paths and second.hashes == first.hashes
    third = load(root, tmp_path, size=16)  # and the cache was written again, whole
    np.testing.assert_array_equal(third.images, first.images)
