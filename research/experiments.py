"""The MAE paper's protocols and ablations on 48-pixel Cats & Dogs: every run behind docs/results.md.

    python research/experiments.py --data data/catsdogs            # every part below, in order (resumable)
    python research/experiments.py --data ... --part schedule      # one part (the page shows every finished run)

Every run trains in its own folder under --out; a finished run is read back, an interrupted pre-training
resumes, so the command can be stopped at any point and started again. docs/results.md is then written
from those folders alone (report.py): every number on it comes from a file this command wrote.

He et al. (2022) measure MAE by fine-tuning (their headline numbers) and by linear probing. The parts, in
the order they run (each run is the default ViT MAE of tinymae.config with one thing changed, 50 epochs):

  finetune     the base pre-trained with 3 seeds and probed (tinymae.probe); fine-tuned (tinymae.finetune)
               with 50 and 200 labels per class (3 seeds) and with every label, against the same network
               trained from scratch (Sec. 4)
  schedule     pre-training for 2, 4 and 8 times as long (100, 200, 400 epochs: Figure 7), each probed
               and fine-tuned with every label and with 50 per class
  partial      fine-tuning only the last 0, 1 or 2 blocks of the 50- and the 400-epoch encoders (Figure 9)
  ablations    mask ratio 0.25 / 0.5 / 0.9 (Figure 5), loss on all patches (Sec. 3), norm_pix_loss (Table
               1d), mask tokens in the encoder (Tables 1c, 2), decoder depth 1 / 4 and width 32 / 128
               (Tables 1a, 1b), the MLP MAE; each probed and fine-tuned with 50 labels per class
  every-label  the every-label rows with 3 seeds: the base's other pre-training seeds and scratch, the
               400-epoch encoder fine-tuned with 3 seeds; then with main_finetune.py's regularisation (drop
               path, then mixup too), the 400-epoch encoder against scratch with the same recipe; and the
               normalised-pixel target pre-trained for 400 epochs
  seeds        the ablations again with seeds 1 and 2
"""
import argparse
import os
import shlex
import sys
import time

from tinymae.config import PretrainConfig, ViTConfig, flag_name
from tinymae.data import PretrainData

from plan import EPOCHS, PARTS, PROBE_SEEDS, model_flags, plan, pretrain_settings
from runs import DEFAULT_DATA, RUN_ERRORS, SweepError, finetune_variant, pretrain_variant, probe_variant


def run_jobs(jobs, args):
    """Run (or read back) every job of the chosen parts, in order. -> {(kind, run, settings): result}."""
    t0 = time.perf_counter()
    todo = [job for job in jobs if args.part in ("all", job[0])]
    for i, (part, kind, name, variant, seed, settings) in enumerate(todo, start=1):
        run_dir = os.path.join(args.out, name)
        what = {"pretrain": "pre-training", "probe": "probe", "finetune": "fine-tuning"}[kind]
        detail = "" if settings is None else " " + ", ".join(f"{k} {v}" for k, v in settings.items()
                                                             if k not in ("eval_every", "epochs", "batch_size"))
        minutes = (time.perf_counter() - t0) / 60
        print(f"[{i}/{len(todo)}, {part}, {minutes:.0f} min] {what} {name}{detail}", flush=True)
        if kind == "pretrain":
            _, trained = pretrain_variant(run_dir, args.data, pretrain_settings(variant, seed, args))
        elif kind == "probe":
            probe_variant(run_dir, args.data, seeds=args.probe_seeds, baselines=name == "base-seed0",
                          per_class=args.per_class)
        else:
            result, _ = finetune_variant(os.path.join(run_dir, "checkpoint.npz"), args.data, settings)
            print(f"    validation accuracy {100 * result['val_accuracy']:.1f}%", flush=True)


# ----------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python research/experiments.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA, help="the photo folder (any layout tinymae reads)")
    p.add_argument("--out", default=os.path.join("runs", "experiments"), help="one sub-folder per run")
    p.add_argument("--docs", default="docs", help="results.md and its figures are written here")
    p.add_argument("--part", choices=("all", *PARTS, "report"), default="all",
                   help="run one part only ('report': no training, the page from the finished runs)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the base pre-training and of fine-tuning")
    p.add_argument("--per-class", type=int, default=None, help="only the first N photos of each class (a quick try)")
    p.add_argument("--probe-seeds", type=int, default=PROBE_SEEDS, help="linear-probe repetitions (mean ± std)")
    p.add_argument("--labels", nargs="+", default=["50", "200", "all"],
                   help="labelled images per class of the fine-tuning table, fewest first, 'all' last")
    p.add_argument("--model", default="", help="extra model flags for every run, e.g. smaller models for a test")
    p.add_argument("--no-report", action="store_true", help="train only; do not write the page")
    args = p.parse_args(argv)
    for name in ("epochs", "per_class", "probe_seeds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"{flag_name(name)} must be at least 1, got {value}")
    try:
        labels = [None if n == "all" else int(n) for n in args.labels]
    except ValueError:
        p.error(f"--labels takes whole numbers and 'all', got {' '.join(args.labels)}")
    if labels[-1] is not None or any(n is None or n < 1 for n in labels[:-1]) or len(labels) < 2:
        p.error(f"--labels: labelled images per class (at least 1) then 'all' last, got {' '.join(args.labels)}")
    args.labels = labels
    for name in ("out", "docs"):
        path = getattr(args, name)
        if os.path.exists(path) and not os.path.isdir(path):
            p.error(f"--{name} {path} is a file; give a folder")
    try:
        model_flags(args.model, "vit")
    except SweepError as e:
        p.error(str(e))
    return args


def check_labels(args):
    """Refuse labels per class that the training split cannot give, before any training: the photos are
    decoded (or read from the cache) and split as the base runs split them."""
    cfg = PretrainConfig(data=args.data, per_class=args.per_class, seed=0, arch="vit", progress=False)
    model = ViTConfig(**{k: v for k, v in model_flags(args.model, "vit").items() if k in ViTConfig.__dataclass_fields__})
    data = PretrainData(cfg, model.img_size, model.patch_size)
    fewest = min(int((data.train_labels == label).sum()) for label in (0, 1))
    too_many = [n for n in args.labels[:-1] if n > fewest]
    if too_many:
        raise SweepError(f"--labels {too_many[0]} asks for more labelled photos than the training split has: "
                         f"{fewest} training photos of each class at most; choose at most {fewest}")


def main(argv=None):
    args = parse_args(argv)
    command = "python research/experiments.py" + "".join(" " + shlex.quote(a) for a in
                                                         (sys.argv[1:] if argv is None else argv))
    jobs = plan(args)
    try:
        if args.part != "report":
            check_labels(args)
            run_jobs(jobs, args)
        if not args.no_report:
            from report import write_report
            write_report(jobs, args, command)
    except RUN_ERRORS as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk or a folder that became read-only
        sys.exit(f"error: {e.strerror or e} ({e.filename or 'an output file'}); free some space or fix the "
                 "permissions, then run the same command again: finished runs are kept")
    except KeyboardInterrupt:
        print("\ninterrupted. Finished runs are kept; start the same command again to continue where it stopped.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
