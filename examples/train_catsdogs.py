"""Train a masked autoencoder on Cats & Dogs photos, from a fresh start or from the last checkpoint.

    python examples/train_catsdogs.py --data ../shared/data/catsdogs                 # the MLP, 50 epochs
    python examples/train_catsdogs.py --data ../shared/data/catsdogs --arch vit      # the paper's ViT
    python examples/train_catsdogs.py --data data/catsdogs --download                # fetch the archive first
    TINYMAE_BACKEND=cupy python examples/train_catsdogs.py ...                       # on a GPU

The recipe, as the task and the paper's pre-training (He et al. 2022, Table 8) set it: 48 x 48 RGB
images in 6 x 6 patches (64 per image), 75% of them removed at random; the loss on removed patches
only; AdamW (betas 0.9 / 0.95, weight decay 0.05, none on biases) at lr 0.005 with a linear warm-up and
a half-cycle cosine; 50 epochs; an 80:20 stratified train/validation split; a random crop and a
horizontal flip for augmentation.

Writes to --out: checkpoint.npz (every epoch, atomically), metrics.json, loss.png, reconstructions.png.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from tinymae import backend, speed
from tinymae.backend import asarray, host_rng
from tinymae.checkpoint import CheckpointError, load_params, optimizer_state, read_checkpoint, save_checkpoint
from tinymae.data import (DataError, center_crop, channel_stats, download_catsdogs, load_dataset, normalize,
                          random_crop_flip, stratified_split)
from tinymae.evaluate import figure_batch, reconstruction_metrics
from tinymae.figures import save_loss_curves, save_reconstructions
from tinymae.files import write_atomically
from tinymae.masking import masking_noise
from tinymae.models import ARCHS, build_model
from tinymae.optim import AdamW, cosine_lr
from tinymae.patches import patchify

# Settings that a resumed run takes from its checkpoint (everything that shapes the model or the run);
# --epochs may change on resume to train longer.
RESUMED_SETTINGS = ("arch", "batch_size", "lr", "min_lr", "warmup_epochs", "weight_decay", "mask_ratio", "seed",
                    "per_class", "loss_on", "norm_pix_loss", "img_size", "patch_size", "load_size", "val_fraction",
                    "embed_dim", "encoder_dims", "decoder_dims", "depth", "num_heads", "decoder_embed_dim",
                    "decoder_depth", "decoder_num_heads", "no_cls_token", "encoder_mask_tokens")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train a masked autoencoder (MAE) on Cats & Dogs with tinymae's hand-written NumPy/CuPy engine. "
                    "Set TINYMAE_BACKEND=cupy to train on a GPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", default="data/catsdogs",
                   help="image folder: Microsoft's PetImages archive (extracted), the Kaggle train/ folder, or cat/ + dog/")
    g.add_argument("--download", action="store_true",
                   help="if --data holds no images, download Microsoft's archive (~800 MB) into it first")
    g.add_argument("--out", default=None, help="output folder (default: runs/<arch>)")
    g.add_argument("--per-class", type=int, default=None, help="use only the first N images of each class")
    g.add_argument("--val-fraction", type=float, default=0.2, help="share of each class held out for validation")
    g.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.npz")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")

    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp: the task's MLP encoder/decoder; vit: the paper's Vision Transformer MAE")
    g.add_argument("--img-size", type=int, default=48, help="image side in pixels")
    g.add_argument("--patch-size", type=int, default=6, help="patch side in pixels (48/6 = 8x8 = 64 patches)")
    g.add_argument("--load-size", type=int, default=None,
                   help="images are resized to this side, then cropped to --img-size (default: img_size * 9/8)")
    g.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches removed")
    g.add_argument("--loss-on", choices=("masked", "all"), default="masked",
                   help="compute the loss on removed patches only (the paper) or on all patches")
    g.add_argument("--norm-pix-loss", action="store_true",
                   help="predict per-patch normalised pixels (the paper's Table 1d)")
    g.add_argument("--embed-dim", type=int, default=None, help="token width (default: mlp 64, vit 128)")
    g.add_argument("--encoder-dims", default="512,512,256", help="mlp: widths of the encoder's Linear+ReLU layers")
    g.add_argument("--decoder-dims", default="512", help="mlp: widths of the decoder's hidden Linear+ReLU layers")
    g.add_argument("--depth", type=int, default=4, help="vit: encoder blocks")
    g.add_argument("--num-heads", type=int, default=4, help="vit: encoder attention heads")
    g.add_argument("--decoder-embed-dim", type=int, default=64, help="vit: decoder width")
    g.add_argument("--decoder-depth", type=int, default=2, help="vit: decoder blocks")
    g.add_argument("--decoder-num-heads", type=int, default=4, help="vit: decoder attention heads")
    g.add_argument("--no-cls-token", action="store_true", help="vit: no cls token")
    g.add_argument("--encoder-mask-tokens", action="store_true",
                   help="vit ablation (the paper's Table 1c): the encoder also processes mask tokens")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=50, help="passes over the training split")
    g.add_argument("--batch-size", type=int, default=256, help="images per step")
    g.add_argument("--lr", type=float, default=0.005, help="peak learning rate of AdamW")
    g.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the end of the cosine")
    g.add_argument("--warmup-epochs", type=float, default=5, help="epochs of linear warm-up")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW's decoupled weight decay (not on biases)")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, the weights, the batches and the masks")
    g.add_argument("--figure-images", type=int, default=8, help="validation images in reconstructions.png")
    args = p.parse_args(argv)

    if args.out is None:
        args.out = os.path.join("runs", args.arch)
    if args.load_size is None:
        args.load_size = args.img_size * 9 // 8
    for name in ("epochs", "batch_size", "img_size", "patch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.mask_ratio < 1.0:
        p.error(f"--mask-ratio must be in [0, 1), got {args.mask_ratio}")
    if args.load_size < args.img_size:
        p.error(f"--load-size {args.load_size} is smaller than --img-size {args.img_size}")
    if args.img_size % args.patch_size:
        p.error(f"--img-size {args.img_size} is not a multiple of --patch-size {args.patch_size}")
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    return args


def model_settings(args):
    """The model config fields from the command line."""
    common = dict(img_size=args.img_size, patch_size=args.patch_size, mask_ratio=args.mask_ratio,
                  norm_pix_loss=args.norm_pix_loss, loss_on=args.loss_on)
    if args.arch == "mlp":
        return dict(common, embed_dim=args.embed_dim or 64,
                    encoder_dims=tuple(int(d) for d in args.encoder_dims.split(",")),
                    decoder_dims=tuple(int(d) for d in args.decoder_dims.split(",") if d.strip()))
    return dict(common, embed_dim=args.embed_dim or 128, depth=args.depth, num_heads=args.num_heads,
                decoder_embed_dim=args.decoder_embed_dim, decoder_depth=args.decoder_depth,
                decoder_num_heads=args.decoder_num_heads, cls_token=not args.no_cls_token,
                encoder_mask_tokens=args.encoder_mask_tokens)


class Diverged(Exception):
    pass


def main(argv=None):
    args = parse_args(argv)
    speed.keep_freed_memory()  # reuse freed big arrays instead of page-faulting new memory every step (speed.py)
    checkpoint_path = os.path.join(args.out, "checkpoint.npz")

    # ---- resume: the run's settings come from its checkpoint ------------------------------------
    resumed = None
    if args.resume:
        try:
            header, arrays = read_checkpoint(checkpoint_path)
        except CheckpointError as e:
            sys.exit(f"error: cannot resume: {e}. Train without --resume first (same --out).")
        saved = header["settings"]
        changed = [k for k in RESUMED_SETTINGS if k in saved and getattr(args, k) != saved[k]]
        if changed:
            print(f"note: resuming with the checkpoint's settings; ignoring the new values of {', '.join(changed)}")
        for k in RESUMED_SETTINGS:
            if k in saved:
                setattr(args, k, saved[k])
        resumed = (header, arrays)

    # ---- data: decode once (cached), split, statistics -----------------------------------------
    try:
        if args.download and not os.path.isdir(args.data):
            download_catsdogs(args.data, progress=not args.no_progress)
        dataset = load_dataset(args.data, size=args.load_size, per_class=args.per_class,
                               progress=not args.no_progress)
    except DataError as e:
        sys.exit(f"error: {e}")
    train_idx, val_idx = stratified_split(dataset.labels, args.val_fraction, seed=args.seed)
    train_images = dataset.images[train_idx]  # (N_train, S_load, S_load, 3) uint8
    val_images = center_crop(dataset.images[val_idx], args.img_size)  # (N_val, S, S, 3) uint8
    mean, std = channel_stats(train_images)  # (3,), (3,) in [0, 1] units, training split only
    # The mean-patch baseline: the training images' average patch at each position, in pixels.
    train_pix = center_crop(train_images, args.img_size).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    mean_patch = patchify(train_pix, args.patch_size).mean(axis=0)  # (L, P)
    del train_pix

    # ---- model, optimiser, schedule -------------------------------------------------------------
    model = build_model(args.arch, model_settings(args), seed=args.seed)
    optimizer = AdamW(model.params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay,
                      no_decay=model.no_decay)
    batch_size = min(args.batch_size, len(train_idx))
    steps_per_epoch = len(train_idx) // batch_size  # the last partial batch is dropped, as MAE's loader
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = int(args.warmup_epochs * steps_per_epoch)
    rng = host_rng(args.seed + 1)  # batches, augmentation and masks, in that order, every step

    start_epoch, history, wall_time = 0, [], 0.0
    if resumed is not None:
        header, arrays = resumed
        try:
            load_params(model, arrays, checkpoint_path)
            optimizer.load_state_dict(optimizer_state(arrays))
        except (CheckpointError, KeyError, ValueError) as e:
            sys.exit(f"error: cannot resume from {checkpoint_path}: {e}")
        rng.bit_generator.state = header["rng_state"]
        start_epoch, history, wall_time = header["epoch"], header["history"], header["wall_time_s"]
        print(f"resuming from {checkpoint_path} after epoch {start_epoch}")

    os.makedirs(args.out, exist_ok=True)
    print(f"{args.arch} MAE, {model.num_params():,} parameters, backend {backend.name}; "
          f"{len(train_idx)} training / {len(val_idx)} validation images ({len(dataset.skipped)} files skipped); "
          f"{steps_per_epoch} steps of {batch_size} per epoch")

    data_info = {"load_size": args.load_size, "mean": mean.tolist(), "std": std.tolist(),
                 "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "skipped_files": len(dataset.skipped)}

    def save(epoch):
        """Checkpoint after `epoch` complete epochs (only finite weights are ever written)."""
        for name, value in model.params.items():
            if not bool(backend.xp.isfinite(value).all()):
                raise Diverged(f"parameter {name} is not finite")
        meta = {"epoch": epoch, "step": epoch * steps_per_epoch, "settings": vars(args), "data": data_info,
                "rng_state": rng.bit_generator.state, "history": history, "wall_time_s": wall_time,
                "backend": backend.name}
        save_checkpoint(checkpoint_path, model, optimizer, meta=meta, extra={"mean_patch": mean_patch})

    # The baselines do not depend on the model: measure them once on the validation masks, not every epoch.
    start = reconstruction_metrics(model, val_images, mean, std, mask_seed=args.seed, mean_patch=mean_patch)
    baseline_mse = start["baselines"]["mean_patch"]["masked_mse"]

    # ---- the training loop ----------------------------------------------------------------------
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.perf_counter()
            perm = rng.permutation(len(train_idx))
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", leave=False,
                       disable=args.no_progress)
            loss_sum = 0.0
            for i in bar:
                step = epoch * steps_per_epoch + i
                batch = random_crop_flip(train_images[perm[i * batch_size:(i + 1) * batch_size]], args.img_size, rng)
                imgs = asarray(normalize(batch, mean, std))  # (B, 3, S, S) host -> device
                noise = masking_noise(rng, batch_size, model.config.num_patches)  # (B, L)

                loss, pred, mask, cache = model.forward(imgs, noise)
                grads = model.backward(cache)
                optimizer.lr = cosine_lr(step, total_steps, warmup_steps, args.lr, args.min_lr)
                optimizer.step(grads)
                # Free this step's activations before the next forward builds its own: otherwise two
                # steps' caches are alive at once (the ViT's peak memory: 1.14 GB with, 0.73 GB without).
                del cache, grads

                loss_value = float(loss)  # the one device -> host number per step
                if not math.isfinite(loss_value):
                    raise Diverged(f"the loss became {loss_value} at epoch {epoch + 1}, step {i + 1}")
                loss_sum += loss_value
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{(i + 1) * batch_size / elapsed:.0f}")
            bar.close()
            train_time = time.perf_counter() - t0

            val = reconstruction_metrics(model, val_images, mean, std, mask_seed=args.seed, baselines=False)
            wall_time += time.perf_counter() - t0
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch, "val_loss": val["loss"],
                            "val_masked_mse": val["masked_mse"], "val_masked_psnr": val["masked_psnr"],
                            "lr": optimizer.lr, "epoch_time_s": time.perf_counter() - t0,
                            "train_images_per_s": steps_per_epoch * batch_size / train_time})
            save(epoch + 1)
            print(f"epoch {epoch + 1:3d}/{args.epochs}  train loss {history[-1]['train_loss']:.4f}  "
                  f"val loss {val['loss']:.4f}  val masked MSE {val['masked_mse']:.5f} "
                  f"({val['masked_mse'] / baseline_mse:.2f}x mean patch, {val['masked_psnr']:.2f} dB)  "
                  f"{train_time:.1f} s, {steps_per_epoch * batch_size / train_time:.0f} img/s", flush=True)
    except Diverged as e:
        last = f"the last good checkpoint is {checkpoint_path}" if os.path.exists(checkpoint_path) else "no checkpoint was written"
        sys.exit(f"error: training diverged: {e}. Stopped; {last}. Try a lower --lr or more --warmup-epochs.")
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted. The last checkpoint (every finished epoch) is {checkpoint_path}; "
                 "continue with the same command plus --resume.")

    # ---- results: metrics.json, loss.png, reconstructions.png -----------------------------------
    final = reconstruction_metrics(model, val_images, mean, std, mask_seed=args.seed, mean_patch=mean_patch)
    metrics = {"arch": args.arch, "backend": backend.name, "config": model.config.to_dict(),
               "n_params": model.num_params(), "settings": vars(args), "data": data_info,
               "wall_time_s": wall_time, "history": history, "final_validation": final}
    write_atomically(os.path.join(args.out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    save_loss_curves(os.path.join(args.out, "loss.png"), history,
                     baseline_mse=final["baselines"]["mean_patch"]["masked_mse"])
    imgs_pix, mask, pred_pix = figure_batch(model, val_images, mean, std, args.seed, args.figure_images)
    save_reconstructions(os.path.join(args.out, "reconstructions.png"), imgs_pix, mask, pred_pix, args.patch_size,
                         title=f"{args.arch} MAE, validation images, epoch {args.epochs}")
    base = final["baselines"]
    print(f"done in {wall_time:.0f} s. Validation masked-patch MSE {final['masked_mse']:.5f} ({final['masked_psnr']:.2f} dB); "
          f"baselines: mean patch {base['mean_patch']['masked_mse']:.5f}, visible mean "
          f"{base['visible_mean']['masked_mse']:.5f}, nearest visible {base['nearest_visible']['masked_mse']:.5f}; "
          f"ratio to mean patch {final['ratio_to_mean_patch']:.3f}. Outputs in {args.out}/")
    return metrics


if __name__ == "__main__":
    main()
