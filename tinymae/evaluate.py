"""How well a pre-trained MAE fills in removed patches, against simple baselines.

    python -m tinymae.evaluate --checkpoint runs/vit/checkpoint.npz                  # the run's validation photos
    python -m tinymae.evaluate --checkpoint runs/vit/checkpoint.npz --data ~/other   # photos it never trained on

The photos are the run's own validation photos (taken from its checkpoint: the split, the normalisation), or
every photo of another folder that the run did not train on. Each is centre-cropped, masked with a fixed seed
(masking.masking_noise, the run's masking) and reconstructed. Prints one JSON object: masked_mse and masked_psnr
([0, 1] pixels, removed patches only), and the same for three baselines on the same masks (util/metrics.py).
--figure also draws the four-column figure. A model whose reconstructions are not finite is refused.
"""
import json
import math
import sys

import numpy as np

from . import backend
from .backend import asarray, host_rng, to_numpy
from .config import EvaluateConfig, check
from .data import center_crop, normalize, note_changed, photos_of_run, training_hashes
from .errors import TinymaeError
from .model.masking import masking_noise
from .model.patches import patchify
from .photos import decode, find_photos
from .util import cli
from .util.checkpoint import read_checkpoint
from .util.files import output_file
from .util.metrics import (masked_patch_sq_error, mean_patch_baseline, nearest_visible_baseline, pred_to_pixels, psnr,
                           visible_mean_baseline)

BASELINES = ("mean_patch", "visible_mean", "nearest_visible")


def fixed_noise(n_images, config, seed):
    """The masks of an evaluation: photo i's depends only on (seed, i), the same for any batch size."""
    return masking_noise(host_rng(seed), n_images, config)  # (N, L) host


def reconstruct(model, images, mean, std, noise):
    """uint8 photos (n, S, S, 3), noise (n, L) host -> backend arrays (loss, imgs_pix (n, 3, S, S), target_pix
    (n, L, P), pred_pix (n, L, P), mask (n, L)), pixels in [0, 1]."""
    cfg = model.config
    x = asarray(normalize(images, mean, std))  # (n, 3, S, S)
    loss, pred, mask, _ = model.forward(x, asarray(noise))  # (n, L, P), (n, L)
    imgs_pix = asarray(images.transpose(0, 3, 1, 2), dtype=x.dtype) / 255.0  # (n, 3, S, S)
    target_norm = patchify(x, cfg.patch_size) if cfg.norm_pix_loss else None  # only norm-pix needs it
    pred_pix = pred_to_pixels(pred, target_norm, asarray(mean), asarray(std), cfg.norm_pix_loss)  # (n, L, P)
    return loss, imgs_pix, patchify(imgs_pix, cfg.patch_size), pred_pix, mask


def reconstruction_metrics(model, images, mean, std, mask_seed=0, batch_size=256, mean_patch=None, step=None):
    """Masked-patch MSE and PSNR of `model` on uint8 photos (N, S, S, 3) -> {n_images, loss (model units),
    masked_mse, masked_psnr}, and with mean_patch (L, P), the baselines and ratio_to_mean_patch.
    step: a training step whose map spreads the batches over the CPU's cores (engine.Step, fast.DataParallel)."""
    N, cfg = images.shape[0], model.config
    noise = fixed_noise(N, cfg, mask_seed)
    names = BASELINES if mean_patch is not None else ()

    def measure(start):  # one batch -> its summed loss, squared errors (model and baselines), removed patches
        stop = min(N, start + batch_size)
        loss, _, target, pred, mask = reconstruct(model, images[start:stop], mean, std, noise[start:stop])
        guesses = {"model": pred}
        if names:
            guesses.update(mean_patch=mean_patch_baseline(target, mask, asarray(mean_patch)),
                           visible_mean=visible_mean_baseline(target, mask),
                           nearest_visible=nearest_visible_baseline(target, mask, cfg.img_size // cfg.patch_size))
        sums = {key: masked_patch_sq_error(guess, target, mask) for key, guess in guesses.items()}
        return float(loss) * (stop - start), {k: float(total) for k, (total, _) in sums.items()}, float(mask.sum())

    batches = (step.map if step is not None else lambda f, xs: [f(x) for x in xs])(measure, range(0, N, batch_size))
    count = sum(b[2] for b in batches)  # the sums in batch order: the same every run
    error = {key: sum(b[1][key] for b in batches) / count for key in ("model", *names)}
    result = {"n_images": int(N), "loss": sum(b[0] for b in batches) / N, "masked_mse": error["model"],
              "masked_psnr": psnr(error["model"])}
    if names:
        result["baselines"] = {n: {"masked_mse": error[n], "masked_psnr": psnr(error[n])} for n in names}
        # undefined when the mean patch is exact: every photo is the training set's average photo
        result["ratio_to_mean_patch"] = error["model"] / error["mean_patch"] if error["mean_patch"] > 0 else None
    return result


def figure_batch(model, images, mean, std, mask_seed=0, n=8):
    """Host (imgs_pix, mask, pred_pix) of n photos spread evenly over `images` (the files are sorted by class, so
    the first n would be of one class), with their fixed masks: for util/figures.save_reconstructions."""
    picks = [round(i * (len(images) - 1) / max(1, n - 1)) for i in range(min(n, len(images)))]
    noise = fixed_noise(len(images), model.config, mask_seed)[picks]
    _, imgs_pix, _, pred_pix, mask = reconstruct(model, images[picks], mean, std, noise)
    return to_numpy(imgs_pix), to_numpy(mask), to_numpy(pred_pix)


def evaluate(cfg):
    """The command's body: one JSON object on stdout."""
    from matplotlib.backend_bases import FigureCanvasBase
    figure = output_file("--figure", cfg.figure, cfg.overwrite, [cfg.checkpoint], default_ending=".png",
                         endings=set(FigureCanvasBase.get_supported_filetypes()))
    header, model, arrays = read_checkpoint(cfg.checkpoint, "pretrain")
    record, mcfg = header["data"], model.config
    photos = photos_of_run(record, cfg.data, mcfg.img_size, cfg.progress) if cfg.per_class is None else None
    if photos is not None:  # the run's own photos: its validation split, which it never trained on
        images, which = photos.val_images, "the run's validation photos"
    else:
        where = cfg.data or record["root"]
        if cfg.data is None and cfg.per_class is None:  # the run's own folder, whose photos changed
            note_changed(where, cfg.checkpoint, "measuring on every photo there it was not trained on")
        decoded = decode(find_photos(where, cfg.per_class), record["load_size"], cfg.progress)
        unseen = ~np.isin([h[:16] for h in decoded.hashes], training_hashes(record))
        if not unseen.any():
            raise TinymaeError(f"every photo under {where} is one {cfg.checkpoint} trained on; evaluate it on "
                               "photos it has not seen (without --data: its own validation photos)")
        images, which = center_crop(decoded.images[unseen], mcfg.img_size), f"{int(unseen.sum())} photos of {where}"
    result = reconstruction_metrics(model, images, record["mean"], record["std"], cfg.mask_seed, cfg.batch_size,
                                    arrays["extra/mean_patch"])
    if not all(math.isfinite(v) for v in (result["loss"], result["masked_mse"])):
        raise TinymaeError(f"the reconstructions of {cfg.checkpoint} are not finite numbers (masked_mse "
                           f"{result['masked_mse']}): its weights are probably broken, as after a diverged run; "
                           "evaluate an earlier checkpoint, or train again with a lower --lr")
    result = {"checkpoint": cfg.checkpoint, "photos": which, "data_fingerprint": record["fingerprint"],
              "arch": header["arch"], "backend": backend.name, "mask_ratio": mcfg.mask_ratio, "masking": mcfg.masking,
              "mask_seed": cfg.mask_seed, **result, "figure": figure}
    print(json.dumps(result, indent=2, allow_nan=False), flush=True)  # the numbers first: a failed figure costs
    if figure:  # only the figure
        from .util.figures import save_reconstructions
        panels = figure_batch(model, images, record["mean"], record["std"], cfg.mask_seed, cfg.figure_images)
        save_reconstructions(figure, *panels, mcfg.patch_size, f"{header['arch']} MAE, {which}")


def main(argv=None):
    typed = cli.typed(cli.parser("python -m tinymae.evaluate", __doc__.split("\n\n")[0], EvaluateConfig), argv)

    def body():
        cfg = EvaluateConfig(**typed)
        check(cfg)
        evaluate(cfg)
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
