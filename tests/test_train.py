"""Pre-training end to end on a tiny synthetic photo set: outputs, resume, the NaN guard, what a run
refuses, the flags and their help, and the evaluation command."""
import json
import os
import re
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

from tinymae import backend, data, evaluate, finetune, predict, pretrain, probe
from tinymae.config import (EvaluateConfig, FinetuneConfig, MLPConfig, PredictConfig, PretrainConfig, ProbeConfig,
                            ViTConfig, flag_name)
from tinymae.errors import TinymaeError
from tinymae.model import build_model
from tinymae.pretrain import Pretraining
from tinymae.util.checkpoint import read_checkpoint, save_checkpoint

from conftest import TINY_MODEL, TINY_RUN, tiny_run_args, train_tiny

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "train_catsdogs.py")


def run_main(argv, capsys):
    """tinymae.pretrain.main as a user runs it -> (exit status, what it wrote on stderr)."""
    capsys.readouterr()
    try:
        code = pretrain.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(message, *expected):
    assert message.strip() and "Traceback" not in message, message
    assert len([line for line in message.splitlines() if line.strip()]) == 1, message
    for text in expected:
        assert text in message, message


def resume(out, photos, *extra):
    """Continue the run in `out` in-process: only what a resumed run may change is typed."""
    return Pretraining.from_argv(["--data", str(photos), "--out", str(out), "--resume", "--no-progress", *extra]).run()


def files_of(out):
    return {entry.name: entry.read_bytes() for entry in out.iterdir() if entry.is_file()}


# ----------------------------------------------------------------------------------------------
# a run's outputs

@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_training_writes_the_four_outputs(xp, photos, tmp_path, arch):
    """On every backend: the strict one catches host/device mixes anywhere in the loop, as CuPy would."""
    out = tmp_path / "run"
    metrics = train_tiny(out, photos, arch)
    for name in ("checkpoint.npz", "metrics.json", "loss.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert saved["backend"] == backend.name and saved["arch"] == arch and saved["run_id"] == metrics["run_id"]
    assert saved["data"]["n_train"] == 32 and saved["data"]["n_val"] == 8
    final = saved["final_validation"]
    assert set(final["baselines"]) == {"mean_patch", "visible_mean", "nearest_visible"}
    assert final["masked_mse"] == pytest.approx(metrics["final_validation"]["masked_mse"])
    assert saved["history"][-1]["train_loss"] < saved["history"][0]["train_loss"]
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:  # no pickle inside
        assert {"param/decoder_pred.w", "opt/t", "extra/mean_patch", "meta"} <= set(f.files)
    header = read_checkpoint(out / "checkpoint.npz", "pretrain", optimizer=True)[0]
    assert header["epoch"] == 3 and header["run_id"] == saved["run_id"] and header["arch"] == arch


def test_the_example_script_is_the_package_command(photos, tmp_path):
    """examples/train_catsdogs.py, run as a user runs it: its help names it, a tiny run writes its outputs, and
    a bad flag is one line with the command's exit status (TINYMAE_CACHE is inherited from make_photos)."""
    def script(*argv):
        return subprocess.run([sys.executable, EXAMPLE, *argv], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    shown = script("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: python examples/train_catsdogs.py"), shown.stderr
    assert "--resume" in shown.stdout and "--download" in shown.stdout
    done = script(*tiny_run_args(tmp_path / "run", photos, "mlp", "--epochs", "1"))
    assert done.returncode == 0, done.stderr
    assert {"checkpoint.npz", "metrics.json", "loss.png", "reconstructions.png"} <= set(os.listdir(tmp_path / "run"))
    refused = script(*tiny_run_args(tmp_path / "other", photos, "mlp", "--epochs", "0"))
    assert refused.returncode == 1 and refused.stdout == ""
    assert_one_line(refused.stderr, "error: --epochs must be in [1, 100000], got 0")


def test_same_seed_same_numbers(photos, tmp_path):
    a = train_tiny(tmp_path / "a", photos, "mlp", "--epochs", "1")
    b = train_tiny(tmp_path / "b", photos, "mlp", "--epochs", "1")
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["final_validation"]["masked_mse"] == b["final_validation"]["masked_mse"]
    c = train_tiny(tmp_path / "c", photos, "mlp", "--epochs", "1", "--seed", "1")
    assert c["history"][0]["train_loss"] != a["history"][0]["train_loss"]


def test_a_batch_that_leaves_few_steps_an_epoch_says_so(photos, tmp_path, capsys):
    """32 training photos in batches of 16 are 2 steps an epoch: the schedule gets a handful of steps in all, and a
    user who brought few photos of their own is told why a smaller batch helps; batches of 8 say nothing."""
    train_tiny(tmp_path / "a", photos, "mlp", "--epochs", "1", "--batch-size", "16")
    assert "note: 32 training photos make 2 steps of 16 an epoch" in capsys.readouterr().err
    train_tiny(tmp_path / "b", photos, "mlp", "--epochs", "1", "--batch-size", "8")
    assert "note:" not in capsys.readouterr().err


def test_no_figure_with_zero_figure_images(photos, tmp_path):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1", "--figure-images", "0")
    assert (out / "metrics.json").exists() and (out / "loss.png").exists()
    assert not (out / "reconstructions.png").exists()


# ----------------------------------------------------------------------------------------------
# Ctrl-C and --resume

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
        code, err = run_main(tiny_run_args(interrupted, photos, arch), capsys)
    assert code == 130
    assert_one_line(err, "interrupted", str(interrupted / "checkpoint.npz"), "--resume")
    assert read_checkpoint(interrupted / "checkpoint.npz")[0]["epoch"] == 2
    assert not (interrupted / "metrics.json").exists()

    resumed = resume(interrupted, photos)  # the architecture, its sizes and the epochs come from the checkpoint
    assert "resuming" in capsys.readouterr().out
    with np.load(straight / "checkpoint.npz") as a, np.load(interrupted / "checkpoint.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if key != "meta":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = json.loads((straight / "metrics.json").read_text())["history"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in history]
    assert [h["val_loss"] for h in resumed["history"]] == [h["val_loss"] for h in history]


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    crash_on_call(monkeypatch, "random_crop_flip", 2)
    code, err = run_main(tiny_run_args(out, photos), capsys)
    assert code == 130
    assert_one_line(err, "interrupted", "Nothing was saved")
    assert "--resume" not in err and not (out / "checkpoint.npz").exists()


def test_ctrl_c_between_epochs_is_caught_too(photos, tmp_path, monkeypatch, capsys):
    """Interrupted in the training loop itself (tinymae.run.train_one_epoch) after one epoch: exit status 130."""
    import tinymae.run
    real, calls = tinymae.run.train_one_epoch, []

    def second_epoch_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tinymae.run, "train_one_epoch", second_epoch_interrupted)
    code, err = run_main(tiny_run_args(tmp_path / "run", photos), capsys)
    assert code == 130
    assert_one_line(err, "interrupted", "--resume")
    assert read_checkpoint(tmp_path / "run" / "checkpoint.npz")[0]["epoch"] == 1


def test_a_resumed_run_takes_a_new_learning_rate(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    capsys.readouterr()
    resume(out, photos, "--epochs", "2", "--lr", "0.001")
    assert "--lr 0.001, --epochs 2" in capsys.readouterr().out
    header = read_checkpoint(out / "checkpoint.npz")[0]
    assert header["epoch"] == 2 and header["settings"]["lr"] == 0.001 and header["settings"]["seed"] == 0
    assert header["history"][1]["lr"] <= 0.001


def test_training_again_into_a_finished_run_is_refused(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "2")
    before = files_of(out)
    code, err = run_main(tiny_run_args(out, photos, "mlp", "--epochs", "1"), capsys)
    assert code == 1
    assert_one_line(err, "already holds a run", "--resume", "--overwrite")
    assert files_of(out) == before
    train_tiny(out, photos, "mlp", "--epochs", "1", "--overwrite")  # said explicitly: replaced
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 1


def test_resume_with_other_photos_is_refused(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    before = files_of(out)
    (photos / "dog" / "0.jpg").unlink()  # one photo fewer: another split, other statistics
    code, err = run_main(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2"], capsys)
    assert code == 1
    assert_one_line(err, "are not the 40 photos", "fingerprint", "--data")
    assert files_of(out) == before


def test_resume_with_nothing_left_to_do_changes_nothing(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "2")
    before = files_of(out)
    assert {"checkpoint.npz", "metrics.json", "loss.png", "reconstructions.png"} <= set(before)
    capsys.readouterr()
    assert resume(out, photos) is None  # its own 2 epochs, all trained, and its results complete
    assert "nothing to do" in capsys.readouterr().out
    assert files_of(out) == before
    code, err = run_main(["--data", str(photos), "--out", str(out), "--resume", "--epochs", "1"], capsys)
    assert code == 1  # fewer epochs than it has trained: said, not silently ignored
    assert_one_line(err, "--epochs 1 is fewer than the 2 epochs", "--epochs 2 or more")
    assert files_of(out) == before


def test_resume_without_a_checkpoint_is_a_clear_error(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pretrain, "new_photos", lambda *a, **k: pytest.fail("photos loaded without a checkpoint"))
    out = tmp_path / "none"
    code, err = run_main(["--data", str(photos), "--out", str(out), "--resume", "--no-progress"], capsys)
    assert code == 1
    assert_one_line(err, "error: ", "no checkpoint", str(out / "checkpoint.npz"))


# ----------------------------------------------------------------------------------------------
# the NaN guard

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    real_normalize, calls = data.normalize, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        x = real_normalize(*args, **kwargs)
        if len(calls) == 6:  # 2nd step of epoch 2
            x[0, 0, 0, 0] = np.nan
        return x

    monkeypatch.setattr(data, "normalize", poisoned)
    code, err = run_main(tiny_run_args(out, photos), capsys)
    assert code == 1
    assert_one_line(err, "training diverged: the loss became nan at epoch 2, step 2", str(out / "checkpoint.npz"),
                    "--resume and a lower --lr")
    header, model, _ = read_checkpoint(out / "checkpoint.npz")  # which refuses any weight that is not finite
    assert header["epoch"] == 1 and len(header["history"]) == 1
    assert not (out / "metrics.json").exists()


def test_nan_loss_before_any_checkpoint_says_none_was_written(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    real_normalize, calls = data.normalize, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        x = real_normalize(*args, **kwargs)
        if len(calls) == 2:  # 2nd step of epoch 1
            x[0, 0, 0, 0] = np.nan
        return x

    monkeypatch.setattr(data, "normalize", poisoned)
    code, err = run_main(tiny_run_args(out, photos), capsys)
    assert code == 1
    assert_one_line(err, "the loss became nan at epoch 1, step 2", "No checkpoint was written", "a lower --lr")
    assert "--resume" not in err and not (out / "checkpoint.npz").exists()


def test_a_nan_validation_loss_is_never_checkpointed(photos, tmp_path, monkeypatch, capsys):
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
    code, err = run_main(tiny_run_args(out, photos), capsys)
    assert code == 1
    assert_one_line(err, "the validation loss became nan after epoch 2", "--resume")
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 1


# ----------------------------------------------------------------------------------------------
# the run folder

def test_stale_temporary_files_of_a_killed_run_are_removed(photos, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".tinymae-k3j9x0qa.tmp"  # what a kill -9 during write_atomically leaves
    stale.write_bytes(b"half a checkpoint")
    mine = out / "notes.tmp"  # not one of ours: left alone
    mine.write_text("keep")
    train_tiny(out, photos, "mlp", "--epochs", "1")
    assert not stale.exists() and mine.read_text() == "keep"
    assert not [name for name in os.listdir(out) if name.endswith(".tmp") and name != "notes.tmp"]


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a-file", lambda tmp: tmp / "a-file" / "sub"],
                         ids=["out-is-a-file", "out-under-a-file"])
def test_an_unwritable_output_folder_fails_before_any_work(photos, tmp_path, monkeypatch, capsys, make_out):
    (tmp_path / "a-file").write_text("x")
    for name in ("new_photos", "photos_of_run", "build_model"):
        monkeypatch.setattr(pretrain, name, lambda *a, **k: pytest.fail("work started before the check"))
    code, err = run_main(tiny_run_args(make_out(tmp_path), photos), capsys)
    assert code == 1
    assert_one_line(err, f"error: --out: cannot write into {make_out(tmp_path)}")
    assert (tmp_path / "a-file").read_text() == "x"


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    code, err = run_main(tiny_run_args(tmp_path / "o", tmp_path / "nowhere"), capsys)
    assert code == 1
    assert_one_line(err, str(tmp_path / "nowhere"), "does not exist", "--data", "--download")


# ----------------------------------------------------------------------------------------------
# the flags

@pytest.mark.parametrize("flags, message", [
    (["--mask-ratio", "1.0"], "--mask-ratio must be in (0, 1), got 1.0"),
    (["--mask-ratio", "0"], "--mask-ratio must be in (0, 1), got 0.0"),
    (["--mask-ratio", "0.99"], "--mask-ratio 0.99 keeps 0 of the 64 patches"),
    (["--img-size", "6", "--patch-size", "6"], "keeps 0 of the 1 patches"),
    (["--img-size", "50"], "--img-size 50 is not a multiple of --patch-size 6"),
    (["--masking", "grid", "--mask-ratio", "0.5"], "--masking grid keeps one patch of every 2 x 2"),
    (["--epochs", "0"], "--epochs must be in [1, 100000], got 0"),
    (["--per-class", "0"], "--per-class must be in [1, 10000000], got 0"),
    (["--encoder-dims", ""], "--encoder-dims needs at least one width"),
    (["--encoder-dims", "0,8"], "--encoder-dims must be in [1, 65536], got 0"),
    (["--embed-dim", "0"], "--embed-dim must be in [1, 65536], got 0"),
    (["--embed-dim", "65536", "--encoder-dims", "65536"], "tinymae builds at most"),
    (["--arch", "vit", "--num-heads", "0"], "--num-heads must be in [1, 1024], got 0"),
    (["--arch", "vit", "--num-heads", "3"], "--embed-dim 128 must be divisible by --num-heads 3"),
    (["--arch", "mlp", "--depth", "2"], "--arch mlp has no --depth"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["--lr", "-0.01"], "--lr must be in (0, 10], got -0.01"),
    (["--lr", "0"], "--lr must be in (0, 10], got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "0.01", "--min-lr", "0.1"], "--min-lr 0.1 must not be above --lr 0.01"),
    (["--val-fraction", "1"], "--val-fraction must be in (0, 1), got 1.0"),
    (["--figure-images", "-1"], "--figure-images must be in [0, 64], got -1"),
    (["--batch-size", "0"], "--batch-size must be in [1, 65536], got 0"),
])
def test_bad_flags_are_one_line_errors(flags, message, tmp_path, monkeypatch, capsys):
    """Every value outside its declared bounds: one line naming the flag, exit status 1, before any work."""
    monkeypatch.setattr(Pretraining, "run", lambda self: pytest.fail("the run started with a bad flag"))
    code, err = run_main(["--data", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), *flags], capsys)
    assert code == 1 and err.startswith("error: ")
    assert_one_line(err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--encoder-dims", "a,b"], "argument --encoder-dims: expected whole numbers separated by commas"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_unparsable_flags_are_argparse_usage_errors(flags, message, tmp_path, capsys):
    code, err = run_main(["--out", str(tmp_path / "out"), *flags], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.startswith("usage: python -m tinymae.pretrain")


def help_of(main, capsys, *args):
    """A command's --help (it exits with status 0) -> the text, and {first word of an entry: the entry on one line}."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"], *args)
    assert exit_info.value.code in (0, None)
    text = capsys.readouterr().out
    entries, current = {}, None
    for line in text.splitlines():
        if re.match(r"  \S", line):  # an option or positional argument starts here; its help continues below
            current = line.split()[0].rstrip(",")
            entries[current] = line.strip()
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return text, entries


def flagged(*config_classes):
    return {f.name: f for cls in config_classes for f in fields(cls) if f.metadata.get("flag")}


def test_help_shows_every_setting_with_its_default(capsys):
    text, entries = help_of(pretrain.main, capsys)
    joined = " ".join(text.split())
    assert "--lr LR peak learning rate of AdamW" in joined and "(default: 0.005)" in entries["--lr"]
    assert "(default: mlp 64, vit 128)" in entries["--embed-dim"]
    assert "(default: mlp 256, vit 32)" in entries["--batch-size"]
    assert "(default: 512,512,256)" in entries["--encoder-dims"]
    for name, f in flagged(PretrainConfig, MLPConfig, ViTConfig).items():
        entry = entries.get(flag_name(name))
        assert entry is not None, f"{flag_name(name)} is not in --help"
        assert "(default: " in entry, f"{flag_name(name)} shows no default: {entry}"
        defaults = {getattr(cls(), name, None) for cls in (MLPConfig, ViTConfig) if name in cls.__dataclass_fields__}
        if name in PretrainConfig.__dataclass_fields__ and f.default is not None:
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else str(f.default)
            assert f"(default: {shown})" in entry, entry
        elif len(defaults) == 1 and None not in defaults:  # a model setting both architectures share
            (default,) = defaults
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
            assert f"(default: {shown})" in entry, entry


COMMANDS = {"pretrain": (pretrain.main, (PretrainConfig, MLPConfig, ViTConfig)),
            "finetune": (finetune.main, (FinetuneConfig,)), "evaluate": (evaluate.main, (EvaluateConfig,)),
            "probe": (probe.main, (ProbeConfig,)), "predict": (predict.main, (PredictConfig,))}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_commands_help_names_it_as_it_is_run_and_marks_required_flags(command, capsys):
    main, configs = COMMANDS[command]
    text, entries = help_of(main, capsys)
    assert text.startswith(f"usage: python -m tinymae.{command} "), text.splitlines()[0]
    usage = " ".join(text.split("\n\n")[0].split())
    for name, f in flagged(*configs).items():
        key = name.upper().rstrip("S") if f.metadata["positional"] else flag_name(name)
        entry = entries.get(key)
        assert entry is not None, f"{key} is not in the help of {command}"
        if f.type is bool:  # every boolean is a pair
            assert entry.startswith(f"{flag_name(name)}, --no-{flag_name(name)[2:]} "), entry
        if f.metadata["required"]:
            assert "(required)" in entry and "default: None" not in entry, entry
            if not f.metadata["positional"]:
                assert f"[{key}" not in usage and key in usage, usage  # not shown as optional


def test_the_example_script_s_help_names_the_script(capsys):
    text, _ = help_of(pretrain.main, capsys, "python examples/train_catsdogs.py")
    assert text.startswith("usage: python examples/train_catsdogs.py ")


# ----------------------------------------------------------------------------------------------
# evaluate

@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_evaluate_cli_reports_model_and_baselines(photos, tmp_path, capsys, arch):
    out = tmp_path / "run"
    train_tiny(out, photos, arch)
    header = read_checkpoint(out / "checkpoint.npz")[0]
    capsys.readouterr()
    figure = tmp_path / "fig.png"
    checkpoint = str(out / "checkpoint.npz")
    assert evaluate.main(["--checkpoint", checkpoint, "--figure", str(figure), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)  # without --data: the run's own validation photos
    assert result["n_images"] == len(header["data"]["val"]) == 8
    assert result["arch"] == arch and result["data_fingerprint"] == header["data"]["fingerprint"]
    assert result["masked_mse"] > 0 and result["masked_psnr"] == pytest.approx(10 * np.log10(1 / result["masked_mse"]))
    for name in ("mean_patch", "visible_mean", "nearest_visible"):
        assert result["baselines"][name]["masked_mse"] > 0
    assert result["ratio_to_mean_patch"] == pytest.approx(result["masked_mse"] /
                                                          result["baselines"]["mean_patch"]["masked_mse"])
    assert result["figure"] == str(figure) and figure.stat().st_size > 0
    # the same folder, named: the same validation split; the masks are fixed by the seed: the same numbers
    assert evaluate.main(["--checkpoint", checkpoint, "--data", str(photos), "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["n_images"] == len(header["data"]["val"])
    assert again["masked_mse"] == result["masked_mse"] and again["baselines"] == result["baselines"]
    # the final validation of the run measured the same photos with the same masks
    final = json.loads((out / "metrics.json").read_text())["final_validation"]
    assert result["masked_mse"] == pytest.approx(final["masked_mse"], rel=1e-5)


def test_evaluate_cli_bad_checkpoint(photos, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert evaluate.main(["--checkpoint", str(bad), "--data", str(photos)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line(err, f"error: {bad} is not an .npz archive", "use the checkpoint a training run wrote")


# ----------------------------------------------------------------------------------------------
# checkpoints

def test_checkpoint_shapes_are_checked(photos, tmp_path):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    header, model, arrays = read_checkpoint(out / "checkpoint.npz")
    header = {k: v for k, v in header.items() if k != "format"}
    params = {**model.params, "decoder_pred.w": np.zeros((3, 3), dtype=np.float32)}
    path = tmp_path / "c.npz"
    save_checkpoint(path, header, params, extra={"mean_patch": arrays["extra/mean_patch"]})
    with pytest.raises(TinymaeError) as info:
        read_checkpoint(path)
    expected = tuple(model.params["decoder_pred.w"].shape)
    assert f"has param/decoder_pred.w of float32 (3, 3), where the model needs {expected}" in str(info.value)
    assert str(path) in str(info.value)
    save_checkpoint(path, header, model.params, extra={"mean_patch": arrays["extra/mean_patch"]})
    assert read_checkpoint(path)[0]["epoch"] == 1  # the same header with the right shapes is read


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = build_model("mlp", {"img_size": 12, "patch_size": 6, "embed_dim": 4, "encoder_dims": (8,),
                                "decoder_dims": ()})
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"epoch": 1}, model.params)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"epoch": 2}, model.params)
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
    moved = resume(tmp_path / "moved", photos, "--epochs", "3")
    assert moved["backend"] == "strict" and moved["run_id"] != straight["run_id"]
    assert [h["train_loss"] for h in moved["history"]] == [h["train_loss"] for h in straight["history"]]
    assert moved["final_validation"]["masked_mse"] == straight["final_validation"]["masked_mse"]
