"""The reconstruction loss, as `forward_loss` in models_mae.py: mean squared error per patch, averaged
over the removed patches only (the paper, Sec. 3: "we compute the loss only on masked patches").
And the classifiers' loss: softmax cross-entropy, with label smoothing (fine-tuning; the linear probe
without), or against the soft targets of mixup."""
from ..backend import xp


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


def softmax_cross_entropy_forward(logits, labels, smoothing=0.0):
    """Softmax cross-entropy with label smoothing, the fine-tuning loss: logits (N, C), labels (N,) integer
    class ids -> the mean loss over the batch (a 0-d backend array) and the cache.

    timm's LabelSmoothingCrossEntropy, which main_finetune.py of the official MAE uses when mixup is off:
        loss = (1 - s) * (-log p[y]) + s * mean over classes c of (-log p[c])
    that is, the cross-entropy against the target q = (1 - s) onehot(y) + s / C. It is the same as
    torch.nn.functional.cross_entropy(logits, labels, label_smoothing=s).

    log p = z - logsumexp(z), computed as (z - max z) - log(sum exp(z - max z)): every exponent is at most
    0, so no exp overflows however large the logits (the log-sum-exp trick), and the largest term of the
    sum is exactly 1, so the log never sees 0.
    """
    N, C = logits.shape
    log_probs = log_softmax(logits)  # (N, C)
    nll = -log_probs[xp.arange(N), labels]  # (N,) -log p[y]
    uniform = -log_probs.mean(axis=1)  # (N,) the smoothing term: the mean of -log p over the classes
    loss = ((1.0 - smoothing) * nll + smoothing * uniform).mean()  # ()
    cache = (log_probs, labels, smoothing)
    return loss, cache


def log_softmax(logits):
    """logits (N, C) -> log p (N, C) = (z - max z) - log(sum exp(z - max z)), the log-sum-exp trick above."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, C) each row's largest is 0
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))  # (N, C)


def softmax_cross_entropy_backward(dloss, cache):
    """dloss: upstream gradient of the mean loss -> dlogits (N, C) = dloss * (softmax(z) - q) / N.

    Each image's loss is -sum_c q_c log p_c with sum_c q_c = 1, and d(-log p_c)/dz_k = p_k - [c = k], so
    its gradient is p - q: the softmax minus the smoothed target."""
    log_probs, labels, smoothing = cache
    N, C = log_probs.shape
    onehot = (xp.arange(C)[None, :] == labels[:, None]).astype(log_probs.dtype)  # (N, C)
    target = (1.0 - smoothing) * onehot + smoothing / C  # (N, C) the smoothed target q
    dlogits = (xp.exp(log_probs) - target) * (dloss / N)  # (N, C) softmax(z) - q, for the mean
    return dlogits


def soft_target_cross_entropy_forward(logits, targets):
    """Cross-entropy against soft targets, the fine-tuning loss with mixup: logits (N, C), targets (N, C) whose
    rows sum to 1 -> the mean over the batch of -sum_c q_c log p_c (a 0-d backend array) and the cache.

    timm's SoftTargetCrossEntropy, which main_finetune.py uses when mixup is on: the targets already carry
    the label smoothing (data.mixup_targets), so the loss itself has none."""
    log_probs = log_softmax(logits)  # (N, C)
    loss = (-(targets * log_probs).sum(axis=1)).mean()  # ()
    cache = (log_probs, targets)
    return loss, cache


def soft_target_cross_entropy_backward(dloss, cache):
    """dloss: upstream gradient of the mean loss -> dlogits (N, C) = dloss * (softmax(z) - q) / N (as above,
    with q the given targets)."""
    log_probs, targets = cache
    return (xp.exp(log_probs) - targets) * (dloss / log_probs.shape[0])  # (N, C)
