"""The MLP MAE: it sees only the visible patches, it uses their content, and it learns."""
import pytest

from tinymae import backend
from tinymae.config import MLPConfig
from tinymae.errors import TinymaeError
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.optim import AdamW

from conftest import (assert_encoder_ignores_removed_pixels, assert_removed_predictions_read_the_visible_patches,
                      random_noise)

SMALL = dict(img_size=24, patch_size=6, embed_dim=16, encoder_dims=(64, 64, 32), decoder_dims=(64,))


def batch(seed, n=4, size=24):
    rng = backend.host_rng(seed)
    return backend.asarray(rng.standard_normal((n, 3, size, size)), dtype="float32")


def test_default_shapes_and_parameter_count(xp):
    model = MaskedAutoencoderMLP()
    cfg = model.config
    assert (cfg.num_patches, cfg.patch_dim, cfg.len_keep) == (64, 108, 16)
    imgs = batch(0, n=2, size=48)
    latent, mask, ids_restore, _ = model.forward_encoder(imgs, random_noise(backend.host_rng(1), 2, 64))
    assert latent.shape == (2, 256) and mask.shape == (2, 64) and ids_restore.shape == (2, 64)
    pred, _ = model.forward_decoder(latent)
    assert pred.shape == (2, 64, 108)
    # patch embed 108*64+64, encoder 1024*512+512 + 512*512+512 + 512*256+256, decoder 256*512+512 + 512*6912+6912
    assert model.num_params() == 6976 + 524800 + 262656 + 131328 + 131584 + 3545856


def test_encoder_never_sees_removed_pixels(xp):
    model = MaskedAutoencoderMLP(MLPConfig(**SMALL), seed=0)
    assert_encoder_ignores_removed_pixels(model, batch(1), random_noise(backend.host_rng(2), 4, 16))


def test_prediction_of_a_removed_patch_depends_on_visible_content(xp):
    """An MLP applied to each patch alone could only predict the average patch at each position; ours
    must read the visible patches: changing one visible patch changes the predicted removed patches."""
    assert_removed_predictions_read_the_visible_patches(MaskedAutoencoderMLP(MLPConfig(**SMALL), seed=0), batch(4),
                                                        random_noise(backend.host_rng(5), 4, 16))


def test_float32_model_stays_float32(xp):
    model = MaskedAutoencoderMLP(MLPConfig(**SMALL), seed=0)
    loss, pred, mask, cache = model.forward(batch(6), random_noise(backend.host_rng(7), 4, 16))
    assert loss.dtype == xp.float32 and pred.dtype == xp.float32 and mask.dtype == xp.float32
    grads = model.backward(1.0, cache)
    assert set(grads) == set(model.params)
    for name, g in grads.items():
        assert g.dtype == xp.float32 and g.shape == model.params[name].shape, name


def test_a_few_adamw_steps_reduce_the_loss(xp):
    model = MaskedAutoencoderMLP(MLPConfig(**SMALL), seed=0)
    opt = AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    imgs = batch(8, n=8)
    noise = random_noise(backend.host_rng(9), 8, 16)
    first = None
    for _ in range(40):  # memorising one batch: the loss falls from ~1.0 to ~0.2
        loss, _, _, cache = model.forward(imgs, noise)
        first = float(loss) if first is None else first
        opt.step(model.backward(1.0, cache))
    assert float(model.forward(imgs, noise)[0]) < 0.5 * first


def test_no_weight_decay_on_biases():
    model = MaskedAutoencoderMLP(MLPConfig(**SMALL))
    assert set(model.no_decay) == {name for name in model.params if name.endswith(".b")}


@pytest.mark.parametrize("bad, message", [({"loss_on": "some"}, "--loss-on must be"),
                                          ({"img_size": 25}, "not a multiple of --patch-size"),
                                          ({"mask_ratio": 0.999}, "it must keep at least one")])
def test_bad_config_is_a_clear_error(bad, message):
    with pytest.raises(TinymaeError, match=message):
        MaskedAutoencoderMLP(MLPConfig(**{**SMALL, **bad}))
