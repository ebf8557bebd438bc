"""Linear and ReLU: forward and backward passes, and the initialisers the official MAE uses.

Every layer is a pair of pure functions (the cs231n / llm.c habit):

    out, cache = layer_forward(inputs..., params...)
    grads...   = layer_backward(dout, cache)

The cache is a plain tuple of whatever backward needs; backward returns fresh gradient arrays with
the `d` prefix (dx, dw, db). Nothing is stored on objects and there is no graph.
"""
import math

from .backend import asarray, xp


# ----------------------------------------------------------------------------------------------
# Linear: out = x @ w + b, for inputs of any leading shape (..., D_in)

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


def linear_backward(dout, cache):
    """dout: (..., D_out) -> dx (..., D_in), dw (D_in, D_out), db (D_out,)."""
    x, w = cache
    D_in, D_out = w.shape
    # Fold every leading axis into one "row" axis R: dw sums x^T dout over all rows.
    x2 = x.reshape(-1, D_in)  # (R, D_in)
    dout2 = dout.reshape(-1, D_out)  # (R, D_out)
    dx = (dout2 @ w.T).reshape(x.shape)  # (..., D_in)
    dw = x2.T @ dout2  # (D_in, D_out)
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
# Initialisers, as models_mae.py: xavier-uniform Linear weights, zero biases, normal(0.02) tokens.
# Values are drawn on the host from a seeded NumPy generator and then moved to the backend, so
# NumPy and CuPy runs start from identical weights.

def xavier_uniform(rng, d_in, d_out, dtype="float32"):
    """Glorot & Bengio (2010) uniform init, as torch.nn.init.xavier_uniform_: U(-a, a), a = sqrt(6/(in+out))."""
    a = math.sqrt(6.0 / (d_in + d_out))
    return asarray(rng.uniform(-a, a, size=(d_in, d_out)), dtype=dtype)  # (d_in, d_out)


def zeros(shape, dtype="float32"):
    return xp.zeros(shape, dtype=dtype)


def normal(rng, shape, std=0.02, dtype="float32"):
    """N(0, std^2), as torch.nn.init.normal_(std=.02) for the cls and mask tokens in models_mae.py."""
    return asarray(rng.normal(0.0, std, size=shape), dtype=dtype)
