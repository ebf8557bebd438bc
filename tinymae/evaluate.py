"""Evaluate a checkpoint: masked-patch error in pixel space against simple baselines.

    python -m tinymae.evaluate --checkpoint runs/mlp/checkpoint.npz --data data/catsdogs

Every readable image in --data (any supported layout, no split) is resized and centre-cropped as in
validation, masked with a fixed seed, and reconstructed. Prints one JSON object: n_images,
masked_mse and masked_psnr ([0, 1] pixels, removed patches only), and the same for three baselines on
the same masks. --figure PATH also draws the four-column figure for the first few images.

What the command promises (exit codes):
    0    the JSON on stdout is complete and valid, every number in it finite (a ratio that is undefined
         because the mean-patch baseline is perfect is null)
    2    nothing was measured, or the measurement is refused: one line on stderr says why. That includes a
         model whose reconstructions are not finite numbers (NaN weights from a diverged run): NaN is not
         JSON, and a NaN error is no measurement, so nothing is printed on stdout.
    130  interrupted (Ctrl-C)
Output paths are checked before any work. A figure that cannot be drawn after all (the disk filled up)
costs the figure, not the numbers: a warning on stderr, "figure": null in the JSON, exit code 0.
"""
import argparse
import json
import math
import sys

from . import backend
from .backend import asarray, host_rng, to_numpy
from .data import center_crop, normalize
from .model.patches import patchify
from .util.checkpoint import CheckpointError, load_checkpoint
from .util.datasets import DataError, load_dataset
from .util.files import output_file_problem
from .util.metrics import (masked_patch_sq_error, mean_patch_baseline, nearest_visible_baseline, pred_to_pixels, psnr,
                           visible_mean_baseline)

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
                           baselines=True, runner=None):
    """Masked-patch MSE / PSNR of `model` (and the baselines) on uint8 images (N, S, S, 3), S = img_size.

    Returns a dict: n_images, loss (model units), masked_mse, masked_psnr, and with baselines=True
    `baselines`: {name: {masked_mse, masked_psnr}} and ratio_to_mean_patch. runner: a
    parallel.DataParallel to spread the batches over the CPU's cores (None: one after another).
    """
    cfg = model.config
    N = images.shape[0]
    if N == 0:
        raise ValueError("reconstruction_metrics got no images (an empty split?); it needs at least one")
    noise = fixed_noise(N, cfg.num_patches, mask_seed)
    names = BASELINES if baselines else ()
    if baselines and mean_patch is None:
        raise ValueError("the mean_patch baseline needs the training set's mean patch")
    if baselines:
        mean_patch = asarray(mean_patch)  # (L, P)

    def measure(start):
        """One batch -> its summed loss, squared errors (model and baselines) and count of removed patches."""
        stop = min(N, start + batch_size)
        loss, imgs_pix, target_pix, pred_pix, mask = reconstruct(model, images[start:stop], mean, std,
                                                                 noise[start:stop])
        guesses = {"model": pred_pix}
        if baselines:
            guesses["mean_patch"] = mean_patch_baseline(target_pix, mask, mean_patch)
            guesses["visible_mean"] = visible_mean_baseline(target_pix, mask)
            guesses["nearest_visible"] = nearest_visible_baseline(target_pix, mask, cfg.img_size // cfg.patch_size)
        sums = {key: masked_patch_sq_error(guess, target_pix, mask) for key, guess in guesses.items()}
        return float(loss) * (stop - start), {key: float(total) for key, (total, _) in sums.items()}, \
            float(sums["model"][1])

    starts = range(0, N, batch_size)
    batches = runner.map(measure, starts) if runner is not None else [measure(start) for start in starts]
    loss_sum = sum(loss for loss, _, _ in batches)  # in batch order: the same sum every run
    count = sum(n_removed for _, _, n_removed in batches)
    sq_error = {key: sum(errors[key] for _, errors, _ in batches) for key in ("model", *names)}
    mse = sq_error["model"] / count
    result = {"n_images": int(N), "loss": loss_sum / N, "masked_mse": mse, "masked_psnr": psnr(mse)}
    if baselines:
        result["baselines"] = {name: {"masked_mse": sq_error[name] / count, "masked_psnr": psnr(sq_error[name] / count)}
                               for name in names}
        base = result["baselines"]["mean_patch"]["masked_mse"]
        # Undefined (None) when the mean patch is exact: every image is the training set's average image.
        result["ratio_to_mean_patch"] = mse / base if base > 0 else None
    return result


def figure_batch(model, images, mean, std, mask_seed=0, n=8):
    """Host arrays for figures.save_reconstructions: (imgs_pix, mask, pred_pix) of n images spread evenly
    over `images` (files are sorted by class, so the first n would all be cats), with their fixed masks."""
    N = images.shape[0]
    picks = [round(i * (N - 1) / max(1, n - 1)) for i in range(min(n, N))]
    noise = fixed_noise(N, model.config.num_patches, mask_seed)[picks]
    _, imgs_pix, _, pred_pix, mask = reconstruct(model, images[picks], mean, std, noise)
    return to_numpy(imgs_pix), to_numpy(mask), to_numpy(pred_pix)


# ----------------------------------------------------------------------------------------------
# the command line: every flag checked before any work

def _whole_number(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def at_least_one(text):
    """argparse type: a whole number >= 1 (a count or a size)."""
    return _whole_number(text, 1)


def zero_or_more(text):
    """argparse type: a whole number >= 0 (a seed: NumPy's generators take no negative seed)."""
    return _whole_number(text, 0)


def figure_extensions():
    """The file endings matplotlib can save a figure as (png, pdf, svg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase
    return set(FigureCanvasBase.get_supported_filetypes())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinymae.evaluate",
        description="Masked-patch reconstruction error of a tinymae checkpoint against simple baselines, "
                    "on every readable image of a folder. Prints one JSON object.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by examples/train_catsdogs.py")
    parser.add_argument("--data", required=True,
                        help="image folder in any supported layout (PetImages/Cat+Dog, Kaggle train/, cat/+dog/)")
    parser.add_argument("--mask-seed", type=zero_or_more, default=0, help="seed of the fixed masks (default: 0)")
    parser.add_argument("--batch-size", type=at_least_one, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--per-class", type=at_least_one, default=None, help="only the first N images of each class")
    parser.add_argument("--figure", default=None, help="also save the four-column reconstruction figure here")
    parser.add_argument("--figure-images", type=at_least_one, default=8,
                        help="rows in the figure, images spread evenly over the folder (default: 8)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --figure file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    args = parser.parse_args(argv)
    if args.figure is not None:
        problem = output_file_problem(args.figure, figure_extensions(), overwrite=args.overwrite)
        if problem:
            parser.error(f"argument --figure: {args.figure} {problem}")
    return args


def non_finite_numbers(result, prefix=""):
    """The names of the numbers in a (nested) result dict that are NaN or infinite, e.g. ['masked_mse']."""
    names = []
    for key, value in result.items():
        if isinstance(value, dict):
            names += non_finite_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            names.append(f"{prefix}{key}")
    return names


def main(argv=None):
    """The command line. -> exit code: 0 with valid JSON on stdout, 2 with one line on stderr, 130 on Ctrl-C."""
    args = parse_args(argv)
    try:
        return evaluate_command(args)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while decoding, measuring or drawing: no traceback
        print("\ninterrupted", file=sys.stderr)
        return 130


def evaluate_command(args):
    model, header, arrays = load_checkpoint(args.checkpoint)
    data = header.get("data")
    if data is None or "extra/mean_patch" not in arrays:
        raise CheckpointError(f"{args.checkpoint} has no data statistics; was it written by train_catsdogs.py?")
    cfg = model.config
    mean_patch = arrays["extra/mean_patch"]  # (L, P)
    if mean_patch.shape != (cfg.num_patches, cfg.patch_dim) or mean_patch.dtype.kind != "f":
        raise CheckpointError(f"{args.checkpoint}: its mean patch is {mean_patch.dtype} {mean_patch.shape}, the model "
                              f"needs float ({cfg.num_patches}, {cfg.patch_dim}); the file was edited or is damaged")
    dataset = load_dataset(args.data, size=data["load_size"], per_class=args.per_class, progress=not args.no_progress)
    images = center_crop(dataset.images, cfg.img_size)  # (N, S, S, 3)
    result = reconstruction_metrics(model, images, data["mean"], data["std"], mask_seed=args.mask_seed,
                                    batch_size=args.batch_size, mean_patch=mean_patch)
    bad = non_finite_numbers(result)
    if bad:
        raise CheckpointError(
            f"the reconstructions of {args.checkpoint} are not finite numbers (masked_mse = {result['masked_mse']}, "
            f"loss = {result['loss']}; not finite: {', '.join(bad)}): its weights are probably NaN or infinite, as "
            "after a diverged run. Evaluate an earlier checkpoint, or train again with a lower --lr")
    result = {"checkpoint": args.checkpoint, "data": args.data, "arch": header["arch"], "backend": backend.name,
              "mask_ratio": cfg.mask_ratio, "mask_seed": args.mask_seed, "skipped_files": len(dataset.skipped),
              **result}
    if args.figure:
        from .util.figures import save_reconstructions
        imgs_pix, mask, pred_pix = figure_batch(model, images, data["mean"], data["std"], args.mask_seed,
                                                args.figure_images)
        try:
            save_reconstructions(args.figure, imgs_pix, mask, pred_pix, cfg.patch_size,
                                 title=f"{header['arch']} MAE, {args.data}")
            result["figure"] = args.figure
        except (OSError, ValueError) as e:  # checked before the work, so rare: a full disk, a folder removed
            print(f"warning: could not save the figure {args.figure} ({e}); the numbers below are complete",
                  file=sys.stderr)
            result["figure"] = None
    print(json.dumps(result, indent=2, allow_nan=False))  # allow_nan=False: never print NaN, which is not JSON
    return 0


if __name__ == "__main__":
    sys.exit(main())
