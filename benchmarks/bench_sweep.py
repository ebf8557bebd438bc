"""The research sweep's engines timed: the whole plan of research/experiments.py on tiny models and a few photos per
class, with --jobs 1 and then --jobs 2, and from the ratio and a results.json the time of the whole page.

    python benchmarks/bench_sweep.py                                   # the test-sized plan, both ways
    python benchmarks/bench_sweep.py --ledger docs/results.json        # and the whole page's estimate
    python benchmarks/bench_sweep.py --ledger docs/results.json --ratio 1.6   # the estimate alone

The estimate adds the minutes results.json records for each job of the full plan (a job it lacks counts as the
median of the jobs it has of its kind: pre-trainings of as many epochs, or of 50 scaled to its epochs; fine-tunings
with as many labels); one at a time that sum is the wall time, --jobs 2 divides it by the measured ratio, and a
cluster with as many nodes as jobs in the widest stage takes the longest job of each stage (research/slurm.py
submits a stage as one array).
"""
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from tinymae.errors import TinymaeError
from tinymae.util import cli

from common import ArgumentParser, at_least, run_child  # benchmarks/common.py, next to this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "research", "experiments.py")
TINY = ("--embed-dim 8 --depth 1 --num-heads 2 --decoder-embed-dim 8 --decoder-depth 1 --decoder-num-heads 2 "
        "--encoder-dims 16 --decoder-dims 16 --batch-size 8")
EPOCHS = 50  # research/experiments.py's --epochs: a pre-training without -ep<E> in its id
TEST_PLAN = ["--epochs", "1", "--labels", "2", "all", "--probe-seeds", "1", "--model", TINY]


def write_photos(folder, per_class):
    """Smooth random colour fields, 60 x 60, per_class of each of two classes."""
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        os.makedirs(os.path.join(folder, label))
        for i in range(per_class):
            corners = Image.fromarray((rng.random((2, 2, 3)) * 255).astype(np.uint8))  # 2 x 2 pixels, blown up
            corners.resize((60, 60), Image.BILINEAR).save(os.path.join(folder, label, f"{i}.jpg"), quality=95)


def sweep(*flags, env=None):
    return run_child([sys.executable, EXPERIMENTS, *flags], f"research/experiments.py {' '.join(flags[:4])} ...",
                     env=env, cwd=os.path.dirname(EXPERIMENTS))


def key(job):
    """Jobs alike in cost: a pre-training by its epochs, a fine-tuning by its labels per class, the rest by kind."""
    found = re.search(r"-ep(\d+)" if job["kind"] == "pretrain" else r"-N(\d+)", job["id"])
    return job["kind"], int(found.group(1)) if found and job["kind"] in ("pretrain", "finetune") else None


def estimate(ledger_path, ratio):
    with open(ledger_path) as f:
        ledger = json.load(f)
    jobs = [json.loads(line) for line in sweep("--list-jobs").splitlines()]
    alike = {}
    for job in jobs:
        if job["id"] in ledger:
            alike.setdefault(key(job), []).append(ledger[job["id"]]["result"]["minutes"])
    minutes, guessed, unknown = {}, 0, []
    for job in jobs:
        kind, n = key(job)
        if job["id"] in ledger:
            minutes[job["id"]] = ledger[job["id"]]["result"]["minutes"]
        elif (kind, n) in alike:
            minutes[job["id"]], guessed = statistics.median(alike[kind, n]), guessed + 1
        elif kind == "pretrain" and (kind, None) in alike:  # a longer pre-training: its epochs times longer
            minutes[job["id"]], guessed = statistics.median(alike[kind, None]) * n / EPOCHS, guessed + 1
        else:
            unknown.append(job["id"])
    stage, placed, left, cluster, widest = [], set(), list(jobs), 0.0, 0
    while left:  # the stages of research/slurm.py
        stage = [j for j in left if all(dep in placed for dep in j["after"])]
        placed |= {j["id"] for j in stage}
        left = [j for j in left if j["id"] not in placed]
        cluster += max(minutes.get(j["id"], 0) for j in stage)
        widest = max(widest, len(stage))
    total = sum(minutes.values())
    print(f"\nthe whole page: {len(jobs)} jobs, {len(jobs) - guessed - len(unknown)} measured in {ledger_path}, "
          f"{guessed} counted as the median of their like, {len(unknown)} without a like (left out"
          f"{': ' + ', '.join(unknown[:3]) + ('...' if len(unknown) > 3 else '') if unknown else ''})")
    print(f"  --jobs 1: {total / 60:.1f} h    --jobs 2: {total / ratio / 60:.1f} h    "
          f"a cluster of {widest} nodes (the widest stage): {cluster / 60:.1f} h")


def bench(args):
    if args.ledger and not os.path.isfile(args.ledger):
        raise TinymaeError(f"--ledger {args.ledger}: no such file")
    if args.ratio and not args.ledger:
        raise TinymaeError("--ratio is for the estimate: give the --ledger to estimate from")
    if args.ratio:
        return estimate(args.ledger, args.ratio)
    with tempfile.TemporaryDirectory(prefix="tinymae-sweep-") as tmp:
        photos = os.path.join(tmp, "photos")
        write_photos(photos, args.per_class)
        env = {**os.environ, "TINYMAE_CACHE": os.path.join(tmp, "cache")}
        jobs = len(sweep("--data", photos, "--list-jobs", *TEST_PLAN, env=env).splitlines())
        seconds = {}
        for n in (1, 2):
            started = time.perf_counter()
            sweep("--data", photos, "--out", os.path.join(tmp, f"jobs{n}"), "--jobs", str(n), *TEST_PLAN, env=env)
            seconds[n] = time.perf_counter() - started
            print(f"--jobs {n}: {jobs} jobs in {seconds[n]:.0f} s ({seconds[n] / jobs:.1f} s a job)", flush=True)
    ratio = seconds[1] / seconds[2]
    print(f"--jobs 2 is {ratio:.2f}x as fast as --jobs 1 on {os.cpu_count()} cores")
    if args.ledger:
        estimate(args.ledger, ratio)


def main(argv=None):
    p = ArgumentParser("bench_sweep", __doc__)
    p.add_argument("--per-class", type=at_least(4), default=12, help="photos per class of the test-sized plan")
    p.add_argument("--ledger", default=None, help="a results.json: estimate the whole page from its minutes")
    p.add_argument("--ratio", type=float, default=None, help="the --jobs 2 speed-up measured before: estimate "
                                                               "with it instead of measuring")
    return cli.run(bench, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
