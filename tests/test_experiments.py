"""The research sweep (research/experiments.py): the plan as jobs, the engines that run them (N at a time here, a
Slurm cluster through submitit, tested against a small fake Slurm), what a rerun does, and the report it writes
from results.json. On tiny models and tiny photo sets: the numbers mean nothing, the plumbing is what is tested."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinymae.errors import TinymaeError

from conftest import make_photos

RESEARCH = Path(__file__).parent.parent / "research"
FAKE_SLURM = Path(__file__).parent / "fake_slurm"
TINY = ("--embed-dim 8 --depth 1 --num-heads 2 --decoder-embed-dim 8 --decoder-depth 1 --decoder-num-heads 2 "
        "--encoder-dims 16 --decoder-dims 16 --batch-size 8")


def sweep(photos, out, *extra, env=None, check=True):
    """python research/experiments.py on the tiny plan -> the finished process (its output in .stdout)."""
    argv = [sys.executable, str(RESEARCH / "experiments.py"), "--data", str(photos), "--out", str(out), "--epochs", "1",
            "--labels", "2", "all", "--probe-seeds", "1", "--model", TINY, *extra]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=RESEARCH)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        photos = make_photos(tmp, mp, per_class=12)
        os.environ["TINYMAE_CACHE"] = str(tmp / "cache")  # the sweeps below run in subprocesses: they inherit it
    yield photos
    os.environ.pop("TINYMAE_CACHE", None)


def jobs_of(photos, out, *extra):
    return [json.loads(line) for line in sweep(photos, out, "--list-jobs", *extra).stdout.splitlines()]


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file() and "logs" not in p.parts}


def numbers(page):
    """The cells of a page's tables, without the times and the provenance (which vary from run to run)."""
    cells, timed = [], None
    for row in Path(page).read_text().splitlines():
        if not row.startswith("|"):
            timed = None  # a table ended
            continue
        row = [c.strip() for c in row.split("|")[1:-1]]
        if timed is None:  # a header: which of its columns hold times and dates
            timed = [i for i, c in enumerate(row) if "min" in c or "s / epoch" in c or c == "measured"]
        cells.append([c for i, c in enumerate(row) if i not in timed])
    return cells


def test_the_job_list_is_the_plan_and_stable(photos, tmp_path):
    """--list-jobs: one JSON line per job, a stable id, its kind, folder, done-file and the ids it needs; the same
    arguments give the same lines, and a probe or a fine-tuning needs its pre-training."""
    first, again = jobs_of(photos, tmp_path), jobs_of(photos, tmp_path)
    assert first == again and len(first) > 150
    ids = [job["id"] for job in first]
    assert len(set(ids)) == len(ids)
    kinds = {job["kind"] for job in first}
    assert kinds == {"pretrain", "probe", "finetune", "torch"}
    by_id = {job["id"]: job for job in first}
    for job in first:
        assert set(job) == {"id", "kind", "part", "folder", "done", "after"}
        if job["kind"] in ("probe", "finetune"):
            (dep,) = job["after"]
            assert by_id[dep]["kind"] == "pretrain" and job["folder"].startswith(by_id[dep]["folder"])
        assert ids.index(job["id"]) > max([ids.index(d) for d in job["after"]], default=-1)  # dependencies first
    assert {"finetune/base-ep8-seed1/finetune-seed1", "finetune/norm-pix-ep8-seed2/finetune-mixup0.8-droppath0.1-seed2",
            "pretrain/block-seed2", "pretrain/grid-seed0", "pretrain/block-mask0.5-seed1"} <= set(ids)


def test_run_job_refuses_a_job_whose_dependency_is_not_done(photos, tmp_path):
    done = sweep(photos, tmp_path, "--run-job", "probe/base-seed0", check=False)
    assert done.returncode == 1 and done.stderr.strip() == \
        "error: probe/base-seed0 needs pretrain/base-seed0 first, which is not done"
    done = sweep(photos, tmp_path, "--run-job", "nothing/like-this", check=False)
    assert done.returncode == 1 and "--list-jobs lists them" in done.stderr


def test_a_part_brings_the_jobs_it_needs_from_other_parts(photos, tmp_path):
    """--part every-label's fine-tunings need pre-trainings planned in other parts: the part lists them too (and
    --run-job of such a job refuses in one line until they are done, instead of a KeyError)."""
    for part in ("partial", "every-label"):
        listed = jobs_of(photos, tmp_path, "--part", part)
        ids = [job["id"] for job in listed]
        assert all(dep in ids[:ids.index(job["id"])] for job in listed for dep in job["after"]), part
        assert any(job["part"] == part for job in listed) and "pretrain/base-ep8-seed0" in ids
    done = sweep(photos, tmp_path, "--part", "partial", "--run-job", "finetune/base-seed0/finetune-blocks0-seed0",
                 check=False)
    assert done.returncode == 1 and done.stderr.strip() == \
        "error: finetune/base-seed0/finetune-blocks0-seed0 needs pretrain/base-seed0 first, which is not done"


def test_more_jobs_at_a_time_than_cores_share_the_cores(monkeypatch):
    """--jobs 3 on 2 cores crashed the driver (an empty core list to pin a job to): each job gets its share, at
    least one core."""
    monkeypatch.syspath_prepend(str(RESEARCH))
    from experiments import core_slots
    assert core_slots([0, 1], 3) == [[0], [1], [0]]
    assert core_slots([0, 1, 2, 3], 2) == [[0, 1], [2, 3]] and core_slots([5], 1) == [[5]]


def test_a_boolean_model_setting_takes_true_or_false(monkeypatch):
    """--model "--norm-pix-loss False" gave True (bool("False")); a word that is neither is one line."""
    monkeypatch.syspath_prepend(str(RESEARCH))
    from plan import model_flags
    assert model_flags("--norm-pix-loss False --encoder-mask-tokens true") == {"norm_pix_loss": False,
                                                                               "encoder_mask_tokens": True}
    with pytest.raises(TinymaeError, match="--norm-pix-loss 'maybe' is not true or false"):
        model_flags("--norm-pix-loss maybe")


@pytest.fixture(scope="module")
def one_at_a_time(photos, tmp_path_factory):
    """The finetune part of the tiny plan, one job at a time."""
    out = tmp_path_factory.mktemp("jobs1")
    started = time.perf_counter()
    done = sweep(photos, out, "--part", "finetune", "--jobs", "1")
    return out, done, time.perf_counter() - started


def test_two_jobs_at_a_time_write_the_same_page_as_one(photos, one_at_a_time, tmp_path):
    out1, _, _ = one_at_a_time
    done = sweep(photos, tmp_path, "--part", "finetune", "--jobs", "2")
    assert "2 running" in done.stdout  # two at a time, with progress
    assert numbers(out1 / "report" / "results.md") == numbers(tmp_path / "report" / "results.md")
    one, two = (json.loads((o / "report" / "results.json").read_text()) for o in (out1, tmp_path))
    assert set(one) == set(two) and len(one) == 18
    strip = lambda entry: {k: v for k, v in entry["result"].items() if k not in ("minutes", "epoch_s")}  # noqa: E731
    assert all(strip(one[j]) == strip(two[j]) for j in one)
    assert all(entry["provenance"]["photos"] == one[j]["provenance"]["photos"] for j, entry in two.items())


def test_a_rerun_starts_no_job_and_writes_no_run_file(photos, one_at_a_time):
    out, _, _ = one_at_a_time
    before = mtimes(out)
    done = sweep(photos, out, "--part", "finetune", "--no-report")
    assert "to run" not in done.stdout
    assert {p: t for p, t in mtimes(out).items() if "report" not in p.parts} == \
        {p: t for p, t in before.items() if "report" not in p.parts}
    assert sweep(photos, out, "--run-job", "pretrain/base-seed0").stdout.strip() == "pretrain/base-seed0: done already"


def test_a_killed_driver_loses_nothing_and_redoes_nothing_finished(photos, tmp_path):
    """SIGKILL the driver mid-sweep: its jobs end with it, the finished ones stay finished, a rerun does only the
    rest and resumes an interrupted pre-training from its checkpoint."""
    argv = [sys.executable, str(RESEARCH / "experiments.py"), "--data", str(photos), "--out", str(tmp_path),
            "--epochs", "1", "--labels", "2", "all", "--probe-seeds", "1", "--model", TINY.replace("--batch-size 8", "")
            + " --batch-size 2", "--part", "schedule", "--no-report"]
    driver = subprocess.Popen(argv, cwd=RESEARCH, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "base-ep8-seed0" / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    time.sleep(1)  # the jobs get SIGTERM with their driver's end
    finished = {p: t for p, t in mtimes(tmp_path).items() if p.name in ("metrics.json", "result.json", "probe.json")}
    done = subprocess.run(argv, cwd=RESEARCH, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for p, t in finished.items():
        assert p.stat().st_mtime_ns == t, f"{p} was redone"
    logs = "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "resuming" in logs or (tmp_path / "base-ep8-seed0" / "metrics.json").stat().st_mtime_ns in finished.values()
    assert (tmp_path / "base-ep8-seed0" / "finetune-seed0" / "result.json").exists()


def test_a_failing_job_is_retried_named_and_rerun_alone_next_time(photos, tmp_path):
    """A job forced to fail (its folder's lock held by this process) is retried once; the others go on; the
    driver ends non-zero naming it and its log; the next run runs it alone."""
    from tinymae.util.files import RunLock
    sweep(photos, tmp_path, "--part", "schedule", "--no-report", "--run-job", "pretrain/base-ep2-seed0")
    with RunLock(str(tmp_path / "base-ep2-seed0" / "finetune-seed0")):
        done = sweep(photos, tmp_path, "--part", "schedule", "--no-report", check=False)
    assert done.returncode == 1
    assert "finetune/base-ep2-seed0/finetune-seed0 failed" in done.stdout and "retrying it once" in done.stdout
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: 1 jobs failed: finetune/base-ep2-seed0/finetune-seed0 (") and ".log)" in message
    assert (tmp_path / "base-ep8-seed0" / "metrics.json").exists()  # the others went on
    again = sweep(photos, tmp_path, "--part", "schedule", "--no-report")
    assert "1 to run" in again.stdout


def test_a_second_driver_on_the_same_out_stops_naming_the_first(photos, tmp_path):
    from tinymae.util.files import RunLock
    with RunLock(str(tmp_path)):
        done = sweep(photos, tmp_path, "--part", "schedule", check=False)
    assert done.returncode == 1 and f"pid {os.getpid()}" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_finished_runs_on_other_photos_are_refused_not_reused(photos, one_at_a_time, tmp_path, monkeypatch):
    """The same sweep with --data B after --data A retrained nothing and wrote A's numbers under B's name."""
    out, _, _ = one_at_a_time
    other = make_photos(tmp_path, monkeypatch, per_class=12, seed=5)
    done = sweep(other, out, "--part", "finetune", check=False, env={"TINYMAE_CACHE": str(tmp_path / "cache")})
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "was trained on other photos" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("model, message", [("--patch-size 7", "not a multiple of --patch-size"),
                                            ("--img-size 0", "--img-size must be in"),
                                            ("--img-size 1024", "--img-size must be in [1, 512]"),
                                            ("--depth", "flag-value pairs"), ("--seed 3", "not a setting")])
def test_an_impossible_model_is_one_line_before_any_photo_is_decoded(photos, tmp_path, model, message):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(RESEARCH / "experiments.py"), "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "out"), f"--model={model}"], capture_output=True, text=True,
                          cwd=RESEARCH)
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and time.perf_counter() - started < 30


def test_the_report_goes_to_a_folder_of_its_own_and_never_replaces_a_page_with_less(photos, one_at_a_time, tmp_path):
    """--part report used to delete docs/'s figures and rewrite docs/results.md with "?": by default the report is
    written under --out; a page with more numbers than the new one is kept; results.json keeps what it had."""
    out, _, _ = one_at_a_time
    assert (out / "report" / "results.md").exists() and (out / "report" / "results.json").exists()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("| a | 1 | 2 | 3 |\n" * 500)  # a page with far more numbers
    empty = tmp_path / "empty-out"
    done = sweep(photos, empty, "--part", "finetune", "--report-only", "--docs", str(docs), check=False)
    assert done.returncode == 1 and "it is kept" in done.stderr
    assert (docs / "results.md").read_text() == "| a | 1 | 2 | 3 |\n" * 500
    # results.json keeps every result, even when the run folders are gone: the page is written from it
    (docs / "results.md").unlink()
    sweep(photos, out, "--part", "finetune", "--report-only", "--docs", str(docs))
    before = numbers(docs / "results.md")
    sweep(photos, empty, "--part", "finetune", "--report-only", "--docs", str(docs))
    assert numbers(docs / "results.md") == before
    assert len(json.loads((docs / "results.json").read_text())) == 18


def test_the_page_states_its_rule_once_and_reads_every_comparison_by_it(one_at_a_time):
    out, _, _ = one_at_a_time
    page = (out / "report" / "results.md").read_text()
    assert page.count("Bonferroni") == 1 and "standard errors" in page
    m = int(page.split("divided among the ")[1].split(" comparisons")[0])
    assert m > 30
    assert "## 4. With every label" in page and "pre-training seeds" in page
    assert "block-wise masking" in page and "grid masking" in page


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="the Slurm engine's tests need submitit (pip install -e '.[slurm]')")
def test_the_slurm_engine_runs_the_plan_as_job_arrays_through_a_fake_slurm(photos, tmp_path):
    """--engine slurm on a fake Slurm (tests/fake_slurm): one array per stage, each later stage depending on the one
    before; the time limit in every submitted script; job ids of the array form; a task pre-empted mid-way (USR2)
    is requeued and resumes from its checkpoint; the same page as the local engine's."""
    env = {"PATH": f"{FAKE_SLURM}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
           "FAKE_SLURM_DIR": str(tmp_path / "slurm-state"),
           "FAKE_SLURM_PREEMPT_FILE": str(tmp_path / "out" / "base-ep8-seed0" / "checkpoint.npz")}
    model = TINY.replace("--batch-size 8", "--batch-size 2")
    argv = [sys.executable, str(RESEARCH / "experiments.py"), "--data", str(photos), "--out", str(tmp_path / "out"),
            "--epochs", "1", "--labels", "2", "all", "--probe-seeds", "1", "--model", model, "--part", "schedule",
            "--engine", "slurm", "--slurm-time", "30", "--slurm-parallel", "2"]
    done = subprocess.run(argv, cwd=RESEARCH, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    scripts = sorted((tmp_path / "slurm-state" / "jobs").glob("*.json"))
    specs = [json.loads(p.read_text()) for p in scripts if p.stem.isdigit()]
    assert len(specs) == 2  # the pre-trainings, then what is derived from them
    assert all(s["opts"]["time"] == "30" and s["opts"]["array"].endswith("%2") for s in specs)
    first_job = specs[0]["tasks"][0].split("_")[0]
    assert "dependency" not in specs[0]["opts"] and specs[1]["opts"]["dependency"] == f"afterany:{first_job}"
    assert all("_" in task for s in specs for task in s["tasks"])  # array ids: <job>_<index>
    assert "submitted 3 jobs as the array" in done.stdout
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "out" / "slurm").rglob("*.out"))
    assert "resuming" in logs  # the pre-empted pre-training went on from its checkpoint
    local = tmp_path / "local"
    sweep(photos, local, "--part", "schedule", "--model", model)
    assert numbers(tmp_path / "out" / "report" / "results.md") == numbers(local / "report" / "results.md")


def test_each_job_keeps_what_ran_it_and_a_probe_never_passes_as_its_pretraining(photos, tmp_path):
    """A probe runs in its pre-training's folder: the commit that ran the probe is the probe's, never the
    pre-training's, on the page."""
    fake = tmp_path / "bin"
    fake.mkdir()
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    for job, commit in (("pretrain/base-seed0", "aaaaaaa"), ("probe/base-seed0", "bbbbbbb")):
        (fake / "git").write_text(f"#!/bin/sh\necho {commit}\n")  # the commit of the checkout the job runs from
        (fake / "git").chmod(0o755)
        sweep(photos, tmp_path / "out", "--run-job", job, env=env)
    sweep(photos, tmp_path / "out", "--report-only")
    ledger = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
    assert ledger["pretrain/base-seed0"]["provenance"]["commit"] == "aaaaaaa"
    assert ledger["probe/base-seed0"]["provenance"]["commit"] == "bbbbbbb"


def test_a_folders_one_provenance_file_of_earlier_sweeps_counts_only_if_written_before_the_result(photos, tmp_path):
    """Earlier sweeps wrote one provenance.json per folder, which a probe overwrote after its pre-training was done."""
    out = tmp_path / "out"
    sweep(photos, out, "--run-job", "pretrain/base-seed0")
    (out / "base-seed0" / "provenance-pretrain.json").unlink()
    shared, done = out / "base-seed0" / "provenance.json", out / "base-seed0" / "metrics.json"
    shared.write_text(json.dumps({"tinymae": "0.2.0", "commit": "ccccccc"}))
    for written, commit in ((done.stat().st_mtime + 60, None), (done.stat().st_mtime - 60, "ccccccc")):
        os.utime(shared, (written, written))
        sweep(photos, out, "--report-only", "--docs", str(tmp_path / str(written)))
        ledger = json.loads((tmp_path / str(written) / "results.json").read_text())
        assert ledger["pretrain/base-seed0"]["provenance"].get("commit") == commit


def test_a_job_resumed_by_other_code_names_every_commit_that_ran_it(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(RESEARCH))
    import experiments
    path = tmp_path / "provenance-pretrain.json"
    for commit in ("aaaaaaa", "bbbbbbb", "bbbbbbb"):  # started, stopped, resumed twice by a newer checkout
        experiments.record_provenance(path, commit)
    ran = json.loads(path.read_text())
    assert ran["commit"] == "aaaaaaa + bbbbbbb" and ran["tinymae"] == experiments.__version__


def fake_ledger(jobs, rng):
    """results.json with a made-up result for each of these jobs, of the shape each kind of job records."""
    features = [("pre-trained", "mean"), ("pre-trained", "cls"), ("pre-trained", "latent"), ("random init", "mean"),
                ("random init", "cls"), ("raw pixels", "pixels")]
    results = {"pretrain": lambda: {"ratio": rng.uniform(0.2, 0.4), "psnr": 17.0, "n_params": 1000, "minutes": 10.0,
                                    "epoch_s": 12.0, "curve": [0.05, 0.03], "n_train": 4000, "n_val": 1000,
                                    "arch": "vit", "config": {},
                                    "settings": {"batch_size": 32, "lr": 0.005, "warmup_epochs": 2.5,
                                                 "weight_decay": 0.05}},
               "probe": lambda: {"minutes": 1.0, "rows": [{"encoder": e, "features": f, "linear_probe_std": 0.01,
                                                           "linear_probe_mean": rng.uniform(0.5, 0.8),
                                                           "knn": rng.uniform(0.5, 0.8)} for e, f in features]},
               "finetune": lambda: {"accuracy": rng.uniform(0.6, 0.9), "minutes": 2.0, "n_val": 1000},
               "torch": lambda: {"ratio": rng.uniform(0.2, 0.4), "minutes": 10.0}}
    return {job.id: {"kind": job.kind, "result": results[job.kind](),
                     "provenance": {"photos": "abc", "tinymae": "0.2.0", "date": "2026-12-07"}} for job in jobs}


def write_full_plans_page(tmp_path, monkeypatch, which=lambda job: True):
    """The whole plan's pages (not the tiny plan's parts) from a fake ledger of the jobs `which` picks."""
    monkeypatch.syspath_prepend(str(RESEARCH))
    import experiments
    import report
    from plan import plan
    args = experiments.parse_args(["--docs", str(tmp_path / "docs"), "--out", str(tmp_path / "out")])
    jobs = plan(args)
    (tmp_path / "docs").mkdir()
    ledger = fake_ledger([job for job in jobs if which(job)], np.random.default_rng(0))
    (tmp_path / "docs" / "results.json").write_text(json.dumps(ledger))
    monkeypatch.setattr(report, "recon", lambda args, docs: None)  # the reconstructions need a run folder
    report.write_report(jobs, args, "abc")
    return (tmp_path / "docs" / "results.md").read_text()


def test_a_ledger_of_every_job_of_the_full_plan_writes_every_table_and_figure(tmp_path, monkeypatch):
    """results.json holding a result for each job of the whole plan writes every table without a missing cell,
    the recipe page, and every figure."""
    write_full_plans_page(tmp_path, monkeypatch)
    for page in ("results.md", "recipe.md"):
        cells = [c.strip() for row in (tmp_path / "docs" / page).read_text().splitlines() if row.startswith("|")
                 for c in row.split("|")]
        assert "—" not in cells and "not run yet" not in cells, page
    for figure in ("mask_ratio.png", "schedule.png", "partial.png", "curves.png"):
        assert (tmp_path / "docs" / figure).stat().st_size > 1000, figure


def test_the_runs_table_tells_not_run_yet_from_not_planned_and_never_shows_zero_minutes(tmp_path, monkeypatch):
    """A run whose probe or fine-tunings have not run shows "—" there, not 0.0 minutes; a 400-epoch seed that the
    plan never probes says so."""
    page = write_full_plans_page(tmp_path, monkeypatch, lambda job: job.id in ("pretrain/base-seed0",
                                                                               "pretrain/base-ep400-seed1"))
    rows = {row.split(" | ")[0][2:]: row.split(" | ")[1:4] for row in page.splitlines() if row.startswith("| ")}
    assert rows["base-seed0"] == ["10.0", "—", "—"]
    assert rows["base-seed1"] == ["not run yet", "—", "—"]
    assert rows["base-ep400-seed1"] == ["10.0", "not planned", "—"]
    assert rows["mlp-seed0"] == ["not run yet", "—", "not planned"]


def test_a_figure_whose_lines_have_one_point_each_is_not_drawn_nor_linked(tmp_path, monkeypatch):
    """The base runs alone put one point on the mask-ratio and schedule figures: no trend, no figure."""
    page = write_full_plans_page(tmp_path, monkeypatch, lambda job: job.folder.startswith("base-seed"))
    for figure in ("mask_ratio.png", "schedule.png"):
        assert not (tmp_path / "docs" / figure).exists() and f"]({figure})" not in page, figure
    assert (tmp_path / "docs" / "curves.png").exists() and "](curves.png)" in page
