"""examples/experiments.py and examples/recipe.py end to end on a tiny synthetic photo set: every run trains,
is probed and fine-tuned, the pages and their figures are written, a second invocation redoes nothing."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import make_photos

ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ("--embed-dim 16 --depth 1 --num-heads 2 --decoder-embed-dim 8 --decoder-depth 1 --decoder-num-heads 2 "
               "--encoder-dims 32,16 --decoder-dims 32 --batch-size 8")


def load_script(name):
    sys.path.insert(0, str(ROOT / "examples"))  # the scripts import their shared helpers (sweep.py)
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
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

    for name in script.PRETRAIN:
        for file in ("metrics.json", "checkpoint.npz", "probe.json"):
            assert (out / name / file).exists(), f"{name}/{file}"
    for seed in script.SEEDS:
        for folder in (f"finetune-N4-seed{seed}", f"finetune-scratch-N4-seed{seed}"):
            assert (out / f"base-seed{seed}" / folder / "result.json").exists(), folder
    # every label: seed 0 alone
    for folder in ("finetune-seed0", "finetune-scratch-seed0"):
        assert (out / "base-seed0" / folder / "result.json").exists(), folder
    assert not (out / "base-seed1" / "finetune-seed1").exists()
    assert (out / "mask0.25" / "finetune-N4-seed0" / "result.json").exists()
    metrics = json.loads((out / "encoder-mask-tokens" / "metrics.json").read_text())
    assert metrics["config"]["encoder_mask_tokens"] and metrics["settings"]["epochs"] == 1

    report = (docs / "results.md").read_text()
    for heading in ("## 1. Fine-tuning", "## 2. Linear probe", "## 3. The ablations at 1 epochs", "## The runs"):
        assert heading in report, heading
    assert "| 4 | 32 |" in report and "| all | 128 |" in report  # both rows of the fine-tuning table
    assert "(one seed; the other rows' seed std is up to" in report and "(seed std up to" in report
    finding = next(line for line in report.splitlines() if "Measured, mask0.25 against the base run" in line)
    assert any(v in finding for v in ("**Reproduced.**", "**Not reproduced: the opposite.**", "**Mixed",
                                      "**Not resolved at this scale**")), finding
    assert "not run yet" not in report
    for png in ("mask_ratio.png", "curves.png", "recon_base.png", "recon_norm-pix.png"):
        assert (docs / png).stat().st_size > 0, png
        assert f"]({png})" in report, png
    for name in script.PRETRAIN:
        assert f"| {name} | " in report, name

    # a second invocation reads everything back
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings) == ["all"] and f"`--part all` took " in report
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier: read back") == len(script.PRETRAIN)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}
    assert json.loads((out / "timings.json").read_text()) == timings  # reading back measured nothing


def test_experiments_refuse_a_run_trained_with_other_settings(tiny_photos, tmp_path):
    script = load_script("experiments")
    out = tmp_path / "runs"
    argv = ["--data", str(tiny_photos), "--out", str(out), "--docs", str(tmp_path / "docs"), "--probe-seeds", "1",
            "--labels", "4", "--model", TINY_MODELS, "--part", "finetune"]
    assert script.main([*argv, "--epochs", "1"]) == 0
    with pytest.raises(SystemExit, match="trained with other settings: epochs 1 \\(now 2\\)"):
        script.main([*argv, "--epochs", "2"])


def test_recipe_writes_its_table(tiny_photos, tmp_path):
    script = load_script("recipe")
    docs = tmp_path / "docs"
    assert script.main(["--data", str(tiny_photos), "--out", str(tmp_path / "runs"), "--docs", str(docs),
                        "--epochs", "1", "--only", "b256-w5", "b128-w5"]) == 0
    page = (docs / "recipe.md").read_text()
    assert "| b256-w5 |" in page and "| b128-w5 |" in page and "| b64-w2.5 | " in page
    assert "not run yet" in page  # the variants not asked for are listed, not invented
