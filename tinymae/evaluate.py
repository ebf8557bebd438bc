"""Evaluate a checkpoint: masked-patch error in pixel space against simple baselines.

    python -m tinymae.evaluate --checkpoint runs/mlp/checkpoint.npz --data ../shared/data/catsdogs

Every readable image in --data (any supported layout, no split) is resized and centre-cropped as in
validation, masked with a fixed seed, and reconstructed. Prints one JSON object: n_images,
masked_mse and masked_psnr ([0, 1] pixels, removed patches only), and the same for three baselines on
the same masks. --figure PATH also draws the four-column figure for the first few images.
"""
import argparse
import json
import sys

from . import backend
from .backend import asarray, host_rng, to_numpy
from .checkpoint import CheckpointError, load_checkpoint
from .data import DataError, center_crop, load_dataset, normalize
from .metrics import (masked_patch_sq_error, mean_patch_baseline, nearest_visible_baseline, pred_to_pixels, psnr,
                      visible_mean_baseline)
from .patches import patchify

BASELINES = ("mean_patch", "visible_mean", "nearest_visible")


def fixed_noise(n_images, num_patches, seed):
    """The masking noise of image i depends only on (seed, i): the same masks for any batch size."""
    return host_rng(seed).random((n_images, num_patches), dtype="float32")  # (N, L) host


def reconstruct(model, images, mean, std, noise):
    """One batch: uint8 images (n, S, S, 3) host, noise (n, L) host -> backend arrays
    (loss, imgs_pix (n, 3, S, S), target_pix (n, L, P), pred_pix (n, L, P), mask (n, L))."""
    cfg = model.config
    x = asarray(normalize(images, mean, std))  # (n, 3, S, S) normalised
    loss, pred, mask, _ = model.forward(x, asarray(noise))  # (n, L, P), (n, L)
    imgs_pix = asarray(images.transpose(0, 3, 1, 2), dtype=x.dtype) / 255.0  # (n, 3, S, S) in [0, 1]
    target_pix = patchify(imgs_pix, cfg.patch_size)  # (n, L, P)
    target_norm = patchify(x, cfg.patch_size) if cfg.norm_pix_loss else None  # only norm-pix needs it
    pred_pix = pred_to_pixels(pred, target_norm, asarray(mean), asarray(std), cfg.norm_pix_loss)  # (n, L, P)
    return loss, imgs_pix, target_pix, pred_pix, mask


def reconstruction_metrics(model, images, mean, std, mask_seed=0, batch_size=256, mean_patch=None,
                           baselines=True):
    """Masked-patch MSE / PSNR of `model` (and the baselines) on uint8 images (N, S, S, 3), S = img_size.

    Returns a dict: n_images, loss (model units), masked_mse, masked_psnr, and with baselines=True
    `baselines`: {name: {masked_mse, masked_psnr}} and ratio_to_mean_patch.
    """
    cfg = model.config
    N = images.shape[0]
    noise = fixed_noise(N, cfg.num_patches, mask_seed)
    names = BASELINES if baselines else ()
    if baselines and mean_patch is None:
        raise ValueError("the mean_patch baseline needs the training set's mean patch")
    if baselines:
        mean_patch = asarray(mean_patch)  # (L, P)
    loss_sum, count = 0.0, 0.0
    sq_error = {"model": 0.0, **{name: 0.0 for name in names}}
    for start in range(0, N, batch_size):
        stop = min(N, start + batch_size)
        loss, imgs_pix, target_pix, pred_pix, mask = reconstruct(model, images[start:stop], mean, std,
                                                                 noise[start:stop])
        loss_sum += float(loss) * (stop - start)
        guesses = {"model": pred_pix}
        if baselines:
            guesses["mean_patch"] = mean_patch_baseline(target_pix, mask, mean_patch)
            guesses["visible_mean"] = visible_mean_baseline(target_pix, mask)
            guesses["nearest_visible"] = nearest_visible_baseline(target_pix, mask, cfg.img_size // cfg.patch_size)
        for key, guess in guesses.items():
            total, n_removed = masked_patch_sq_error(guess, target_pix, mask)
            sq_error[key] += float(total)
        count += float(n_removed)
    mse = sq_error["model"] / count
    result = {"n_images": int(N), "loss": loss_sum / N, "masked_mse": mse, "masked_psnr": psnr(mse)}
    if baselines:
        result["baselines"] = {name: {"masked_mse": sq_error[name] / count, "masked_psnr": psnr(sq_error[name] / count)}
                               for name in names}
        result["ratio_to_mean_patch"] = mse / result["baselines"]["mean_patch"]["masked_mse"]
    return result


def figure_batch(model, images, mean, std, mask_seed=0, n=8):
    """Host arrays for figures.save_reconstructions: (imgs_pix, mask, pred_pix) of n images spread evenly
    over `images` (files are sorted by class, so the first n would all be cats), with their fixed masks."""
    N = images.shape[0]
    picks = [round(i * (N - 1) / max(1, n - 1)) for i in range(min(n, N))]
    noise = fixed_noise(N, model.config.num_patches, mask_seed)[picks]
    _, imgs_pix, _, pred_pix, mask = reconstruct(model, images[picks], mean, std, noise)
    return to_numpy(imgs_pix), to_numpy(mask), to_numpy(pred_pix)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinymae.evaluate",
        description="Masked-patch reconstruction error of a tinymae checkpoint against simple baselines, "
                    "on every readable image of a folder. Prints one JSON object.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by examples/train_catsdogs.py")
    parser.add_argument("--data", required=True,
                        help="image folder in any supported layout (PetImages/Cat+Dog, Kaggle train/, cat/+dog/)")
    parser.add_argument("--mask-seed", type=int, default=0, help="seed of the fixed masks (default: 0)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--per-class", type=int, default=None, help="only the first N images of each class")
    parser.add_argument("--figure", default=None, help="also save the four-column reconstruction figure here")
    parser.add_argument("--figure-images", type=int, default=8,
                        help="rows in the figure, images spread evenly over the folder (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        model, header, arrays = load_checkpoint(args.checkpoint)
        data = header.get("data")
        if data is None or "extra/mean_patch" not in arrays:
            raise CheckpointError(f"{args.checkpoint} has no data statistics; was it written by train_catsdogs.py?")
        dataset = load_dataset(args.data, size=data["load_size"], per_class=args.per_class,
                               progress=not args.no_progress)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = center_crop(dataset.images, model.config.img_size)  # (N, S, S, 3)
    result = reconstruction_metrics(model, images, data["mean"], data["std"], mask_seed=args.mask_seed,
                                    batch_size=args.batch_size, mean_patch=arrays["extra/mean_patch"])
    result = {"checkpoint": args.checkpoint, "data": args.data, "arch": header["arch"], "backend": backend.name,
              "mask_ratio": model.config.mask_ratio, "mask_seed": args.mask_seed, "skipped_files": len(dataset.skipped),
              **result}
    if args.figure:
        from .figures import save_reconstructions
        imgs_pix, mask, pred_pix = figure_batch(model, images, data["mean"], data["std"], args.mask_seed,
                                                args.figure_images)
        save_reconstructions(args.figure, imgs_pix, mask, pred_pix, model.config.patch_size,
                             title=f"{header['arch']} MAE, {args.data}")
        result["figure"] = args.figure
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
