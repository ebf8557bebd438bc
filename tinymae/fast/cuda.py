"""The GPU's fast path: the Transformer block in fused kernels, AdamW in one kernel, and the training photos
resident on the device. Off unless TINYMAE_FAST_GPU=1 on the CuPy backend (fast/__init__.py): the formulas are
tested against the reference on NumPy (tests/test_fast.py), but this code has not yet run on a GPU.

On a GPU the reference is slow for a reason that has nothing to do with arithmetic: each line of a formula is its
own kernel launch of some 10-20 microseconds, and a ViT step makes thousands. Here each elementwise chain is one
function decorated with `fused`, which on CuPy is cupy.fuse: the whole expression compiles into one kernel.
Reductions stay CuPy calls of their own. On NumPy `fused` does nothing and the same Python runs as array
arithmetic, which is how the CPU test suite checks every formula here.
"""
import os

import numpy as np

from ..backend import asarray, xp
from ..data import crop_flip_draws
from ..model.attention import AttentionCache
from ..model.layers import GELU_A, GELU_C, drop_path_backward, drop_path_forward, linear_backward, linear_forward
from ..model.transformer import Block, BlockCache

ENABLED = os.environ.get("TINYMAE_FAST_GPU", "0") == "1"


def fused(function):
    """cupy.fuse on CuPy (one kernel for the whole elementwise expression); the plain function elsewhere."""
    return xp.fuse(function) if hasattr(xp, "fuse") else function


@fused
def _layernorm_affine(x, mean, rstd, w, b):
    xhat = (x - mean) * rstd
    return xhat * w + b, xhat  # (a fused kernel's outputs share the inputs' broadcast shape: rstd stays out)


@fused
def _layernorm_dx(dout, w, xhat, rstd, mean_dxhat, mean_dxhat_xhat):
    return rstd * (dout * w - mean_dxhat - xhat * mean_dxhat_xhat)


@fused
def _bias_gelu(h, b):
    """fc1's bias, then GELU (tanh form) -> out, the pre-activation x and s, what gelu_backward needs."""
    x = h + b
    s = 0.5 + 0.5 * xp.tanh(GELU_C * (x + GELU_A * x * x * x))
    return x * s, x, s


@fused
def _gelu_grad(dout, x, s):
    return dout * (s + x * (2.0 * s * (1.0 - s) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)))


@fused
def _bias_residual(residual, h, b):
    return residual + (h + b)


@fused
def _softmax_dx(y, dout, row_sum):
    return y * (dout - row_sum)


@fused
def _adamw(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    rate = scale * lr
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return p * (1.0 - rate * decay) - (rate * step_size) * m / (xp.sqrt(v) + eps), m, v


def layernorm_forward(x, w, b, eps=1e-6):
    """model/layers.py's layernorm_forward: the same output and cache."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / xp.sqrt(x.var(axis=-1, keepdims=True) + eps)  # (..., 1) from the biased variance
    out, xhat = _layernorm_affine(x, mean, rstd, w, b)  # (..., D)
    return out, (xhat, w, rstd)


def layernorm_backward(dout, cache):
    """model/layers.py's layernorm_backward."""
    xhat, w, rstd = cache
    D = w.shape[0]
    dxhat = dout * w  # (..., D)
    dx = _layernorm_dx(dout, w, xhat, rstd, dxhat.mean(axis=-1, keepdims=True),
                       (dxhat * xhat).mean(axis=-1, keepdims=True))  # (..., D)
    return dx, (dout * xhat).reshape(-1, D).sum(axis=0), dout.reshape(-1, D).sum(axis=0)


def block_forward(x, params, num_heads, keep=None):
    """model/transformer.py's block_forward, biases, GELU and residuals fused around the matrix products ->
    out (N, T, D) and the same BlockCache."""
    N, T, D = x.shape
    H, d = num_heads, D // num_heads
    h, norm1 = layernorm_forward(x, params["norm1.w"], params["norm1.b"])  # (N, T, D)
    qkv, qkv_cache = linear_forward(h, params["attn.qkv.w"], params["attn.qkv.b"])  # (N, T, 3D)
    qkv = qkv.reshape(N, T, 3, H, d).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, d)
    scale = d ** -0.5
    q, k, v = qkv[0] * scale, qkv[1], qkv[2]  # (N, H, T, d)
    scores = q @ k.transpose(0, 1, 3, 2)  # (N, H, T, T)
    e = xp.exp(scores - scores.max(axis=-1, keepdims=True))  # (N, H, T, T)
    attn = e / e.sum(axis=-1, keepdims=True)  # (N, H, T, T)
    merged = (attn @ v).transpose(0, 2, 1, 3).reshape(N, T, D)  # (N, T, D)
    proj = merged.reshape(-1, D) @ params["attn.proj.w"]  # (N*T, D) the bias is added with the residual
    drop1 = drop2 = None
    if keep is None:
        x = _bias_residual(x.reshape(-1, D), proj, params["attn.proj.b"]).reshape(N, T, D)  # (N, T, D)
    else:  # drop path needs the branch on its own
        branch, drop1 = drop_path_forward((proj + params["attn.proj.b"]).reshape(N, T, D), keep[:, 0])
        x = x + branch
    attn_cache = AttentionCache(q, k, v, attn, scale, qkv_cache, (merged, params["attn.proj.w"]))
    h, norm2 = layernorm_forward(x, params["norm2.w"], params["norm2.b"])  # (N, T, D)
    g, pre, s = _bias_gelu(h.reshape(-1, D) @ params["mlp.fc1.w"], params["mlp.fc1.b"])  # (N*T, 4D) each
    out = g @ params["mlp.fc2.w"]  # (N*T, D)
    if keep is None:
        out = _bias_residual(x.reshape(-1, D), out, params["mlp.fc2.b"]).reshape(N, T, D)  # (N, T, D)
    else:
        branch, drop2 = drop_path_forward((out + params["mlp.fc2.b"]).reshape(N, T, D), keep[:, 1])
        out = x + branch
    fc1, fc2 = (h, params["mlp.fc1.w"]), (g.reshape(N, T, -1), params["mlp.fc2.w"])  # linear_forward's caches
    gelu = (pre.reshape(N, T, -1), s.reshape(N, T, -1))
    return out, BlockCache(norm1, attn_cache, norm2, fc1, gelu, fc2, None if keep is None else (drop1, drop2))


def block_backward(dout, cache):
    """model/transformer.py's block_backward, GELU's and softmax's derivatives and LayerNorm's in one kernel each."""
    g = {}
    dh = dout if cache.drop_path is None else drop_path_backward(dout, cache.drop_path[1])  # (N, T, D)
    dh, g["mlp.fc2.w"], g["mlp.fc2.b"] = linear_backward(dh, cache.fc2)  # (N, T, 4D)
    dh, g["mlp.fc1.w"], g["mlp.fc1.b"] = linear_backward(_gelu_grad(dh, *cache.gelu), cache.fc1)  # (N, T, D)
    dx, g["norm2.w"], g["norm2.b"] = layernorm_backward(dh, cache.norm2)  # (N, T, D)
    dx += dout  # the residual fan-out (dx is fresh)
    dh = dx if cache.drop_path is None else drop_path_backward(dx, cache.drop_path[0])  # (N, T, D)
    a = cache.attn
    N, H, T, d = a.q.shape
    dmerged, g["attn.proj.w"], g["attn.proj.b"] = linear_backward(dh, a.proj)  # (N, T, D)
    dheads = dmerged.reshape(N, T, H, d).transpose(0, 2, 1, 3)  # (N, H, T, d)
    dattn = dheads @ a.v.transpose(0, 1, 3, 2)  # (N, H, T, T)
    dscores = _softmax_dx(a.attn, dattn, (dattn * a.attn).sum(axis=-1, keepdims=True))  # (N, H, T, T)
    dqkv = xp.stack([(dscores @ a.k) * a.scale, dscores.transpose(0, 1, 3, 2) @ a.q,
                     a.attn.transpose(0, 1, 3, 2) @ dheads]).transpose(1, 3, 0, 2, 4).reshape(N, T, 3 * H * d)
    dh, g["attn.qkv.w"], g["attn.qkv.b"] = linear_backward(dqkv, a.qkv)  # (N, T, D)
    dh, g["norm1.w"], g["norm1.b"] = layernorm_backward(dh, cache.norm1)  # (N, T, D)
    dh += dx  # the first residual's fan-out
    return dh, g


BLOCK = Block(block_forward, block_backward)


def adamw_flat(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    """fast/optim.py's adamw_update over the whole flat buffer in one kernel, its results copied into the buffers
    (cupy.fuse makes new arrays; the parameters must stay where the model reads them)."""
    p[...], m[...], v[...] = _adamw(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size)


class DeviceImages:
    """The training photos resident on the device as uint8, and each batch cut there: data.py's crop, flip and
    normalisation from the same host draws (crop_flip_draws), without a host copy of every photo every step."""

    def __init__(self, images, mean, std, out_size):
        self.images, self.out_size = asarray(images), out_size  # (N, S, S, 3) uint8
        self.mean = asarray(np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1))
        self.std = asarray(np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1))
        self.steps = asarray(np.arange(out_size))  # (S',)

    def batch(self, idx, tops, lefts, flips):
        """Device arrays idx, tops, lefts (B,) and flips (B,) -> imgs (B, 3, S', S'), as
        data.normalize(data.random_crop_flip(images[idx])) with the same draws."""
        s = self.out_size
        rows = tops[:, None] + self.steps[None, :]  # (B, S')
        cols = xp.where(flips[:, None], lefts[:, None] + (s - 1) - self.steps[None, :],
                        lefts[:, None] + self.steps[None, :])  # (B, S') flipped or not
        crops = self.images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, S', S', 3) uint8
        return (crops.transpose(0, 3, 1, 2).astype(xp.float32) / 255.0 - self.mean) / self.std


def draws(perm, batch_size, size, out_size, rng):
    """An epoch's host draws for DeviceImages.batch, in the order data.augmented_batches draws them."""
    for i in range(len(perm) // batch_size):
        idx = perm[i * batch_size:(i + 1) * batch_size]  # (B,)
        yield (idx, *crop_flip_draws(rng, len(idx), size, out_size))
