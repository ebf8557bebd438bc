"""Softmax and multi-head self-attention: forward and backward passes, as timm's `Attention` in the
ViT blocks of models_mae.py (Vaswani et al., 2017, "Attention is all you need", Sec. 3.2).

For T tokens of width D, H heads of width d = D / H:

    qkv   = x @ qkv_w + qkv_b                     one fused Linear D -> 3D          (N, T, 3D)
    q,k,v = qkv viewed as (N, T, 3, H, d) -> (3, N, H, T, d)  heads by reshape, no loop over heads
    attn  = softmax((q * d**-0.5) @ k^T)          each token's weights over all T    (N, H, T, T)
    out   = attn @ v, heads merged back to (N, T, D), then the output Linear `proj`

The columns of qkv_w are ordered (3, H, d), as the rows of timm's qkv.weight: query of head 0, query
of head 1, ..., key of head 0, ... So torch's weights load by a transpose (ours are (D_in, D_out)).
"""
from typing import NamedTuple

from ..backend import xp
from .layers import linear_backward, linear_forward

# ----------------------------------------------------------------------------------------------
# Softmax over the last axis

def softmax_forward(x):
    """x: (..., T) -> out: (..., T), each row positive and summing to 1."""
    # softmax is unchanged by shifting a row; shifting by the row's max makes every exponent <= 0,
    # so exp never overflows (float32 overflows at exp(88.7)) and the largest term is exactly 1.
    e = xp.exp(x - x.max(axis=-1, keepdims=True))  # (..., T)
    out = e / e.sum(axis=-1, keepdims=True)  # (..., T)
    cache = out  # backward needs only the output
    return out, cache


def softmax_backward(dout, cache):
    """dout: (..., T) -> dx: (..., T).

    The Jacobian of y = softmax(x) is diag(y) - y y^T, so dx = y * (dout - sum(dout * y)) row by row.
    (With dout all ones that is exactly zero: never check this backward with a ones upstream gradient.)
    """
    y = cache
    dx = y * (dout - (dout * y).sum(axis=-1, keepdims=True))  # (..., T)
    return dx


# ----------------------------------------------------------------------------------------------
# Multi-head self-attention

class AttentionCache(NamedTuple):
    q: object  # (N, H, T, d) the queries, already scaled by d**-0.5
    k: object  # (N, H, T, d) views into the qkv Linear's output
    v: object  # (N, H, T, d)
    attn: object  # (N, H, T, T) the softmax output, which is also the softmax's cache
    scale: float
    qkv: tuple  # linear_forward's cache of the qkv projection
    proj: tuple  # linear_forward's cache of the output projection


def attention_forward(x, qkv_w, qkv_b, proj_w, proj_b, num_heads):
    """x: (N, T, D), qkv_w: (D, 3D), qkv_b: (3D,), proj_w: (D, D), proj_b: (D,) -> out: (N, T, D)."""
    N, T, D = x.shape
    H = num_heads
    d = D // H  # head width
    scale = d ** -0.5  # a Python float (d is an int), so float32 stays float32

    qkv, qkv_cache = linear_forward(x, qkv_w, qkv_b)  # (N, T, 3D)
    qkv = qkv.reshape(N, T, 3, H, d).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, d) a view, no copy
    # Scale the queries rather than the (T, T) scores, as current timm does (q = q * self.scale): the same
    # numbers, fewer of them to touch when T > d.
    q = qkv[0] * scale  # (N, H, T, d)
    k, v = qkv[1], qkv[2]  # (N, H, T, d) each

    attn = q @ k.transpose(0, 1, 3, 2)  # (N, H, T, T) one batched matmul for every image and head
    attn, _ = softmax_forward(attn)  # (N, H, T, T) (the softmax's cache is its output, attn itself)

    heads = attn @ v  # (N, H, T, d)
    merged = heads.transpose(0, 2, 1, 3).reshape(N, T, D)  # (N, T, D) merge heads: (H, d) -> D, one copy
    out, proj_cache = linear_forward(merged, proj_w, proj_b)  # (N, T, D)

    return out, AttentionCache(q, k, v, attn, scale, qkv_cache, proj_cache)


def attention_backward(dout, cache):
    """dout: (N, T, D) -> dx (N, T, D), dqkv_w (D, 3D), dqkv_b (3D,), dproj_w (D, D), dproj_b (D,)."""
    q, k, v, attn, scale = cache.q, cache.k, cache.v, cache.attn, cache.scale
    N, H, T, d = q.shape

    dmerged, dproj_w, dproj_b = linear_backward(dout, cache.proj)  # (N, T, D)
    dheads = dmerged.reshape(N, T, H, d).transpose(0, 2, 1, 3)  # (N, H, T, d) split heads, a view

    # heads = attn @ v
    dv = attn.transpose(0, 1, 3, 2) @ dheads  # (N, H, T, d)
    dattn = dheads @ v.transpose(0, 1, 3, 2)  # (N, H, T, T)

    # attn = softmax((q * scale) @ k^T); the cached q is already scaled
    dscores = softmax_backward(dattn, attn)  # (N, H, T, T)
    dq = (dscores @ k) * scale  # (N, H, T, d) through the scaling of the queries
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (N, H, T, d)

    # the inverse of the forward's split: (3, N, H, T, d) -> (N, T, 3, H, d) -> (N, T, 3D), as qkv's columns
    dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, T, 3 * H * d)  # (N, T, 3D)
    dx, dqkv_w, dqkv_b = linear_backward(dqkv, cache.qkv)  # (N, T, D)
    return dx, dqkv_w, dqkv_b, dproj_w, dproj_b
