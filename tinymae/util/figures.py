"""Figures, drawn on the host with matplotlib: the four-column reconstruction grid, the loss curves, one
image's mask grid and a ViT's attention maps.

Every function here takes host (NumPy) arrays: convert with backend.to_numpy first."""
import numpy  # host-side: drawing

from ..model.patches import unpatchify


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    return plt


def save_small_png(fig, path, dpi, colors=256):
    """Save `fig` as a palette PNG of at most `colors` colours: a third the size of matplotlib's RGBA for
    these figures (flat cells, few colours), so that the ones committed to docs/ stay small."""
    import io

    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def reconstruction_panels(imgs, mask, pred_pix, patch_size):
    """Host arrays -> the four columns of the official MAE demo, each (n, H, W, 3) in [0, 1].

    imgs: (n, 3, H, W) pixels in [0, 1]; mask: (n, L), 1 = removed; pred_pix: (n, L, P) pixels.
    """
    P = pred_pix.shape[-1]
    mask_img = unpatchify(numpy.repeat(mask[:, :, None], P, axis=2), patch_size)  # (n, 3, H, W)
    reconstruction = unpatchify(pred_pix, patch_size)  # (n, 3, H, W)
    masked = imgs * (1 - mask_img) + 0.5 * mask_img  # removed patches shown mid-grey
    pasted = imgs * (1 - mask_img) + reconstruction * mask_img  # the visible patches put back
    columns = (imgs, masked, reconstruction, pasted)
    return [numpy.clip(c, 0.0, 1.0).transpose(0, 2, 3, 1) for c in columns]


def save_reconstructions(path, imgs, mask, pred_pix, patch_size, title=None):
    """Save the grid: one row per image; original, masked, reconstruction, reconstruction + visible."""
    plt = pyplot()
    columns = reconstruction_panels(imgs, mask, pred_pix, patch_size)
    names = ("original", "masked (75%)" if mask.size and abs(mask.mean() - 0.75) < 1e-6 else "masked",
             "reconstruction", "reconstruction + visible")
    n = imgs.shape[0]
    fig, axes = plt.subplots(n, 4, figsize=(4 * 1.6, n * 1.6), squeeze=False)
    for i in range(n):
        for j in range(4):
            ax = axes[i, j]
            ax.imshow(columns[j][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(names[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_loss_curves(path, history, baseline_mse=None):
    """history: the per-epoch dicts of metrics.json (epoch, train_loss, val_loss, val_masked_mse)."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_title("in model units (normalised pixels)", fontsize=9)
    ax1.legend()
    ax2.plot(epochs, [h["val_masked_mse"] for h in history], label="model", color="C2")
    if baseline_mse is not None:
        ax2.axhline(baseline_mse, color="gray", linestyle="--", label="mean-patch baseline")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation MSE on removed patches")
    ax2.set_title("[0, 1] pixel units", fontsize=9)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# one image's mask, and where a ViT's cls token looks

KEPT_COLOUR = (0.65, 0.85, 0.42)  # light green: a visible patch, which the encoder sees
REMOVED_COLOUR = (0.85, 0.85, 0.85)  # light grey: a removed patch, which only the decoder fills in


def draw_patch_grid(ax, grid, colour="white", linewidth=0.8):
    """Lines between the patches of a grid x grid image drawn with extent (0, grid, grid, 0)."""
    for i in range(1, grid):
        ax.axhline(i, color=colour, linewidth=linewidth)
        ax.axvline(i, color=colour, linewidth=linewidth)


def patch_grid_axes(ax, grid, label_rows=True):
    """Ticks that name the patches: columns 0..grid-1 on top, and each row's first patch index on the left."""
    ax.set_xticks(numpy.arange(grid) + 0.5, [str(c) for c in range(grid)], fontsize=6)
    ax.xaxis.tick_top()
    if label_rows:
        ax.set_yticks(numpy.arange(grid) + 0.5, [str(r * grid) for r in range(grid)], fontsize=6)
    else:
        ax.set_yticks([])
    ax.tick_params(length=0, pad=1)


def masked_image(img, mask, patch_size, fill=1.0):
    """img: (H, W, 3) in [0, 1], mask: (L,) 1 = removed -> the image with removed patches set to `fill`."""
    grid = img.shape[0] // patch_size
    removed = numpy.kron(mask.reshape(grid, grid), numpy.ones((patch_size, patch_size)))[:, :, None]  # (H, W, 1)
    return img * (1 - removed) + fill * removed


def save_mask_grid(path, img, ids_restore, len_keep, patch_size, title=None, dpi=100):
    """One image's mask: the image and its patch grid, every patch's index and slot (kept cells green,
    removed grey), and what the encoder sees.

    img: (H, W, 3) in [0, 1]; ids_restore: (L,), the slot of each patch in the shuffled order (slot < len_keep
    is kept, so mask = ids_restore >= len_keep, as masking.random_masking computes it).
    Returns the PNG pixel (x, y) of one point inside each cell of the grid, away from its text, (L, 2): a
    test reads the colours there and compares them with the engine's mask.
    """
    plt = pyplot()
    grid = img.shape[0] // patch_size
    L = grid * grid
    kept = ids_restore < len_keep  # (L,)
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 4.0), dpi=dpi, gridspec_kw={"width_ratios": [1, 1.25, 1]})
    extent = (0, grid, grid, 0)

    ax = axes[0]
    ax.imshow(img, extent=extent, interpolation="nearest")
    draw_patch_grid(ax, grid)
    patch_grid_axes(ax, grid)
    ax.set_title(f"the image: {grid} x {grid} patches of {patch_size} x {patch_size} pixels", fontsize=9)

    ax = axes[1]
    colours = numpy.where(kept[:, None], numpy.array(KEPT_COLOUR), numpy.array(REMOVED_COLOUR))  # (L, 3)
    ax.imshow(colours.reshape(grid, grid, 3), extent=extent, interpolation="nearest")
    draw_patch_grid(ax, grid, linewidth=1.5)
    for l in range(L):
        r, c = divmod(l, grid)
        ax.text(c + 0.5, r + 0.45, str(l), ha="center", va="center", fontsize=10,
                fontweight="bold" if kept[l] else "normal", color="black" if kept[l] else "0.35")
        ax.text(c + 0.5, r + 0.82, f"slot {int(ids_restore[l])}", ha="center", va="center", fontsize=5.5,
                color="black" if kept[l] else "0.45")
    patch_grid_axes(ax, grid)
    ax.set_title(f"patch index l and its slot ids_restore[l]: green = kept (slot < {len_keep}),\n"
                 f"grey = removed (mask = 1), {L - int(kept.sum())} of {L}", fontsize=9)

    ax = axes[2]
    ax.imshow(masked_image(img, (~kept).astype(img.dtype), patch_size, fill=REMOVED_COLOUR[0]), extent=extent,
              interpolation="nearest")
    draw_patch_grid(ax, grid)
    patch_grid_axes(ax, grid)
    ax.set_title(f"what the encoder sees: the {int(kept.sum())} kept patches", fontsize=9)

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()  # fixes the layout, so the data -> pixel transform below is the saved one
    corners = numpy.array([(l % grid + 0.15, l // grid + 0.15) for l in range(L)])  # top-left of each cell
    xy = axes[1].transData.transform(corners)  # (L, 2) display pixels, origin at the bottom left
    height = fig.get_size_inches()[1] * dpi
    save_small_png(fig, path, dpi)
    plt.close(fig)
    return numpy.stack([xy[:, 0], height - xy[:, 1]], axis=1)  # (L, 2) PNG pixels, origin at the top left


def cls_attention_maps(attn, ids_restore, len_keep):
    """The cls token's attention to each visible patch, in patch order.

    attn: (N, H, 1+K, 1+K), one encoder block's softmax output (AttentionCache.attn): token 0 is the cls
    token, token 1 + s the kept patch in slot s of the shuffled order. ids_restore: (N, L).
    -> maps (N, H, L): attn[n, h, 0, 1 + ids_restore[n, l]] where patch l is kept, NaN where it is removed
    (the encoder never saw it); cls_self (N, H): the cls token's weight on itself. Per image and head,
    cls_self plus the kept entries of maps sum to 1.
    """
    N, H = attn.shape[:2]
    row = attn[:, :, 0, 1:]  # (N, H, K) the cls token's row, over the kept tokens
    slots = numpy.minimum(ids_restore, len_keep - 1)  # (N, L) removed patches read a kept slot, overwritten below
    maps = numpy.take_along_axis(row, numpy.repeat(slots[:, None, :], H, axis=1), axis=2)  # (N, H, L) a gather
    maps = maps.astype(numpy.float64)
    maps[numpy.broadcast_to((ids_restore >= len_keep)[:, None, :], maps.shape)] = numpy.nan
    return maps, attn[:, :, 0, 0].astype(numpy.float64)


def save_attention_maps(path, imgs, maps, cls_self, patch_size, title=None, row_labels=None, dpi=90):
    """Where the cls token looks: one row per image, the visible patches, then one panel per head with the
    cls token's attention to each visible patch drawn over it (removed patches blank).

    imgs: (n, H, W, 3) in [0, 1]; maps, cls_self: cls_attention_maps' output for these images, (n, heads, L)
    and (n, heads). The colour scale is shared by the heads of a row. row_labels: one name per image.
    """
    plt = pyplot()
    n, heads, L = maps.shape
    grid = imgs.shape[1] // patch_size
    extent = (0, grid, grid, 0)
    fig, axes = plt.subplots(n, heads + 1, figsize=(1.9 * (heads + 1) + 0.6, 1.95 * n + 0.5), dpi=dpi,
                             squeeze=False, layout="constrained")
    # NaN is a removed patch: blank. viridis' brightest yellow stays distinct from that white.
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    for i in range(n):
        removed = numpy.isnan(maps[i, 0])  # (L,)
        faded = 0.3 * imgs[i] + 0.7  # removed patches shown faded, for context: the encoder never saw them
        shown = masked_image(imgs[i], removed.astype(imgs.dtype), patch_size, fill=0.0) + masked_image(
            faded, 1.0 - removed.astype(imgs.dtype), patch_size, fill=0.0)  # (H, W, 3)
        vmax = float(numpy.nanmax(maps[i]))
        ax = axes[i, 0]
        ax.imshow(shown, extent=extent, interpolation="nearest")
        draw_patch_grid(ax, grid, colour="0.8", linewidth=0.4)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(row_labels[i] if row_labels else f"image {i}", fontsize=8)
        if i == 0:
            ax.set_title("image (removed patches faded)", fontsize=8)
        for h in range(heads):
            ax = axes[i, h + 1]
            im = ax.imshow(maps[i, h].reshape(grid, grid), cmap=cmap, vmin=0.0, vmax=vmax, extent=extent,
                           interpolation="nearest")
            draw_patch_grid(ax, grid, colour="0.75", linewidth=0.4)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"on the cls token itself: {cls_self[i, h]:.2f}", fontsize=6, labelpad=1)
            if i == 0:
                ax.set_title(f"head {h}", fontsize=8)
        fig.colorbar(im, ax=axes[i, :].tolist(), fraction=0.02, pad=0.01).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    save_small_png(fig, path, dpi)
    plt.close(fig)
