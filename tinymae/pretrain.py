"""Pre-train a masked autoencoder on a folder of photos: main_pretrain.py and engine_pretrain.py of the
official MAE, for tinymae's engine.

    python -m tinymae.pretrain --data ../shared/data/catsdogs              # the MLP MAE, 50 epochs
    python -m tinymae.pretrain --data ../shared/data/catsdogs --arch vit   # the paper's ViT MAE
    (examples/train_catsdogs.py is the same command)

A run, in the order of `pretrain`:

    prepare_data      decode the photos once (cached), split them 80:20 within each class, measure the
                      training split's colour statistics and its average patch (a baseline)
    the model, AdamW and the schedule, or all of them restored from <out>/checkpoint.npz (--resume)
    for every epoch:
        train_one_epoch   shuffled batches: crop + flip, normalise, draw masks, forward, backward, AdamW
        validation        masked-patch MSE on the validation images, with fixed masks
        checkpoint        written atomically, and only while both losses are finite
    metrics.json, loss.png and reconstructions.png

Every setting is a field of config.PretrainConfig (the recipe) or of the model's config; the flags are
built from them.
"""
import argparse
import json
import math
import os
import queue
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from . import backend, speed
from .backend import asarray, host_rng
from .checkpoint import CheckpointError, load_params, optimizer_state, read_checkpoint, save_checkpoint
from .config import (MODEL_CONFIGS, MLPConfig, PretrainConfig, ViTConfig, add_config_arguments, flag_name,
                     model_config, resumable_settings, split_settings)
from .data import (DataError, center_crop, channel_stats, download_catsdogs, fingerprint, folder_has_images,
                   load_dataset, normalize, random_crop_flip, stratified_split)
from .evaluate import figure_batch, reconstruction_metrics
from .figures import save_loss_curves, save_reconstructions
from .files import check_writable, remove_stale_temporaries, write_atomically
from .models import build_model
from .optim import AdamW, cosine_lr
from .parallel import DataParallel
from .patches import patchify


class TrainingError(Exception):
    """A run that cannot start or go on, with what is wrong and what to do (one line for the user)."""


class Diverged(TrainingError):
    pass


# ----------------------------------------------------------------------------------------------
# settings

def parse_args(argv=None, prog="python -m tinymae.pretrain"):
    """-> (PretrainConfig, model settings typed on the command line, every flag typed)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Pre-train a masked autoencoder (MAE) on Cats & Dogs photos with tinymae's hand-written "
                    "NumPy/CuPy engine. Set TINYMAE_BACKEND=cupy to train on a GPU.")
    add_config_arguments(parser, PretrainConfig, title="recipe and run")
    add_config_arguments(parser, MLPConfig, ViTConfig, title="model (defaults per --arch)")
    typed = vars(parser.parse_args(argv))
    recipe, model_typed = split_settings(typed, PretrainConfig)
    cfg = PretrainConfig(**recipe)
    other = [k for k in model_typed if k not in MODEL_CONFIGS[cfg.arch].__dataclass_fields__]
    if other:
        parser.error(f"--arch {cfg.arch} has no {', '.join(flag_name(k) for k in other)} (a setting of the other "
                     "architecture)")
    try:
        cfg.validate()
        model_config(cfg.arch, model_typed).validate()  # flags of the other architecture, nonsense sizes
    except ValueError as e:
        parser.error(str(e))
    return cfg, model_typed, typed


def resolve_paths(cfg):
    """Fill the defaults that depend on other settings (a copy of cfg)."""
    cfg = PretrainConfig(**vars(cfg))
    if cfg.out is None:
        cfg.out = os.path.join("runs", cfg.arch)
    return cfg


# ----------------------------------------------------------------------------------------------
# data

class PretrainData:
    """The run's images and the statistics everything else is measured with (all host arrays)."""

    def __init__(self, cfg, img_size, patch_size):
        load_size = cfg.load_size or img_size * 9 // 8
        if load_size < img_size:
            raise DataError(f"--load-size {load_size} is smaller than --img-size {img_size}")
        if cfg.download and not folder_has_images(cfg.data):
            download_catsdogs(cfg.data, progress=cfg.progress)
        dataset = load_dataset(cfg.data, size=load_size, per_class=cfg.per_class, progress=cfg.progress)
        train_idx, val_idx = stratified_split(dataset.labels, cfg.val_fraction, seed=cfg.seed)
        if len(train_idx) < 1 or len(val_idx) < 1:
            raise DataError(f"{len(dataset.labels)} readable images make {len(train_idx)} training and "
                            f"{len(val_idx)} validation images with --val-fraction {cfg.val_fraction}; each split "
                            "needs at least one image per class: use more images (--per-class) or another "
                            "--val-fraction")
        self.train_images = dataset.images[train_idx]  # (N_train, S_load, S_load, 3) uint8
        self.val_images = center_crop(dataset.images[val_idx], img_size)  # (N_val, S, S, 3) uint8
        self.train_labels, self.val_labels = dataset.labels[train_idx], dataset.labels[val_idx]  # 0 cat, 1 dog
        self.mean, self.std = channel_stats(self.train_images)  # (3,), (3,) in [0, 1] units, training split only
        # The mean-patch baseline: the training images' average patch at each position, in pixels.
        train_pix = center_crop(self.train_images, img_size).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        self.mean_patch = patchify(train_pix, patch_size).mean(axis=0)  # (L, P)
        self.info = {"load_size": load_size, "mean": self.mean.tolist(), "std": self.std.tolist(),
                     "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
                     "skipped_files": len(dataset.skipped), "fingerprint": fingerprint(dataset)}


def training_batches(data, perm, batch_size, img_size, num_patches, rng):
    """The epoch's batches as host arrays, in order: (imgs (B, 3, S, S) normalised float32, noise (B, L)).

    Every random number of a step is drawn here, from `rng`, in a fixed order (crop offsets and flips,
    then the mask noise), so a run is the same whether this runs ahead on another thread or not."""
    for i in range(len(perm) // batch_size):
        batch = random_crop_flip(data.train_images[perm[i * batch_size:(i + 1) * batch_size]], img_size, rng)
        noise = rng.random((batch_size, num_patches), dtype="float32")  # (B, L), as masking.masking_noise draws it
        yield normalize(batch, data.mean, data.std), noise


def prefetched(batches, depth=2):
    """Run the generator `batches` on a background thread, `depth` batches ahead of the training step.

    Like a PyTorch DataLoader worker: on a GPU the host prepares the next batch while the device computes
    this one. The generator runs to its end on that one thread, so its random draws happen in the same
    order as without prefetching; an exception there (Ctrl-C included) is raised here."""
    slots = queue.Queue(maxsize=depth)
    stop = threading.Event()  # set by the consumer when it leaves early (an error, Ctrl-C, a divergence)
    DONE = object()

    def put(item):
        """Wait for a free slot, but give up as soon as the consumer has left."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in batches:
                if not put(item):
                    return
            put(DONE)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)

    thread = threading.Thread(target=produce, name="tinymae-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------------------------
# one epoch

def train_one_epoch(model, optimizer, runner, data, cfg, epoch, rng, schedule, progress=True):
    """One pass over the training split, as engine_pretrain.train_one_epoch. -> a dict of figures.

    runner: parallel.DataParallel, which computes model.forward + model.backward (on several threads
    on the CPU) and the AdamW step. schedule(step) -> learning rate. Raises Diverged on a NaN/inf loss."""
    mcfg = model.config
    steps = len(data.train_images) // cfg.batch_size  # the last partial batch is dropped, as MAE's loader
    perm = rng.permutation(len(data.train_images))
    batches = prefetched(training_batches(data, perm, cfg.batch_size, mcfg.img_size, mcfg.num_patches, rng))
    return train_steps(runner, optimizer, batches, steps, epoch * steps, schedule,
                       f"epoch {epoch + 1}/{cfg.epochs}", progress)


def train_steps(runner, optimizer, batches, steps, first_step, schedule, desc, progress=True):
    """The steps of one epoch, the loop that pre-training and fine-tuning share. -> a dict of figures.

    For each batch (host arrays from `batches`): move it to the device, forward and backward
    (runner.loss_and_grads, on every core), this step's learning rate, the AdamW step. Raises Diverged
    at the first loss that is not a finite number."""
    bar = tqdm(total=steps, desc=desc, unit="step", leave=False, disable=not progress)
    t0 = time.perf_counter()
    loss_sum, waiting, images = 0.0, 0.0, 0
    try:
        for i in range(steps):
            t_wait = time.perf_counter()
            batch = [asarray(a) for a in next(batches)]  # host -> device: (imgs, noise) or (imgs, labels)
            waiting += time.perf_counter() - t_wait

            loss, grads = runner.loss_and_grads(*batch)  # model.forward, model.backward(1.0, cache)
            optimizer.lr = schedule(first_step + i)
            runner.optimizer_step(optimizer, grads)
            del grads

            loss_value = float(loss)  # the one device -> host number per step
            if not math.isfinite(loss_value):
                raise Diverged(f"the loss became {loss_value} at {desc.split('/')[0]}, step {i + 1}")
            loss_sum += loss_value
            images += batch[0].shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images / (time.perf_counter() - t0):.0f}")
        for _ in batches:  # the generator is done: this ends its thread
            pass
    finally:
        batches.close()  # an error or Ctrl-C above: stop the batch thread too
        bar.close()
    seconds = time.perf_counter() - t0
    return {"train_loss": loss_sum / steps, "lr": optimizer.lr, "train_time_s": seconds,
            "train_images_per_s": images / seconds, "waiting_for_data_s": waiting}


# ----------------------------------------------------------------------------------------------
# the run

def checkpoint_path(cfg):
    return os.path.join(cfg.out, "checkpoint.npz")


def start_or_resume(cfg, model_typed, typed):
    """The run's settings: new ones, or a checkpoint's with the flags a resumed run may change.

    -> (cfg, model settings, (header, arrays) of the checkpoint or None)."""
    path = checkpoint_path(cfg)
    if not cfg.resume:
        existing = [name for name in ("checkpoint.npz", "metrics.json") if os.path.exists(os.path.join(cfg.out, name))]
        if existing and not cfg.overwrite:
            raise TrainingError(f"{cfg.out} already holds a run ({', '.join(existing)}); training again would "
                                "replace it. Continue it with --resume, choose another --out, or pass --overwrite "
                                "to start over")
        return cfg, model_typed, None
    try:
        header, arrays = read_checkpoint(path)
    except CheckpointError as e:
        raise TrainingError(f"cannot resume: {e}. Train without --resume first (same --out)") from None
    saved, saved_model = header.get("settings"), header.get("config")
    if not isinstance(saved, dict) or not isinstance(saved_model, dict):
        raise TrainingError(f"cannot resume: {path} was not written by tinymae.pretrain (no run settings)")
    # A resumed run is the checkpoint's run: its recipe and model, with only the flags marked
    # on_resume="new" in config.PretrainConfig taken from this command line.
    may_change = resumable_settings(PretrainConfig)
    ignored = [k for k, v in typed.items() if k not in may_change and v != {**saved, **saved_model}.get(k, v)]
    if ignored:
        print("note: a resumed run keeps its checkpoint's settings; ignoring the new values of "
              + ", ".join("--" + k.replace("_", "-") for k in sorted(ignored)))
    settings = {k: v for k, v in saved.items() if k in PretrainConfig.__dataclass_fields__}
    settings.update({k: v for k, v in typed.items() if k in may_change})
    settings.update(out=cfg.out, resume=True)  # where this command found the checkpoint
    resumed = PretrainConfig(**settings)
    try:
        resumed.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return resumed, saved_model, (header, arrays)


def pretrain(cfg, model_typed=None, typed=None):
    """Run the pre-training described by cfg (a PretrainConfig) and the typed model settings.

    -> the metrics dict written to metrics.json (or None when a resumed run had nothing left to do).
    Raises TrainingError, DataError or CheckpointError with a message for the user."""
    cfg = resolve_paths(cfg)
    model_typed, typed = dict(model_typed or {}), dict(typed or {})
    cfg, model_settings, resumed = start_or_resume(cfg, model_typed, typed)
    path = checkpoint_path(cfg)
    if resumed is not None:
        done = resumed[0]["epoch"]
        finished = done == cfg.epochs and os.path.exists(os.path.join(cfg.out, "metrics.json"))
        if done > cfg.epochs or finished:  # (a run stopped after its last checkpoint still writes its results)
            print(f"{path} has already trained {done} epochs (--epochs {cfg.epochs}): nothing to do. "
                  "Pass a larger --epochs to train longer.")
            return None
    try:
        check_writable(cfg.out)  # before any work: a read-only or full folder fails now, not after an epoch
    except OSError as e:
        raise TrainingError(f"--out: {e}") from None
    remove_stale_temporaries(cfg.out, ("checkpoint.npz", "metrics.json"))  # left by a killed run (files.py)
    speed.keep_freed_memory()  # reuse freed big arrays instead of page-faulting new memory (speed.py)

    model = build_model(cfg.arch, model_settings, seed=cfg.seed)
    mcfg = model.config
    data = PretrainData(cfg, mcfg.img_size, mcfg.patch_size)
    if resumed is not None and resumed[0]["data"].get("fingerprint") != data.info["fingerprint"]:
        raise TrainingError(
            f"the images under {cfg.data} are not the ones {path} was trained on (it used "
            f"{resumed[0]['data']['n_train'] + resumed[0]['data']['n_val']} images with fingerprint "
            f"{resumed[0]['data'].get('fingerprint')}; now {data.info['n_train'] + data.info['n_val']} with "
            f"{data.info['fingerprint']}). Resuming would change the split, the normalisation and the schedule: "
            "point --data at the original images, or start a new run in another --out")

    optimizer = AdamW(model.params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay,
                      no_decay=model.no_decay)
    runner = DataParallel(model, cfg.threads)
    batch_size = min(cfg.batch_size, data.info["n_train"])
    cfg.batch_size = batch_size
    steps_per_epoch = data.info["n_train"] // batch_size
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def schedule(step):
        return cosine_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)

    rng = host_rng(cfg.seed + 1)  # batches, augmentation and masks, in that order, every step
    start_epoch, history, wall_time = 0, [], 0.0
    if resumed is not None:
        header, arrays = resumed
        load_params(model, arrays, path)
        try:
            optimizer.load_state_dict(optimizer_state(arrays))
            rng.bit_generator.state = header["rng_state"]
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path} holds no usable optimiser or random state ({e})") from None
        start_epoch, history, wall_time = header["epoch"], header["history"], header["wall_time_s"]
        print(f"resuming from {path} after epoch {start_epoch} (lr {cfg.lr:g}, {cfg.epochs} epochs)")

    print(f"{cfg.arch} MAE, {model.num_params():,} parameters, backend {backend.name}"
          f"{'' if runner.pool is None else f', {runner.threads} threads'}; {data.info['n_train']} training / "
          f"{data.info['n_val']} validation images ({data.info['skipped_files']} files skipped); "
          f"{steps_per_epoch} steps of {batch_size} per epoch")

    def save(epoch):
        """Checkpoint after `epoch` complete epochs."""
        meta = {"epoch": epoch, "step": epoch * steps_per_epoch, "settings": vars(cfg), "data": data.info,
                "rng_state": rng.bit_generator.state, "history": history, "wall_time_s": wall_time,
                "backend": backend.name}
        save_checkpoint(path, model, optimizer, meta=meta, extra={"mean_patch": data.mean_patch})

    # The baselines do not depend on the model: measure them once on the validation masks, not every epoch.
    start = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                   mean_patch=data.mean_patch, runner=runner)
    baseline_mse = start["baselines"]["mean_patch"]["masked_mse"]

    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            stats = train_one_epoch(model, optimizer, runner, data, cfg, epoch, rng, schedule, cfg.progress)
            val = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                         baselines=False, runner=runner)
            if not math.isfinite(val["loss"]):
                raise Diverged(f"the validation loss became {val['loss']} after epoch {epoch + 1}")
            wall_time += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, **stats, "val_loss": val["loss"], "val_masked_mse": val["masked_mse"],
                            "val_masked_psnr": val["masked_psnr"], "epoch_time_s": time.perf_counter() - t0})
            save(epoch + 1)
            print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {stats['train_loss']:.4f}  val loss {val['loss']:.4f}  "
                  f"val masked MSE {val['masked_mse']:.5f} ({val['masked_mse'] / baseline_mse:.3f}x mean patch, "
                  f"{val['masked_psnr']:.2f} dB)  {stats['train_time_s']:.1f} s, "
                  f"{stats['train_images_per_s']:.0f} img/s", flush=True)
    except Diverged as e:
        runner.close()
        last = (f"the last good checkpoint (finite losses) is {path}" if os.path.exists(path)
                else "no checkpoint was written")
        raise Diverged(f"training diverged: {e}. Stopped; {last}. Continue it with --resume and a lower --lr, or "
                       "start again with a lower --lr or more --warmup-epochs") from None
    except KeyboardInterrupt:
        runner.close()
        raise KeyboardInterrupt(f"interrupted. The last checkpoint (every finished epoch) is {path}; continue "
                                "with the same command plus --resume") from None

    # ---- results: metrics.json, loss.png, reconstructions.png -----------------------------------
    final = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                   mean_patch=data.mean_patch, runner=runner)
    runner.close()
    metrics = {"arch": cfg.arch, "backend": backend.name, "config": mcfg.to_dict(), "n_params": model.num_params(),
               "settings": vars(cfg), "data": data.info, "wall_time_s": wall_time, "history": history,
               "final_validation": final}
    write_atomically(os.path.join(cfg.out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    save_loss_curves(os.path.join(cfg.out, "loss.png"), history, baseline_mse=final["baselines"]["mean_patch"]["masked_mse"])
    if cfg.figure_images > 0:
        imgs_pix, mask, pred_pix = figure_batch(model, data.val_images, data.mean, data.std, cfg.seed, cfg.figure_images)
        save_reconstructions(os.path.join(cfg.out, "reconstructions.png"), imgs_pix, mask, pred_pix, mcfg.patch_size,
                             title=f"{cfg.arch} MAE, validation images, epoch {cfg.epochs}")
    base = final["baselines"]
    print(f"done in {wall_time:.0f} s. Validation masked-patch MSE {final['masked_mse']:.5f} ({final['masked_psnr']:.2f} dB); "
          f"baselines: mean patch {base['mean_patch']['masked_mse']:.5f}, visible mean "
          f"{base['visible_mean']['masked_mse']:.5f}, nearest visible {base['nearest_visible']['masked_mse']:.5f}; "
          f"ratio to mean patch {ratio_text(final['ratio_to_mean_patch'])}. Outputs in {cfg.out}/")
    return metrics


def ratio_text(ratio):
    """None when the mean-patch baseline is exact (every image is the average image): no ratio to show."""
    return "n/a" if ratio is None else f"{ratio:.3f}"


def main(argv=None, prog="python -m tinymae.pretrain"):
    """The command line: one clear line and a non-zero exit code for every error a user can cause."""
    cfg, model_typed, typed = parse_args(argv, prog)
    try:
        pretrain(cfg, model_typed, typed)
    except (TrainingError, DataError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk or a folder that became read-only while training
        sys.exit(f"error: {e.strerror or e} ({e.filename or 'an output file'}). The last checkpoint, if any, "
                 "is intact; free some space or fix the permissions, then continue with --resume")
    except KeyboardInterrupt as e:  # the shell's convention for Ctrl-C: 128 + SIGINT
        print(f"\n{e or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
