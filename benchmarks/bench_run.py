"""Whole training runs of tinymae and of PyTorch, side by side: the same model, recipe, data, batches and masks.

    python benchmarks/bench_run.py --data ../shared/data/catsdogs                  # the ViT, 10 epochs x 2 rounds
    python benchmarks/bench_run.py --data ../shared/data/catsdogs --epochs 50 --rounds 1

bench_step.py times single training steps; this times what a user waits for: the epochs of a training
run, each with its batches prepared, its steps, and its validation. Each round runs the tinymae run
(python -m tinymae.pretrain) and the PyTorch run (benchmarks/train_torch.py, which shares everything with
tinymae but the engine) one after the other, each in a fresh process, the order flipping every round so
that the machine's drift hits both alike. It prints each run's seconds of epochs (training and
validation, as metrics.json counts them) and validation ratio, and the speed ratio of every round
(PyTorch's seconds over tinymae's: above 1, tinymae is faster).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=os.path.join("..", "shared", "data", "catsdogs"), help="the photo folder")
    p.add_argument("--arch", choices=("mlp", "vit"), default="vit")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every run")
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs, taking turns")
    return p.parse_args(argv)


def tinymae_run(args, out):
    cmd = [sys.executable, "-m", "tinymae.pretrain", "--data", args.data, "--arch", args.arch, "--epochs",
           str(args.epochs), "--out", out, "--no-progress", "--figure-images", "0"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics["wall_time_s"], metrics["final_validation"]["ratio_to_mean_patch"]


def torch_run(args, out):
    path = os.path.join(out, "torch.json")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_torch.py"), "--data", args.data, "--arch", args.arch,
           "--epochs", str(args.epochs), "--json", path]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        result = json.load(f)
    return result["wall_time_s"], result["ratio_to_mean_patch"]


def main(argv=None):
    args = parse_args(argv)
    args.data = os.path.abspath(args.data)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = (("tinymae", tinymae_run), ("torch", torch_run))
            seconds = {}
            for name, run in order if r % 2 == 0 else order[::-1]:
                seconds[name], quality = run(args, os.path.join(tmp, f"{name}-{r}"))
                print(f"round {r + 1}: {name:8} {seconds[name]:7.1f} s of {args.epochs} epochs, validation "
                      f"{quality:.3f}x mean patch", flush=True)
            ratios.append(seconds["torch"] / seconds["tinymae"])
    print(f"speed tinymae/torch over the whole run ({args.arch}, {args.epochs} epochs): "
          f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}; above 1: tinymae faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
