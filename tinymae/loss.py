"""The reconstruction loss, as `forward_loss` in models_mae.py: mean squared error per patch, averaged
over the removed patches only (the paper, Sec. 3: "we compute the loss only on masked patches")."""
from .backend import xp


def mse_forward(pred, target, mask=None, norm_pix_loss=False):
    """pred, target: (N, L, D) patch vectors; mask: (N, L), 1 = removed, or None for all patches.

    Returns the scalar loss (a 0-d backend array, so no host sync) and the cache.
    norm_pix_loss: normalise each target patch by its own mean and variance first (the paper's Table 1d);
    the variance is the unbiased one, as torch's `.var()` in the reference.
    """
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)  # (N, L, 1)
        var = target.var(axis=-1, keepdims=True, ddof=1)  # (N, L, 1)
        target = (target - mean) / (var + 1.0e-6) ** 0.5  # (N, L, D)

    diff = pred - target  # (N, L, D)
    loss_per_patch = (diff * diff).mean(axis=-1)  # (N, L) mean loss per patch
    if mask is None:
        weight = xp.full(loss_per_patch.shape, 1.0 / loss_per_patch.size, dtype=pred.dtype)  # (N, L)
    else:
        weight = mask / mask.sum()  # (N, L) mean over removed patches
    loss = (loss_per_patch * weight).sum()  # ()
    cache = (diff, weight)
    return loss, cache


def mse_backward(dloss, cache):
    """dloss: upstream gradient of the scalar loss -> dpred: (N, L, D).

    d loss / d pred = 2 * diff / D * weight (the target carries no gradient)."""
    diff, weight = cache
    D = diff.shape[-1]
    dpred = diff * (weight * (2.0 * dloss / D))[:, :, None]  # (N, L, D)
    return dpred


def bce_logits_forward(logits, y):
    """Binary cross-entropy on logits, as the linear probe's loss: logits (N,), y (N,) in {0, 1} -> mean loss.

    log(1 + e^z) - y z, written as max(z, 0) - y z + log(1 + e^-|z|) so that no exp overflows.
    """
    z = logits
    loss = (xp.maximum(z, 0) - y * z + xp.log1p(xp.exp(-xp.abs(z)))).mean()  # ()
    cache = (z, y)
    return loss, cache


def bce_logits_backward(dloss, cache):
    """dloss: upstream gradient of the mean loss -> dlogits (N,) = dloss * (sigmoid(z) - y) / N."""
    z, y = cache
    sigmoid = 0.5 * (1.0 + xp.tanh(0.5 * z))  # the logistic function, without overflow for large |z|
    return (sigmoid - y) * (dloss / z.shape[0])  # (N,)
