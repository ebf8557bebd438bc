"""Reconstruction quality in pixel space, and the simple baselines it is measured against.

All errors are mean squared errors in [0, 1] pixel units over the *removed* patches only (the patches
the model never saw), averaged like the loss: per-patch MSE, then the mean over removed patches.
PSNR = 10 log10(1 / MSE) dB for that mean.

The baselines fill each removed patch without any learning beyond a training-set average:
    mean_patch       the training set's average patch at that position
    visible_mean     the image's mean visible colour, per channel
    nearest_visible  a copy of the nearest visible patch on the 8 x 8 grid (ties: the lowest index)
"""
import math

from ..backend import xp
from ..model.masking import gather_tokens


def pred_to_pixels(pred, target_norm, mean, std, norm_pix_loss=False):
    """Model output (N, L, P) -> pixels in [0, 1] units (N, L, P), not clipped.

    pred is in the units the model was trained on: the normalised image, (x - mean) / std per channel;
    with norm_pix_loss additionally normalised per patch, whose mean and variance a masked patch's
    prediction cannot know, so they are taken from the true patch, as the official MAE demo does to
    show such reconstructions (target_norm: the normalised image's patches, (N, L, P)).
    mean, std: per-channel (3,) backend arrays; each patch vector is ordered (row, col, channel).
    """
    if norm_pix_loss:
        patch_mean = target_norm.mean(axis=-1, keepdims=True)  # (N, L, 1)
        patch_var = target_norm.var(axis=-1, keepdims=True, ddof=1)  # (N, L, 1)
        pred = pred * (patch_var + 1.0e-6) ** 0.5 + patch_mean  # (N, L, P)
    C = mean.shape[0]
    reps = pred.shape[-1] // C
    return pred * xp.tile(std, reps) + xp.tile(mean, reps)  # (N, L, P)


def masked_patch_sq_error(pred_pix, target_pix, mask):
    """Sum over removed patches of the per-patch MSE, and their count: (sum, count) as 0-d arrays.

    Returned as a sum and a count so batches can be accumulated exactly; masked_mse = sum / count.
    """
    per_patch = ((pred_pix - target_pix) ** 2).mean(axis=-1)  # (N, L)
    return (per_patch * mask).sum(), mask.sum()


def psnr(mse):
    """10 log10(1 / mse) dB. A perfect reconstruction (mse 0) is inf dB; an mse that is not a number (the
    model produced NaN) stays NaN, so a broken model is never reported as a perfect one; an infinite mse
    is -inf dB."""
    if math.isnan(mse):
        return float("nan")
    if mse <= 0:
        return float("inf")
    if math.isinf(mse):
        return float("-inf")
    return 10.0 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------------------------
# baselines; each takes target patches in pixel units (N, L, P) and the mask (N, L), 1 = removed

def mean_patch_baseline(target_pix, mask, mean_patch):
    """mean_patch: (L, P) the training set's average patch at each position."""
    return xp.broadcast_to(mean_patch, target_pix.shape)  # (N, L, P)


def visible_mean_baseline(target_pix, mask, channels=3):
    """Every patch filled with the image's mean colour over its visible patches."""
    N, L, P = target_pix.shape
    visible = (1.0 - mask)[:, :, None]  # (N, L, 1)
    pixels = target_pix.reshape(N, L, P // channels, channels)  # (N, L, p*p, C)
    colour_sum = (pixels * visible[:, :, :, None]).sum(axis=(1, 2))  # (N, C)
    colour = colour_sum / (visible.sum(axis=(1, 2))[:, None] * (P // channels))  # (N, C)
    return xp.broadcast_to(xp.tile(colour, P // channels)[:, None, :], target_pix.shape)  # (N, L, P)


def nearest_visible_baseline(target_pix, mask, grid_size):
    """Every patch replaced by the nearest visible patch (Euclidean distance between grid cells)."""
    rows, cols = xp.divmod(xp.arange(grid_size * grid_size), grid_size)  # (L,), (L,)
    dist = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2  # (L, L) squared
    # Distance from patch i to candidate j, with removed candidates pushed out of reach.
    dist = dist[None].astype(target_pix.dtype) + mask[:, None, :] * 1e6  # (N, L, L)
    source = xp.argmin(dist, axis=2)  # (N, L) first minimum: ties go to the lowest index
    return gather_tokens(target_pix, source)  # (N, L, P)
