"""Draw the figures of docs/walkthrough.md from a trained ViT MAE checkpoint, into --out (default docs/):

    python examples/walkthrough_figures.py --checkpoint runs/vit/checkpoint.npz --image 2

    pipeline.png    MAE's forward pass on one validation photo, every panel the engine's own arrays for it
    mask_grid.png   the same photo's mask: each patch's index and slot, kept cells green, removed grey
    attention.png   the cls token's attention to each visible patch, per head, in one encoder block (default: the
                    last), for a few validation photos; removed patches blank

The photos are the run's own validation photos (data.photos_of_run), spread over the set as in the run's
reconstructions.png, with the same fixed masks (evaluate.fixed_noise with the run's seed and masking).
"""
import argparse
import os
import sys

import numpy as np

from tinymae.backend import asarray, to_numpy
from tinymae.data import normalize, photos_of_run
from tinymae.errors import TinymaeError
from tinymae.evaluate import fixed_noise
from tinymae.model.patches import patchify
from tinymae.util import cli
from tinymae.util.checkpoint import read_checkpoint
from tinymae.util.figures import pyplot, save
from tinymae.util.files import check_writable
from tinymae.util.metrics import pred_to_pixels

KEPT_COLOUR = (0.65, 0.85, 0.42)  # light green: a visible patch, which the encoder sees
REMOVED_COLOUR = (0.85, 0.85, 0.85)  # light grey: a removed patch, which only the decoder fills in
MASK_TOKEN_COLOUR = (0.55, 0.62, 0.78)  # the one shared, learned mask token: a slate blue
CLS_COLOUR = (0.95, 0.75, 0.35)  # the cls token: amber


# ---- drawing on the patch grid ---------------------------------------------------------------

def patch_panel(ax, image, grid, colour="white", linewidth=0.8, ticks=True, **imshow):
    """Draw `image` (pixels, or one value per patch) over a grid x grid patch grid: lines between the patches
    and, with ticks, their indices (columns on top, each row's first patch on the left). -> the AxesImage."""
    im = ax.imshow(image, extent=(0, grid, grid, 0), interpolation="nearest", **imshow)
    for i in range(1, grid):
        ax.axhline(i, color=colour, linewidth=linewidth)
        ax.axvline(i, color=colour, linewidth=linewidth)
    if ticks:
        ax.set_xticks(np.arange(grid) + 0.5, [str(c) for c in range(grid)], fontsize=6)
        ax.xaxis.tick_top()
        ax.set_yticks(np.arange(grid) + 0.5, [str(r * grid) for r in range(grid)], fontsize=6)
        ax.tick_params(length=0, pad=1)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def masked_image(img, mask, patch_size, fill=1.0):
    """img: (H, W, 3) in [0, 1], mask: (L,) 1 = removed -> the image with removed patches set to `fill`."""
    grid = img.shape[0] // patch_size
    removed = np.kron(mask.reshape(grid, grid), np.ones((patch_size, patch_size)))[:, :, None]  # (H, W, 1)
    return img * (1 - removed) + fill * removed


def mosaic(tile_images, cols, gap=1):
    """(n, p, p, 3) -> one image of the tiles in rows of `cols`, left to right, `gap` white pixels between."""
    n, p = tile_images.shape[:2]
    out = np.ones((-(-n // cols) * (p + gap) - gap, cols * (p + gap) - gap, 3))
    for i, tile in enumerate(tile_images):
        r, c = divmod(i, cols)
        out[r * (p + gap):r * (p + gap) + p, c * (p + gap):c * (p + gap) + p] = tile
    return out


def sequence_panel(ax, tile_images, cols, p, kept, labels, dim=False):
    """A sequence of tokens drawn by mosaic, slot s at row s // cols: slots 0..kept-1 framed green (and the others
    dimmed), each labelled, the first slot of each row named on the left."""
    import matplotlib.patches as mpatches
    import matplotlib.patheffects as patheffects
    ax.imshow(mosaic(tile_images, cols), interpolation="nearest")
    for s, label in enumerate(labels):
        x, y = (s % cols) * (p + 1) - 0.5, (s // cols) * (p + 1) - 0.5  # the tile's top left corner
        if s < kept:
            ax.add_patch(mpatches.Rectangle((x, y), p, p, fill=False, edgecolor="limegreen", linewidth=2.0))
        elif dim:
            ax.add_patch(mpatches.Rectangle((x, y), p, p, color="white", alpha=0.6, linewidth=0))
        dark = s < kept or label == "M"
        ax.text(x + p / 2, y + p / 2, label, ha="center", va="center", fontsize=6.5, color="white" if dark else "black",
                path_effects=[] if label == "M" else [patheffects.withStroke(linewidth=1.5,
                                                                            foreground="black" if dark else "white")])
    rows = -(-len(labels) // cols)
    ax.set_xticks([])
    ax.set_yticks([r * (p + 1) + (p - 1) / 2 for r in range(rows)], [f"slot {r * cols}" for r in range(rows)],
                  fontsize=6)
    ax.tick_params(length=0, pad=1)


# ---- (a) the pipeline ------------------------------------------------------------------------

def save_pipeline(path, model, imgs, noise, img_pix, mean, std, dpi=90):
    """MAE's forward pass on one photo (imgs (1, 3, S, S) normalised, noise (1, L)), drawn from the engine's arrays;
    img_pix (S, S, 3) in [0, 1] is the same photo for display, mean and std (3,) the run's normalisation (host).
    Returns the photo's loss."""
    plt = pyplot()
    cfg = model.config
    p, grid, L, K = cfg.patch_size, cfg.img_size // cfg.patch_size, cfg.num_patches, cfg.len_keep

    # The engine's forward pass, step by step as MaskedAutoencoder.forward runs it.
    latent, mask, ids_restore, _ = model.forward_encoder(imgs, noise)  # (1, 1+K, D), (1, L), (1, L)
    pred, _ = model.forward_decoder(latent, ids_restore)  # (1, L, P)
    loss, (diff, weight) = model.forward_loss(imgs, pred, mask)  # mse_forward's cache: (1, L, P), (1, L)
    per_patch = to_numpy((diff * diff).mean(axis=-1))[0]  # (L,) each patch's MSE, normalised pixels
    if abs(float((per_patch * to_numpy(weight)[0]).sum()) - float(loss)) > 1e-4 * max(1.0, abs(float(loss))):
        raise RuntimeError("the per-patch errors drawn do not add up to the engine's loss: loss.py changed; "
                           "update save_pipeline in examples/walkthrough_figures.py")
    target_norm = patchify(imgs, p) if cfg.norm_pix_loss else None
    mean, std = asarray(mean, dtype=pred.dtype), asarray(std, dtype=pred.dtype)
    pred_pix = to_numpy(pred_to_pixels(pred, target_norm, mean, std, cfg.norm_pix_loss))[0]  # (L, P) pixels
    mask, ids_restore, latent = to_numpy(mask)[0], to_numpy(ids_restore)[0], to_numpy(latent)[0]  # (L,) (L,) (1+K, D)
    ids_shuffle = np.argsort(ids_restore)  # (L,) slot -> patch
    ids_keep = ids_shuffle[:K]  # (K,)
    # (L, P) patch vectors, ordered (row, column, channel) as patchify makes them -> (L, p, p, 3) tiles to draw
    patch_tiles = patchify(img_pix.transpose(2, 0, 1)[None], p)[0].reshape(L, p, p, 3)  # the photo's patches
    token = np.broadcast_to(np.array(MASK_TOKEN_COLOUR), (L - K, p, p, 3))  # the mask token's tiles
    appended = np.concatenate([patch_tiles[ids_keep], token])  # (L, p, p, 3) the decoder's sequence, slot order

    fig, axes = plt.subplots(2, 4, figsize=(14.0, 7.4), dpi=dpi, layout="constrained")
    patch_panel(axes[0, 0], img_pix, grid)
    axes[0, 0].set_title(f"1  patchify: {grid} x {grid} patches of {p} x {p} x 3\n"
                         f"patch l at row l // {grid}, column l % {grid}; L = {L}", fontsize=9)

    sequence_panel(axes[0, 1], patch_tiles[ids_shuffle], grid, p, K, [str(int(l)) for l in ids_shuffle], dim=True)
    axes[0, 1].set_title(f"2  shuffle: slot s holds patch ids_shuffle[s],\n"
                         f"ids_shuffle = argsort(noise); slots 0..{K - 1} are kept", fontsize=9)

    # 3 keep the first K, put the cls token in front: the encoder's input (a column of tokens), and its output
    ax = axes[0, 2]
    column = mosaic(np.concatenate([np.broadcast_to(np.array(CLS_COLOUR), (1, p, p, 3)), patch_tiles[ids_keep]]), 1)
    height, width = column.shape[:2]
    ax.imshow(column, extent=(0, width, height, 0), interpolation="nearest")
    lim = float(np.abs(latent).max())
    ax.imshow(latent, extent=(width + 2, 5 * width + 2, height, 0), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
              interpolation="nearest")
    ax.set_xlim(0, 5 * width + 2)
    ax.set_ylim(height, 0)
    ax.set_yticks((np.arange(1 + K) + 0.5) * height / (1 + K), ["cls"] + [f"patch {int(l)}" for l in ids_keep],
                  fontsize=6)
    ax.set_xticks([width / 2, 3 * width + 2], ["token", f"latent: {latent.shape[1]} numbers a token"], fontsize=7)
    ax.tick_params(length=0, pad=1)
    ax.set_aspect("auto")
    ax.set_title(f"3  keep slots 0..{K - 1} (ids_keep), cls token in front:\n"
                 f"the encoder's {1 + K} tokens -> latent (1 + K, D)", fontsize=9)

    sequence_panel(axes[0, 3], appended, grid, p, K, [str(int(l)) for l in ids_keep] + ["M"] * (L - K))
    axes[0, 3].set_title(f"4  decoder: the {K} encoded tokens, then {L - K} copies\n"
                         "of the one mask token M, in slot order", fontsize=9)

    ax = axes[1, 0]  # the gather x_full[l] = x_shuffled[ids_restore[l]]: back to patch order
    patch_panel(ax, mosaic(appended[ids_restore], grid, gap=0), grid)
    for l in np.flatnonzero(mask):
        ax.text(l % grid + 0.5, l // grid + 0.5, "M", ha="center", va="center", fontsize=7, color="white")
    ax.set_title("5  un-shuffle: row l = slot ids_restore[l];\neach token at its patch, + decoder_pos_embed",
                 fontsize=9)

    patch_panel(axes[1, 1], mosaic(np.clip(pred_pix, 0, 1).reshape(L, p, p, 3), grid, gap=0), grid, colour="0.9",
                linewidth=0.4)
    axes[1, 1].set_title(f"6  decoder -> pred: {cfg.patch_dim} numbers for each\nof the {L} patches (shown as pixels)",
                         fontsize=9)

    patch_panel(axes[1, 2], masked_image(img_pix, 1.0 - mask, p), grid, colour="0.85", linewidth=0.4)
    axes[1, 2].set_title(f"7  target: the {L - K} removed patches\n(the visible ones take no part in the loss)",
                         fontsize=9)

    ax = axes[1, 3]  # each removed patch's squared error; NaN, a visible patch (no loss), is drawn white
    im = patch_panel(ax, np.where(mask > 0, per_patch, np.nan).reshape(grid, grid), grid, colour="0.85",
                     linewidth=0.4, cmap=plt.get_cmap("magma_r").with_extremes(bad="white"), vmin=0.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax.set_title(f"8  loss: each removed patch's MSE (pred vs target),\nmean over the {L - K} = {float(loss):.3f} "
                 f"{'(norm-pix units)' if cfg.norm_pix_loss else '(norm. pixels)'}", fontsize=9)

    fig.suptitle("MAE's forward pass on one validation image: green = kept, M = mask token, "
                 "white = not part of this step", fontsize=10)
    save(fig, path, dpi, colors=256, tight=False)
    return float(loss)


# ---- (b) one photo's mask, (c) where the cls token looks -------------------------------------

def save_mask_grid(path, img, ids_restore, len_keep, patch_size, title, dpi=100):
    """One photo's mask: the photo and its patch grid, every patch's index and slot (kept cells green, removed
    grey), and what the encoder sees. img: (H, W, 3) in [0, 1]; ids_restore: (L,), the slot of each patch in the
    shuffled order (kept: slot < len_keep, as masking.random_masking computes the mask).
    Returns the PNG pixel (x, y) of one point inside each cell of the grid, away from its text, (L, 2): a test
    reads the colours there and compares them with the engine's mask."""
    plt = pyplot()
    grid = img.shape[0] // patch_size
    L, kept = grid * grid, ids_restore < len_keep  # (L,)
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.0), dpi=dpi, gridspec_kw={"width_ratios": [1, 1.25, 1]})
    patch_panel(axes[0], img, grid)
    axes[0].set_title(f"the image: {grid} x {grid} patches of {patch_size} x {patch_size} pixels", fontsize=9)

    ax = axes[1]
    patch_panel(ax, np.where(kept[:, None], KEPT_COLOUR, REMOVED_COLOUR).reshape(grid, grid, 3), grid, linewidth=1.5)
    for l in range(L):
        r, c = divmod(l, grid)
        ax.text(c + 0.5, r + 0.45, str(l), ha="center", va="center", fontsize=10,
                fontweight="bold" if kept[l] else "normal", color="black" if kept[l] else "0.35")
        ax.text(c + 0.5, r + 0.82, f"slot {int(ids_restore[l])}", ha="center", va="center", fontsize=5.5,
                color="black" if kept[l] else "0.45")
    ax.set_title(f"patch index l and its slot ids_restore[l]: green = kept (slot < {len_keep}),\n"
                 f"grey = removed (mask = 1), {L - int(kept.sum())} of {L}", fontsize=9)

    patch_panel(axes[2], masked_image(img, (~kept).astype(img.dtype), patch_size, fill=REMOVED_COLOUR[0]), grid)
    axes[2].set_title(f"what the encoder sees: the {int(kept.sum())} kept patches", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()  # fixes the layout, so the data -> pixel transform below is the saved one
    xy = ax.transData.transform([(l % grid + 0.15, l // grid + 0.15) for l in range(L)])  # (L, 2) each cell's top
    height = fig.get_size_inches()[1] * dpi  # left corner, in display pixels from the bottom left
    save(fig, path, dpi, colors=256, tight=False)
    return np.stack([xy[:, 0], height - xy[:, 1]], axis=1)  # (L, 2) PNG pixels, origin at the top left


def cls_attention_maps(attn, ids_restore, len_keep):
    """The cls token's attention to each visible patch, in patch order.

    attn: (N, H, 1+K, 1+K), one encoder block's softmax output (AttentionCache.attn): token 0 is the cls token,
    token 1 + s the kept patch in slot s of the shuffled order. ids_restore: (N, L).
    -> maps (N, H, L): attn[n, h, 0, 1 + ids_restore[n, l]] where patch l is kept, NaN where it is removed (the
    encoder never saw it); cls_self (N, H): the cls token's weight on itself. Per image and head, cls_self plus
    the kept entries of maps sum to 1."""
    H = attn.shape[1]
    slots = np.minimum(ids_restore, len_keep - 1)  # (N, L) removed patches read a kept slot, overwritten below
    maps = np.take_along_axis(attn[:, :, 0, 1:], np.repeat(slots[:, None, :], H, axis=1), axis=2)  # (N, H, L) gather
    maps = maps.astype(np.float64)
    maps[np.broadcast_to((ids_restore >= len_keep)[:, None, :], maps.shape)] = np.nan
    return maps, attn[:, :, 0, 0].astype(np.float64)


def save_attention_maps(path, imgs, maps, cls_self, patch_size, title, row_labels, dpi=90):
    """Where the cls token looks: one row per photo, the visible patches, then one panel per head with the cls
    token's attention to each visible patch drawn over it (removed patches blank). imgs: (n, H, W, 3) in [0, 1];
    maps, cls_self: cls_attention_maps' output for them. The colour scale is shared by the heads of a row."""
    plt = pyplot()
    n, heads, L = maps.shape
    grid = imgs.shape[1] // patch_size
    fig, axes = plt.subplots(n, heads + 1, figsize=(1.9 * (heads + 1) + 0.6, 1.95 * n + 0.5), dpi=dpi,
                             squeeze=False, layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # NaN, a removed patch: blank, apart from yellow
    for i in range(n):
        removed = np.isnan(maps[i, 0]).astype(imgs.dtype)  # (L,)
        faded = 0.3 * imgs[i] + 0.7  # removed patches shown faded, for context: the encoder never saw them
        shown = masked_image(imgs[i], removed, patch_size, fill=0.0) + masked_image(faded, 1.0 - removed, patch_size,
                                                                                    fill=0.0)  # (H, W, 3)
        patch_panel(axes[i, 0], shown, grid, colour="0.8", linewidth=0.4, ticks=False)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for h in range(heads):
            ax = axes[i, h + 1]
            im = patch_panel(ax, maps[i, h].reshape(grid, grid), grid, colour="0.75", linewidth=0.4, ticks=False,
                             cmap=cmap, vmin=0.0, vmax=float(np.nanmax(maps[i])))
            ax.set_xlabel(f"on the cls token itself: {cls_self[i, h]:.2f}", fontsize=6, labelpad=1)
            if i == 0:
                ax.set_title(f"head {h}", fontsize=8)
        fig.colorbar(im, ax=axes[i, :].tolist(), fraction=0.02, pad=0.01).ax.tick_params(labelsize=6)
    axes[0, 0].set_title("image (removed patches faded)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    save(fig, path, dpi, colors=256, tight=False)


# ---- the command -----------------------------------------------------------------------------

def draw(checkpoint, data=None, out="docs", images=4, image=0, block=-1):
    """The three figures of a ViT pre-training checkpoint into `out` -> {paths, cells (save_mask_grid's), picks
    (the validation photos drawn), image, mask (the drawn photo's), seed}."""
    header, model, _ = read_checkpoint(checkpoint, "pretrain")
    cfg = model.config
    if header["arch"] != "vit" or cfg.encoder_mask_tokens:
        raise TinymaeError(f"{checkpoint} holds a {header['arch']} model"
                           f"{' with mask tokens in the encoder' if header['arch'] == 'vit' else ''}; these figures "
                           "need MAE's ViT (python -m tinymae.pretrain --arch vit)")
    if not -cfg.depth <= block < cfg.depth:
        raise TinymaeError(f"--block {block}: the encoder has blocks 0 to {cfg.depth - 1}")
    photos = photos_of_run(header["data"], data, cfg.img_size, progress=False)
    if photos is None:
        raise TinymaeError(f"the photos {checkpoint} was trained on are not under {data or header['data']['root']} (or "
                           "have changed); point --data at the run's photo folder")
    n_val, seed = len(photos.val_images), header["settings"]["seed"]
    picks = [round(i * (n_val - 1) / max(1, images - 1)) for i in range(min(images, n_val))]  # as figure_batch
    if not 0 <= image < len(picks):
        raise TinymaeError(f"--image {image} is not one of the {len(picks)} photos drawn (--images {images}, of "
                           f"{n_val} validation photos)")
    check_writable(out)
    imgs = asarray(normalize(photos.val_images[picks], photos.mean, photos.std))  # (n, 3, S, S)
    noise = asarray(fixed_noise(n_val, cfg, seed)[picks])  # (n, L) the masks of the run's validation
    imgs_pix = photos.val_images[picks].astype(np.float32) / 255.0  # (n, S, S, 3)
    paths = {name: os.path.join(out, f"{name}.png") for name in ("pipeline", "mask_grid", "attention")}
    where, i = f"validation image {picks[image]} of {n_val}", image

    loss = save_pipeline(paths["pipeline"], model, imgs[i:i + 1], noise[i:i + 1], imgs_pix[i], photos.mean,
                         photos.std)
    _, mask, ids_restore, cache = model.forward_encoder(imgs, noise)
    mask, ids_restore = to_numpy(mask), to_numpy(ids_restore)  # (n, L), (n, L)
    cells = save_mask_grid(paths["mask_grid"], imgs_pix[i], ids_restore[i], cfg.len_keep, cfg.patch_size,
                           title=f"One image's mask ({where}, epoch {header['epoch']}, mask seed {seed})")
    block %= cfg.depth
    maps, cls_self = cls_attention_maps(to_numpy(cache.blocks[block].attn.attn), ids_restore, cfg.len_keep)
    save_attention_maps(paths["attention"], imgs_pix, maps, cls_self, cfg.patch_size,
                        title=f"cls token's attention in encoder block {block} (of 0..{cfg.depth - 1}), per head "
                              f"(epoch {header['epoch']}); removed patches blank",
                        row_labels=[f"validation image {p}" for p in picks])

    print(f"{checkpoint}: ViT MAE after {header['epoch']} epochs; {where}, loss on its removed patches {loss:.4f}")
    print(f"  kept patches (ids_keep, in slot order): {' '.join(map(str, np.argsort(ids_restore[i])[:cfg.len_keep]))}")
    print("  " + "  ".join(f"{path} ({os.path.getsize(path) / 1024:.0f} KB)" for path in paths.values()))
    return {"paths": paths, "cells": cells, "picks": picks, "image": i, "mask": mask[i], "seed": seed}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python examples/walkthrough_figures.py", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.npz of python -m tinymae.pretrain --arch vit")
    p.add_argument("--data", help="the photo folder that run was trained on (default: where the run found it)")
    docs = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
    p.add_argument("--out", default=docs, help="folder for the PNGs (default: docs/)")
    p.add_argument("--images", type=int, default=4, help="validation photos in attention.png (default: 4)")
    p.add_argument("--image", type=int, default=0, help="which of them the other two figures show (default: 0)")
    p.add_argument("--block", type=int, default=-1, help="encoder block of attention.png: 0 the first, -1 the "
                                                         "last (default: -1)")
    args = p.parse_args(argv)
    return cli.run(lambda: draw(args.checkpoint, args.data, args.out, args.images, args.image, args.block) and 0)


if __name__ == "__main__":
    sys.exit(main())
