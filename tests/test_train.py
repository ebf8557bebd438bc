"""Pre-training end to end on a tiny synthetic photo set: outputs, resume, the NaN guard, what a run
refuses, and the evaluation command."""
import json
import os

import numpy as np
import pytest

from tinymae import backend, data, evaluate, pretrain
from tinymae.config import MLPConfig
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.util.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

from conftest import TINY_MODEL, TINY_RUN, tiny_run_args, train_tiny


def run_main(argv):
    """tinymae.pretrain.main as a user runs it: -> (exit code, the message it exits with)."""
    try:
        return pretrain.main(argv), ""
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else 1), str(e.code)


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_training_writes_the_four_outputs(xp, photos, tmp_path, arch):
    """On every backend: the strict one catches host/device mixes anywhere in the loop, as CuPy would."""
    out = tmp_path / "run"
    metrics = train_tiny(out, photos, arch)
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


def test_the_example_script_is_the_package_command(photos, tmp_path):
    import runpy
    import sys
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "train_catsdogs.py")
    argv = sys.argv
    sys.argv = [script, *tiny_run_args(tmp_path / "run", photos, "mlp", "--epochs", "1")]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 0
    assert (tmp_path / "run" / "metrics.json").exists()


def test_same_seed_same_numbers(photos, tmp_path):
    a = train_tiny(tmp_path / "a", photos, "mlp", "--epochs", "1")
    b = train_tiny(tmp_path / "b", photos, "mlp", "--epochs", "1")
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["final_validation"]["masked_mse"] == b["final_validation"]["masked_mse"]
    c = train_tiny(tmp_path / "c", photos, "mlp", "--epochs", "1", "--seed", "1")
    assert c["history"][0]["train_loss"] != a["history"][0]["train_loss"]


def crash_on_call(monkeypatch, name, call, exception=KeyboardInterrupt):
    """Make tinymae.data.<name> raise `exception` on its `call`-th call (counting from 1)."""
    real, calls = getattr(data, name), []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise exception
        return real(*args, **kwargs)

    monkeypatch.setattr(data, name, crashing)


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_interrupted_and_resumed_run_ends_bit_identical(photos, tmp_path, monkeypatch, capsys, arch):
    straight = tmp_path / "straight"
    train_tiny(straight, photos, arch)

    # Ctrl-C in the middle of epoch 3 (its 2nd batch, drawn on the batch thread): epoch 2's checkpoint survives.
    interrupted = tmp_path / "interrupted"
    with monkeypatch.context() as m:
        crash_on_call(m, "random_crop_flip", 4 + 4 + 2)  # 4 steps per epoch (32 images / 8)
        capsys.readouterr()
        code, _ = run_main(tiny_run_args(interrupted, photos, arch))
    assert code == 130 and "--resume" in capsys.readouterr().err
    header, _ = read_checkpoint(interrupted / "checkpoint.npz")
    assert header["epoch"] == 2
    assert not (interrupted / "metrics.json").exists()

    # the architecture and its sizes come from the checkpoint
    pretrain.pretrain(*pretrain.parse_args(["--data", str(photos), "--out", str(interrupted), "--resume",
                                            "--no-progress"]))
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
    real_normalize, calls = data.normalize, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        x = real_normalize(*args, **kwargs)
        if len(calls) == 6:  # 2nd step of epoch 2
            x[0, 0, 0, 0] = np.nan
        return x

    monkeypatch.setattr(data, "normalize", poisoned)
    code, message = run_main(tiny_run_args(out, photos))
    assert code != 0 and "training diverged: the loss became nan at epoch 2, step 2" in message
    assert "--resume and a lower --lr" in message
    model, header, _ = load_checkpoint(out / "checkpoint.npz")
    assert header["epoch"] == 1
    assert all(np.isfinite(v).all() for v in model.params.values())


def test_a_nan_validation_loss_is_never_checkpointed(photos, tmp_path, monkeypatch):
    """Finite weights are not enough: an epoch is good only if its validation loss is finite too."""
    out = tmp_path / "nan-val"
    real, calls = pretrain.reconstruction_metrics, []

    def nan_after_epoch_2(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        if len(calls) == 3:  # the baselines once, then epoch 1, then epoch 2
            result["loss"] = float("nan")
        return result

    monkeypatch.setattr(pretrain, "reconstruction_metrics", nan_after_epoch_2)
    code, message = run_main(tiny_run_args(out, photos))
    assert code != 0 and "validation loss became nan after epoch 2" in message
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 1


def test_a_resumed_run_takes_a_new_learning_rate(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    pretrain.pretrain(*pretrain.parse_args(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2",
                                            "--lr", "0.001", "--no-progress"]))
    printed = capsys.readouterr().out
    assert "lr 0.001" in printed
    header, _ = read_checkpoint(out / "checkpoint.npz")
    assert header["epoch"] == 2 and header["settings"]["lr"] == 0.001 and header["settings"]["seed"] == 0


def test_training_again_into_a_finished_run_is_refused(photos, tmp_path):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "2")
    before = (out / "checkpoint.npz").read_bytes()
    code, message = run_main(tiny_run_args(out, photos, "mlp", "--epochs", "1"))
    assert code != 0 and "already holds a run" in message and "--resume" in message and "--overwrite" in message
    assert (out / "checkpoint.npz").read_bytes() == before
    train_tiny(out, photos, "mlp", "--epochs", "1", "--overwrite")  # said explicitly: replaced
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 1


def test_resume_with_other_images_is_refused(photos, tmp_path):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    before = (out / "checkpoint.npz").read_bytes()
    (photos / "dog" / "0.jpg").unlink()  # one photo fewer: another split, other statistics
    code, message = run_main(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2"])
    assert code != 0 and "not the ones" in message and "fingerprint" in message
    assert (out / "checkpoint.npz").read_bytes() == before


def test_resume_with_nothing_left_to_do_changes_nothing(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "2")
    files = {name: (out / name).read_bytes() for name in ("checkpoint.npz", "metrics.json", "reconstructions.png")}
    capsys.readouterr()
    code, _ = run_main(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "1"])
    assert code == 0 and "nothing to do" in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in files} == files


def test_stale_temporary_files_of_a_killed_run_are_removed(photos, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / "checkpoint.npz.k3j9x0qa.tmp"  # what a kill -9 during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    mine = out / "notes.tmp"  # not one of ours: left alone
    mine.write_text("keep")
    train_tiny(out, photos, "mlp", "--epochs", "1")
    assert not stale.exists() and mine.exists()


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a-file", lambda tmp: tmp / "a-file" / "sub"],
                         ids=["out-is-a-file", "out-under-a-file"])
def test_an_unwritable_output_folder_fails_before_any_work(photos, tmp_path, monkeypatch, make_out):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(pretrain, "PretrainData", lambda *a, **k: pytest.fail("data loaded before the check"))
    code, message = run_main(tiny_run_args(make_out(tmp_path), photos))
    assert code != 0 and message.startswith("error: --out") and "\n" not in message.strip()


def test_no_figure_with_zero_figure_images(photos, tmp_path):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1", "--figure-images", "0")
    assert (out / "metrics.json").exists() and not (out / "reconstructions.png").exists()


def test_resume_without_checkpoint_is_a_clear_error(photos, tmp_path):
    code, message = run_main(tiny_run_args(tmp_path / "none", photos, "mlp", "--resume"))
    assert code != 0 and "cannot resume: no checkpoint" in message


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    code, message = run_main(tiny_run_args(tmp_path / "o", tmp_path / "nowhere"))
    assert code != 0 and "--download" in message


@pytest.mark.parametrize("flags, message", [
    (["--mask-ratio", "1.0"], "mask_ratio must be above 0 and below 1"),
    (["--mask-ratio", "0"], "mask_ratio must be above 0 and below 1"),
    (["--mask-ratio", "0.99"], "leaves no visible patch"),
    (["--img-size", "6", "--patch-size", "6"], "leaves no visible patch"),
    (["--img-size", "50"], "not a multiple"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--per-class", "0"], "--per-class must be at least 1"),
    (["--encoder-dims", ""], "encoder_dims needs at least one layer"),
    (["--encoder-dims", "a,b"], "comma-separated whole numbers"),
    (["--embed-dim", "0"], "embed_dim must be positive"),
    (["--arch", "vit", "--num-heads", "0"], "must be at least 1"),
    (["--arch", "vit", "--num-heads", "3"], "divisible by num_heads"),
    (["--arch", "mlp", "--depth", "2"], "--arch mlp has no --depth"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--lr", "-0.01"], "--lr must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--val-fraction", "1"], "--val-fraction must be between 0 and 1"),
    (["--figure-images", "-1"], "--figure-images must be 0"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_shows_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--lr LR peak learning rate of AdamW", "(default: 0.005)", "--embed-dim", "mlp 64, vit 128",
                     "--no-progress", "--mask-ratio"):
        assert expected in text, expected


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_evaluate_cli_reports_model_and_baselines(photos, tmp_path, capsys, arch):
    out = tmp_path / "run"
    train_tiny(out, photos, arch)
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
    model = MaskedAutoencoderMLP(MLPConfig(img_size=12, patch_size=6, embed_dim=4, encoder_dims=(8,), decoder_dims=()))
    path = tmp_path / "c.npz"
    save_checkpoint(path, model)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["param/decoder_pred.w"] = np.zeros((3, 3), dtype=np.float32)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="decoder_pred.w' has shape \\(3, 3\\)"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = MaskedAutoencoderMLP(MLPConfig(img_size=12, patch_size=6, embed_dim=4, encoder_dims=(8,), decoder_dims=()))
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


assert TINY_MODEL and TINY_RUN  # the tiny settings live in conftest.py, shared with the other end-to-end tests


def test_a_run_resumed_on_the_other_backend_continues_it(photos, tmp_path, monkeypatch):
    """Checkpoints hold host arrays and the random state: 1 epoch on NumPy, then 2 more on the strict CuPy
    stand-in, ends where 3 epochs on NumPy do (on a GPU the same holds up to float32 rounding)."""
    from conftest import use_backend
    use_backend("numpy", monkeypatch)
    straight = train_tiny(tmp_path / "straight", photos, "vit")
    train_tiny(tmp_path / "moved", photos, "vit", "--epochs", "1")
    use_backend("strict", monkeypatch)
    moved = pretrain.pretrain(*pretrain.parse_args(["--data", str(photos), "--out", str(tmp_path / "moved"),
                                                    "--resume", "--epochs", "3", "--no-progress"]))
    assert moved["backend"] == "strict"
    assert [h["train_loss"] for h in moved["history"]] == [h["train_loss"] for h in straight["history"]]
    assert moved["final_validation"]["masked_mse"] == straight["final_validation"]["masked_mse"]
