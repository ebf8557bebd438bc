"""float32 in -> float32 out, for every forward and backward pass: no silent upcast to float64."""
import pytest

from tinymae import backend

from test_gradients import GRADIENT_CHECKS


@pytest.mark.parametrize("name", list(GRADIENT_CHECKS))
def test_float32_stays_float32(xp, name):
    forward, backward, inputs = GRADIENT_CHECKS[name](backend.host_rng(1), "float32")
    out, cache = forward(*inputs.values())
    assert out.dtype == xp.float32, f"{name}: forward returned {out.dtype}"
    dout = backend.asarray(backend.host_rng(2).standard_normal(out.shape), dtype="float32")
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for input_name, g in zip(inputs, grads):
        assert g.dtype == xp.float32, f"{name}: gradient for {input_name} is {g.dtype}"
