"""Nothing lost, round two: one writer per run folder, outputs that belong to one run, no tracebacks.

Each test reproduces one finding of a careful user's adversarial session (the number in its docstring),
which the code before this file failed; all of them on tiny synthetic photo sets.
"""
import errno
import json
import os
import signal

import pytest
from PIL import Image

from tinymae import data, evaluate, finetune, pretrain, probe
from tinymae.util import datasets, files
from tinymae.util.checkpoint import read_checkpoint
from tinymae.util.files import RunLock, write_atomically

from conftest import make_photos, tiny_run_args, train_tiny


def run_main(main, argv, capsys=None):
    """A command's main as a user runs it -> (exit code, its one-line message or stderr)."""
    try:
        code, message = main(argv), ""
    except SystemExit as e:
        code, message = (e.code if isinstance(e.code, int) else 1), str(e.code)
    if capsys is not None:
        message += capsys.readouterr().err
    return code, message


def assert_one_line(code, message, *expected):
    assert code != 0 and "Traceback" not in message
    assert len([line for line in message.strip().splitlines() if line.strip()]) == 1, message
    for text in expected:
        assert text in message, message


@pytest.fixture
def photos(tmp_path, monkeypatch):
    return make_photos(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny ViT run and its photos (shared: read-only in the tests that use it)."""
    tmp = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        photos = make_photos(tmp, mp)
        train_tiny(tmp / "run", photos, "vit", "--epochs", "1")
        cache = os.environ["TINYMAE_CACHE"]
    return photos, tmp / "run", cache


# ----------------------------------------------------------------------------------------------
# High

def test_overwrite_removes_the_old_run_before_training(photos, tmp_path, monkeypatch):
    """1. --overwrite interrupted before its first checkpoint must not leave the old run to be --resumed."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    monkeypatch.setattr(data, "random_crop_flip", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert pretrain.main(tiny_run_args(out, photos, "mlp", "--overwrite")) == 130
    assert not any((out / name).exists() for name in ("checkpoint.npz", "metrics.json", "loss.png",
                                                      "reconstructions.png"))
    monkeypatch.undo()
    code, message = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--resume"))
    assert_one_line(code, message, "cannot resume", "no checkpoint")


def test_a_second_writer_of_the_same_folder_is_refused(photos, tmp_path):
    """2. Two runs on one --out: the second is refused at once, naming the first."""
    out = tmp_path / "run"
    with RunLock(str(out)):  # another process's run, as far as the folder can tell (flock is per open file)
        code, message = run_main(pretrain.main, tiny_run_args(out, photos, "mlp"))
    assert_one_line(code, message, "being written by another tinymae process", f"pid {os.getpid()}")
    assert not (out / "checkpoint.npz").exists()
    train_tiny(out, photos, "mlp", "--epochs", "1")  # released: the folder is usable again


def test_the_lock_is_released_when_a_run_fails(photos, tmp_path):
    out = tmp_path / "run"
    code, _ = run_main(pretrain.main, tiny_run_args(out, tmp_path / "nowhere", "mlp"))
    assert code != 0
    with RunLock(str(out)):  # no FolderBusy: the failed run let go
        pass


def test_output_file_flags_refuse_existing_files(finished, tmp_path, capsys, monkeypatch):
    """3. probe --json onto a run's metrics.json, finetune --json, evaluate --figure, and an --out holding
    only a loss.png: each refused unless --overwrite."""
    photos, run, cache = finished
    monkeypatch.setenv("TINYMAE_CACHE", cache)
    metrics = run / "metrics.json"
    before = metrics.read_bytes()
    for main, flag in ((probe.main, "--json"), (evaluate.main, "--figure")):
        target = str(metrics) if flag == "--json" else str(run / "loss.png")
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(run / "checkpoint.npz"), "--data", str(photos), flag, target])
        assert exit_info.value.code == 2
        assert "already exists" in capsys.readouterr().err
    assert metrics.read_bytes() == before
    code, message = run_main(finetune.main, ["--checkpoint", str(run / "checkpoint.npz"), "--data", str(photos),
                                             "--json", str(metrics), "--out", str(tmp_path / "ft")])
    assert_one_line(code, message, "--json", "already exists", "--overwrite")
    assert metrics.read_bytes() == before

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "loss.png").write_bytes(b"an old figure")
    code, message = run_main(pretrain.main, tiny_run_args(lonely, photos, "mlp"))
    assert_one_line(code, message, "already holds a run (loss.png)")


# ----------------------------------------------------------------------------------------------
# Medium

def test_a_run_stopped_before_its_results_redraws_them_on_resume(photos, tmp_path, monkeypatch, capsys):
    """4. Ctrl-C after the last checkpoint but before the figures and metrics.json: the run is not finished,
    and --resume writes what is missing instead of saying "nothing to do"."""
    out = tmp_path / "run"
    monkeypatch.setattr(pretrain, "save_loss_curves", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert pretrain.main(tiny_run_args(out, photos, "mlp", "--epochs", "2")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and err.strip()
    assert read_checkpoint(out / "checkpoint.npz")[0]["epoch"] == 2 and not (out / "metrics.json").exists()
    monkeypatch.undo()
    metrics = pretrain.pretrain(*pretrain.parse_args(tiny_run_args(out, photos, "mlp", "--epochs", "2", "--resume")))
    assert metrics is not None and len(metrics["history"]) == 2
    for name in ("metrics.json", "loss.png", "reconstructions.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text())["run_id"] == read_checkpoint(out / "checkpoint.npz")[0]["run_id"]
    assert pretrain.pretrain(*pretrain.parse_args(tiny_run_args(out, photos, "mlp", "--epochs", "2", "--resume"))) \
        is None  # now it is finished


def test_an_interrupt_before_any_checkpoint_says_so(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "random_crop_flip", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert pretrain.main(tiny_run_args(tmp_path / "run", photos, "mlp")) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted") and len(err.splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--warmup-epochs", "inf"], "--warmup-epochs must be a finite number"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--arch", "vit", "--mlp-ratio", "nan"], "--mlp-ratio must be a finite number"),
    (["--arch", "vit", "--mlp-ratio", "inf"], "--mlp-ratio must be a finite number"),
    (["--arch", "vit", "--mlp-ratio", "0.001"], "mlp_ratio must be between 0.25 and 16"),
    (["--img-size", "100000", "--patch-size", "1000"], "img_size must be at most 512"),
    (["--load-size", "5000"], "--load-size must be between 1 and 1024"),
    (["--arch", "vit", "--embed-dim", "4096", "--depth", "64"], "tinymae builds at most"),
    (["--epochs", "10000000"], "out of range"),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_settings_that_would_crash_are_one_line_errors(flags, message, capsys):
    """5. Flags that passed validation and then crashed (OverflowError, MemoryError, killed for memory)."""
    with pytest.raises(SystemExit) as exit_info:
        pretrain.parse_args(["--data", "d", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_resume_from_a_fine_tuned_classifier_is_one_line(finished, tmp_path, monkeypatch):
    """7. --resume pointed at a classifier.npz (copied in as checkpoint.npz): no KeyError traceback."""
    photos, run, cache = finished
    monkeypatch.setenv("TINYMAE_CACHE", cache)
    ft = tmp_path / "ft"
    assert finetune.main(["--checkpoint", str(run / "checkpoint.npz"), "--data", str(photos), "--out", str(ft),
                          "--epochs", "1", "--batch-size", "8", "--no-progress"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoint.npz").write_bytes((ft / "classifier.npz").read_bytes())
    code, message = run_main(pretrain.main, ["--data", str(photos), "--out", str(other), "--resume"])
    assert_one_line(code, message, "holds a fine-tuned classifier", "not a pre-training run")


def test_a_full_disk_at_the_end_of_fine_tuning_keeps_the_accuracy(finished, tmp_path, monkeypatch, capsys):
    """8. The result is printed before any file is written: a full disk costs the files, not the number."""
    photos, run, cache = finished
    monkeypatch.setenv("TINYMAE_CACHE", cache)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "classifier.npz")

    monkeypatch.setattr(finetune, "save_checkpoint", disk_full)
    capsys.readouterr()
    code, message = run_main(finetune.main, ["--checkpoint", str(run / "checkpoint.npz"), "--data", str(photos),
                                             "--out", str(tmp_path / "ft"), "--epochs", "1", "--batch-size", "8",
                                             "--no-progress"])
    printed = capsys.readouterr().out
    assert code != 0 and "No space left on device" in message and "accuracy above" in message
    result = json.loads(printed.strip().splitlines()[-1])
    assert 0.0 <= result["val_accuracy"] <= 1.0


def test_a_photo_replaced_by_one_of_the_same_size_is_noticed(photos, tmp_path):
    """9. The fingerprint hashes the photos' bytes: same name, same size, other pixels -> --resume refuses."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    victim = photos / "cat" / "3.jpg"
    content = bytearray(victim.read_bytes())
    content[-3] ^= 0xFF  # the same number of bytes, a different photo
    victim.write_bytes(bytes(content))
    code, message = run_main(pretrain.main, tiny_run_args(out, photos, "mlp", "--epochs", "2", "--resume"))
    assert_one_line(code, message, "not the ones", "fingerprint")


def test_runs_written_before_the_contents_were_hashed_still_resume(photos, tmp_path):
    """(9.) A checkpoint that recorded the older size-based fingerprint is compared with that kind."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    header, arrays = read_checkpoint(out / "checkpoint.npz")
    dataset = datasets.load_dataset(photos, size=54, progress=False)
    old = {**header["data"], "fingerprint": datasets.fingerprint(dataset, "sizes")}
    del old["fingerprint_kind"]
    assert datasets.same_photos(old, dataset)[0] and not datasets.same_photos(
        {**old, "fingerprint_kind": "contents"}, dataset)[0]


# ----------------------------------------------------------------------------------------------
# Low

@pytest.mark.parametrize("flags, named", [(["--embed-dim", "32"], "--embed-dim 32 (the run has 8)"),
                                          (["--arch", "vit"], "--arch vit (the run has mlp)"),
                                          (["--seed", "4"], "--seed 4 (the run has 0)")])
def test_resume_refuses_other_settings(photos, tmp_path, flags, named):
    """11. The README says --resume refuses other model settings; it used to print "ignoring" and go on."""
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    before = (out / "checkpoint.npz").read_bytes()
    code, message = run_main(pretrain.main, ["--data", str(photos), "--out", str(out), "--resume", "--epochs", "2",
                                             *flags])
    assert_one_line(code, message, named, "Drop those flags")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_ctrl_c_right_after_the_rename_keeps_the_new_file(tmp_path, monkeypatch):
    """12. Interrupted just after os.replace: the interrupt goes on, not a FileNotFoundError about disk space."""
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
    """13. Ctrl-C lands wherever the main thread is (with progress bars, sometimes in a finaliser that
    drops it); decoding stops at the next photo all the same."""
    real, calls = datasets.load_image, []

    def signal_on_third(path, size):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the signal, as the terminal sends it
        return real(path, size)

    monkeypatch.setattr(datasets, "load_image", signal_on_third)
    with pytest.raises(KeyboardInterrupt):
        datasets.load_dataset(photos, size=54, cache_dir=tmp_path / "cache", progress=True)
    assert len(calls) <= 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back


def test_messages_name_the_flag_and_the_reason(photos, tmp_path, capsys):
    """14. --json under a file names --json (not --out); a huge PNG is skipped as too large, not as too small."""
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", "c.npz", "--data", "d", "--json", str(tmp_path / "a-file" / "x.json")])
    err = capsys.readouterr().err
    assert "--json" in err and "--out" not in err

    huge = photos / "dog" / "huge.png"
    Image.new("L", (12000, 12000)).save(huge)
    with pytest.warns(UserWarning, match=r"huge\.png \(larger than Pillow's safety limit"):
        datasets.load_dataset(photos, size=54, cache_dir=tmp_path / "cache", progress=False)


def test_the_research_figures_refuse_an_out_that_is_a_file(finished, tmp_path, monkeypatch):
    """6. research/figures.py --out <file>: one line."""
    import importlib.util
    import pathlib
    photos, run, cache = finished
    monkeypatch.setenv("TINYMAE_CACHE", cache)
    path = pathlib.Path(__file__).parent.parent / "research" / "figures.py"
    spec = importlib.util.spec_from_file_location("figures_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--checkpoint", str(run / "checkpoint.npz"), "--data", str(photos), "--out",
                     str(tmp_path / "a-file")])
    assert str(exit_info.value.code).startswith("error: --out") and "is a file" in str(exit_info.value.code)
