"""The CPU's fast versions of model/layers.py's and model/attention.py's hottest functions: the same
signatures, arguments and caches, the same numbers up to float32 rounding (tests/test_fast.py), and the
reference formula unchanged in model/. fast/__init__.py puts them in place for a training run on NumPy.

What makes them faster on a CPU, where NumPy runs every elementwise pass on one core and through memory:
  * sums over the short last axis (64 or 128 wide) as products with a vector of ones: NumPy's
    x.sum(axis=-1) walks an (R, 64) array one short row at a time, and with rows that short the loop,
    not the arithmetic, is the cost; BLAS does the same sums in one call;
  * in-place arithmetic on the temporaries a function creates itself (model/layers.py's rule on writing
    in place allows it), so each pass reuses memory that is already in the cache;
  * attention's backward writes dq, dk, dv straight into the qkv layout instead of stacking them.
"""
import math

from ..backend import xp

# ----------------------------------------------------------------------------------------------
# Sums over one axis of a stack of short rows, as products with a vector of ones.

def sum_last_axis(x):
    """x: (..., D) -> (..., 1), the same as x.sum(axis=-1, keepdims=True)."""
    D = x.shape[-1]
    ones = xp.ones((D, 1), dtype=x.dtype)  # (D, 1)
    return (x.reshape(-1, D) @ ones).reshape(*x.shape[:-1], 1)  # (..., 1)


def sum_leading_axes(x):
    """x: (..., D) -> (D,), the same as x.reshape(-1, D).sum(axis=0)."""
    D = x.shape[-1]
    x2 = x.reshape(-1, D)  # (R, D)
    ones = xp.ones(x2.shape[0], dtype=x.dtype)  # (R,)
    return ones @ x2  # (D,)


# ----------------------------------------------------------------------------------------------
# model/layers.py: linear_*, layernorm_*, gelu_*

def linear_forward(x, w, b):
    """x: (..., D_in), w: (D_in, D_out), b: (D_out,) -> out: (..., D_out)."""
    D_in, D_out = w.shape
    # One (R, D_in) @ (D_in, D_out) product over all leading axes: a single large BLAS call is much
    # faster than NumPy's loop of small ones for a stacked (N, L, D_in) @ (D_in, D_out).
    out = x.reshape(-1, D_in) @ w  # (R, D_out)
    out += b
    out = out.reshape(*x.shape[:-1], D_out)  # (..., D_out)
    cache = (x, w)
    return out, cache


def linear_backward(dout, cache, need_dx=True):
    """dout: (..., D_out) -> dx (..., D_in), dw (D_in, D_out), db (D_out,).

    need_dx=False skips dx (returned as None) where the input is data, not an activation: the patch
    embedding's input is the image, and dx would cost as much as the layer's forward pass.
    """
    x, w = cache
    D_in, D_out = w.shape
    # Fold every leading axis into one "row" axis R: dw sums x^T dout over all rows.
    x2 = x.reshape(-1, D_in)  # (R, D_in)
    dout2 = dout.reshape(-1, D_out)  # (R, D_out)
    dx = (dout2 @ w.T).reshape(x.shape) if need_dx else None  # (..., D_in)
    dw = x2.T @ dout2  # (D_in, D_out)
    db = sum_leading_axes(dout2)  # (D_out,)
    return dx, dw, db


def layernorm_forward(x, w, b, eps=1e-6):
    """x: (..., D), w: (D,), b: (D,) -> out: (..., D)."""
    D = w.shape[0]
    mean = sum_last_axis(x) / D  # (..., 1)
    xhat = x - mean  # (..., D) centred; normalised in place below
    var = sum_last_axis(xhat * xhat) / D  # (..., 1)
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1) reciprocal standard deviation
    xhat *= rstd  # (..., D)
    out = xhat * w  # (..., D)
    out += b
    cache = (xhat, w, rstd)
    return out, cache


def layernorm_backward(dout, cache):
    """dout: (..., D) -> dx (..., D), dw (D,), db (D,).

    With xhat = (x - mean) * rstd and dxhat = dout * w, the three paths from x (directly, through the
    mean, through the variance) add up to (llm.c, doc/layernorm/layernorm.py):
        dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    """
    xhat, w, rstd = cache
    D = w.shape[0]
    db = sum_leading_axes(dout)  # (D,)
    dw = sum_leading_axes(dout * xhat)  # (D,)
    dxhat = dout * w  # (..., D)
    dx = dxhat - sum_last_axis(dxhat) / D  # (..., D)
    dxhat *= xhat  # (..., D) dxhat is not needed on its own any more
    dx -= xhat * (sum_last_axis(dxhat) / D)
    dx *= rstd
    return dx, dw, db


GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def gelu_forward(x):
    """x: (...) -> out: (...)."""
    s = x * x  # (...) x^2, turned into u and then s in place
    s *= GELU_A * GELU_C
    s += GELU_C
    s *= x  # u = sqrt(2/pi) * (x + 0.044715 x^3)
    xp.tanh(s, out=s)
    s *= 0.5
    s += 0.5  # s = 0.5 * (1 + tanh(u)), the tanh approximation of Phi(x)
    out = x * s  # (...)
    cache = (x, s)
    return out, cache


def gelu_backward(dout, cache):
    """dout: (...) -> dx: (...).

    d gelu / dx = s + x * ds/dx, and with 1 - tanh(u)^2 = 4 s (1 - s):
        ds/dx = 0.5 * (1 - tanh(u)^2) * du/dx = 2 s (1 - s) * sqrt(2/pi) * (1 + 3 * 0.044715 * x^2)
    so  d gelu / dx = s + s (1 - s) * (2 sqrt(2/pi) x + 6 * 0.044715 * sqrt(2/pi) x^3).
    """
    x, s = cache
    dx = x * x  # (...) x^2, turned into the local derivative in place
    dx *= 6.0 * GELU_A * GELU_C
    dx += 2.0 * GELU_C
    dx *= x  # 2 x du/dx
    spread = 1.0 - s  # (...)
    spread *= s  # s (1 - s)
    dx *= spread
    dx += s  # d gelu / dx
    dx *= dout  # (...)
    return dx


# ----------------------------------------------------------------------------------------------
# model/attention.py: softmax_*, attention_backward

def softmax_forward(x):
    """x: (..., T) -> out: (..., T), each row positive and summing to 1."""
    # softmax is unchanged by shifting a row; shifting by the row's max makes every exponent <= 0,
    # so exp never overflows (float32 overflows at exp(88.7)) and the largest term is exactly 1.
    out = x - x.max(axis=-1, keepdims=True)  # (..., T)
    xp.exp(out, out=out)
    out /= sum_last_axis(out)  # out.sum(axis=-1, keepdims=True), in one BLAS call (layers.py)
    cache = out  # backward needs only the output
    return out, cache


def softmax_backward(dout, cache):
    """dout: (..., T) -> dx: (..., T).

    The Jacobian of y = softmax(x) is diag(y) - y y^T, so dx = y * (dout - sum(dout * y)) row by row.
    (With dout all ones that is exactly zero: never check this backward with a ones upstream gradient.)
    """
    y = cache
    dx = dout * y  # (..., T)
    dx -= y * sum_last_axis(dx)
    return dx


def attention_backward(dout, cache):
    """dout: (N, T, D) -> dx (N, T, D), dqkv_w (D, 3D), dqkv_b (3D,), dproj_w (D, D), dproj_b (D,)."""
    q, k, v, attn, scale = cache.q, cache.k, cache.v, cache.attn, cache.scale
    N, H, T, d = q.shape

    dmerged, dproj_w, dproj_b = linear_backward(dout, cache.proj)  # (N, T, D)
    dheads = dmerged.reshape(N, T, H, d).transpose(0, 2, 1, 3)  # (N, H, T, d) split heads, a view

    # heads = attn @ v
    dqkv = xp.empty((N, T, 3, H, d), dtype=dout.dtype)  # (N, T, 3, H, d) laid out as qkv
    dqkv_heads = dqkv.transpose(2, 0, 3, 1, 4)  # (3, N, H, T, d) a view: writing into it fills dqkv
    dqkv_heads[2] = attn.transpose(0, 1, 3, 2) @ dheads  # dv (N, H, T, d)
    dattn = dheads @ v.transpose(0, 1, 3, 2)  # (N, H, T, T)

    # attn = softmax((q * scale) @ k^T); the cached q is already scaled
    dscores = softmax_backward(dattn, attn)  # (N, H, T, T)
    dq = dscores @ k  # (N, H, T, d) gradient for the scaled queries
    dq *= scale
    dqkv_heads[0] = dq
    dqkv_heads[1] = dscores.transpose(0, 1, 3, 2) @ q  # dk (N, H, T, d)

    dx, dqkv_w, dqkv_b = linear_backward(dqkv.reshape(N, T, 3 * H * d), cache.qkv)  # (N, T, D)
    return dx, dqkv_w, dqkv_b, dproj_w, dproj_b
