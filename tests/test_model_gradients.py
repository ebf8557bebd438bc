"""Whole-model float64 gradient checks: every parameter of a tiny model against finite differences.

MODEL_GRADIENT_CHECKS names the model backward passes this file checks; test_gradients.py uses it to
make sure no backward in the package goes unchecked.
"""
import pytest

from tinymae import backend
from tinymae.config import MLPConfig
from tinymae.model import build_model
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.masking import masking_noise
from tinymae.util.gradcheck import assert_backward_matches

import test_finetune  # the fine-tuning classifier's check lives with the rest of fine-tuning

TOL = 1e-6


def to_float64(model):
    """Gradient checks need double precision: cast the parameters (and constant tables) in place."""
    for name, value in model.params.items():
        model.params[name] = value.astype("float64")
    model.pos_embed = model.pos_embed.astype("float64")
    if hasattr(model, "decoder_pos_embed"):  # the ViT's decoder has a table of its own
        model.decoder_pos_embed = model.decoder_pos_embed.astype("float64")
    return model


def assert_model_gradients(model, imgs, noise, h, tol=TOL):
    names = list(model.params)

    def forward(*arrays):
        model.params.update(zip(names, arrays))  # the very arrays the checker perturbs
        loss, pred, mask, cache = model.forward(imgs, noise)
        return loss, cache

    def backward(dloss, cache):
        grads = model.backward(dloss, cache)
        return tuple(grads[name] for name in names)

    reports = assert_backward_matches(forward, backward, dict(model.params), tol=tol, h=h)
    assert {r.name for r in reports} == set(names)


def tiny_mlp(**overrides):
    settings = dict(img_size=8, patch_size=2, embed_dim=4, encoder_dims=(6, 5), decoder_dims=(7,))
    cfg = MLPConfig(**{**settings, **overrides})
    return to_float64(MaskedAutoencoderMLP(cfg, seed=3))


@pytest.mark.parametrize("overrides", [{}, {"loss_on": "all"}, {"norm_pix_loss": True}, {"decoder_dims": ()},
                                       {"masking": "block"}, {"masking": "grid"}],
                         ids=["masked-loss", "all-loss", "norm-pix", "no-decoder-hidden", "block-masking",
                              "grid-masking"])
def test_mlp_mae_whole_model_gradients(xp, overrides):
    model = tiny_mlp(**overrides)
    rng = backend.host_rng(0)
    imgs = backend.asarray(rng.standard_normal((2, 3, 8, 8)))
    noise = backend.asarray(masking_noise(rng, 2, model.config), dtype="float64")
    # Between ReLU kinks the loss is a quadratic function of any one weight (a piecewise-linear network
    # under a squared error), and centered differences are exact for quadratics. So a larger step costs
    # nothing in truncation and divides float64's rounding noise by 10 (h = 1e-5 leaves ~1e-12 of it,
    # a 1e-6 "error" on the smallest gradients). It must stay below the distance to the nearest kink:
    # h = 1e-3 steps over one here, and the check rightly fails.
    assert_model_gradients(model, imgs, noise, h=1e-4)


def tiny_vit(**overrides):
    settings = dict(img_size=8, patch_size=2, embed_dim=8, depth=1, num_heads=2,
                    decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0)
    model = to_float64(build_model("vit", {**settings, **overrides}, seed=3))
    # Random values for every parameter instead of the init: behind zero biases and LayerNorm scales of
    # one, a swapped or missing gradient could hide; and the init's cls token (std 0.02) is a row of
    # tiny numbers that LayerNorm divides by their spread, curved enough to upset finite differences.
    rng = backend.host_rng(5)
    for name, value in model.params.items():
        model.params[name] = backend.asarray(rng.standard_normal(value.shape) * 0.5)
    return model


# The ViT's loss is smooth, but hundreds of float64 operations deep: evaluating it rounds by ~1e-16, which
# the centered difference turns into up to ~9e-12 of noise per gradient element at h = 1e-5 (measured),
# and the gradcheck's floor reads that as up to ~9e-6 on elements near zero. Those include the key third
# of every qkv bias, whose true gradient is exactly zero (softmax ignores a shift of a row). h = 3e-5
# divides the noise by 3 while the truncation error (~h^2) stays below 1e-6: measured worst 2e-6 over
# these four settings and three parameter draws. A wrong backward is far above the tolerance: a gradient
# off by a factor 1.001 reads as 5e-4.
VIT_TOL = 1e-5


@pytest.mark.parametrize("overrides", [{}, {"norm_pix_loss": True}, {"loss_on": "all"}, {"encoder_mask_tokens": True},
                                       {"masking": "block"}, {"masking": "grid"},
                                       {"masking": "block", "mask_ratio": 0.5}],
                         ids=["masked-loss", "norm-pix", "all-loss", "encoder-mask-tokens", "block-masking",
                              "grid-masking", "block-masking-50"])
def test_vit_mae_whole_model_gradients(xp, overrides):
    model = tiny_vit(**overrides)
    rng = backend.host_rng(0)
    imgs = backend.asarray(rng.standard_normal((2, 3, 8, 8)))
    noise = backend.asarray(masking_noise(rng, 2, model.config), dtype="float64")  # 16 patches, 4 visible
    assert_model_gradients(model, imgs, noise, h=3e-5, tol=VIT_TOL)


# Each model's backward, and the backward steps of its own that it calls, are checked as a whole.
MODEL_GRADIENT_CHECKS = {
    "mae.MaskedAutoencoder.backward": test_vit_mae_whole_model_gradients,  # and the MLP's, below
    "mae_mlp.MaskedAutoencoderMLP.backward_decoder": test_mlp_mae_whole_model_gradients,
    "mae_mlp.MaskedAutoencoderMLP.backward_encoder": test_mlp_mae_whole_model_gradients,
    "mae_vit.MaskedAutoencoderViT.backward_decoder": test_vit_mae_whole_model_gradients,
    "mae_vit.MaskedAutoencoderViT.backward_encoder": test_vit_mae_whole_model_gradients,
    "mae_vit.MaskedAutoencoderViT.random_masking_backward": test_vit_mae_whole_model_gradients,
    "mae_vit.MaskedAutoencoderViT.append_mask_tokens_backward": test_vit_mae_whole_model_gradients,
    # the "encoder-mask-tokens" case:
    "ablations.MaskedAutoencoderViTEncoderMaskTokens.random_masking_backward": test_vit_mae_whole_model_gradients,
    "ablations.MaskedAutoencoderViTEncoderMaskTokens.append_mask_tokens_backward": test_vit_mae_whole_model_gradients,
    "models_vit.ViTClassifier.backward": test_finetune.test_vit_classifier_whole_model_gradients,
    "models_vit.ViTClassifier.backward_encoder": test_finetune.test_vit_classifier_whole_model_gradients,
}
