"""The figures of a run, drawn on the host with matplotlib and written atomically (a full disk leaves no half
file): the four-column reconstruction grid and the loss curves. They take host (NumPy) arrays."""
import io
import os

import numpy  # host-side: drawing

from ..model.patches import unpatchify
from .files import write_atomically


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, dpi=110, colors=None, tight=True):
    """Write `fig` to `path` atomically, in the format its ending names (.png when it has none); with colors, as a
    palette PNG of that many colours (a third the size, for the figures committed to docs/)."""
    plt = pyplot()
    if tight:
        fig.tight_layout()
    ending = os.path.splitext(path)[1][1:].lower() or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=ending)
    plt.close(fig)
    if colors:
        from PIL import Image
        with Image.open(io.BytesIO(buffer.getvalue())) as image:
            buffer = io.BytesIO()
            image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buffer, "png",
                                                                                                optimize=True)
    write_atomically(path, lambda f: f.write(buffer.getvalue()))


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
    save(fig, path)


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
    save(fig, path)
