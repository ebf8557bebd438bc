"""Check a hand-written backward pass against centered finite differences, in float64.

The method of the cs231n notes ("neural-networks-3", gradient checks):
  * a random upstream gradient `dout` (never all ones: the backward of a softmax applied to ones is zero and hides
    every bug), so we check  d/dx sum(forward(x) * dout)  against  backward(dout);
  * centered differences  (f(x + h) - f(x - h)) / 2h,  error O(h^2), in double precision;
  * the relative error  |a - n| / max(floor, |a| + |n|)  per element, and its maximum. cs231n's floor is 1e-8; ours
    is 1e-6, because an element whose true gradient is exactly zero (a dead ReLU, a removed patch) still gets ~1e-13
    of rounding noise from the differences, which 1e-8 would read as a 1e-5 "error".

Check your own layer:

    from tinymae.util.gradcheck import assert_backward_matches
    assert_backward_matches(my_forward, my_backward, {"x": x, "w": w})   # float64 inputs

where `my_forward(x, w) -> (out, cache)` and `my_backward(dout, cache) -> (dx, dw)`, one gradient per input in the
same order. Keep inputs away from kinks (ReLU at 0, max ties), where finite differences disagree honestly, and from
inputs whose true gradient is exactly zero, which no relative error can judge (attention's key bias is one:
tests/test_gradients.py says why and how its cases avoid it).
"""
from dataclasses import dataclass

import numpy  # host-side: the worst element's index in a report

from ..backend import asarray, host_rng, xp

FLOOR = 1e-6


def rel_error(a, n, floor=FLOOR):
    """Elementwise relative errors |a-n| / max(floor, |a|+|n|) (cs231n's formula; see FLOOR above)."""
    return xp.abs(a - n) / xp.maximum(floor, xp.abs(a) + xp.abs(n))


def numerical_gradient(f, x, dout, h=1e-5):
    """d/dx sum(f() * dout) by centered differences; f reads x, which is perturbed in place and restored."""
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x through a flat view; pass a C-contiguous array")
    grad = xp.zeros_like(x)
    flat_x = x.reshape(-1)  # a view: writing into it perturbs x
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        old = float(flat_x[i])
        flat_x[i] = old + h
        f_plus = float(xp.sum(f() * dout))
        flat_x[i] = old - h
        f_minus = float(xp.sum(f() * dout))
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


@dataclass
class GradReport:
    name: str
    rel_error: float
    max_abs_diff: float
    worst_index: tuple
    analytic: float
    numeric: float

    def __str__(self):
        return (f"{self.name}: rel error {self.rel_error:.2e} at {self.worst_index} (analytic {self.analytic:+.8e}, "
                f"numeric {self.numeric:+.8e}); max |diff| {self.max_abs_diff:.2e}")


def check_backward(forward, backward, inputs, seed=0, h=1e-5):
    """Compare backward(dout, cache) with finite differences for every input; one GradReport each.

    forward(*inputs.values()) -> (out, cache); backward(dout, cache) -> one gradient per input.
    inputs: dict name -> float64 array (the arrays are perturbed in place and restored).
    """
    for name, a in inputs.items():
        if a.dtype != xp.float64:
            raise TypeError(f"gradient checks need float64 inputs; {name!r} is {a.dtype}")
    args = list(inputs.values())
    out, cache = forward(*args)
    rng = host_rng(seed)
    dout = asarray(rng.standard_normal(out.shape))  # random upstream gradient, float64
    grads = backward(dout, cache)
    if len(inputs) == 1 and not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(inputs):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(inputs)} inputs")

    reports = []
    for (name, x), analytic in zip(inputs.items(), grads):
        numeric = numerical_gradient(lambda: forward(*args)[0], x, dout, h)
        if analytic.shape != x.shape:
            raise ValueError(f"gradient for {name!r} has shape {analytic.shape}, input has {x.shape}")
        errors = rel_error(analytic, numeric)
        # The worst element's position, worked out on the host: int() brings the 0-d argmax over, and
        # cupy.unravel_index would refuse that Python int (it takes device arrays only).
        worst = tuple(int(i) for i in numpy.unravel_index(int(xp.argmax(errors)), errors.shape))
        reports.append(GradReport(
            name=name,
            rel_error=float(errors[worst]),
            max_abs_diff=float(xp.max(xp.abs(analytic - numeric))),
            worst_index=worst,
            analytic=float(analytic[worst]),
            numeric=float(numeric[worst]),
        ))
    return reports


def assert_backward_matches(forward, backward, inputs, tol=1e-7, seed=0, h=1e-5):
    """check_backward, raising AssertionError with the worst element of every failing input."""
    reports = check_backward(forward, backward, inputs, seed=seed, h=h)
    bad = [r for r in reports if not r.rel_error <= tol]
    if bad:
        raise AssertionError(f"gradient check failed (tolerance {tol:.0e}):\n  " + "\n  ".join(map(str, bad)))
    return reports

