"""Forward values and gradients of the core passes against PyTorch (skipped when torch is not installed).

torch is an oracle here only; tinymae never imports it. The CPU wheel installs offline:
    pip install torch==2.13.0
"""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.model import layers, loss
from tinymae.model.patches import patchify

torch = pytest.importorskip("torch", reason="torch is optional; pip install torch==2.13.0 for the oracle tests")

from test_torch_models import torch_models  # noqa: E402  (benchmarks/torch_models.py, loaded there)


def t64(a):
    return torch.tensor(np.asarray(a, dtype="float64"), requires_grad=True)


def test_linear_matches_torch(xp, rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((2, 3, 5))
    out, cache = layers.linear_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b))
    dx, dw, db = layers.linear_backward(backend.asarray(dout), cache)

    tx, tw, tb = t64(x), t64(w), t64(b)
    tout = torch.nn.functional.linear(tx, tw.T, tb)  # torch stores weights (out, in); ours are (in, out)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(to_numpy(out), tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(to_numpy(ours), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_relu_matches_torch(xp, rng):
    x, dout = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    out, cache = layers.relu_forward(backend.asarray(x))
    dx = layers.relu_backward(backend.asarray(dout), cache)
    tx = t64(x)
    tout = torch.relu(tx)
    tout.backward(torch.tensor(dout))
    np.testing.assert_array_equal(to_numpy(out), tout.detach().numpy())
    np.testing.assert_array_equal(to_numpy(dx), tx.grad.numpy())


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("with_mask", [True, False])
def test_mse_matches_models_mae_forward_loss(xp, rng, norm_pix_loss, with_mask):
    """loss.mse_forward on patchify(imgs) against forward_loss of models_mae.py, as the one PyTorch
    transcription has it (benchmarks/torch_models.py; with_mask=False is tinymae's loss_on='all')."""
    p = 2
    imgs, pred = rng.standard_normal((3, 3, 8, 8)), rng.standard_normal((3, 16, 12))  # L = (8/2)^2, P = 2*2*3
    mask = (rng.random((3, 16)) < 0.75).astype("float64")
    mask[0, 0] = 1
    target = patchify(backend.asarray(imgs), p)  # (3, 16, 12)
    value, cache = loss.mse_forward(backend.asarray(pred), target, backend.asarray(mask) if with_mask else None,
                                    norm_pix_loss=norm_pix_loss)
    dpred = loss.mse_backward(1.0, cache)

    tpred = t64(pred)
    tloss = torch_models.forward_loss(torch.tensor(imgs), tpred, torch.tensor(mask), p, norm_pix_loss,
                                      "masked" if with_mask else "all")
    tloss.backward()
    assert float(value) == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(to_numpy(dpred), tpred.grad.numpy(), rtol=1e-10, atol=1e-14)
