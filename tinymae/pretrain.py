"""Pre-train a masked autoencoder on a folder of photos: main_pretrain.py of the official MAE, for tinymae.

    python -m tinymae.pretrain --data data/catsdogs --download     # the MLP MAE, 50 epochs (fetches the photos)
    python -m tinymae.pretrain --data data/catsdogs --arch vit     # the paper's ViT MAE
    (examples/train_catsdogs.py is the same command)

A run, in the order of `pretrain`:

    the folder        locked for this process (util/files.RunLock); a new run, an --overwrite of an old one,
                      or a --resume of its checkpoint (util/resume.py)
    PretrainData      decode the photos once (cached), split them 80:20 within each class, measure the
                      training split's colour statistics and its average patch (a baseline) (data.py)
    the model, AdamW and the schedule, or all of them restored from <out>/checkpoint.npz
    for every epoch:
        train_one_epoch   shuffled batches: crop + flip, normalise, mask noise; forward, backward, AdamW
                          (engine.py, on every core: fast/)
        validation        masked-patch MSE on the validation images, with fixed masks
        checkpoint        written atomically, and only while both losses are finite
    the results       printed, then loss.png, reconstructions.png and metrics.json (last: it marks the
                      run finished)

Every setting is a field of config.PretrainConfig (the recipe) or of the model's config; the flags are
built from them.
"""
import argparse
import json
import math
import os
import sys
import time

from . import backend, fast
from .backend import host_rng
from .config import MODEL_CONFIGS, MLPConfig, PretrainConfig, ViTConfig, flag_name, model_config
from .data import PretrainData, augmented_batches
from .engine import Diverged, prefetched, train_one_epoch
from .evaluate import figure_batch, reconstruction_metrics
from .fast import data as fast_data
from .model.build import build_model
from .model.optim import cosine_lr
from .util.checkpoint import CheckpointError, load_params, optimizer_state, save_checkpoint
from .util.cli import add_config_arguments, split_settings
from .util.datasets import DataError, same_photos
from .util.figures import save_loss_curves, save_reconstructions
from .util.files import (FolderBusy, RunLock, check_free_space, check_writable, remove_stale_temporaries,
                         write_atomically)
from .util.resume import (OUTPUTS, ResumeError, checkpoint_path, finished_metrics, new_run_id, remove_old_outputs,
                          start_or_resume)


class TrainingError(Exception):
    """A run that cannot start or go on, with what is wrong and what to do (one line for the user)."""


# ----------------------------------------------------------------------------------------------
# settings

def parse_args(argv=None, prog="python -m tinymae.pretrain"):
    """-> (PretrainConfig, every flag typed: {name: value}), every flag validated before any work."""
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
    return cfg, typed


def resolve_paths(cfg):
    """Fill the defaults that depend on other settings (a copy of cfg)."""
    cfg = PretrainConfig(**vars(cfg))
    if cfg.out is None:
        cfg.out = os.path.join("runs", cfg.arch)
    return cfg


def training_batches(data, perm, batch_size, img_size, num_patches, rng):
    """The epoch's batches as host arrays, in order: (imgs (B, 3, S, S) normalised float32, noise (B, L)).

    Every random number of a step is drawn here, from `rng`, in a fixed order (crop offsets and flips,
    then the mask noise), so a run is the same whether this runs ahead on another thread or not."""
    for idx, imgs in augmented_batches(data.train_images, data.mean, data.std, perm, batch_size, img_size, rng):
        noise = rng.random((len(idx), num_patches), dtype="float32")  # (B, L), as masking.masking_noise draws it
        yield imgs, noise


def device_batches(data, perm, batch_size, img_size, num_patches, rng):
    """training_batches' draws, for photos resident on the device (fast/data.py): (idx, tops, lefts, flips,
    noise) per batch, the same numbers in the same order; DeviceImages.batch makes the images from them."""
    for idx, tops, lefts, flips in fast_data.draws(perm, batch_size, data.train_images.shape[1], img_size, rng):
        noise = rng.random((len(idx), num_patches), dtype="float32")  # (B, L)
        yield idx, tops, lefts, flips, noise


# ----------------------------------------------------------------------------------------------
# the run

def pretrain(cfg, typed=None):
    """Run the pre-training described by cfg (a PretrainConfig) and every flag the user typed ({name: value},
    model settings included). -> the metrics dict written to metrics.json (None when a resumed run had
    nothing left to do). Raises TrainingError, ResumeError, DataError, CheckpointError or FolderBusy with a
    message for the user."""
    cfg = resolve_paths(cfg)
    try:
        check_writable(cfg.out)  # before any work: a read-only or full folder fails now, not after an epoch
    except OSError as e:
        raise TrainingError(f"--out: {e}") from None
    with RunLock(cfg.out):  # one writer per run folder, from here until the run's last file is written
        cfg, model_settings, resumed = start_or_resume(cfg, dict(typed or {}))
        if resumed is None and cfg.overwrite:
            remove_old_outputs(cfg)
        remove_stale_temporaries(cfg.out, OUTPUTS)  # left by a killed run (util/files.py)
        return train(cfg, model_settings, resumed)


def train(cfg, model_settings, resumed):
    """The body of `pretrain`, with the run folder locked and the settings decided."""
    path = checkpoint_path(cfg)
    run_id = resumed[0].get("run_id") or new_run_id() if resumed is not None else new_run_id()
    done = resumed[0]["epoch"] if resumed is not None else 0
    if done > cfg.epochs or (done == cfg.epochs and finished_metrics(cfg, run_id) is not None):
        print(f"{path} has already trained {done} epochs (--epochs {cfg.epochs}) and its results are complete: "
              "nothing to do. Pass a larger --epochs to train longer.")
        return None

    model = build_model(cfg.arch, model_settings, seed=cfg.seed)
    mcfg = model.config
    try:  # room for a checkpoint (weights and both AdamW moments) before the first epoch, not after it
        check_free_space(cfg.out, 12 * model.num_params() + 2 ** 20, "a checkpoint of this model")
    except OSError as e:
        raise TrainingError(f"--out: {e}") from None
    data = PretrainData(cfg, mcfg.img_size, mcfg.patch_size)
    if resumed is not None:
        same, now = same_photos(resumed[0]["data"], data.dataset)
        if not same:
            recorded = resumed[0]["data"]
            raise TrainingError(
                f"the images under {cfg.data} are not the ones {path} was trained on (it used "
                f"{recorded['n_train'] + recorded['n_val']} images with fingerprint {recorded.get('fingerprint')}; "
                f"now {data.info['n_train'] + data.info['n_val']} with {now}). Resuming would change the split, "
                "the normalisation and the schedule: point --data at the original images, or start a new run in "
                "another --out")
        data.info.update(fingerprint=resumed[0]["data"]["fingerprint"],
                         fingerprint_kind=resumed[0]["data"].get("fingerprint_kind", "sizes"))

    optimizer = fast.AdamW(model.params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay,
                           no_decay=model.no_decay)
    runner = fast.runner(model, cfg.threads)
    cfg.batch_size = min(cfg.batch_size, data.info["n_train"])
    steps_per_epoch = data.info["n_train"] // cfg.batch_size
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def schedule(step):
        return cosine_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)

    rng = host_rng(cfg.seed + 1)  # batches, augmentation and masks, in that order, every step
    batch_source, prepare = training_batches, None
    if fast.resident_data():  # the photos on the device, each batch cut there (fast/__init__.py decides)
        images = fast_data.DeviceImages(data.train_images, data.mean, data.std, mcfg.img_size)
        batch_source, prepare = device_batches, images.inputs
    history, wall_time = [], 0.0
    if resumed is not None:
        header, arrays = resumed
        load_params(model, arrays, path)
        try:
            optimizer.load_state_dict(optimizer_state(arrays))
            rng.bit_generator.state = header["rng_state"]
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path} holds no usable optimiser or random state ({e})") from None
        history, wall_time = header["history"], header["wall_time_s"]
        print(f"resuming from {path} after epoch {done} (lr {cfg.lr:g}, {cfg.epochs} epochs)")

    print(f"{cfg.arch} MAE, {model.num_params():,} parameters, backend {backend.name}{runner.describe()}; "
          f"{data.info['n_train']} training / {data.info['n_val']} validation images "
          f"({data.info['skipped_files']} files skipped); {steps_per_epoch} steps of {cfg.batch_size} per epoch")

    def save(epoch):
        """Checkpoint after `epoch` complete epochs."""
        meta = {"epoch": epoch, "step": epoch * steps_per_epoch, "run_id": run_id, "settings": vars(cfg),
                "data": data.info, "rng_state": rng.bit_generator.state, "history": history,
                "wall_time_s": wall_time, "backend": backend.name}
        save_checkpoint(path, model, optimizer, meta=meta, extra={"mean_patch": data.mean_patch})

    # The baselines do not depend on the model: measure them once on the validation masks, not every epoch.
    start = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                   mean_patch=data.mean_patch, runner=runner)
    baseline_mse = start["baselines"]["mean_patch"]["masked_mse"]
    try:
        for epoch in range(done, cfg.epochs):
            t0 = time.perf_counter()
            perm = rng.permutation(data.info["n_train"])
            batches = prefetched(batch_source(data, perm, cfg.batch_size, mcfg.img_size, mcfg.num_patches, rng))
            stats = train_one_epoch(runner, optimizer, batches, steps_per_epoch, epoch * steps_per_epoch, schedule,
                                    f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress, prepare)
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
        return write_results(cfg, model, data, runner, history, wall_time, run_id)
    except Diverged as e:
        last = (f"the last good checkpoint (finite losses) is {path}" if os.path.exists(path)
                else "no checkpoint was written")
        raise TrainingError(f"training diverged: {e}. Stopped; {last}. Continue it with --resume and a lower --lr, "
                            "or start again with a lower --lr or more --warmup-epochs") from None
    finally:
        runner.close()


def write_results(cfg, model, data, runner, history, wall_time, run_id):
    """The final validation against the baselines, printed first, then loss.png, reconstructions.png and
    metrics.json, which is written last: its presence (with this run's id) marks the run finished."""
    mcfg = model.config
    final = reconstruction_metrics(model, data.val_images, data.mean, data.std, mask_seed=cfg.seed,
                                   mean_patch=data.mean_patch, runner=runner)
    base = final["baselines"]
    print(f"done in {wall_time:.0f} s. Validation masked-patch MSE {final['masked_mse']:.5f} ({final['masked_psnr']:.2f} dB); "
          f"baselines: mean patch {base['mean_patch']['masked_mse']:.5f}, visible mean "
          f"{base['visible_mean']['masked_mse']:.5f}, nearest visible {base['nearest_visible']['masked_mse']:.5f}; "
          f"ratio to mean patch {ratio_text(final['ratio_to_mean_patch'])}.", flush=True)
    save_loss_curves(os.path.join(cfg.out, "loss.png"), history, baseline_mse=base["mean_patch"]["masked_mse"])
    if cfg.figure_images > 0:
        imgs_pix, mask, pred_pix = figure_batch(model, data.val_images, data.mean, data.std, cfg.seed, cfg.figure_images)
        save_reconstructions(os.path.join(cfg.out, "reconstructions.png"), imgs_pix, mask, pred_pix, mcfg.patch_size,
                             title=f"{cfg.arch} MAE, validation images, epoch {cfg.epochs}")
    metrics = {"arch": cfg.arch, "run_id": run_id, "backend": backend.name, "config": mcfg.to_dict(),
               "n_params": model.num_params(), "settings": vars(cfg), "data": data.info, "wall_time_s": wall_time,
               "history": history, "final_validation": final}
    write_atomically(os.path.join(cfg.out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    print(f"Outputs in {cfg.out}/")
    return metrics


def ratio_text(ratio):
    """None when the mean-patch baseline is exact (every image is the average image): no ratio to show."""
    return "n/a" if ratio is None else f"{ratio:.3f}"


def main(argv=None, prog="python -m tinymae.pretrain"):
    """The command line: one clear line and a non-zero exit code for every error a user can cause."""
    cfg, typed = parse_args(argv, prog)
    try:
        pretrain(cfg, typed)
    except (TrainingError, ResumeError, DataError, CheckpointError, FolderBusy) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk or a folder that became read-only while training
        sys.exit(f"error: {e.strerror or e} ({e.filename or 'an output file'}). The last checkpoint, if any, "
                 "is intact; free some space or fix the permissions, then continue with --resume")
    except KeyboardInterrupt:  # the shell's convention for Ctrl-C: 128 + SIGINT
        out = resolve_paths(cfg).out
        print(f"\ninterrupted. Every finished epoch is in {os.path.join(out, 'checkpoint.npz')} (if one finished); "
              "continue with the same command plus --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
