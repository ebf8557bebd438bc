"""Nothing lost, nothing mixed: every result carries its provenance, every output has one writer.

Each test reproduces one finding of a careful (or hostile) user's session against the README's promises; the
number in its docstring is the finding's. The code before these tests failed each of them; all run on tiny
synthetic photo sets. (The photo cache's and the download's findings are in test_photos.py and
test_download.py, the sweep's in test_experiments.py, the benchmarks' in test_benchmarks.py.)
"""
import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from tinymae import evaluate, finetune, pretrain, probe
from tinymae.pretrain import Pretraining
from tinymae.util import files
from tinymae.util.checkpoint import Checkpoint, read_checkpoint
from tinymae.util.files import RunLock, write_atomically

from conftest import make_photos, run_main, tiny_run_args, train_tiny


def assert_one_line(code, err, *expected):
    assert code not in (0, None) and "Traceback" not in err, err
    assert len([line for line in err.strip().splitlines() if line.strip()]) == 1, err
    for text in expected:
        assert text in err, err


@pytest.fixture
def photos(tmp_path, monkeypatch):
    return make_photos(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny ViT run (1 epoch) and its photos; the tests copy it before changing it."""
    tmp = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        photos = make_photos(tmp, mp)
        train_tiny(tmp / "run", photos, "vit", "--epochs", "1")
        cache = os.environ["TINYMAE_CACHE"]
    return photos, tmp / "run", cache


@pytest.fixture
def run(finished, tmp_path, monkeypatch):
    """A copy of the finished run, and its photos, with their decoded cache."""
    photos, run, cache = finished
    monkeypatch.setenv("TINYMAE_CACHE", cache)
    shutil.copytree(run, tmp_path / "run")
    return photos, tmp_path / "run"


def ft_args(run, *extra):
    return ["--checkpoint", str(run / "checkpoint.npz"), "--epochs", "1", "--batch-size", "8", "--no-progress", *extra]


# ----------------------------------------------------------------------------------------------
# High: runs mixed, results silently wrong, files lost

def test_derived_commands_validate_only_on_the_runs_own_validation_photos(tmp_path, monkeypatch, capsys):
    """1. Pre-trained on 10 photos per class of a 20-per-class folder, the probe and evaluate measure on the
    run's own validation split (4 photos), not on a new split of every photo in the folder."""
    photos = make_photos(tmp_path, monkeypatch)
    out = tmp_path / "run"
    train_tiny(out, photos, "vit", "--epochs", "1", "--per-class", "10")
    header = read_checkpoint(out / "checkpoint.npz")[0]
    val_files = {header["data"]["files"][i] for i in header["data"]["val"]}
    assert len(val_files) == 4
    code, err, printed = run_main(probe.main, ["--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos),
                                               "--seeds", "1", "--no-baselines", "--no-progress"], capsys)
    assert code == 0, err
    assert "16 training / 4 validation photos" in printed
    code, err, printed = run_main(evaluate.main, ["--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos),
                                                  "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads(printed)["n_images"] == 4 and json.loads(printed)["photos"] == "the run's validation photos"


def test_overwrite_of_a_pretraining_run_removes_what_was_derived_from_it(run, capsys):
    """2. A run folder owns what is derived inside it: --overwrite removes the old encoder's fine-tunings and
    probe, so fine-tuning the new checkpoint is not refused as already done."""
    photos, out = run
    assert finetune.main(ft_args(out)) == 0
    assert probe.main(["--checkpoint", str(out / "checkpoint.npz"), "--json", str(out / "probe.json"), "--seeds", "1",
                       "--no-progress"]) == 0
    assert (out / "finetune-seed0" / "result.json").exists() and (out / "probe.json").exists()
    train_tiny(out, photos, "vit", "--epochs", "1", "--seed", "3", "--overwrite")
    assert not (out / "finetune-seed0").exists() and not (out / "probe.json").exists()
    code, err, _ = run_main(finetune.main, ft_args(out), capsys)
    assert code == 0, err


def test_a_resumed_pretraining_removes_the_fine_tunings_of_its_earlier_encoder_and_nothing_else(run, capsys):
    """2, by --resume: the fine-tuning of the epoch-1 encoder stayed beside the epoch-2 checkpoint, so fine-tuning
    it was refused (and --resume of that fine-tuning had "nothing to do"); a user's own file or folder whose name
    begins with "finetune" is not a run's, and stays, with --resume as with --overwrite."""
    photos, out = run
    assert finetune.main(ft_args(out)) == 0
    (out / "finetune-notes.txt").write_text("mine")
    (out / "finetune-ideas").mkdir()
    code, err, printed = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"),
                                  capsys)
    assert code == 0, err
    assert "removing" in printed and "finetune-seed0" in printed and not (out / "finetune-seed0").exists()
    code, err, _ = run_main(finetune.main, ft_args(out), capsys)
    assert code == 0, err
    train_tiny(out, photos, "vit", "--epochs", "1", "--seed", "3", "--overwrite")
    assert (out / "finetune-notes.txt").read_text() == "mine" and (out / "finetune-ideas").is_dir()


def test_fine_tuning_reads_the_header_and_the_weights_from_one_open_file(run, tmp_path, monkeypatch, capsys):
    """3. A --resume writing epoch 2 while fine-tuning reads epoch 1: the header says epoch 1, and the weights
    must be epoch 1's too (they used to be read from the path again, after the rename)."""
    photos, out = run
    epoch1 = (out / "checkpoint.npz").read_bytes()
    later = tmp_path / "later"
    shutil.copytree(out, later)
    train_tiny(later, photos, "vit", "--epochs", "2", "--resume")  # epoch 2's checkpoint, ready to be renamed in
    real = Checkpoint.read

    def renamed_meanwhile(self, shapes):  # the pre-training run renames its new checkpoint over the old one
        if self.path == str(out / "checkpoint.npz"):
            os.replace(later / "checkpoint.npz", out / "checkpoint.npz")
        return real(self, shapes)

    monkeypatch.setattr(Checkpoint, "read", renamed_meanwhile)
    code, err, _ = run_main(finetune.main, ft_args(out, "--lr", "1e-12", "--min-lr", "0", "--out",
                                                   str(tmp_path / "ft")), capsys)
    assert code == 0, err
    with Checkpoint(tmp_path / "ft" / "classifier.npz") as ckpt:
        assert ckpt.header["pretraining"]["epoch"] == 1
        tuned = ckpt.read({"param/blocks.0.attn.qkv.w": None})["param/blocks.0.attn.qkv.w"]
    (tmp_path / "epoch1.npz").write_bytes(epoch1)
    with np.load(tmp_path / "epoch1.npz") as f:
        np.testing.assert_allclose(tuned, f["param/blocks.0.attn.qkv.w"], atol=1e-6)


def test_evaluate_figure_without_an_ending_checks_the_png_it_writes(run, tmp_path, capsys):
    """7. --figure notes: matplotlib writes notes.png, so that is the file checked (an existing one is refused
    without --overwrite) and the one reported."""
    photos, out = run
    (tmp_path / "notes.png").write_bytes(b"an old figure")
    argv = ["--checkpoint", str(out / "checkpoint.npz"), "--figure", str(tmp_path / "notes"), "--no-progress"]
    code, err, _ = run_main(evaluate.main, argv, capsys)
    assert_one_line(code, err, "--figure", "notes.png", "already exists")
    assert (tmp_path / "notes.png").read_bytes() == b"an old figure"
    code, err, printed = run_main(evaluate.main, argv + ["--overwrite"], capsys)
    assert code == 0, err
    assert json.loads(printed)["figure"] == str(tmp_path / "notes.png")
    assert Image.open(tmp_path / "notes.png").format == "PNG" and not (tmp_path / "notes").exists()


@pytest.mark.parametrize("main, flag", [(finetune.main, "--json"), (probe.main, "--json"), (evaluate.main, "--figure")])
def test_an_output_path_is_never_one_of_the_commands_inputs(run, main, flag, capsys):
    """9. finetune/probe --json <its own input checkpoint> --overwrite replaced the checkpoint with JSON."""
    photos, out = run
    before = (out / "checkpoint.npz").read_bytes()
    extra = ["--epochs", "1", "--batch-size", "8"] if main is finetune.main else []
    code, err, _ = run_main(main, ["--checkpoint", str(out / "checkpoint.npz"), flag, str(out / "checkpoint.npz"),
                                   "--overwrite", "--no-progress", *extra], capsys)
    assert_one_line(code, err, flag, "is one of this command's inputs")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_a_json_output_is_a_json_file_never_one_of_the_photos(run, capsys):
    """9, through the photos: probe --json <one of the run's photos> --overwrite turned the photo into JSON (and
    evaluate then lost the run's split). A --json output ends in .json (one is added to a name without an ending)."""
    photos, out = run
    photo = next(photos.rglob("*.jpg"))
    before = photo.read_bytes()
    code, err, _ = run_main(probe.main, ["--checkpoint", str(out / "checkpoint.npz"), "--json", str(photo),
                                         "--overwrite", "--no-progress"], capsys)
    assert_one_line(code, err, "--json", "ends in .jpg", "use .json")
    assert photo.read_bytes() == before
    code, err, _ = run_main(probe.main, ["--checkpoint", str(out / "checkpoint.npz"), "--json", str(out / "report"),
                                         "--seeds", "1", "--no-baselines", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["seeds"] == 1


@pytest.mark.parametrize("main", [evaluate.main, probe.main, finetune.main])
def test_a_run_whose_photos_changed_is_measured_on_the_photos_it_did_not_train_on_and_says_so(tmp_path, monkeypatch,
                                                                                                main, capsys):
    """A photo of the run replaced after training: evaluate (without --data) used to fall back silently and report
    "17 photos of None", and fine-tuning fell back to a new split without a word; each says why, naming the folder."""
    photos, out = make_photos(tmp_path, monkeypatch, per_class=10), tmp_path / "run"
    train_tiny(out, photos, "vit", "--epochs", "1")
    Image.new("RGB", (60, 60), (200, 30, 90)).save(next(photos.rglob("*.jpg")))
    flags = {evaluate.main: [], probe.main: ["--seeds", "1", "--no-baselines"],
             finetune.main: ["--epochs", "1", "--batch-size", "8"]}[main]
    code, err, printed = run_main(main, ["--checkpoint", str(out / "checkpoint.npz"), "--no-progress", *flags], capsys)
    assert code == 0, err
    assert f"note: the photos under {photos} are not the ones" in err and "trained on" in err
    if main is evaluate.main:
        assert json.loads(printed)["photos"].endswith(f"photos of {photos}")


@pytest.mark.parametrize("main", [evaluate.main, probe.main])
def test_per_class_of_the_runs_own_unchanged_photos_gives_no_note_that_they_changed(tmp_path, monkeypatch, capsys,
                                                                                      main):
    """--per-class without --data takes a subset of the run's folder by choice; nothing there changed, so nothing
    is said about changed photos."""
    photos = make_photos(tmp_path, monkeypatch, per_class=10)
    train_tiny(tmp_path / "run", photos, "mlp", "--epochs", "1")
    flags = ["--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--per-class", "10", "--no-progress"]
    code, err, _ = run_main(main, flags + (["--seeds", "1", "--no-baselines"] if main is probe.main else []), capsys)
    assert code == 0 and "are not the ones" not in err, err


# ----------------------------------------------------------------------------------------------
# Medium: tracebacks, hangs, broken promises

@pytest.mark.parametrize("main", [pretrain.main, finetune.main])
def test_a_huge_warmup_is_a_one_line_error_before_any_work(main, capsys):
    """10. --warmup-epochs 1e308 raised an OverflowError after the photos were decoded."""
    code, err, _ = run_main(main, ["--checkpoint", "c.npz", "--warmup-epochs", "1e308"] if main is finetune.main else
                            ["--data", "nowhere", "--warmup-epochs", "1e308"], capsys)
    assert_one_line(code, err, "--warmup-epochs must be in [0, 100000], got 1e+308")


def edit_header(path, **changes):
    """Rewrite a checkpoint's JSON header with some fields changed (a hand edit)."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    with Checkpoint(path) as ckpt:
        header = {**ckpt.header, **changes}
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array(json.dumps(header)), allow_pickle=False)
    members["meta.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


@pytest.mark.parametrize("change", ["history", "data"])
def test_resuming_an_edited_checkpoint_is_refused_before_training(run, monkeypatch, capsys, change):
    """11. history [1, 2, "x"] or a data record without n_train: a traceback after training, before."""
    photos, out = run
    with Checkpoint(out / "checkpoint.npz") as ckpt:
        data = {k: v for k, v in ckpt.header["data"].items() if k != "n_train"}
    edit_header(out / "checkpoint.npz", **({"history": [1, 2, "x"]} if change == "history" else {"data": data}))
    from tinymae import run as run_module
    monkeypatch.setattr(run_module, "train_one_epoch", lambda *a, **k: pytest.fail("trained before the check"))
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"), capsys)
    assert_one_line(code, err, str(out / "checkpoint.npz"), "history" if change == "history" else "n_train")


def test_resume_after_a_batch_size_larger_than_the_photos_is_accepted(photos, tmp_path, capsys):
    """15. --batch-size 100 on a 32-photo split trains in batches of 32; the same command plus --resume was
    refused because the checkpoint recorded 32."""
    out = tmp_path / "run"
    assert pretrain.main(tiny_run_args(out, photos, "mlp", "--epochs", "1", "--batch-size", "100")) == 0
    assert read_checkpoint(out / "checkpoint.npz")[0]["settings"]["batch_size"] == 100
    code, err, printed = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--epochs", "2", "--batch-size",
                                                               "100", "--resume"), capsys)
    assert code == 0, err
    assert "1 steps of 32 per epoch" in printed


def test_a_resumed_run_is_not_finished_until_its_new_results_are_written(photos, tmp_path, monkeypatch, capsys):
    """16. After --resume --epochs 5 of a finished 2-epoch run is killed at epoch 3, the old metrics.json (same run
    id) said the run finished; and after metrics.json was deleted, --resume --epochs 1 said it was complete."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "2")
    from tinymae import run as run_module
    real, calls = run_module.train_one_epoch, []

    def killed_in_epoch_four(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_module, "train_one_epoch", killed_in_epoch_four)
    assert pretrain.main(tiny_run_args(out, photos, "mlp", "--epochs", "5", "--resume")) == 130
    monkeypatch.undo()
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 3 and not (out / "metrics.json").exists()
    assert Pretraining.from_argv(tiny_run_args(out, photos, "mlp", "--epochs", "5", "--resume")).run() is not None
    (out / "metrics.json").unlink()
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--epochs", "1", "--resume"), capsys)
    assert_one_line(code, err, "--epochs 1 is fewer than the 5 epochs")
    metrics = Pretraining.from_argv(tiny_run_args(out, photos, "mlp", "--epochs", "5", "--resume")).run()
    assert metrics is not None and (out / "metrics.json").exists()  # the results redrawn, nothing trained


def test_the_free_space_check_counts_a_replaced_checkpoint_once(run, monkeypatch, capsys):
    """17. On --resume the new checkpoint replaces the old one: room for one more is enough (it asked for two)."""
    photos, out = run
    size = (out / "checkpoint.npz").stat().st_size
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=int(1.5 * size) + 2 ** 20))
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"), capsys)
    assert code == 0, err
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=size // 2))
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "3", "--resume"), capsys)
    assert_one_line(code, err, "MB free", "a checkpoint")


def test_a_long_json_name_is_written_or_refused_before_any_work(run, tmp_path, monkeypatch, capsys):
    """18. A 245-character --json name passed the early check and failed after all the work (the temporary
    file's name was too long), leaving classifier.npz without result.json."""
    photos, out = run
    long_name = tmp_path / ("r" * 240 + ".json")
    code, err, _ = run_main(finetune.main, ft_args(out, "--json", str(long_name)), capsys)
    assert code == 0, err
    assert json.loads(long_name.read_text())["val_accuracy"] >= 0
    from tinymae import run as run_module
    monkeypatch.setattr(run_module, "train_one_epoch", lambda *a, **k: pytest.fail("trained before the check"))
    code, err, _ = run_main(finetune.main, ft_args(out, "--json", str(tmp_path / ("r" * 300 + ".json")), "--out",
                                                   str(tmp_path / "ft2")), capsys)
    assert_one_line(code, err, "--json", "longer than")


def test_photos_with_a_constant_channel_are_a_data_error(tmp_path, monkeypatch, capsys):
    """19. Photos without blue: std 0, then NaN, reported as "training diverged ... lower --lr"."""
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    for name in ("cat", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3)).astype(np.uint8)
            pixels[:, :, 2] = 0
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.png")
    code, err, _ = run_main(pretrain.main, tiny_run_args(tmp_path / "run", tmp_path / "photos"), capsys)
    assert_one_line(code, err, "blue channel", "cannot be normalised")
    assert "diverged" not in err


# ----------------------------------------------------------------------------------------------
# Low

def test_the_loss_figure_is_written_whole_or_not_at_all(photos, tmp_path, monkeypatch, capsys):
    """23. loss.png was written straight to its path: a full disk left a 0-byte file."""
    from matplotlib.figure import Figure

    def disk_full(self, target, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    code, err, _ = run_main(pretrain.main, tiny_run_args(tmp_path / "run", photos), capsys)
    assert_one_line(code, err, "No space left on device")
    assert not (tmp_path / "run" / "loss.png").exists()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_a_nan_in_the_saved_optimiser_state_is_refused(run, capsys):
    """25. A NaN in AdamW's saved moments was accepted, and the run then "diverged"."""
    photos, out = run
    path = out / "checkpoint.npz"
    with np.load(path) as f:
        arrays = dict(f)
    key = next(k for k in arrays if k.startswith("opt/v."))
    arrays[key] = np.full_like(arrays[key], np.nan)
    np.savez(path, **arrays)
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"), capsys)
    assert_one_line(code, err, key, "NaN")


@pytest.mark.parametrize("flags, flag", [(["--mask-ratio", "1.5"], "--mask-ratio"), (["--img-size", "0"], "--img-size"),
                                         (["--embed-dim", "0"], "--embed-dim"), (["--encoder-dims", "0,4"],
                                                                                 "--encoder-dims")])
def test_errors_name_the_flag_not_the_setting(flags, flag, capsys):
    """26. Messages named the setting (mask_ratio, img_size, embed_dim, encoder_dims), not the flag to change."""
    code, err, _ = run_main(pretrain.main, ["--data", "nowhere", *flags], capsys)
    assert_one_line(code, err, flag)


def test_a_checkpoint_that_cannot_be_read_is_reported_as_such(run, monkeypatch, capsys):
    """27. A permission-denied checkpoint was "not an .npz archive ... train without --resume first", advice that
    led to --overwrite deleting it."""
    photos, out = run
    real = builtins.open

    def denied(path, *a, **k):
        if str(path) == str(out / "checkpoint.npz"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(builtins, "open", denied)
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"), capsys)
    assert_one_line(code, err, "permission denied", "fix its permissions")
    assert "without --resume" not in err and "not an .npz" not in err


def test_the_divergence_message_offers_resume_only_when_a_checkpoint_exists(photos, tmp_path, monkeypatch, capsys):
    """28. With no checkpoint written, the message said "continue it with --resume"."""
    from tinymae import engine
    monkeypatch.setattr(engine, "float", lambda loss: float("nan"), raising=False)
    code, err, _ = run_main(pretrain.main, tiny_run_args(tmp_path / "run", photos), capsys)
    assert_one_line(code, err, "diverged", "No checkpoint was written", "lower --lr")
    assert "--resume" not in err


def test_infinite_adamw_moments_behind_finite_losses_are_a_divergence_not_a_checkpoint(photos, tmp_path,
                                                                                       monkeypatch, capsys):
    """28, the other way round: extreme but accepted settings (--lr 10, --beta2 0.01) kept the losses finite while
    AdamW's second moments overflowed; the checkpoint was written, the message offered --resume, and the resume
    refused the checkpoint. A checkpoint is written only of finite weights and moments."""
    from tinymae.model import optim
    real = optim.AdamW.state_dict

    def overflowed(self):
        state = real(self)
        name = next(k for k in state if k.startswith("v."))
        state[name] = state[name] + np.inf
        return state

    monkeypatch.setattr(optim.AdamW, "state_dict", overflowed)
    code, err, _ = run_main(pretrain.main, tiny_run_args(tmp_path / "run", photos, "mlp", "--kernels", "reference"),
                            capsys)
    assert_one_line(code, err, "diverged", "AdamW state v.", "became infinite or NaN in epoch 1",
                    "No checkpoint was written")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_a_real_divergence_is_one_line_without_numpys_overflow_warnings_before_it(photos, tmp_path):
    """--lr 10: NumPy's "RuntimeWarning: overflow encountered in multiply" (and the line of code it quotes) printed
    before the one-line divergence message, which already says what happened. A user's own process, so run as one."""
    argv = [sys.executable, "-m", "tinymae.pretrain", *tiny_run_args(tmp_path / "run", photos, "mlp", "--lr", "10",
                                                                     "--warmup-epochs", "0", "--weight-decay", "0")]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ))
    assert_one_line(done.returncode, done.stderr, "training diverged", "lower --lr")
    assert "RuntimeWarning" not in done.stderr


def test_a_clean_exit_leaves_no_lock_file(run, capsys):
    """29. .lock files stayed in every output folder after a clean exit."""
    photos, out = run
    assert finetune.main(ft_args(out)) == 0
    assert pretrain.main(tiny_run_args(out, photos, "vit", "--epochs", "1", "--resume")) == 0
    assert not (out / ".lock").exists() and not (out / "finetune-seed0" / ".lock").exists()


# ----------------------------------------------------------------------------------------------
# one writer per folder, a run's outputs belong to it (the earlier rounds' findings, kept)

def test_a_second_writer_of_the_same_folder_is_refused_naming_the_first(photos, tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(str(out)):  # another process's run, as far as the folder can tell (flock is per open file)
        code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos), capsys)
    assert_one_line(code, err, "being written by another tinymae process", f"pid {os.getpid()}")
    assert not (out / "checkpoint.npz").exists()
    train_tiny(out, photos, "mlp", "--epochs", "1")  # released: the folder is usable again


def test_a_folder_without_file_locks_gets_its_own_message(photos, tmp_path, monkeypatch, capsys):
    """Some cluster file systems disable flock: that is not "busy"."""
    import fcntl

    def no_locks(*a):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    code, err, _ = run_main(pretrain.main, tiny_run_args(tmp_path / "run", photos), capsys)
    assert_one_line(code, err, "does not support file locks")
    assert "another tinymae process" not in err


def test_the_lock_is_released_when_a_run_fails(photos, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_main(pretrain.main, tiny_run_args(out, tmp_path / "nowhere"), capsys)
    assert code == 1
    with RunLock(str(out)):  # no refusal: the failed run let go
        pass


def test_an_out_holding_another_runs_file_is_refused_without_overwrite(photos, tmp_path, capsys):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "metrics.json").write_text("{}")
    code, err, _ = run_main(pretrain.main, tiny_run_args(lonely, photos), capsys)
    assert_one_line(code, err, "already holds a run (metrics.json)", "--overwrite")


def test_overwrite_removes_the_old_run_before_training(photos, tmp_path, monkeypatch, capsys):
    """--overwrite interrupted before its first checkpoint must not leave the old run to be --resumed."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    from tinymae import data
    monkeypatch.setattr(data, "random_crop_flip", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert pretrain.main(tiny_run_args(out, photos, "mlp", "--overwrite")) == 130
    assert not any((out / name).exists() for name in ("checkpoint.npz", "metrics.json", "loss.png"))
    monkeypatch.undo()
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--resume"), capsys)
    assert_one_line(code, err, "no checkpoint at")


def test_a_run_stopped_before_its_results_redraws_them_on_resume(photos, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the last checkpoint but before metrics.json: not finished, and --resume writes what is missing."""
    out = tmp_path / "run"
    monkeypatch.setattr(pretrain, "save_loss_curves", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--epochs", "2"), capsys)
    assert code == 130 and "--resume" in err
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 2 and not (out / "metrics.json").exists()
    monkeypatch.undo()
    metrics = Pretraining.from_argv(tiny_run_args(out, photos, "mlp", "--epochs", "2", "--resume")).run()
    assert metrics is not None and len(metrics["history"]) == 2
    run_id = read_checkpoint(out / "checkpoint.npz")[0]["run_id"]
    assert json.loads((out / "metrics.json").read_text())["run_id"] == run_id
    assert Pretraining.from_argv(tiny_run_args(out, photos, "mlp", "--epochs", "2", "--resume")).run() is None


@pytest.mark.parametrize("flags, named", [(["--embed-dim", "32"], "--embed-dim 32 (the run has 8)"),
                                          (["--arch", "vit"], "--arch vit (the run has mlp)"),
                                          (["--seed", "4"], "--seed 4 (the run has 0)")])
def test_resume_refuses_other_settings(photos, tmp_path, flags, named, capsys):
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    before = (out / "checkpoint.npz").read_bytes()
    code, err, _ = run_main(pretrain.main, ["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2",
                                            *flags], capsys)
    assert_one_line(code, err, named, "Drop those flags")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_resume_from_a_fine_tuned_classifier_is_one_line(run, tmp_path, capsys):
    photos, out = run
    assert finetune.main(ft_args(out, "--out", str(tmp_path / "ft"))) == 0
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tmp_path / "ft" / "classifier.npz", other / "checkpoint.npz")
    code, err, _ = run_main(pretrain.main, ["--data", str(photos), "--out", str(other), "--resume"], capsys)
    assert_one_line(code, err, "holds a fine-tuned classifier", "a pre-training run's checkpoint")


def test_a_photo_replaced_by_one_of_the_same_size_is_noticed_on_resume(run, capsys):
    """The record hashes every photo's bytes: same name, same size, other pixels -> --resume refuses."""
    photos, out = run
    victim = photos / "cat" / "3.jpg"
    before = victim.read_bytes()
    content = bytearray(before)
    content[-3] ^= 0xFF  # the same number of bytes, a different photo
    victim.write_bytes(bytes(content))
    try:
        code, err, _ = run_main(pretrain.main, tiny_run_args(out, photos, "vit", "--epochs", "2", "--resume"), capsys)
    finally:
        victim.write_bytes(before)
    assert_one_line(code, err, "are not the", "fingerprint")


def test_ctrl_c_right_after_the_rename_keeps_the_new_file(tmp_path, monkeypatch):
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(tmp_path / "a.json"), lambda f: f.write(b"{}"))
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_while_decoding_is_never_swallowed(photos, tmp_path, monkeypatch):
    """Ctrl-C lands wherever the main thread is (with progress bars, sometimes in a finaliser that drops it);
    decoding stops at the next photo all the same."""
    from tinymae import photos as photos_module
    real, calls = photos_module.load_image, []

    def signal_on_third(path, size):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the signal, as the terminal sends it
        return real(path, size)

    monkeypatch.setattr(photos_module, "load_image", signal_on_third)
    with pytest.raises(KeyboardInterrupt):
        photos_module.decode(photos_module.find_photos(photos), 54, progress=True, cache_dir=tmp_path / "c")
    assert len(calls) <= 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back


def test_a_full_disk_at_the_end_of_fine_tuning_keeps_the_accuracy(run, tmp_path, monkeypatch, capsys):
    """The result is printed before result.json is written: a full disk costs the file, not the number."""
    photos, out = run
    from tinymae import run as run_module
    real = run_module.Run.write_json

    def disk_full(self, path, value):
        if path.endswith("result.json"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(self, path, value)

    monkeypatch.setattr(run_module.Run, "write_json", disk_full)
    code, err, printed = run_main(finetune.main, ft_args(out, "--out", str(tmp_path / "ft")), capsys)
    assert_one_line(code, err, "No space left on device")
    assert 0.0 <= json.loads(printed.strip().splitlines()[-1])["val_accuracy"] <= 1.0
