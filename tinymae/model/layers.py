"""Linear, ReLU, LayerNorm and GELU: forward and backward passes, and the initialisers the official MAE uses.

Every layer is a pair of pure functions (the cs231n / llm.c habit):

    out, cache = layer_forward(inputs..., params...)
    grads...   = layer_backward(dout, cache)

The cache is a plain tuple of whatever backward needs; backward returns fresh gradient arrays with
the `d` prefix (dx, dw, db). Nothing is stored on objects and there is no graph.

These are the reference: each formula as written, shape comments on every line. fast/ holds faster
versions of some of them (same signatures, tested equal to these), and fast/__init__.py says which a run
uses.

Which arrays may be written in place, everywhere in tinymae (llm.c's discipline, stated once here):
  * a function writes in place only into arrays it created itself (its fresh outputs and temporaries),
    and only before it hands them on;
  * its inputs, the arrays a forward returns, and every array a cache holds are read-only. A forward's
    output may be its own cache (ReLU, softmax) or a view of one, so a caller never modifies it;
  * a backward's gradients are fresh arrays that belong to the caller, who may add into them where one
    value fans out to several uses (a residual connection, a token shared by every image);
  * the optimiser updates the parameters and its moments in place: that is its job.
"""
import math

from ..backend import asarray, xp

# ----------------------------------------------------------------------------------------------
# Linear: out = x @ w + b, for inputs of any leading shape (..., D_in)

def linear_forward(x, w, b):
    """x: (..., D_in), w: (D_in, D_out), b: (D_out,) -> out: (..., D_out)."""
    D_in, D_out = w.shape
    # Fold every leading axis into one "row" axis R, as cs231n's affine_forward: one (R, D_in) @ (D_in, D_out)
    # product, which is also one large BLAS call instead of a loop of small ones.
    out = x.reshape(-1, D_in) @ w + b  # (R, D_out)
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
    x2 = x.reshape(-1, D_in)  # (R, D_in)
    dout2 = dout.reshape(-1, D_out)  # (R, D_out)
    dx = (dout2 @ w.T).reshape(x.shape) if need_dx else None  # (..., D_in)
    dw = x2.T @ dout2  # (D_in, D_out) summed over all rows
    db = dout2.sum(axis=0)  # (D_out,)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# ReLU: out = max(x, 0)

def relu_forward(x):
    """x: (...) -> out: (...)."""
    out = xp.maximum(x, 0)  # (...)
    cache = out  # out > 0 exactly where x > 0, so the output is all backward needs
    return out, cache


def relu_backward(dout, cache):
    """dout: (...) -> dx: (...)."""
    out = cache
    dx = dout * (out > 0)  # (...)
    return dx


# ----------------------------------------------------------------------------------------------
# LayerNorm (Ba et al., 2016) over the last axis, with a learned scale and shift:
#     out = (x - mean) / sqrt(var + eps) * w + b
# The ViT blocks of models_mae.py use partial(nn.LayerNorm, eps=1e-6); var is the biased variance.

def layernorm_forward(x, w, b, eps=1e-6):
    """x: (..., D), w: (D,), b: (D,) -> out: (..., D)."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # (..., 1) the biased variance
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1) reciprocal standard deviation
    xhat = (x - mean) * rstd  # (..., D) normalised
    out = xhat * w + b  # (..., D)
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
    db = dout.reshape(-1, D).sum(axis=0)  # (D,)
    dw = (dout * xhat).reshape(-1, D).sum(axis=0)  # (D,)
    dxhat = dout * w  # (..., D)
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))  # (..., D)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# GELU (Hendrycks & Gimpel, 2016, "Gaussian Error Linear Units"): x * Phi(x), Phi the standard normal
# CDF. The exact form needs erf, which NumPy does not have (CuPy and SciPy do; we use only `xp`), so
# we use the paper's tanh approximation (Sec. 2), torch's gelu(approximate='tanh'):
#     gelu(x) = x * s,   s = 0.5 * (1 + tanh(u)),   u = sqrt(2/pi) * (x + 0.044715 * x^3)
# It differs from the exact GELU of timm's Mlp by at most 4.7e-4 (near |x| = 2.7).

GELU_C = math.sqrt(2.0 / math.pi)  # a Python float: keeps float32 arrays float32
GELU_A = 0.044715


def gelu_forward(x):
    """x: (...) -> out: (...)."""
    s = 0.5 * (1.0 + xp.tanh(GELU_C * (x + GELU_A * x * x * x)))  # (...) the tanh approximation of Phi(x)
    out = x * s  # (...)
    cache = (x, s)
    return out, cache


def gelu_backward(dout, cache):
    """dout: (...) -> dx: (...).

    d gelu / dx = s + x * ds/dx, and with 1 - tanh(u)^2 = 4 s (1 - s):
        ds/dx = 0.5 * (1 - tanh(u)^2) * du/dx = 2 s (1 - s) * sqrt(2/pi) * (1 + 3 * 0.044715 * x^2)
    """
    x, s = cache
    dsdx = 2.0 * s * (1.0 - s) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)  # (...)
    dx = dout * (s + x * dsdx)  # (...)
    return dx


# ----------------------------------------------------------------------------------------------
# Drop path (stochastic depth; Huang et al., 2016), as timm's DropPath in the fine-tuned ViT of
# main_finetune.py: while training, each image skips a residual branch with probability p, and the
# branch's output is scaled by 1 / (1 - p) where it is kept, so its expected value is unchanged:
#     out = x * keep,   keep[n] = 0 (dropped) or 1 / (1 - p) (kept), drawn per image on the host.

def drop_path_forward(x, keep):
    """x: (N, ...) a residual branch's output, keep: (N,) -> out: (N, ...)."""
    keep = keep.reshape(-1, *([1] * (x.ndim - 1)))  # (N, 1, ..., 1)
    out = x * keep  # (N, ...)
    cache = keep
    return out, cache


def drop_path_backward(dout, cache):
    """dout: (N, ...) -> dx: (N, ...). Linear in x, so the gradient is scaled by the same keep."""
    keep = cache
    dx = dout * keep  # (N, ...)
    return dx


# ----------------------------------------------------------------------------------------------
# Initialisers, as models_mae.py: xavier-uniform Linear weights, zero biases, normal(0.02) tokens.
# Values are drawn on the host from a seeded NumPy generator and then moved to the backend, so
# NumPy and CuPy runs start from identical weights.

def xavier_uniform(rng, d_in, d_out, dtype="float32"):
    """Glorot & Bengio (2010) uniform init, as torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6/(in+out))."""
    a = math.sqrt(6.0 / (d_in + d_out))
    return asarray(rng.uniform(-a, a, size=(d_in, d_out)), dtype=dtype)  # (d_in, d_out)


def zeros(shape, dtype="float32"):
    return xp.zeros(shape, dtype=dtype)


def ones(shape, dtype="float32"):
    return xp.ones(shape, dtype=dtype)


def normal(rng, shape, std=0.02, dtype="float32"):
    """N(0, std^2), as torch.nn.init.normal_(std=.02) for the cls and mask tokens in models_mae.py."""
    return asarray(rng.normal(0.0, std, size=shape), dtype=dtype)
