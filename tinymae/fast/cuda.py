"""Fused kernels for the GPU: the Transformer block, LayerNorm, the masked MSE and AdamW, each with the
signature and cache of the reference function it stands in for (model/transformer.py, model/layers.py,
model/loss.py, fast/optim.py), in fewer, larger CUDA kernels.

On a GPU the reference is slow for a reason that has nothing to do with arithmetic: each line of a formula
is its own CuPy call, its own kernel launch of some 10-20 microseconds, and a ViT step makes thousands of
them (every pass of LayerNorm, GELU, softmax, bias and residual, and of AdamW for every parameter). Here
each elementwise chain is one function decorated with `fused`, which on CuPy is cupy.fuse: the whole
expression compiles into one kernel. Reductions (a row's mean, a column's sum) stay CuPy calls of their
own, one launch each. On NumPy `fused` does nothing and the same Python runs as array arithmetic, which
is how the CPU test suite checks every formula here against its reference (tests/test_fast.py).

They run only with TINYMAE_FAST_GPU=1 on the CuPy backend (fast/__init__.py): their formulas are tested,
but this code has not yet run on a GPU.
"""
import os

from ..backend import xp
from ..model.attention import AttentionCache
from ..model.layers import GELU_A, GELU_C, drop_path_backward, drop_path_forward, linear_backward, linear_forward
from ..model.transformer import BlockCache

ENABLED = os.environ.get("TINYMAE_FAST_GPU", "0") == "1"


def fused(function):
    """cupy.fuse on CuPy (one kernel for the whole elementwise expression); the plain function elsewhere."""
    return xp.fuse(function) if hasattr(xp, "fuse") else function


# ----------------------------------------------------------------------------------------------
# the elementwise chains, one kernel each on CuPy

@fused
def _layernorm_affine(x, mean, rstd, w, b):
    xhat = (x - mean) * rstd
    return xhat * w + b, xhat  # (a fused kernel's outputs all have the inputs' broadcast shape: rstd stays out)


@fused
def _layernorm_dx(dout, w, xhat, rstd, mean_dxhat, mean_dxhat_xhat):
    return rstd * (dout * w - mean_dxhat - xhat * mean_dxhat_xhat)


@fused
def _bias_gelu(h, b):
    """The fc1 bias, then GELU (tanh form): -> out, x (the pre-activation) and s (what gelu_backward needs)."""
    x = h + b
    s = 0.5 + 0.5 * xp.tanh(GELU_C * (x + GELU_A * x * x * x))
    return x * s, x, s


@fused
def _gelu_grad(dout, x, s):
    return dout * (s + x * (2.0 * s * (1.0 - s) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)))


@fused
def _bias_residual(residual, h, b):
    """fc2's or proj's bias added to its output, then the residual: one pass instead of two."""
    return residual + (h + b)


@fused
def _exp_shifted(x, row_max):
    return xp.exp(x - row_max)


@fused
def _softmax_dx(y, dout, row_sum):
    return y * (dout - row_sum)


@fused
def _mse_grad(diff, weight, scale):
    return diff * (weight * scale)


@fused
def _adamw(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    rate = scale * lr
    p = p * (1.0 - rate * decay)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return p - (rate * step_size) * m / (xp.sqrt(v) + eps), m, v


# ----------------------------------------------------------------------------------------------
# the reference functions' stand-ins

def layernorm_forward(x, w, b, eps=1e-6):
    """model/layers.py's layernorm_forward: x (..., D) -> out (..., D), the same cache."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / xp.sqrt(x.var(axis=-1, keepdims=True) + eps)  # (..., 1) from the biased variance
    out, xhat = _layernorm_affine(x, mean, rstd, w, b)  # (..., D), (..., D)
    return out, (xhat, w, rstd)


def layernorm_backward(dout, cache):
    """model/layers.py's layernorm_backward: dout (..., D) -> dx, dw (D,), db (D,)."""
    xhat, w, rstd = cache
    D = w.shape[0]
    db = dout.reshape(-1, D).sum(axis=0)  # (D,)
    dw = (dout * xhat).reshape(-1, D).sum(axis=0)  # (D,)
    dxhat = dout * w  # (..., D)
    dx = _layernorm_dx(dout, w, xhat, rstd, dxhat.mean(axis=-1, keepdims=True),
                       (dxhat * xhat).mean(axis=-1, keepdims=True))  # (..., D)
    return dx, dw, db


def mse_forward(pred, target, mask=None, norm_pix_loss=False):
    """model/loss.py's mse_forward (the same arguments, loss and cache)."""
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)  # (N, L, 1)
        var = target.var(axis=-1, keepdims=True, ddof=1)  # (N, L, 1)
        target = (target - mean) / xp.sqrt(var + 1.0e-6)  # (N, L, D)
    diff = pred - target  # (N, L, D)
    loss_per_patch = (diff * diff).mean(axis=-1)  # (N, L)
    if mask is None:
        weight = xp.full(loss_per_patch.shape, 1.0 / loss_per_patch.size, dtype=pred.dtype)  # (N, L)
    else:
        weight = mask / mask.sum()  # (N, L)
    return (loss_per_patch * weight).sum(), (diff, weight)


def mse_backward(dloss, cache):
    """model/loss.py's mse_backward: one kernel for 2 * diff / D * weight * dloss."""
    diff, weight = cache
    return _mse_grad(diff, weight[:, :, None], 2.0 * dloss / diff.shape[-1])  # (N, L, D)


def block_forward(x, params, num_heads, keep=None):
    """model/transformer.py's block_forward, its biases, GELU and residuals fused into the kernels around
    the matrix products. -> out (N, T, D) and a BlockCache the reference block_backward reads too."""
    N, T, D = x.shape
    H, d = num_heads, D // num_heads
    h, norm1 = layernorm_forward(x, params["norm1.w"], params["norm1.b"])  # (N, T, D)
    qkv, qkv_cache = linear_forward(h, params["attn.qkv.w"], params["attn.qkv.b"])  # (N, T, 3D)
    qkv = qkv.reshape(N, T, 3, H, d).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, d)
    scale = d ** -0.5
    q, k, v = qkv[0] * scale, qkv[1], qkv[2]  # (N, H, T, d)
    scores = q @ k.transpose(0, 1, 3, 2)  # (N, H, T, T)
    e = _exp_shifted(scores, scores.max(axis=-1, keepdims=True))  # (N, H, T, T)
    attn = e / e.sum(axis=-1, keepdims=True)  # (N, H, T, T)
    merged = (attn @ v).transpose(0, 2, 1, 3).reshape(N, T, D)  # (N, T, D)
    proj = merged.reshape(-1, D) @ params["attn.proj.w"]  # (N*T, D) the bias is added with the residual
    if keep is None:
        x = _bias_residual(x.reshape(-1, D), proj, params["attn.proj.b"]).reshape(N, T, D)  # (N, T, D)
        drop1 = None
    else:  # drop path needs the branch on its own
        branch, drop1 = drop_path_forward((proj + params["attn.proj.b"]).reshape(N, T, D), keep[:, 0])
        x = x + branch
    attn_cache = AttentionCache(q, k, v, attn, scale, qkv_cache, (merged, params["attn.proj.w"]))

    h, norm2 = layernorm_forward(x, params["norm2.w"], params["norm2.b"])  # (N, T, D)
    hidden = h.reshape(-1, D) @ params["mlp.fc1.w"]  # (N*T, 4D)
    g, pre, s = _bias_gelu(hidden, params["mlp.fc1.b"])  # (N*T, 4D) each
    out = g @ params["mlp.fc2.w"]  # (N*T, D)
    if keep is None:
        out = _bias_residual(x.reshape(-1, D), out, params["mlp.fc2.b"]).reshape(N, T, D)  # (N, T, D)
        drop2 = None
    else:
        branch, drop2 = drop_path_forward((out + params["mlp.fc2.b"]).reshape(N, T, D), keep[:, 1])
        out = x + branch
    fc1 = (h, params["mlp.fc1.w"])  # linear_forward's cache: (input, weight)
    fc2 = (g.reshape(N, T, -1), params["mlp.fc2.w"])
    gelu = (pre.reshape(N, T, -1), s.reshape(N, T, -1))
    drop = None if keep is None else (drop1, drop2)
    return out, BlockCache(norm1, attn_cache, norm2, fc1, gelu, fc2, drop)


def block_backward(dout, cache):
    """model/transformer.py's block_backward, GELU's derivative in one kernel. -> dx (N, T, D), grads."""
    g = {}
    dh = dout if cache.drop_path is None else drop_path_backward(dout, cache.drop_path[1])  # (N, T, D)
    dh, g["mlp.fc2.w"], g["mlp.fc2.b"] = linear_backward(dh, cache.fc2)  # (N, T, 4D)
    dh = _gelu_grad(dh, *cache.gelu)  # (N, T, 4D)
    dh, g["mlp.fc1.w"], g["mlp.fc1.b"] = linear_backward(dh, cache.fc1)  # (N, T, D)
    dx, g["norm2.w"], g["norm2.b"] = layernorm_backward(dh, cache.norm2)  # (N, T, D)
    dx += dout  # the residual fan-out (dx is fresh)

    dh = dx if cache.drop_path is None else drop_path_backward(dx, cache.drop_path[0])  # (N, T, D)
    dh, g["attn.qkv.w"], g["attn.qkv.b"], g["attn.proj.w"], g["attn.proj.b"] = attention_backward(dh, cache.attn)
    dh, g["norm1.w"], g["norm1.b"] = layernorm_backward(dh, cache.norm1)  # (N, T, D)
    dh += dx  # the first residual's fan-out
    return dh, g


def attention_backward(dout, cache):
    """model/attention.py's attention_backward, softmax's backward in one kernel."""
    q, k, v, attn, scale = cache.q, cache.k, cache.v, cache.attn, cache.scale
    N, H, T, d = q.shape
    dmerged, dproj_w, dproj_b = linear_backward(dout, cache.proj)  # (N, T, D)
    dheads = dmerged.reshape(N, T, H, d).transpose(0, 2, 1, 3)  # (N, H, T, d)
    dv = attn.transpose(0, 1, 3, 2) @ dheads  # (N, H, T, d)
    dattn = dheads @ v.transpose(0, 1, 3, 2)  # (N, H, T, T)
    dscores = _softmax_dx(attn, dattn, (dattn * attn).sum(axis=-1, keepdims=True))  # (N, H, T, T)
    dq = (dscores @ k) * scale  # (N, H, T, d)
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (N, H, T, d)
    dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, T, 3 * H * d)  # (N, T, 3D)
    dx, dqkv_w, dqkv_b = linear_backward(dqkv, cache.qkv)  # (N, T, D)
    return dx, dqkv_w, dqkv_b, dproj_w, dproj_b


def adamw_flat(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    """fast/optim.py's adamw_update over the whole flat buffer: one kernel, then its three results copied
    into the buffers (cupy.fuse makes new arrays; the parameters must stay where the model reads them)."""
    new_p, new_m, new_v = _adamw(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size)
    p[...] = new_p
    m[...] = new_m
    v[...] = new_v


CUDA_KERNELS = {
    "block_forward": block_forward, "block_backward": block_backward,
    "layernorm_forward": layernorm_forward, "layernorm_backward": layernorm_backward,
    "mse_forward": mse_forward, "mse_backward": mse_backward,
    "attention_backward": attention_backward,
}
