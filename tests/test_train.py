"""The training script end to end on a tiny synthetic photo set: outputs, resume, NaN guard, evaluation."""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinymae import backend, evaluate
from tinymae.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from tinymae.mae_mlp import MLPConfig, MLPMAE

ROOT = Path(__file__).resolve().parents[1]
# Tiny models of both architectures (each ignores the other's size flags), 3 epochs of 4 steps.
TINY = ["--embed-dim", "8", "--encoder-dims", "32,32,16", "--decoder-dims", "32", "--depth", "1", "--num-heads", "2",
        "--decoder-embed-dim", "8", "--decoder-depth", "1", "--decoder-num-heads", "2", "--batch-size", "8",
        "--epochs", "3", "--warmup-epochs", "1", "--no-progress", "--figure-images", "3"]


def load_script():
    spec = importlib.util.spec_from_file_location("train_catsdogs", ROOT / "examples" / "train_catsdogs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(out, photos, *extra):
    return load_script().main(["--data", str(photos), "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_training_writes_the_four_outputs(xp, photos, tmp_path, arch):
    """On every backend: the strict one catches host/device mixes anywhere in the loop, as CuPy would."""
    out = tmp_path / "run"
    metrics = train(out, photos, "--arch", arch)
    for name in ("checkpoint.npz", "metrics.json", "loss.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert saved["backend"] == backend.name and saved["arch"] == arch
    assert saved["data"]["n_train"] == 32 and saved["data"]["n_val"] == 8
    final = saved["final_validation"]
    assert set(final["baselines"]) == {"mean_patch", "visible_mean", "nearest_visible"}
    assert final["masked_mse"] == pytest.approx(metrics["final_validation"]["masked_mse"])
    assert saved["history"][-1]["train_loss"] < saved["history"][0]["train_loss"]
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:  # no pickle inside
        assert "param/decoder_pred.w" in f.files and "opt/t" in f.files


def test_same_seed_same_numbers(photos, tmp_path):
    a = train(tmp_path / "a", photos, "--epochs", "1")
    b = train(tmp_path / "b", photos, "--epochs", "1")
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["final_validation"]["masked_mse"] == b["final_validation"]["masked_mse"]
    c = train(tmp_path / "c", photos, "--epochs", "1", "--seed", "1")
    assert c["history"][0]["train_loss"] != a["history"][0]["train_loss"]


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_interrupted_and_resumed_run_ends_bit_identical(photos, tmp_path, monkeypatch, arch):
    straight = tmp_path / "straight"
    train(straight, photos, "--arch", arch)

    # Crash in the middle of epoch 3 (its 2nd batch): the checkpoint of epoch 2 must survive.
    interrupted = tmp_path / "interrupted"
    script = load_script()
    real_crop, calls = script.random_crop_flip, []

    def crash_mid_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4 + 4 + 2:  # 4 steps per epoch (32 images / 8)
            raise KeyboardInterrupt
        return real_crop(*args, **kwargs)

    monkeypatch.setattr(script, "random_crop_flip", crash_mid_epoch_3)
    with pytest.raises(SystemExit, match="--resume"):
        script.main(["--data", str(photos), "--out", str(interrupted), *TINY, "--arch", arch])
    header, _ = read_checkpoint(interrupted / "checkpoint.npz")
    assert header["epoch"] == 2
    assert not (interrupted / "metrics.json").exists()

    train(interrupted, photos, "--resume")  # the architecture and its sizes come from the checkpoint
    a, b = np.load(straight / "checkpoint.npz"), np.load(interrupted / "checkpoint.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history_a = json.loads((straight / "metrics.json").read_text())["history"]
    history_b = json.loads((interrupted / "metrics.json").read_text())["history"]
    assert [h["train_loss"] for h in history_a] == [h["train_loss"] for h in history_b]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(photos, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    script = load_script()
    real_normalize, calls = script.normalize, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        x = real_normalize(*args, **kwargs)
        if len(calls) == 6:  # 2nd step of epoch 2
            x[0, 0, 0, 0] = np.nan
        return x

    monkeypatch.setattr(script, "normalize", poisoned)
    with pytest.raises(SystemExit, match="training diverged: the loss became nan at epoch 2, step 2"):
        script.main(["--data", str(photos), "--out", str(out), *TINY])
    model, header, _ = load_checkpoint(out / "checkpoint.npz")
    assert header["epoch"] == 1
    assert all(np.isfinite(v).all() for v in model.params.values())


def test_resume_without_checkpoint_is_a_clear_error(photos, tmp_path):
    with pytest.raises(SystemExit, match="cannot resume: no checkpoint"):
        train(tmp_path / "none", photos, "--resume")


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit, match="--download"):
        load_script().main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), *TINY])


@pytest.mark.parametrize("flags, message", [(["--mask-ratio", "1.0"], "mask-ratio"),
                                            (["--img-size", "50"], "not a multiple"),
                                            (["--epochs", "0"], "epochs")])
def test_bad_flags_are_clear_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        load_script().parse_args(flags)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_evaluate_cli_reports_model_and_baselines(photos, tmp_path, capsys, arch):
    out = tmp_path / "run"
    train(out, photos, "--arch", arch)
    capsys.readouterr()
    figure = tmp_path / "fig.png"
    assert evaluate.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos), "--figure", str(figure),
                          "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 40
    assert result["masked_mse"] > 0 and result["masked_psnr"] == pytest.approx(10 * np.log10(1 / result["masked_mse"]))
    for name in ("mean_patch", "visible_mean", "nearest_visible"):
        assert result["baselines"][name]["masked_mse"] > 0
    assert figure.stat().st_size > 0
    # the masks are fixed by the seed: the same call gives the same numbers
    evaluate.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos), "--no-progress"])
    assert json.loads(capsys.readouterr().out)["masked_mse"] == result["masked_mse"]


def test_evaluate_cli_bad_checkpoint(photos, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert evaluate.main(["--checkpoint", str(bad), "--data", str(photos)]) == 2
    assert "not a readable tinymae checkpoint" in capsys.readouterr().err


def test_checkpoint_shapes_are_checked(tmp_path):
    model = MLPMAE(MLPConfig(img_size=12, patch_size=6, embed_dim=4, encoder_dims=(8,), decoder_dims=()))
    path = tmp_path / "c.npz"
    save_checkpoint(path, model)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["param/decoder_pred.w"] = np.zeros((3, 3), dtype=np.float32)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="decoder_pred.w' has shape \\(3, 3\\)"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = MLPMAE(MLPConfig(img_size=12, patch_size=6, embed_dim=4, encoder_dims=(8,), decoder_dims=()))
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, meta={"epoch": 1})
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model, meta={"epoch": 2})
    assert path.read_bytes() == before  # the previous checkpoint is untouched
    assert os.listdir(tmp_path) == ["c.npz"]  # and no temporary file is left behind
