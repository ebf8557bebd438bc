"""The benchmark scripts (benchmarks/), run as a user runs them, on tiny settings.

  * every script's --help names it as it is run, and a bad flag is one line with exit status 2;
  * bench_step.py checks tinymae against the PyTorch twin (PASS), times the contestants, and prints what each piece
    of the fast path buys on its own, each piece built as it says (piece_path); --no-torch and --profile work;
  * train_torch.py refuses an existing --json unless --overwrite, before any work (defect 6), and its run is
    tinymae's run: the same photos, batches, masks and weights give the same losses;
  * bench_run.py shows a failed run's whole error output, not only its last line (defect 21);
  * bench_sweep.py's estimate of the whole page adds the jobs' minutes, and takes a stage's longest on a cluster.
The ones that need PyTorch are skipped without it.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_photos

ROOT = Path(__file__).resolve().parents[1]
TINY_STEP = ["--arch", "vit", "--batch-size", "4", "--repeats", "1", "--block", "2", "--settle", "0", "--warmup", "1"]


def script(name, *args):
    """Run benchmarks/<name>.py with these arguments, as a user does (the environment as the test has set it)."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ), timeout=900)


def benchmark_module(name):
    """benchmarks/<name>.py as a module (its sibling modules loaded first, as the script finds them)."""
    for each in ("common", name):
        if each not in sys.modules:
            spec = importlib.util.spec_from_file_location(each, ROOT / "benchmarks" / f"{each}.py")
            sys.modules[each] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(sys.modules[each])
    return sys.modules[name]


@pytest.mark.parametrize("name", ["bench_step", "bench_run", "bench_sweep", "train_torch"])
def test_every_benchmark_script_has_a_help_that_names_it_as_it_is_run(name):
    done = script(name, "--help")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"usage: python benchmarks/{name}.py")


@pytest.mark.parametrize("name, flag", [("bench_step", "--repeats"), ("bench_run", "--rounds"),
                                        ("train_torch", "--epochs"), ("bench_sweep", "--per-class")])
def test_a_bad_flag_is_one_line_and_exit_status_2(name, flag):
    done = script(name, flag, "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: argument {flag}: must be at least {4 if name == 'bench_sweep' else 1}, got 0 " \
                          "(see --help)\n"


def test_bench_step_passes_the_check_against_torch_and_prints_what_each_piece_of_the_fast_path_buys():
    pytest.importorskip("torch")
    done = script("bench_step", *TINY_STEP)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("-> PASS") == 2  # tinymae fast and tinymae reference, each against torch
    for row in ("tinymae fast", "tinymae reference", "torch", "speed tinymae/torch", "speed fast/reference"):
        assert f"vit/4       {row} " in out
    table = out[out.index("what each piece of the fast path buys on its own"):].splitlines()
    assert table[1].split() == ["piece", "ms/step", "speed", "over", "the", "reference", "what"]
    rows = [line.split() for line in table[2:7]]
    assert [row[0] for row in rows] == ["reference", "DataParallel", "FlatAdamW", "keep_freed_memory", "fast"]
    assert rows[0][2] == "1.00" and all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    assert all(row[3].startswith("(IQR") for row in rows[1:])
    assert "training loop (tinymae fast, engine.train_one_epoch)" in out


def test_bench_step_times_tinymae_alone_without_torch_and_profiles_a_step():
    done = script("bench_step", *TINY_STEP, "--no-torch", "--no-pieces")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vit/4       speed fast/reference " in done.stdout and "PASS" not in done.stdout
    assert "vit/4       torch" not in done.stdout and "what each piece" not in done.stdout
    done = script("bench_step", "--profile", "--no-torch", "--arch", "vit", "--batch-size", "2", "--block", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ms per step under cProfile" in done.stdout and "layers.linear_forward" in done.stdout


def test_each_piece_is_the_reference_with_that_piece_alone_in_place():
    """The pieces table compares what it says it compares: one piece over engine.Step + the reference AdamW."""
    from tinymae import fast
    from tinymae.engine import Step
    from tinymae.fast import cpu, cuda
    from tinymae.fast.optim import FlatAdamW
    from tinymae.model import build_model
    from tinymae.model.optim import AdamW

    bench_step = benchmark_module("bench_step")
    for piece in (*bench_step.CPU_PIECES, *bench_step.GPU_PIECES):
        model = build_model("vit", {"embed_dim": 8, "depth": 1, "num_heads": 2, "decoder_embed_dim": 8,
                                    "decoder_depth": 1, "decoder_num_heads": 2})
        path = bench_step.piece_path(piece, model, threads=2)
        if piece == "fast":
            assert isinstance(path.step, cpu.DataParallel) and path.AdamW is fast.training_step(model).AdamW
            continue
        assert type(path.step) is (cpu.DataParallel if piece == "DataParallel" else Step)
        optimizer = path.AdamW(model.params, lr=1e-3)
        assert type(optimizer) is (FlatAdamW if "AdamW" in piece and piece != "reference" else AdamW)
        assert getattr(optimizer, "fused", False) == (piece == "fused_AdamW")
        assert (model.block is cuda.BLOCK) == (piece == "fused_block")
        assert path.resident == (piece == "resident_photos")
        path.step.close()


def test_train_torch_refuses_an_existing_json_without_overwrite_before_any_work_defect_6(tmp_path):
    existing = tmp_path / "torch.json"
    existing.write_text('{"kept": true}')
    done = script("train_torch", "--data", tmp_path / "no photos here", "--epochs", "1", "--json", existing)
    assert done.returncode == 1 and done.stdout == ""  # refused before the photos are even looked for
    assert done.stderr == f"error: --json {existing} already exists; choose another path, or pass --overwrite to " \
                          "replace it\n"
    assert existing.read_text() == '{"kept": true}'


def test_train_torch_overwrites_its_json_with_overwrite_and_trains_as_tinymae_does(tmp_path, monkeypatch):
    """With --overwrite the result replaces the file, and the run is tinymae's own on the same flags: the same photos,
    split, weights, batches and masks give the same training and validation losses (to float32 rounding)."""
    pytest.importorskip("torch")
    from tinymae.pretrain import Pretraining

    photos = make_photos(tmp_path, monkeypatch)
    existing = tmp_path / "torch.json"
    existing.write_text("{}")
    flags = ["--data", photos, "--epochs", "1", "--batch-size", "8"]
    done = script("train_torch", *flags, "--json", existing, "--overwrite")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(existing.read_text())
    assert {"ratio_to_mean_patch", "wall_time_s", "val_masked_mse", "history"} <= set(result)
    ours = Pretraining.from_argv([*map(str, flags), "--arch", "vit", "--out", str(tmp_path / "run"), "--kernels",
                                  "reference", "--no-progress", "--figure-images", "0"]).run()
    for key in ("train_loss", "val_loss", "val_masked_mse"):
        assert result["history"][0][key] == pytest.approx(ours["history"][0][key], rel=1e-4), key
    assert result["ratio_to_mean_patch"] == pytest.approx(ours["final_validation"]["ratio_to_mean_patch"], rel=1e-4)


def test_bench_run_shows_the_whole_error_output_of_a_run_that_fails_defect_21(tmp_path, monkeypatch):
    """A child's error output of several lines (here a warning naming the unreadable files, then the error) is shown
    whole, then one line says which run failed."""
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    for name in ("cat", "dog"):
        (tmp_path / "broken" / name).mkdir(parents=True)
        (tmp_path / "broken" / name / "1.jpg").write_bytes(b"not a photo")
    done = script("bench_run", "--data", tmp_path / "broken", "--epochs", "1", "--rounds", "1")
    assert done.returncode == 1 and "round 1" not in done.stdout
    err = done.stderr.splitlines()
    assert err[0] == "the tinymae run failed; its error output:"
    assert any("UserWarning: skipped 2 of 2 photo files" in line for line in err)  # the child's first line
    assert any(line.strip().startswith("error: none of the 2 photo files") for line in err)  # and its last
    assert err[-1] == "error: the tinymae run failed with exit status 1 (its error output is above)"


def test_bench_sweep_estimates_the_whole_page_from_a_ledger(tmp_path):
    """Every job of the plan measured at one minute (a pre-training at 50 epochs at ten, none at 400): one at a
    time the minutes add up, two at a time they are divided by the ratio, and a cluster waits for the longest job
    of each of the two stages (the pre-trainings, then what they feed); a 400-epoch one counts 8 times ten."""
    plan = subprocess.run([sys.executable, str(ROOT / "research" / "experiments.py"), "--list-jobs"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    jobs = [json.loads(line) for line in plan.splitlines()]
    ledger = {j["id"]: {"result": {"minutes": 10.0 if j["kind"] == "pretrain" else 1.0}} for j in jobs
              if "-ep400-" not in j["id"]}
    (tmp_path / "results.json").write_text(json.dumps(ledger))
    done = script("bench_sweep", "--ledger", tmp_path / "results.json", "--ratio", "2")
    assert done.returncode == 0, done.stderr
    total = sum(10.0 if j["kind"] == "pretrain" else 1.0 for j in jobs if "-ep400-" not in j["id"])
    total += 80.0 * sum(j["kind"] == "pretrain" and "-ep400-" in j["id"] for j in jobs)
    total += 1.0 * sum(j["kind"] != "pretrain" and "-ep400-" in j["id"] for j in jobs)
    assert f"--jobs 1: {total / 60:.1f} h" in done.stdout and f"--jobs 2: {total / 120:.1f} h" in done.stdout
    assert f"(the widest stage): {81 / 60:.1f} h" in done.stdout
    assert f"{len(jobs)} jobs, {len(ledger)} measured" in done.stdout and "0 without a like" in done.stdout
