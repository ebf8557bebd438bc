"""Draw the figures of docs/walkthrough.md from a trained ViT MAE checkpoint: one command for all three.

    python research/figures.py --checkpoint runs/vit/checkpoint.npz --data data/catsdogs

writes, into --out (default docs/):

    pipeline.png    MAE's steps on one validation image: its patches, the shuffle, the kept tokens and the
                    encoder's output, the mask tokens, the un-shuffle, the prediction, and the loss on the
                    removed patches only. Every panel is the engine's own numbers for that image.
    mask_grid.png   the same image's mask: each patch's index and slot, kept cells green, removed grey
    attention.png   where the cls token looks: its attention to each visible patch, per head, in one encoder
                    block (default: the last), for a few validation images; removed patches blank

The images are the validation images exactly as pre-training made them (tinymae.pretrain.PretrainData,
with the settings saved in the checkpoint: the same split, the same colour statistics), spread over the
validation set as in the run's reconstructions.png, with the same fixed masks (evaluate.fixed_noise with
the run's seed). The drawing is matplotlib on the host; the model runs on the active backend.
"""
import argparse
import os
import sys
from dataclasses import fields

import numpy as np

from tinymae.backend import asarray, to_numpy
from tinymae.config import PretrainConfig
from tinymae.data import normalize
from tinymae.evaluate import fixed_noise
from tinymae.model.patches import patchify
from tinymae.pretrain import PretrainData
from tinymae.util.checkpoint import CheckpointError, load_checkpoint
from tinymae.util.datasets import DataError
from tinymae.util.figures import (cls_attention_maps, draw_patch_grid, masked_image, patch_grid_axes, pyplot,
                                  save_attention_maps, save_mask_grid, save_small_png)
from tinymae.util.metrics import pred_to_pixels

MASK_TOKEN_COLOUR = (0.55, 0.62, 0.78)  # the one shared, learned mask token: a slate blue
CLS_COLOUR = (0.95, 0.75, 0.35)  # the cls token: amber


class FigureError(Exception):
    """A checkpoint or image folder the figures cannot be drawn from, with what to do."""


# ----------------------------------------------------------------------------------------------
# the run: the model and its validation images

def load_run(checkpoint, data):
    """-> (model, header, PretrainData) for a ViT pre-training checkpoint and the photo folder it was trained on."""
    model, header, _ = load_checkpoint(checkpoint)
    if header["arch"] != "vit" or model.config.encoder_mask_tokens:
        raise FigureError(f"{checkpoint} holds a {header['arch']} model"
                          f"{' with mask tokens in the encoder' if header['arch'] == 'vit' else ''}; these figures "
                          "need MAE's ViT (python -m tinymae.pretrain --arch vit)")
    saved = header.get("settings")
    if not isinstance(saved, dict):
        raise FigureError(f"{checkpoint} was not written by tinymae.pretrain (no run settings in its header)")
    known = {f.name for f in fields(PretrainConfig)}
    cfg = PretrainConfig(**{k: v for k, v in saved.items() if k in known})
    cfg.data, cfg.download, cfg.progress = data, False, False
    run_data = PretrainData(cfg, model.config.img_size, model.config.patch_size)
    trained_on = header.get("data", {}).get("fingerprint")
    if trained_on is not None and trained_on != run_data.info["fingerprint"]:
        raise FigureError(f"the images under {data} are not the ones {checkpoint} was trained on (fingerprint "
                          f"{run_data.info['fingerprint']}, the checkpoint's {trained_on}): the split and the colour "
                          "statistics would differ. Point --data at the run's photo folder")
    return model, header, run_data


def pick_images(n_val, n):
    """n validation indices spread evenly over the set, as evaluate.figure_batch picks them (the files are
    sorted by class, so the first n would all be cats)."""
    return [round(i * (n_val - 1) / max(1, n - 1)) for i in range(min(n, n_val))]


def validation_batch(model, run_data, seed, picks):
    """-> imgs (n, 3, S, S) normalised (backend), noise (n, L) (backend), imgs_pix (n, S, S, 3) in [0, 1] (host).

    The noise of validation image i is row i of evaluate.fixed_noise(n_val, L, seed): the masks of the
    run's validation loss and its reconstructions.png."""
    images = run_data.val_images[picks]  # (n, S, S, 3) uint8
    noise = fixed_noise(len(run_data.val_images), model.config.num_patches, seed)[picks]  # (n, L)
    imgs = asarray(normalize(images, run_data.mean, run_data.std))  # (n, 3, S, S)
    return imgs, asarray(noise), images.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------------------------
# (a) the pipeline

def tiles(patches, patch_size):
    """(n, P) patch vectors in [0, 1], ordered (row, column, channel) as patchify makes them -> (n, p, p, 3)."""
    return np.clip(patches, 0.0, 1.0).reshape(len(patches), patch_size, patch_size, 3)


def mosaic(tile_images, cols, gap=1, background=1.0):
    """(n, p, p, 3) -> one image of the tiles in rows of `cols`, left to right, with `gap` pixels between."""
    n, p = tile_images.shape[:2]
    rows = -(-n // cols)
    out = np.full((rows * (p + gap) - gap, cols * (p + gap) - gap, 3), background)
    for i, tile in enumerate(tile_images):
        r, c = divmod(i, cols)
        out[r * (p + gap):r * (p + gap) + p, c * (p + gap):c * (p + gap) + p] = tile
    return out


def tile_centre(i, cols, p, gap=1):
    """Pixel (x, y) of tile i's centre in mosaic's image."""
    r, c = divmod(i, cols)
    return c * (p + gap) + (p - 1) / 2, r * (p + gap) + (p - 1) / 2


def solid_tiles(n, patch_size, colour):
    return np.broadcast_to(np.array(colour, dtype=float), (n, patch_size, patch_size, 3))


def frame_tiles(ax, indices, cols, p, colour, gap=1, linewidth=1.2):
    """A coloured frame around tiles `indices` of a mosaic drawn with imshow (pixel coordinates)."""
    import matplotlib.patches as mpatches
    for i in indices:
        x, y = tile_centre(i, cols, p, gap)
        ax.add_patch(mpatches.Rectangle((x - p / 2, y - p / 2), p, p, fill=False, edgecolor=colour,
                                        linewidth=linewidth))


def slot_axes(ax, n, cols, p, gap=1):
    """Ticks for a sequence of n tokens drawn by mosaic: the first slot of each row on the left."""
    rows = -(-n // cols)
    ax.set_xticks([])
    ax.set_yticks([r * (p + gap) + (p - 1) / 2 for r in range(rows)], [f"slot {r * cols}" for r in range(rows)],
                  fontsize=6)
    ax.tick_params(length=0, pad=1)


def outline(colour):
    """A thin outline around text, so that it reads on any patch."""
    import matplotlib.patheffects as patheffects
    return [patheffects.withStroke(linewidth=1.5, foreground=colour)]


def save_pipeline(path, model, imgs, noise, img_pix, mean, std, dpi=90):
    """MAE's forward pass on one image (imgs (1, 3, S, S) normalised, noise (1, L)), drawn from the engine's
    arrays; img_pix (S, S, 3) in [0, 1] is the same image for display, mean and std (3,) the run's colour
    statistics (host). Returns the image's loss."""
    import matplotlib.patches as mpatches
    plt = pyplot()
    cfg = model.config
    p, grid, L, K = cfg.patch_size, cfg.img_size // cfg.patch_size, cfg.num_patches, cfg.len_keep

    # The engine's forward pass, step by step as MaskedAutoencoderViT.forward runs it.
    latent, mask, ids_restore, _ = model.forward_encoder(imgs, noise)  # (1, 1+K, D), (1, L), (1, L)
    pred, _ = model.forward_decoder(latent, ids_restore)  # (1, L, P)
    loss, (diff, weight) = model.forward_loss(imgs, pred, mask)  # mse_forward's cache: (1, L, P), (1, L)
    per_patch = to_numpy((diff * diff).mean(axis=-1))[0]  # (L,) each patch's MSE, normalised pixels
    if abs(float((per_patch * to_numpy(weight)[0]).sum()) - float(loss)) > 1e-4 * max(1.0, abs(float(loss))):
        raise RuntimeError("the per-patch errors drawn do not add up to the engine's loss: loss.py changed; "
                           "update save_pipeline in research/figures.py")
    target_norm = patchify(imgs, p) if cfg.norm_pix_loss else None
    pred_pix = to_numpy(pred_to_pixels(pred, target_norm, asarray(mean, dtype=pred.dtype), asarray(std, dtype=pred.dtype),
                                       cfg.norm_pix_loss))[0]  # (L, P) pixels
    mask, ids_restore = to_numpy(mask)[0], to_numpy(ids_restore)[0]  # (L,), (L,)
    ids_shuffle = np.argsort(ids_restore)  # (L,) slot -> patch
    ids_keep = ids_shuffle[:K]  # (K,)
    latent = to_numpy(latent)[0]  # (1+K, D)
    patch_tiles = tiles(patchify(img_pix.transpose(2, 0, 1)[None], p)[0], p)  # (L, p, p, 3) the real patches

    fig, axes = plt.subplots(2, 4, figsize=(14.0, 7.4), dpi=dpi, layout="constrained")
    cols = grid  # a sequence of L tokens is drawn in rows of `grid`, slot s at row s // grid

    # 1 the image and its patches
    ax = axes[0, 0]
    ax.imshow(img_pix, extent=(0, grid, grid, 0), interpolation="nearest")
    draw_patch_grid(ax, grid)
    patch_grid_axes(ax, grid)
    ax.set_title(f"1  patchify: {grid} x {grid} patches of {p} x {p} x 3\n"
                 f"patch l at row l // {grid}, column l % {grid}; L = {L}", fontsize=9)

    # 2 the shuffle: every patch in slot order
    ax = axes[0, 1]
    ax.imshow(mosaic(patch_tiles[ids_shuffle], cols), interpolation="nearest")
    frame_tiles(ax, range(K), cols, p, "limegreen", linewidth=2.0)
    for s in range(K, L):  # the removed slots, dimmed
        x, y = tile_centre(s, cols, p)
        ax.add_patch(mpatches.Rectangle((x - p / 2, y - p / 2), p, p, color="white", alpha=0.6, linewidth=0))
    for s in range(L):
        x, y = tile_centre(s, cols, p)
        ax.text(x, y, str(int(ids_shuffle[s])), ha="center", va="center", fontsize=6.5,
                color="white" if s < K else "black", path_effects=outline("black" if s < K else "white"))
    slot_axes(ax, L, cols, p)
    ax.set_title(f"2  shuffle: slot s holds patch ids_shuffle[s],\n"
                 f"ids_shuffle = argsort(noise); slots 0..{K - 1} are kept", fontsize=9)

    # 3 keep the first K, put the cls token in front: the encoder's input, and its output
    ax = axes[0, 2]
    D = latent.shape[1]
    column = mosaic(np.concatenate([solid_tiles(1, p, CLS_COLOUR), patch_tiles[ids_keep]]), cols=1)  # tokens down
    scale = column.shape[0] / (1 + K)  # pixels per token row
    ax.imshow(column, extent=(0, column.shape[1], column.shape[0], 0), interpolation="nearest")
    width = 4.0 * column.shape[1]
    lim = float(np.abs(latent).max())
    ax.imshow(latent, extent=(column.shape[1] + 2, column.shape[1] + 2 + width, column.shape[0], 0), cmap="RdBu_r",
              vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    ax.set_xlim(0, column.shape[1] + 2 + width)
    ax.set_ylim(column.shape[0], 0)
    ax.set_yticks((np.arange(1 + K) + 0.5) * scale, ["cls"] + [f"patch {int(l)}" for l in ids_keep], fontsize=6)
    ax.set_xticks([column.shape[1] / 2, column.shape[1] + 2 + width / 2], ["token", f"latent: {D} numbers a token"],
                  fontsize=7)
    ax.tick_params(length=0, pad=1)
    ax.set_aspect("auto")
    ax.set_title(f"3  keep slots 0..{K - 1} (ids_keep), cls token in front:\n"
                 f"the encoder's {1 + K} tokens -> latent (1 + K, D)", fontsize=9)

    # 4 append mask tokens, still in slot order
    ax = axes[0, 3]
    appended = np.concatenate([patch_tiles[ids_keep], solid_tiles(L - K, p, MASK_TOKEN_COLOUR)])  # (L, p, p, 3)
    ax.imshow(mosaic(appended, cols), interpolation="nearest")
    frame_tiles(ax, range(K), cols, p, "limegreen", linewidth=2.0)
    for s in range(L):
        x, y = tile_centre(s, cols, p)
        if s < K:
            ax.text(x, y, str(int(ids_keep[s])), ha="center", va="center", fontsize=6.5, color="white",
                    path_effects=outline("black"))
        else:
            ax.text(x, y, "M", ha="center", va="center", fontsize=6.5, color="white")
    slot_axes(ax, L, cols, p)
    ax.set_title(f"4  decoder: the {K} encoded tokens, then {L - K} copies\n"
                 "of the one mask token M, in slot order", fontsize=9)

    # 5 un-shuffle with ids_restore: back to patch order
    ax = axes[1, 0]
    unshuffled = appended[ids_restore]  # (L, p, p, 3) the gather x_full[l] = x_shuffled[ids_restore[l]]
    ax.imshow(mosaic(unshuffled, grid, gap=0), extent=(0, grid, grid, 0), interpolation="nearest")
    draw_patch_grid(ax, grid)
    for l in range(L):
        if mask[l]:
            ax.text(l % grid + 0.5, l // grid + 0.5, "M", ha="center", va="center", fontsize=7, color="white")
    patch_grid_axes(ax, grid)
    ax.set_title("5  un-shuffle: row l = slot ids_restore[l];\n"
                 "each token at its patch, + decoder_pos_embed", fontsize=9)

    # 6 the decoder's prediction for every patch
    ax = axes[1, 1]
    ax.imshow(mosaic(tiles(pred_pix, p), grid, gap=0), extent=(0, grid, grid, 0), interpolation="nearest")
    draw_patch_grid(ax, grid, colour="0.9", linewidth=0.4)
    patch_grid_axes(ax, grid)
    ax.set_title(f"6  decoder -> pred: {cfg.patch_dim} numbers for each\nof the {L} patches (shown as pixels)",
                 fontsize=9)

    # 7 the target: the removed patches of the image
    ax = axes[1, 2]
    ax.imshow(masked_image(img_pix, 1.0 - mask, p), extent=(0, grid, grid, 0), interpolation="nearest")
    draw_patch_grid(ax, grid, colour="0.85", linewidth=0.4)
    patch_grid_axes(ax, grid)
    ax.set_title(f"7  target: the {L - K} removed patches\n(the visible ones take no part in the loss)", fontsize=9)

    # 8 the loss: each removed patch's squared error, the visible ones blank
    ax = axes[1, 3]
    errors = np.where(mask > 0, per_patch, np.nan).reshape(grid, grid)  # (grid, grid)
    cmap = plt.get_cmap("magma_r").with_extremes(bad="white")  # NaN: a visible patch, no loss
    im = ax.imshow(errors, cmap=cmap, vmin=0.0, extent=(0, grid, grid, 0), interpolation="nearest")
    draw_patch_grid(ax, grid, colour="0.85", linewidth=0.4)
    patch_grid_axes(ax, grid)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax.set_title(f"8  loss: each removed patch's MSE (pred vs target),\nmean over the {L - K} = {float(loss):.3f} "
                 f"{'(norm. pixels)' if not cfg.norm_pix_loss else '(norm-pix units)'}", fontsize=9)

    fig.suptitle("MAE's forward pass on one validation image: green = kept, M = mask token, "
                 "white = not part of this step", fontsize=10)
    save_small_png(fig, path, dpi)
    plt.close(fig)
    return float(loss)


# ----------------------------------------------------------------------------------------------
# the command

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python research/figures.py",
        description="Draw docs/pipeline.png, docs/mask_grid.png and docs/attention.png from a ViT MAE checkpoint "
                    "and the photos it was trained on.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz of python -m tinymae.pretrain --arch vit")
    parser.add_argument("--data", required=True, help="the photo folder that run was trained on")
    parser.add_argument("--out", default=os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                      "docs")),
                        help="folder for the PNGs (default: docs/)")
    parser.add_argument("--images", type=int, default=4, help="validation images in attention.png (default: 4)")
    parser.add_argument("--image", type=int, default=0,
                        help="which of those images pipeline.png and mask_grid.png show (default: 0)")
    parser.add_argument("--block", type=int, default=-1,
                        help="encoder block of attention.png, 0 = the first, -1 = the last (default: -1)")
    args = parser.parse_args(argv)

    try:
        model, header, run_data = load_run(args.checkpoint, args.data)
    except (FigureError, CheckpointError, DataError) as e:
        sys.exit(f"error: {e}")
    cfg = model.config
    if args.images < 1:
        sys.exit(f"error: --images must be at least 1, got {args.images}")
    if not 0 <= args.image < args.images:
        sys.exit(f"error: --image {args.image} is not one of the {args.images} images (0 to {args.images - 1})")
    if not -cfg.depth <= args.block < cfg.depth:
        sys.exit(f"error: --block {args.block}: the encoder has blocks 0 to {cfg.depth - 1}")
    block = args.block % cfg.depth
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        sys.exit(f"error: --out {args.out} is a file; give the folder the PNGs go into")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        sys.exit(f"error: --out {args.out} cannot be made ({e.strerror or e})")
    seed = header["settings"]["seed"]
    picks = pick_images(len(run_data.val_images), args.images)
    imgs, noise, imgs_pix = validation_batch(model, run_data, seed, picks)
    where = f"validation image {picks[args.image]} of {len(run_data.val_images)}"

    paths = {name: os.path.join(args.out, f"{name}.png") for name in ("pipeline", "mask_grid", "attention")}
    i = args.image
    loss = save_pipeline(paths["pipeline"], model, imgs[i:i + 1], noise[i:i + 1], imgs_pix[i], run_data.mean,
                         run_data.std)

    _, mask, ids_restore, cache = model.forward_encoder(imgs, noise)
    mask, ids_restore = to_numpy(mask), to_numpy(ids_restore)  # (n, L), (n, L)
    cells = save_mask_grid(paths["mask_grid"], imgs_pix[i], ids_restore[i], cfg.len_keep, cfg.patch_size,
                           title=f"One image's mask ({where}, epoch {header['epoch']}, mask seed {seed})")

    attn = to_numpy(cache.blocks[block].attn.attn)  # (n, H, 1+K, 1+K) the softmax output of encoder block `block`
    maps, cls_self = cls_attention_maps(attn, ids_restore, cfg.len_keep)
    save_attention_maps(paths["attention"], imgs_pix, maps, cls_self, cfg.patch_size,
                        title=f"cls token's attention in encoder block {block} (of 0..{cfg.depth - 1}), per head "
                              f"(epoch {header['epoch']}); removed patches blank",
                        row_labels=[f"validation image {p}" for p in picks])

    print(f"{args.checkpoint}: ViT MAE after {header['epoch']} epochs; {where}, loss on its removed patches "
          f"{loss:.4f}")
    ids_keep = np.argsort(ids_restore[i])[:cfg.len_keep]  # (K,) slot order
    print(f"  kept patches (ids_keep, in slot order): {' '.join(str(int(l)) for l in ids_keep)}")
    for name, path in paths.items():
        print(f"  {path}  {os.path.getsize(path) / 1024:.0f} KB")
    return {"paths": paths, "cells": cells, "picks": picks, "image": i, "mask": mask[i], "seed": seed}


if __name__ == "__main__":
    main()
