"""Whole training runs of tinymae and of PyTorch, side by side: the same model, recipe, data, batches and masks.

    python benchmarks/bench_run.py --data data/catsdogs --download       # the ViT, 10 epochs x 2 rounds
    python benchmarks/bench_run.py --data data/catsdogs --epochs 50 --rounds 1

bench_step.py times single training steps; this times what a user waits for: the epochs of a training run, with
their batches and validation. Each round runs tinymae's run (python -m tinymae.pretrain) and PyTorch's
(benchmarks/train_torch.py, which shares everything with tinymae but the engine), each in a fresh process, the order
flipping every round; the speed is PyTorch's seconds over tinymae's.
"""
import json
import os
import statistics
import sys
import tempfile

from tinymae.util import cli

from common import ArgumentParser, at_least, run_child  # benchmarks/common.py, next to this script

HERE = os.path.dirname(os.path.abspath(__file__))


def run(name, flags, out):
    """One run in a fresh process -> (its seconds of epochs, its validation ratio to the mean-patch baseline)."""
    if name == "tinymae":
        run_child([sys.executable, "-m", "tinymae.pretrain", *flags, "--out", out, "--no-progress", "--figure-images",
                   "0"], "the tinymae run")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        return metrics["wall_time_s"], metrics["final_validation"]["ratio_to_mean_patch"]
    run_child([sys.executable, os.path.join(HERE, "train_torch.py"), *flags, "--json", out + ".json"],
              "the PyTorch run")
    with open(out + ".json") as f:
        result = json.load(f)
    return result["wall_time_s"], result["ratio_to_mean_patch"]


def bench(args):
    flags = ["--data", os.path.abspath(args.data), "--arch", args.arch, "--epochs", str(args.epochs)]
    flags += ["--download"] if args.download else []
    flags += ["--per-class", str(args.per_class)] if args.per_class else []
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            seconds = {}
            for name in ("tinymae", "torch") if r % 2 == 0 else ("torch", "tinymae"):
                seconds[name], quality = run(name, flags, os.path.join(tmp, f"{name}-{r}"))
                print(f"round {r + 1}: {name:8} {seconds[name]:7.1f} s of {args.epochs} epochs, validation "
                      f"{quality:.3f}x mean patch", flush=True)
            ratios.append(seconds["torch"] / seconds["tinymae"])
    print(f"speed tinymae/torch over the whole run ({args.arch}, {args.epochs} epochs): "
          f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}; above 1: tinymae faster)")


def main(argv=None):
    p = ArgumentParser("bench_run", __doc__)
    p.add_argument("--data", default="data/catsdogs", help="the photo folder, as tinymae.pretrain's --data")
    p.add_argument("--download", action="store_true", help="fetch the cats-and-dogs photos into --data if it has none")
    p.add_argument("--arch", choices=("mlp", "vit"), default="vit", help="which model")
    p.add_argument("--epochs", type=at_least(1), default=10, help="epochs of every run")
    p.add_argument("--rounds", type=at_least(1), default=2, help="pairs of runs, taking turns")
    p.add_argument("--per-class", type=at_least(1), default=None,
                   help="only the first N photos of each class, in both runs (a quick check)")
    return cli.run(bench, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
