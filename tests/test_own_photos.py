"""Your own photos, your own code: pre-training on any folder of photos, labelled or not; fine-tuning and
probing a checkpoint on other photos (the paper's transfer protocol); a model you can load; the prediction
command. Every folder here is made by the tests: nothing depends on the Cats & Dogs photos."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinymae
from tinymae import finetune, predict
from tinymae.util.checkpoint import Checkpoint

from conftest import make_photos, run_main, train_tiny

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """A ViT pre-trained on a flat, unlabelled folder, then fine-tuned on a three-class folder of other photos."""
    tmp = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as mp:
        unlabelled = make_photos(tmp, mp, per_class=40, classes=None, name="unlabelled")
        three = make_photos(tmp, mp, per_class=12, classes=("boat", "bird", "plane"), name="three", seed=7)
        train_tiny(tmp / "pre", unlabelled, "vit", "--epochs", "1")
        assert finetune.main(["--checkpoint", str(tmp / "pre" / "checkpoint.npz"), "--data", str(three),
                              "--epochs", "2", "--batch-size", "8", "--no-progress"]) == 0
        cache = os.environ["TINYMAE_CACHE"]
    return tmp, unlabelled, three, cache


@pytest.fixture
def moved(transfer, monkeypatch):
    tmp, unlabelled, three, cache = transfer
    monkeypatch.setenv("TINYMAE_CACHE", cache)
    return tmp, unlabelled, three


def test_pretraining_takes_a_flat_folder_of_photos_without_classes(moved):
    tmp, unlabelled, _ = moved
    with Checkpoint(tmp / "pre" / "checkpoint.npz") as ckpt:
        record = ckpt.header["data"]
    assert record["classes"] == [] and len(record["files"]) == 40 and record["n_val"] == 8
    assert json.loads((tmp / "pre" / "metrics.json").read_text())["final_validation"]["masked_mse"] > 0


def test_pretraining_takes_a_tree_of_photos_and_skips_broken_files(tmp_path, monkeypatch):
    """Photos below sub-sub-folders and beside them, with a broken file among them: all found, the broken one
    skipped and named."""
    root = make_photos(tmp_path, monkeypatch, per_class=8, classes=("2019/june", "2020"), name="trips")
    for i in range(4):
        shutil.copy(root / "2020" / f"{i}.jpg", root / f"loose{i}.jpg")
    (root / "2020" / "broken.jpg").write_bytes(b"not a photo")
    with pytest.warns(UserWarning, match="broken.jpg"):
        metrics = train_tiny(tmp_path / "run", root, "mlp", "--epochs", "1")
    assert metrics["data"]["n_train"] + metrics["data"]["n_val"] == 20 and metrics["data"]["skipped"] == 1


def test_fine_tuning_on_other_photos_records_both_and_splits_them_anew(moved):
    """The paper's transfer protocol: the pre-training run's normalisation, the new folder's own split, both
    fingerprints in the result, and the class names in their order in the classifier's checkpoint."""
    tmp, _, three = moved
    out = tmp / "pre" / "finetune-three-seed0"
    result = json.loads((out / "result.json").read_text())
    with Checkpoint(tmp / "pre" / "checkpoint.npz") as ckpt:
        pre = ckpt.header["data"]
    with Checkpoint(out / "classifier.npz") as ckpt:
        header = ckpt.header
    assert result["classes"] == header["classes"] == ["bird", "boat", "plane"]
    assert result["pretraining_fingerprint"] == pre["fingerprint"] != result["data_fingerprint"]
    assert header["data"]["mean"] == pre["mean"] and header["data"]["std"] == pre["std"]
    assert header["data"]["root"] == str(three) and result["n_train"] + result["n_val"] == 36
    assert header["data"]["n_val"] == 6  # round(20% of 12) = 2 of each class of the new folder


def test_resuming_a_fine_tuning_refuses_other_photos(moved, tmp_path, monkeypatch, capsys):
    tmp, unlabelled, three = moved
    other = make_photos(tmp_path, monkeypatch, per_class=12, classes=("boat", "bird", "plane"), name="x", seed=8)
    code, err, _ = run_main(finetune.main, ["--checkpoint", str(tmp / "pre" / "checkpoint.npz"), "--data", str(other),
                                            "--out", str(tmp / "pre" / "finetune-three-seed0"), "--epochs", "3",
                                            "--resume", "--no-progress"], capsys)
    assert code == 1 and "are not the ones" in err and len(err.strip().splitlines()) == 1


def test_fine_tuning_never_validates_on_photos_the_encoder_trained_on(moved, tmp_path, capsys):
    """A labelled folder that shares photos with the pre-training folder: those go to the training part."""
    tmp, unlabelled, _ = moved
    labelled = tmp_path / "labelled"
    for i, path in enumerate(sorted(unlabelled.iterdir())[:20]):
        (labelled / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, labelled / ("a" if i % 2 else "b") / path.name)
    code, err, out = run_main(finetune.main, ["--checkpoint", str(tmp / "pre" / "checkpoint.npz"), "--data",
                                              str(labelled), "--out", str(tmp_path / "ft"), "--epochs", "1",
                                              "--batch-size", "8", "--no-progress"], capsys)
    assert code == 0, err
    with Checkpoint(tmp / "pre" / "checkpoint.npz") as ckpt:
        pre = ckpt.header["data"]
    trained_on = {h for i, h in enumerate(pre["hashes"]) if i not in set(pre["val"])}
    with Checkpoint(tmp_path / "ft" / "classifier.npz") as ckpt:
        record = ckpt.header["data"]
    assert not {record["hashes"][i] for i in record["val"]} & trained_on
    assert record["moved_to_training"] > 0


def test_fine_tuning_the_unlabelled_photos_themselves_says_what_is_missing(moved, capsys):
    tmp, unlabelled, _ = moved
    code, err, _ = run_main(finetune.main, ["--checkpoint", str(tmp / "pre" / "checkpoint.npz"), "--no-progress"],
                            capsys)
    assert code == 1 and "at least two classes" in err and "class folders" in err


def test_predict_prints_each_photos_class_and_probability(moved, tmp_path, capsys):
    tmp, _, three = moved
    classifier = tmp / "pre" / "finetune-three-seed0" / "classifier.npz"
    photos = [str(three / "bird" / "0.jpg"), str(three / "plane" / "1.jpg")]
    code, err, out = run_main(predict.main, ["--checkpoint", str(classifier), *photos], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(re.fullmatch(rf"{re.escape(p)}: (bird|boat|plane) \(\d+\.\d%\)", l)
                                   for p, l in zip(photos, lines))
    code, err, out = run_main(predict.main, ["--checkpoint", str(classifier), "--json", *photos], capsys)
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["photo"] for r in rows] == photos
    assert all(set(r["probabilities"]) == {"bird", "boat", "plane"} and
               abs(sum(r["probabilities"].values()) - 1) < 1e-6 and r["probability"] == max(r["probabilities"].values())
               for r in rows)


@pytest.mark.parametrize("bad", ["notes.txt", "missing.jpg"])
def test_predict_refuses_a_non_photo_in_one_line_before_printing_anything(moved, tmp_path, capsys, bad):
    tmp, _, three = moved
    (tmp_path / "notes.txt").write_text("not a photo")
    code, err, out = run_main(predict.main, ["--checkpoint", str(tmp / "pre" / "finetune-three-seed0" /
                                                                  "classifier.npz"),
                                             str(three / "bird" / "0.jpg"), str(tmp_path / bad)], capsys)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and bad in err


def test_predict_refuses_a_pretraining_checkpoint(moved, capsys):
    tmp, _, three = moved
    code, err, _ = run_main(predict.main, ["--checkpoint", str(tmp / "pre" / "checkpoint.npz"),
                                           str(three / "bird" / "0.jpg")], capsys)
    assert code == 1 and "fine-tune it" in err


def test_a_loaded_model_makes_its_input_as_training_did(moved):
    """preprocess = load_image at the run's load size, centre crop, the run's normalisation: the same numbers as
    the fine-tuning's own validation photos, for paths, PIL images and arrays alike."""
    tmp, _, three = moved
    model = tinymae.load(tmp / "pre" / "finetune-three-seed0" / "classifier.npz")
    path = three / "boat" / "3.jpg"
    from tinymae.backend import to_numpy
    from tinymae.data import center_crop, normalize
    from tinymae.photos import load_image
    expected = normalize(center_crop(load_image(path, model.load_size)[None], 48), model.mean, model.std)
    for photo in (path, str(path), Image.open(path), np.asarray(Image.open(path).convert("RGB"))):
        np.testing.assert_allclose(to_numpy(model.preprocess([photo])), expected, atol=1e-6)
    assert model.features(model.preprocess([path])).shape == (1, 8)
    mae = tinymae.load(tmp / "pre" / "checkpoint.npz")
    original, masked, reconstruction, pasted = mae.reconstruct(mae.preprocess([path, path]))
    assert original.shape == masked.shape == reconstruction.shape == pasted.shape == (2, 48, 48, 3)
    assert 0 <= reconstruction.min() and reconstruction.max() <= 1


def readme_snippet():
    """The README's Python example of using a trained model, as it is printed there."""
    text = README.read_text()
    section = text[text.index("## Use a trained model in your own code"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_snippet_runs_as_written(moved, tmp_path, monkeypatch):
    """The README's example, exactly as printed, in a folder laid out as the README's commands leave it."""
    tmp, _, three = moved
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "vit").mkdir(parents=True)
    shutil.copy(tmp / "pre" / "checkpoint.npz", tmp_path / "runs" / "vit" / "checkpoint.npz")
    shutil.copytree(tmp / "pre" / "finetune-three-seed0", tmp_path / "runs" / "vit" / "finetune-seed0")
    shutil.copy(three / "bird" / "0.jpg", tmp_path / "cat.jpg")
    shutil.copy(three / "boat" / "0.jpg", tmp_path / "dog.jpg")
    import matplotlib
    matplotlib.use("Agg")
    scope = {}
    exec(readme_snippet(), scope)  # noqa: S102  the README's own code
    assert scope, "the snippet defined nothing"
