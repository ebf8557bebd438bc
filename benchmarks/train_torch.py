"""The whole pre-training run in PyTorch, for the same model on the same data: quality and wall time side by side.

    python benchmarks/train_torch.py --data data/catsdogs --download --arch vit --json runs/torch.json
    python -m tinymae.pretrain --data data/catsdogs --arch vit --out runs/vit      # the same run in tinymae

Everything but the engine is tinymae's, from a pre-training run of the same flags (pretrain.Pretraining): the recipe,
the photos and split, the initial weights (copied into the twin of benchmarks/torch_models.py), every batch's crops,
flips and masks from the same generator in the same order (Pretraining.batches, prefetched as in tinymae's loop),
the learning-rate schedule, and the validation (Pretraining.validate, on the twin's weights copied back after every
epoch). PyTorch does the forward and backward passes and the AdamW step (the same two parameter groups), eager.
"""
import json
import math
import sys
import time
from contextlib import closing

from tinymae import fast
from tinymae.backend import asarray
from tinymae.engine import prefetched
from tinymae.errors import TinymaeError
from tinymae.model.optim import cosine_lr
from tinymae.pretrain import Pretraining
from tinymae.util import cli
from tinymae.util.files import output_file, write_atomically

from common import ArgumentParser, at_least, import_torch  # benchmarks/common.py, next to this script

RUN_FLAGS = ("data", "download", "arch", "epochs", "batch_size", "seed", "per_class")  # Pretraining's, passed on


def train(args):
    """The run: the twin trains, tinymae measures it after every epoch."""
    out = output_file("--json", args.json, args.overwrite, (), ".json", {"json"})  # before any work
    torch = import_torch()
    import torch_models  # benchmarks/torch_models.py (it needs torch)
    run = Pretraining.start({**{k: v for k, v in vars(args).items() if k in RUN_FLAGS and v is not None},
                             "progress": False})
    cfg = run.cfg
    run.photos = run.load_photos(None)
    run.model = model = run.build_model()  # the initial weights, as tinymae's run draws them
    twin = torch_models.from_tinymae(model, gelu="none" if args.gelu == "exact" else "tanh")
    run.step = fast.training_step(model, "fast").step  # the validation's, as in tinymae's runs
    recipe = run.adamw()
    optimizer = torch.optim.AdamW(torch_models.no_decay_param_groups(twin, recipe["no_decay"], recipe["weight_decay"]),
                                  lr=cfg.lr, betas=recipe["betas"], eps=1e-8)
    n_train = len(run.photos.train_labels)
    batch_size = min(cfg.batch_size, n_train)
    steps = n_train // batch_size
    total, warmup = cfg.epochs * steps, int(cfg.warmup_epochs * steps)
    rng = run.rng()  # as tinymae's run: each epoch's order, then every step's crops, flips and masks
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {cfg.arch}, {cfg.epochs} epochs of {steps} "
          f"steps of {batch_size}, lr {cfg.lr}, warm-up {cfg.warmup_epochs}, GELU {args.gelu}", flush=True)
    wall_time, history = 0.0, []
    for epoch in range(cfg.epochs):
        t0, loss_sum = time.perf_counter(), 0.0
        with closing(prefetched(run.batches(rng.permutation(n_train), batch_size, rng, False))) as batches:
            for i, (imgs, noise) in enumerate(batches):
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(epoch * steps + i, total, warmup, cfg.lr, cfg.min_lr)
                optimizer.zero_grad(set_to_none=True)
                loss = twin(torch.from_numpy(imgs), torch.from_numpy(noise))[0]
                loss.backward()
                optimizer.step()
                loss_sum += loss.item()
                if not math.isfinite(loss_sum):
                    raise TinymaeError(f"training diverged: the loss became {loss_sum} at epoch {epoch + 1}, step "
                                       f"{i + 1}")
        train_time = time.perf_counter() - t0
        model.params.update({k: asarray(v) for k, v in torch_models.tinymae_params(twin, model.params).items()})
        stats = {"train_loss": loss_sum / steps, **run.validate(epoch + 1)}  # tinymae's metric on the twin's weights
        wall_time += time.perf_counter() - t0  # the epoch and its validation, as metrics.json counts it
        history.append({"epoch": epoch + 1, **stats, "train_images_per_s": steps * batch_size / train_time})
        print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {stats['train_loss']:.4f}  {run.line(stats)}"
              f"{train_time:.1f} s, {steps * batch_size / train_time:.0f} img/s", flush=True)
    run.step.close()
    result = {"framework": f"torch {torch.__version__}", "arch": cfg.arch, "gelu": args.gelu, "epochs": cfg.epochs,
              "batch_size": batch_size, "wall_time_s": wall_time, "val_masked_mse": history[-1]["val_masked_mse"],
              "ratio_to_mean_patch": history[-1]["val_masked_mse"] / run.baseline, "history": history}
    print(f"done: {wall_time:.0f} s of epochs; validation {result['ratio_to_mean_patch']:.3f}x mean patch")
    if out:
        text = json.dumps(result, indent=2, allow_nan=False)
        write_atomically(out, lambda f: f.write(text.encode()))


def main(argv=None):
    p = ArgumentParser("train_torch", __doc__)
    p.add_argument("--data", default="data/catsdogs", help="the photo folder, as tinymae.pretrain's --data")
    p.add_argument("--download", action="store_true", help="fetch the cats-and-dogs photos into --data if it has none")
    p.add_argument("--arch", choices=("mlp", "vit"), default="vit", help="which model")
    p.add_argument("--epochs", type=at_least(1), default=None, help="default: tinymae's recipe")
    p.add_argument("--batch-size", type=at_least(1), default=None, help="default: tinymae's recipe for --arch")
    p.add_argument("--seed", type=at_least(0), default=0, help="seeds the split, weights, batches and masks")
    p.add_argument("--per-class", type=at_least(1), default=None, help="only the first N photos of each class")
    p.add_argument("--gelu", choices=("tanh", "exact"), default="tanh",
                   help="tanh: the GELU tinymae computes; exact: torch's erf GELU, as timm's ViT")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return cli.run(train, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
