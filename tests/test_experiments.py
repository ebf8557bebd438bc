"""research/experiments.py and research/recipe.py end to end on a tiny synthetic photo set: every run trains,
is probed and fine-tuned, the pages and their figures are written, a second invocation redoes nothing, and
bad input is one line."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import make_photos

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ("--embed-dim 16 --depth 2 --num-heads 2 --decoder-embed-dim 8 --decoder-depth 1 --decoder-num-heads 2 "
               "--encoder-dims 32,16 --decoder-dims 32 --batch-size 8")


def load_script(name):
    """A research script as a module; its folder on sys.path, as when it is run (it imports runs.py)."""
    sys.path.insert(0, str(ROOT / "research"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "research" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_photos(tmp_path, monkeypatch):
    return make_photos(tmp_path, monkeypatch, per_class=24)  # 38 training / 10 validation images


def test_experiments_write_the_report_and_redo_nothing(tiny_photos, tmp_path, capsys):
    script = load_script("experiments")
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["--data", str(tiny_photos), "--out", str(out), "--docs", str(docs), "--epochs", "1", "--probe-seeds", "1",
            "--labels", "4", "all", "--model", TINY_MODELS]
    assert script.main(argv) == 0

    jobs = script.plan(script.parse_args(argv))
    for _, kind, run, *_ in jobs:
        assert (out / run / {"pretrain": "metrics.json", "probe": "probe.json", "finetune": "checkpoint.npz"}[kind]).exists()
    for folder in ("finetune-N4-seed1", "finetune-scratch-N4-seed1", "finetune-seed2", "finetune-scratch-seed2"):
        assert (out / "base-seed1" / folder / "result.json").exists() or folder.endswith("seed2")
    for folder in ("finetune-blocks0-seed0", "finetune-blocks2-seed0", "finetune-droppath0.1-seed1", "finetune-seed2",
                   "finetune-mixup0.8-droppath0.1-seed2"):
        assert (out / "base-ep8-seed0" / folder / "result.json").exists(), folder
    metrics = json.loads((out / "decoder-width32-seed2" / "metrics.json").read_text())
    assert metrics["config"]["decoder_embed_dim"] == 32 and metrics["settings"]["epochs"] == 1  # the variant wins
    assert json.loads((out / "base-ep4-seed0" / "metrics.json").read_text())["settings"]["epochs"] == 4
    normpix = json.loads((out / "norm-pix-ep8-seed0" / "metrics.json").read_text())
    assert normpix["settings"]["epochs"] == 8 and normpix["config"]["norm_pix_loss"]
    assert (out / "base-seed1" / "finetune-scratch-mixup0.8-droppath0.1-seed1" / "result.json").exists()

    report = (docs / "results.md").read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Longer pre-training", "## 3. Fine-tuning only the last blocks",
                    "## 4. With every label", "## 5. Linear probe", "## 6. The ablations at 1 epochs", "## The runs"):
        assert heading in report, heading
    assert "sample standard deviation" in report and "2·√(s₁²/n₁ + s₂²/n₂)" in report  # the one rule, stated
    assert "| 4 | " in report and "| all | " in report and "| 8 | " in report  # labels rows, the 8x schedule
    finding = next(line for line in report.splitlines() if line.startswith("- Table 1a: 4 decoder blocks"))
    assert any(v in finding for v in ("Reproduced.", "The opposite", "Mixed", "Not resolved")), finding
    normpix_line = next(line for line in report.splitlines() if line.startswith("The normalised-pixel target"))
    assert "(fine-tuning seeds 0-2); against the pixel target with the same recipe: " in normpix_line, normpix_line
    assert any(v in normpix_line for v in ("as the paper", "the opposite of the paper", "within the spread"))
    assert "not run yet" not in report
    for png in ("mask_ratio.png", "schedule.png", "partial.png", "curves.png", "recon_base.png", "recon_norm-pix.png"):
        assert (docs / png).stat().st_size > 0, png
        assert f"]({png})" in report, png

    # a second invocation reads everything back, trains nothing and rewrites the same page
    def written():
        return {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "step_times.json"}

    before = written()
    assert script.main(argv) == 0
    assert written() == before

    # a truncated probe.json (a write cut short by an older version) is redone, not a failure on every rerun
    probe = out / "mask0.5-seed0" / "probe.json"
    probe.write_text(probe.read_text()[:20])
    assert script.main(argv) == 0
    assert json.loads(probe.read_text())["results"]
    after = written()
    del before[probe], after[probe]
    assert after == before

    # every finding says over how many seeds it was measured; a verdict drawn from one seed says so
    assert "Measured (3 seeds)" in finding
    for seed in (1, 2):
        (out / f"mask0.9-seed{seed}").rename(tmp_path / f"mask0.9-seed{seed}")
    assert script.main([*argv, "--part", "report"]) == 0
    finding = next(line for line in (docs / "results.md").read_text().splitlines() if line.startswith("- Figure 5: 90%"))
    assert "Measured (1 seed)" in finding
    assert ("one seed so far: seeds 1 and 2 not run yet" in finding) != ("Not resolved" in finding), finding


def test_the_page_shows_what_has_not_run_yet(tiny_photos, tmp_path):
    script = load_script("experiments")
    docs = tmp_path / "docs"
    argv = ["--data", str(tiny_photos), "--out", str(tmp_path / "runs"), "--docs", str(docs), "--epochs", "1",
            "--probe-seeds", "1", "--labels", "4", "all", "--model", TINY_MODELS]
    assert script.main([*argv, "--part", "report"]) == 0  # nothing trained: the page says so, no number invented
    report = (docs / "results.md").read_text()
    assert "| base | not run yet |" in report and "| the default recipe | — |" in report
    assert "| all | — | — | — |" in report  # the fine-tuning table's every-label row: no number invented
    assert "mixup 0.8: fine-tuning seeds 0, 1 and 2 not run yet." in report


def test_experiments_refuse_a_run_trained_with_other_settings(tiny_photos, tmp_path, capsys):
    script = load_script("experiments")
    out = tmp_path / "runs"
    argv = ["--data", str(tiny_photos), "--out", str(out), "--docs", str(tmp_path / "docs"), "--probe-seeds", "1",
            "--labels", "4", "all", "--model", TINY_MODELS, "--no-report"]
    first = script.parse_args([*argv, "--epochs", "1"])
    script.run_jobs(script.plan(first)[:1], first)  # base-seed0, pre-trained for 1 epoch
    with pytest.raises(SystemExit, match="trained with other settings: epochs 1 \\(now 2\\)"):
        script.main([*argv, "--epochs", "2", "--part", "finetune"])


def test_more_labels_than_photos_are_refused_before_any_training(tiny_photos, tmp_path):
    script = load_script("experiments")
    with pytest.raises(SystemExit, match="--labels 1000 .* 19 training photos of each class"):
        script.main(["--data", str(tiny_photos), "--out", str(tmp_path / "runs"), "--labels", "1000", "all"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--probe-seeds", "0"], "--probe-seeds must be at least 1"),
    (["--per-class", "0"], "--per-class must be at least 1"),
    (["--labels", "foo"], "--labels takes whole numbers"),
    (["--labels", "50"], "then 'all' last"),
    (["--labels", "0", "all"], "then 'all' last"),
    (["--model", "embed-dim 3"], "--model takes flag-value pairs"),
    (["--model", "--bogus 3"], "--bogus is not a setting"),
    (["--model", "--embed-dim x"], "is not a int"),
    (["--out", "a-file"], "--out a-file is a file"),
    (["--epochs", "two"], "invalid int value"),
])
def test_bad_flags_are_one_line_errors(flags, message, tmp_path, monkeypatch, capsys):
    script = load_script("experiments")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--data", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_a_missing_data_folder_is_one_line(tmp_path, capsys):
    script = load_script("experiments")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "runs"), "--part", "finetune"])
    assert str(exit_info.value.code).startswith("error: ") and "nowhere" in str(exit_info.value.code)


def test_recipe_writes_its_table(tiny_photos, tmp_path):
    script = load_script("recipe")
    docs = tmp_path / "docs"
    assert script.main(["--data", str(tiny_photos), "--out", str(tmp_path / "runs"), "--docs", str(docs),
                        "--epochs", "1", "--only", "b256-w5", "b128-w5"]) == 0
    page = (docs / "recipe.md").read_text()
    assert "| b256-w5 |" in page and "| b128-w5 |" in page and "| b64-w2.5 | " in page
    assert "not run yet" in page  # the variants not asked for are listed, not invented
