"""Whole training runs of tinymae and of PyTorch, side by side: the same model, recipe, data, batches and masks.

    python benchmarks/bench_run.py --data data/catsdogs --download       # the ViT, 10 epochs x 2 rounds
    python benchmarks/bench_run.py --data data/catsdogs --epochs 50 --rounds 1

bench_step.py times single training steps; this times what a user waits for: the epochs of a training
run, each with its batches prepared, its steps, and its validation. Each round runs the tinymae run
(python -m tinymae.pretrain) and the PyTorch run (benchmarks/train_torch.py, which shares everything with
tinymae but the engine) one after the other, each in a fresh process, the order flipping every round so
that the machine's drift hits both alike. It prints each run's seconds of epochs (training and
validation, as metrics.json counts them) and validation ratio, and the speed ratio of every round
(PyTorch's seconds over tinymae's: above 1, tinymae is faster).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cli import ArgumentParser, positive  # benchmarks/cli.py, next to this script

ROOT = Path(__file__).resolve().parents[1]


class RunFailed(Exception):
    """One of the two runs ended with an error; the message is its own last line."""


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--data", default=os.path.join("data", "catsdogs"),
                   help="the photo folder (a Cat and a Dog folder of photos, or PetImages/ with them)")
    p.add_argument("--download", action="store_true", help="fetch the cats-and-dogs photos into --data if it has none")
    p.add_argument("--arch", choices=("mlp", "vit"), default="vit", help="which model")
    p.add_argument("--epochs", type=positive, default=10, help="epochs of every run")
    p.add_argument("--rounds", type=positive, default=2, help="pairs of runs, taking turns")
    p.add_argument("--per-class", type=positive, default=None,
                   help="only the first N photos of each class, in both runs (a quick check)")
    return p.parse_args(argv)


def common_flags(args):
    """The flags both runs take, so that they train on the same photos."""
    flags = ["--data", args.data, "--arch", args.arch, "--epochs", str(args.epochs)]
    flags += ["--download"] if args.download else []
    flags += ["--per-class", str(args.per_class)] if args.per_class else []
    return flags


def run_quietly(cmd, name):
    """Run cmd (its output discarded, its errors kept); a failure raises RunFailed with its last line."""
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RunFailed(f"the {name} run failed: {last.removeprefix('error: ')}")


def tinymae_run(args, out):
    run_quietly([sys.executable, "-m", "tinymae.pretrain", *common_flags(args), "--out", out, "--no-progress",
                 "--figure-images", "0"], "tinymae")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics["wall_time_s"], metrics["final_validation"]["ratio_to_mean_patch"]


def torch_run(args, out):
    path = os.path.join(out, "torch.json")
    run_quietly([sys.executable, str(ROOT / "benchmarks" / "train_torch.py"), *common_flags(args), "--json", path],
                "PyTorch")
    with open(path) as f:
        result = json.load(f)
    return result["wall_time_s"], result["ratio_to_mean_patch"]


def main(argv=None):
    args = parse_args(argv)
    args.data = os.path.abspath(args.data)
    if not os.path.isdir(args.data) and not args.download:
        sys.exit(f"error: --data {args.data} is not a folder: point it at the photos, or add --download to fetch "
                 "the cats-and-dogs photos there")
    ratios = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                order = (("tinymae", tinymae_run), ("torch", torch_run))
                seconds = {}
                for name, run in order if r % 2 == 0 else order[::-1]:
                    seconds[name], quality = run(args, os.path.join(tmp, f"{name}-{r}"))
                    print(f"round {r + 1}: {name:8} {seconds[name]:7.1f} s of {args.epochs} epochs, validation "
                          f"{quality:.3f}x mean patch", flush=True)
                ratios.append(seconds["torch"] / seconds["tinymae"])
    except RunFailed as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    print(f"speed tinymae/torch over the whole run ({args.arch}, {args.epochs} epochs): "
          f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}; above 1: tinymae faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
