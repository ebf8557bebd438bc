"""Fine-tune a pre-trained ViT MAE encoder to tell cats from dogs: the paper's end-to-end fine-tuning
protocol (Sec. 4; Appendix A.1, Table 9), as main_finetune.py, engine_finetune.py and util/lr_decay.py of
the official MAE, for tinymae's engine.

    python -m tinymae.finetune --checkpoint runs/vit/checkpoint.npz --data data/catsdogs
    python -m tinymae.finetune ... --from-scratch            # the same network and recipe, random init
    python -m tinymae.finetune ... --labels-per-class 100    # only 100 labelled photos of each class

A run, in the order of `finetune`:

    read the checkpoint   a ViT MAE written by tinymae.pretrain; refuse anything else
    FinetuneData          the pre-training run's own split and statistics, rebuilt from its settings:
                          fine-tune on (N per class of) its training images, measure on its validation
                          images, the same ones for every N, never seen in fine-tuning
    the model             models_vit.ViTClassifier: the pre-trained (or a freshly initialised) encoder,
                          global pooling, fc_norm and a new head
    AdamW                 betas (0.9, 0.999), weight decay 0.05 (none on 1-D parameters and cls_token),
                          layer-wise learning-rate decay (param_groups_lrd), warm-up + half-cycle cosine
    for every epoch:
        train_one_epoch   shuffled batches: crop + flip, normalise, forward, backward, AdamW (engine.py)
        accuracy          top-1 accuracy on the validation images (centre crop), and on the training images
    the result            printed as one JSON line, then classifier.npz and result.json in --out

Scaled down from the paper's ViT-B recipe (Table 9): no cutmix or random erasing, and mixup and drop path
only when asked (--mixup, --drop-path: a 4-block ViT on 48-pixel photos needs less regularisation than
ViT-B on ImageNet); the augmentation is the pre-training one (random crop + flip, data.py). The position table
stays the fixed sin-cos one (timm's ViT would fine-tune it from that start). Every setting is a field of
config.FinetuneConfig; the flags are built from it.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from . import backend, fast
from .backend import asarray, host_rng, to_numpy
from .config import FinetuneConfig, model_config
from .data import FinetuneData, augmented_batches, center_crop, mix_images, mixup_draw, mixup_targets, normalize
from .engine import Diverged, prefetched, train_one_epoch
from .fast import data as fast_data
from .model.build import build_model
from .model.models_vit import ViTClassifier, drop_path_keep
from .model.optim import cosine_lr
from .util.checkpoint import CheckpointError, load_params, read_checkpoint, save_checkpoint
from .util.cli import add_config_arguments
from .util.datasets import CLASSES, DataError, load_dataset
from .util.files import (FolderBusy, RunLock, check_writable, output_file_problem, remove_stale_temporaries,
                         write_atomically)
from .util.lr_decay import param_groups_lrd

EVAL_BATCH = 256  # images per forward pass when measuring accuracy
TRAIN_ACCURACY_IMAGES = 1000  # the training accuracy's sample: +-1.6% at most (one standard error)
RESULT_FILES = ("classifier.npz", "result.json")


class FinetuneError(Exception):
    """A run that cannot start or go on, with what is wrong and what to do (one line for the user)."""


# ----------------------------------------------------------------------------------------------
# settings

def parse_args(argv=None, prog="python -m tinymae.finetune"):
    """-> the run's settings (a FinetuneConfig), every flag validated before any work."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune the encoder of a ViT MAE checkpoint (python -m tinymae.pretrain --arch vit) to "
                    "classify cats and dogs, as the paper's end-to-end fine-tuning, or train the same network "
                    "from scratch. Prints the validation accuracy as one JSON line. Set TINYMAE_BACKEND=cupy "
                    "to train on a GPU.")
    add_config_arguments(parser, FinetuneConfig)
    cfg = FinetuneConfig(**vars(parser.parse_args(argv)))
    for name in ("checkpoint", "data"):
        if getattr(cfg, name) is None:
            parser.error(f"--{name} is required: {FinetuneConfig.__dataclass_fields__[name].metadata['help']}")
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    return cfg


def default_out(cfg):
    """<checkpoint's folder>/finetune[-scratch][-N<labels>][-blocks<K>][-mixup<a>][-droppath<p>]-seed<S>: one
    folder per variant and seed."""
    name = "finetune" + ("-scratch" if cfg.from_scratch else "")
    if cfg.labels_per_class is not None:
        name += f"-N{cfg.labels_per_class}"
    if cfg.trainable_blocks is not None:
        name += f"-blocks{cfg.trainable_blocks}"
    if cfg.mixup > 0:
        name += f"-mixup{cfg.mixup:g}"
    if cfg.drop_path > 0:
        name += f"-droppath{cfg.drop_path:g}"
    return os.path.join(os.path.dirname(os.path.abspath(cfg.checkpoint)), f"{name}-seed{cfg.seed}")


# ----------------------------------------------------------------------------------------------
# the checkpoint

def read_vit_checkpoint(path):
    """-> (header, arrays, ViTConfig) of a ViT MAE pre-training checkpoint; FinetuneError for any other."""
    header, arrays = read_checkpoint(path)
    arch, config = header.get("arch"), header.get("config")
    if arch != "vit":
        why = (" (the MLP's encoder takes exactly the visible patches as one vector, so it cannot see a whole "
               "image)" if arch == "mlp" else "")
        raise FinetuneError(f"{path} holds a model of architecture {arch!r}{why}; fine-tuning needs the encoder of "
                            "a ViT MAE (a checkpoint of python -m tinymae.pretrain --arch vit)")
    if not isinstance(header.get("settings"), dict) or not isinstance(header.get("data"), dict):
        raise FinetuneError(f"{path} was not written by tinymae.pretrain (it has no run settings), so its "
                            "training split cannot be rebuilt")
    config = model_config("vit", config)  # read_checkpoint has checked that it builds
    return header, arrays, config


# ----------------------------------------------------------------------------------------------
# data: data.FinetuneData holds the labelled photos

def training_batches(data, perm, batch_size, img_size, rng, cfg, depth):
    """The epoch's batches as host arrays, in order: (imgs (B, 3, S, S) normalised float32, labels (B,)); with
    --mixup the images mixed and soft targets (B, C) for labels; with --drop-path the drop-path factors
    (B, depth, 2) (models_vit.drop_path_keep) too. The random draws: crops and flips, then mixup, then drop path."""
    for idx, imgs in augmented_batches(data.train_images, data.mean, data.std, perm, batch_size, img_size, rng):
        labels, extra = step_draws(rng, data.train_labels[idx], cfg, depth)
        if cfg.mixup > 0:
            imgs = mix_images(imgs, extra[0])
        yield (imgs, labels, *extra[1:])


def step_draws(rng, labels, cfg, depth):
    """The rest of a step's random numbers, after the crops: -> (labels or mixup's soft targets, [lam (1,)
    if mixup] + [drop-path factors if drop path])."""
    extra = []
    if cfg.mixup > 0:
        lam = mixup_draw(rng, cfg.mixup)
        extra.append(np.array([lam]))  # (1,) so that it can travel to the device with the batch
        labels = mixup_targets(labels, lam, cfg.label_smoothing, len(CLASSES))  # (B, C)
    if cfg.drop_path > 0:
        extra.append(drop_path_keep(rng, len(labels), depth, cfg.drop_path))  # (B, depth, 2)
    return labels, extra


def device_batches(data, perm, batch_size, img_size, rng, cfg, depth):
    """training_batches' draws, for photos resident on the device (fast/data.py): (idx, tops, lefts, flips,
    labels[, lam][, keep]) per batch, the same numbers in the same order; device_inputs makes the images."""
    for idx, tops, lefts, flips in fast_data.draws(perm, batch_size, data.train_images.shape[1], img_size, rng):
        labels, extra = step_draws(rng, data.train_labels[idx], cfg, depth)
        yield (idx, tops, lefts, flips, labels, *extra)


def device_inputs(images, mixup):
    """-> prepare(*batch): the model's inputs from a batch of device_batches (fast/data.DeviceImages cuts the
    images, then mixup mixes them on the device as training_batches does on the host)."""
    def prepare(idx, tops, lefts, flips, labels, *extra):
        imgs = images.batch(idx, tops, lefts, flips)  # (B, 3, S, S) on the device
        if mixup > 0:
            lam, *extra = extra
            imgs = mix_images(imgs, lam)  # lam (1,): broadcast over the images
        return (imgs, labels, *extra)
    return prepare


def accuracy(model, images, labels, mean, std, runner=None):
    """Top-1 accuracy of `model` on uint8 images (N, S, S, 3) (already cropped) with host labels (N,).
    runner: a parallel.DataParallel to spread the batches over the CPU's cores (None: one after another)."""
    def correct(start):
        x = asarray(normalize(images[start:start + EVAL_BATCH], mean, std))  # (n, 3, S, S)
        predicted = to_numpy(model.predict(x).argmax(axis=1))  # (n,)
        return int((predicted == labels[start:start + EVAL_BATCH]).sum())

    starts = range(0, len(images), EVAL_BATCH)
    return sum(runner.map(correct, starts) if runner is not None else map(correct, starts)) / len(images)


# ----------------------------------------------------------------------------------------------
# the optimiser

def build_optimizer(model, cfg):
    """AdamW as main_finetune.py builds it: torch.optim.AdamW(param_groups_lrd(...), lr) with PyTorch's
    default betas (0.9, 0.999), not pre-training's (0.9, 0.95). Only the trainable parameters."""
    params = {name: model.params[name] for name in model.trainable}  # the frozen blocks take no step
    lr_scale, no_decay = param_groups_lrd(params, model.config.depth, cfg.layer_decay)
    optimizer = fast.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, no_decay=no_decay,
                           lr_scale=lr_scale)
    model.params.update(params)  # the optimiser moved them into its flat buffer: the model reads them there
    return optimizer


# ----------------------------------------------------------------------------------------------
# the run

def check_outputs(cfg):
    """Everything about the outputs that can fail, checked before any work (a copy of cfg with --out set)."""
    cfg = FinetuneConfig(**vars(cfg))
    cfg.out = cfg.out or default_out(cfg)
    existing = [name for name in RESULT_FILES if os.path.exists(os.path.join(cfg.out, name))]
    if existing and not cfg.overwrite:
        raise FinetuneError(f"{cfg.out} already holds a fine-tuning result ({', '.join(existing)}); running "
                            "again would replace it. Choose another --out, or pass --overwrite to replace it")
    try:
        check_writable(cfg.out)  # a read-only or full folder fails now, not after the last epoch
    except OSError as e:
        raise FinetuneError(f"--out: {e}") from None
    if cfg.json is not None:
        problem = output_file_problem(cfg.json, overwrite=cfg.overwrite)
        if problem:
            raise FinetuneError(f"--json {cfg.json} {problem}")
    return cfg


def load_test_images(cfg, load_size, img_size):
    """Every readable image of --test-data (any layout data.py reads), centre-cropped, and its labels."""
    dataset = load_dataset(cfg.test_data, size=load_size, progress=cfg.progress)
    return center_crop(dataset.images, img_size), dataset.labels


def finetune(cfg):
    """Run the fine-tuning described by cfg (a FinetuneConfig). -> the result dict (also printed by main).

    Raises FinetuneError, DataError, CheckpointError or FolderBusy with a message for the user."""
    header, arrays, mcfg = read_vit_checkpoint(cfg.checkpoint)
    if cfg.trainable_blocks is not None and cfg.trainable_blocks > mcfg.depth:
        raise FinetuneError(f"--trainable-blocks {cfg.trainable_blocks}: the encoder of {cfg.checkpoint} has "
                            f"{mcfg.depth} block{'s' if mcfg.depth != 1 else ''}; choose 0 to {mcfg.depth}, or "
                            "leave it out to train every block")
    cfg = check_outputs(cfg)
    with RunLock(cfg.out):  # one writer per output folder
        remove_stale_temporaries(cfg.out, RESULT_FILES)  # left by a killed run (util/files.py)
        return train(cfg, header, arrays, mcfg)


def train(cfg, header, arrays, mcfg):
    """The body of `finetune`, with the output folder locked."""
    data = FinetuneData(cfg, header, mcfg.img_size, mcfg.patch_size)
    test = load_test_images(cfg, data.info["load_size"], mcfg.img_size) if cfg.test_data else None

    # Every random draw comes from a generator of its own, so that changing one use leaves the others
    # alone: [seed, 0] the labelled subset (labelled_subset), [seed, 1] the batches and augmentation,
    # [seed, 2] the training-accuracy sample, [seed, 3] the head; --from-scratch's encoder is
    # MaskedAutoencoderViT(config, seed), initialised as pre-training initialises it.
    mae = build_model("vit", header["config"], seed=cfg.seed)  # (the ablation's class for its checkpoints)
    if not cfg.from_scratch:
        load_params(mae, arrays, cfg.checkpoint)
    model = ViTClassifier(mae, num_classes=len(CLASSES), smoothing=cfg.label_smoothing, seed=[cfg.seed, 3],
                          trainable_blocks=cfg.trainable_blocks)
    del mae, arrays

    optimizer = build_optimizer(model, cfg)
    runner = fast.runner(model, cfg.threads)
    n_train = len(data.train_images)
    batch_size = min(cfg.batch_size, n_train)  # fewer labelled images than a batch: all of them
    steps_per_epoch = n_train // batch_size  # the last partial batch is dropped, as the official loader
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def schedule(step):
        return cosine_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)

    # Training accuracy is measured like the validation one (centre crops, after the epoch), so that the
    # gap between the two is the over-fitting; on a fixed sample of the labelled images, so that it costs
    # a few seconds per epoch, not one more pass over the whole training set.
    train_eval = np.sort(host_rng([cfg.seed, 2]).permutation(n_train)[:TRAIN_ACCURACY_IMAGES])  # (n_eval,)
    train_eval_images = center_crop(data.train_images[train_eval], mcfg.img_size)  # (n_eval, S, S, 3)
    rng = host_rng([cfg.seed, 1])  # each epoch's order, then its batches' crops and flips
    batch_source, prepare = training_batches, None
    if fast.resident_data():  # the photos on the device, each batch cut there (fast/__init__.py decides)
        images = fast_data.DeviceImages(data.train_images, data.mean, data.std, mcfg.img_size)
        batch_source, prepare = device_batches, device_inputs(images, cfg.mixup)

    source = "random initialisation" if cfg.from_scratch else f"{cfg.checkpoint} (epoch {header.get('epoch')})"
    trains = "" if model.frozen_blocks == 0 else \
        f" ({sum(int(model.params[n].size) for n in model.trainable):,} of them trained: the last {cfg.trainable_blocks} blocks)"
    print(f"ViT classifier from {source}, {model.num_params():,} parameters{trains}, backend {backend.name}"
          f"{runner.describe()}; {n_train} labelled training / {len(data.val_images)} validation images; "
          f"{steps_per_epoch} steps of {batch_size} per epoch", flush=True)

    history, wall_time = [], 0.0
    try:
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            perm = rng.permutation(n_train)
            batches = prefetched(batch_source(data, perm, batch_size, mcfg.img_size, rng, cfg, mcfg.depth))
            stats = train_one_epoch(runner, optimizer, batches, steps_per_epoch, epoch * steps_per_epoch, schedule,
                                    f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress, prepare)
            measured = ""
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                stats["train_accuracy"] = accuracy(model, train_eval_images, data.train_labels[train_eval],
                                                   data.mean, data.std, runner)
                stats["val_accuracy"] = accuracy(model, data.val_images, data.val_labels, data.mean, data.std, runner)
                measured = (f"train accuracy {100 * stats['train_accuracy']:5.1f}%  "
                            f"val accuracy {100 * stats['val_accuracy']:5.1f}%  ")
            wall_time += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, **stats, "epoch_time_s": time.perf_counter() - t0})
            print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {stats['train_loss']:.4f}  {measured}"
                  f"{stats['train_time_s']:.1f} s, {stats['train_images_per_s']:.0f} img/s", flush=True)
    except Diverged as e:
        raise FinetuneError(f"fine-tuning diverged: {e}; try a lower --lr or more --warmup-epochs") from None
    finally:
        runner.close()

    # ---- results: printed first, then classifier.npz, result.json, --json ---------------------
    result = {"checkpoint": os.path.abspath(cfg.checkpoint), "from_scratch": cfg.from_scratch,
              "labels_per_class": cfg.labels_per_class, "trainable_blocks": cfg.trainable_blocks,
              "drop_path": cfg.drop_path, "seed": cfg.seed, "epochs": cfg.epochs, "n_train": n_train,
              "n_val": len(data.val_images), "val_accuracy": history[-1]["val_accuracy"],
              "train_accuracy": history[-1]["train_accuracy"], "final_train_loss": history[-1]["train_loss"]}
    if test is not None:
        result.update(test_data=os.path.abspath(cfg.test_data), n_test=len(test[0]),
                      test_accuracy=accuracy(model, test[0], test[1], data.mean, data.std))
    result.update(backend=backend.name, wall_time_s=wall_time, out=os.path.abspath(cfg.out))
    print(json.dumps(result), flush=True)  # before any file: a full disk below cannot cost the numbers

    details = {**result, "settings": vars(cfg), "pretrain_settings": header["settings"], "data": data.info,
               "labelled_indices": data.labelled.tolist() if cfg.labels_per_class is not None else None,
               "history": history}
    save_checkpoint(os.path.join(cfg.out, "classifier.npz"), model,
                    meta={"num_classes": model.num_classes, "label_smoothing": model.smoothing, **details})
    if cfg.json is not None:
        write_atomically(cfg.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
    # result.json last: its presence marks the fine-tuning finished (research/runs.py reads it)
    write_atomically(os.path.join(cfg.out, "result.json"), lambda f: f.write(json.dumps(details, indent=2).encode()))
    return result


def main(argv=None, prog="python -m tinymae.finetune"):
    """The command line: one clear line and a non-zero exit code for every error a user can cause. The
    result is printed as one JSON line (by finetune, before its files are written)."""
    cfg = parse_args(argv, prog)
    try:
        finetune(cfg)
    except (FinetuneError, DataError, CheckpointError, FolderBusy) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk or a folder that became read-only while training
        sys.exit(f"error: {e.strerror or e} ({e.filename or 'an output file'}); free some space or fix the "
                 "permissions, then run again (the accuracy above, if printed, is complete)")
    except KeyboardInterrupt:  # the shell's convention for Ctrl-C: 128 + SIGINT
        print("\ninterrupted; nothing was saved (a fine-tuning run is saved at its end)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
