"""Whole-model float64 gradient checks: every parameter of a tiny model against finite differences.

MODEL_GRADIENT_CHECKS names the model backward passes this file checks; test_gradients.py uses it to
make sure no backward in the package goes unchecked.
"""
import pytest

from tinymae import backend
from tinymae.gradcheck import assert_backward_matches
from tinymae.mae_mlp import MLPConfig, MLPMAE
from tinymae.masking import masking_noise

TOL = 1e-6


def to_float64(model):
    """Gradient checks need double precision: cast the parameters (and constant tables) in place."""
    for name, value in model.params.items():
        model.params[name] = value.astype("float64")
    model.pos_embed = model.pos_embed.astype("float64")
    return model


def assert_model_gradients(model, imgs, noise, h):
    names = list(model.params)

    def forward(*arrays):
        model.params.update(zip(names, arrays))  # the very arrays the checker perturbs
        loss, pred, mask, cache = model.forward(imgs, noise)
        return loss, cache

    def backward(dloss, cache):
        grads = model.backward(cache, dloss)
        return tuple(grads[name] for name in names)

    reports = assert_backward_matches(forward, backward, dict(model.params), tol=TOL, h=h)
    assert {r.name for r in reports} == set(names)


def tiny_mlp(**overrides):
    settings = dict(img_size=8, patch_size=2, embed_dim=4, encoder_dims=(6, 5), decoder_dims=(7,))
    cfg = MLPConfig(**{**settings, **overrides})
    return to_float64(MLPMAE(cfg, seed=3))


@pytest.mark.parametrize("overrides", [{}, {"loss_on": "all"}, {"norm_pix_loss": True}, {"decoder_dims": ()}],
                         ids=["masked-loss", "all-loss", "norm-pix", "no-decoder-hidden"])
def test_mlp_mae_whole_model_gradients(xp, overrides):
    model = tiny_mlp(**overrides)
    rng = backend.host_rng(0)
    imgs = backend.asarray(rng.standard_normal((2, 3, 8, 8)))
    noise = masking_noise(rng, 2, model.config.num_patches, dtype="float64")
    # Between ReLU kinks the loss is a quadratic function of any one weight (a piecewise-linear network
    # under a squared error), and centered differences are exact for quadratics. So a larger step costs
    # nothing in truncation and divides float64's rounding noise by 10 (h = 1e-5 leaves ~1e-12 of it,
    # a 1e-6 "error" on the smallest gradients). It must stay below the distance to the nearest kink:
    # h = 1e-3 steps over one here, and the check rightly fails.
    assert_model_gradients(model, imgs, noise, h=1e-4)


MODEL_GRADIENT_CHECKS = {"mae_mlp.MLPMAE.backward": test_mlp_mae_whole_model_gradients}
