"""The whole pre-training run in PyTorch, for the same model on the same data: quality and wall time side by side.

    python benchmarks/train_torch.py --data data/catsdogs --download --arch vit    # then compare with:
    python -m tinymae.pretrain --data data/catsdogs --arch vit --out runs/vit

Everything but the engine is tinymae's, so that the two runs differ in the engine alone: the recipe
(tinymae.config.PretrainConfig's defaults and the flags given here), the images, split and statistics
(tinymae.data.PretrainData), every batch's crops, flips and mask noise from the same seeded generator in
the same order (tinymae.pretrain.training_batches), the initial weights (a tinymae model built with the
same seed, copied into the PyTorch twin of benchmarks/torch_models.py), the learning-rate schedule
(tinymae.model.optim.cosine_lr), and the validation metric: after every epoch the twin's weights are
copied back into the tinymae model and measured by tinymae.evaluate.reconstruction_metrics, exactly as a
tinymae run measures itself (on every core, with fast.runner, as there). The batches are prepared on a
background thread by tinymae.engine.prefetched, as in tinymae's loop (a PyTorch DataLoader worker would do
the same). PyTorch does the forward and backward passes and the AdamW step (torch.optim.AdamW with the
same two parameter groups), eager, on all the cores it uses by default.

It prints one line per epoch and, at the end, the validation ratio to the mean-patch baseline and the
wall time of the epochs (training and validation, as tinymae's metrics.json counts it); --json writes
them. --gelu exact trains torch's exact (erf) GELU, as timm's ViT has it, instead of the tanh form that
tinymae computes.
"""
import json
import math
import os
import sys
import time

import torch

import torch_models  # benchmarks/torch_models.py and cli.py, next to this script
from cli import ArgumentParser, positive, whole_number
from tinymae import fast
from tinymae.backend import host_rng
from tinymae.config import PretrainConfig
from tinymae.data import PretrainData
from tinymae.engine import prefetched
from tinymae.evaluate import reconstruction_metrics
from tinymae.model import build_model
from tinymae.model.optim import cosine_lr
from tinymae.pretrain import training_batches
from tinymae.util.datasets import DataError


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--data", default=os.path.join("data", "catsdogs"),
                   help="the photo folder (a Cat and a Dog folder of photos, or PetImages/ with them)")
    p.add_argument("--download", action="store_true", help="fetch the cats-and-dogs photos into --data if it has none")
    p.add_argument("--arch", choices=("mlp", "vit"), default="vit", help="which model")
    p.add_argument("--epochs", type=positive, default=None, help="default: tinymae's recipe")
    p.add_argument("--batch-size", type=positive, default=None, help="default: tinymae's recipe for --arch")
    p.add_argument("--seed", type=whole_number, default=0,
                   help="seeds the split, the weights, the batches and the masks")
    p.add_argument("--per-class", type=positive, default=None, help="only the first N photos of each class")
    p.add_argument("--gelu", choices=("tanh", "exact"), default="tanh",
                   help="tanh: the GELU tinymae computes; exact: torch's erf GELU, as timm's ViT")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    return p.parse_args(argv)


def main(argv=None):
    """The command line: a mistake the user can make (flags, the photo folder) is one line, "error: ..."."""
    args = parse_args(argv)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size)) if v is not None}
    try:
        cfg = PretrainConfig(data=args.data, download=args.download, arch=args.arch, seed=args.seed,
                             per_class=args.per_class, progress=False, **overrides)
        cfg.validate()
        model = build_model(cfg.arch, {}, seed=cfg.seed)  # the initial weights, as tinymae's run draws them
        data = PretrainData(cfg, model.config.img_size, model.config.patch_size)
    except (ValueError, DataError, OSError) as e:
        sys.exit(f"error: {e}")
    return train(args, cfg, model, data)


def train(args, cfg, model, data):
    """The run: the twin trains, tinymae measures it after every epoch -> 0."""
    mcfg = model.config
    twin = torch_models.from_tinymae(model, gelu="none" if args.gelu == "exact" else "tanh")
    groups = torch_models.no_decay_param_groups(twin, model.no_decay, cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-8)

    batch_size = min(cfg.batch_size, data.info["n_train"])
    steps = data.info["n_train"] // batch_size
    total_steps, warmup_steps = cfg.epochs * steps, int(cfg.warmup_epochs * steps)
    rng = host_rng(cfg.seed + 1)  # as tinymae.pretrain: batches, augmentation and masks, in that order
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {cfg.arch}, {cfg.epochs} epochs of "
          f"{steps} steps of {batch_size}, lr {cfg.lr}, warm-up {cfg.warmup_epochs}, GELU {args.gelu}", flush=True)

    # tinymae's validation, spread over the cores with its fast kernels as in its own runs. (fast.runner also
    # tells glibc's malloc to keep freed memory, process-wide: torch's allocations get it too, as in bench_step.)
    evaluation = fast.runner(model)
    start = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                   mean_patch=data.mean_patch, runner=evaluation)
    baseline = start["baselines"]["mean_patch"]["masked_mse"]
    wall_time, history = 0.0, []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        perm = rng.permutation(data.info["n_train"])
        twin.train()
        loss_sum = 0.0
        batches = prefetched(training_batches(data, perm, batch_size, mcfg.img_size, mcfg.num_patches, rng))
        for i, (imgs, noise) in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(epoch * steps + i, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            optimizer.zero_grad(set_to_none=True)
            loss, _, _ = twin(torch.from_numpy(imgs), torch.from_numpy(noise))
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            if not math.isfinite(loss_sum):
                batches.close()
                evaluation.close()
                sys.exit(f"error: the loss became {loss_sum} at epoch {epoch + 1}, step {i + 1}")
        train_time = time.perf_counter() - t0
        # validation with tinymae's own metric on the twin's weights
        model.params.update(torch_models.tinymae_params(twin, model.params))
        val = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed, baselines=False,
                                     runner=evaluation)
        wall_time += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / steps, "val_masked_mse": val["masked_mse"],
                        "train_images_per_s": steps * batch_size / train_time})
        print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {loss_sum / steps:.4f}  val masked MSE "
              f"{val['masked_mse']:.5f} ({val['masked_mse'] / baseline:.3f}x mean patch)  {train_time:.1f} s, "
              f"{steps * batch_size / train_time:.0f} img/s", flush=True)
    evaluation.close()
    result = {"framework": f"torch {torch.__version__}", "arch": cfg.arch, "gelu": args.gelu, "epochs": cfg.epochs,
              "batch_size": batch_size, "wall_time_s": wall_time, "val_masked_mse": history[-1]["val_masked_mse"],
              "ratio_to_mean_patch": history[-1]["val_masked_mse"] / baseline, "history": history}
    print(f"done: {wall_time:.0f} s of epochs; validation {result['ratio_to_mean_patch']:.3f}x mean patch")
    if args.json:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        except OSError as e:
            sys.exit(f"error: could not write --json {args.json} ({e.strerror or e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
