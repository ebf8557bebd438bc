"""The ViT MAE: its tables and initialisation are MAE's, its encoder sees only the visible patches, it
uses their content, it is numerically safe in float32, and it learns."""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.config import ViTConfig
from tinymae.errors import TinymaeError
from tinymae.model import attention, build_model, layers
from tinymae.model.ablations import MaskedAutoencoderViTEncoderMaskTokens
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.optim import AdamW
from tinymae.model.pos_embed import get_2d_sincos_pos_embed

from conftest import (assert_encoder_ignores_removed_pixels, assert_removed_predictions_read_the_visible_patches,
                      random_noise)

SMALL = dict(img_size=24, patch_size=6, embed_dim=32, depth=2, num_heads=4,
             decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)  # 16 patches, 4 visible


def batch(seed, n=4, size=24):
    rng = backend.host_rng(seed)
    return backend.asarray(rng.standard_normal((n, 3, size, size)), dtype="float32")


# ----------------------------------------------------------------------------------------------
# util/pos_embed.py of the official MAE, transcribed literally (np.float is float64)

def ref_get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)

    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = ref_get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def ref_get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0

    # use half of dimensions to encode grid_h
    emb_h = ref_get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = ref_get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)

    emb = np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)
    return emb


def ref_get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """
    embed_dim: output dimension for each position
    pos: a list of positions to be encoded: size (M,)
    out: (M, D)
    """
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega  # (D/2,)

    pos = pos.reshape(-1)  # (M,)
    out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product

    emb_sin = np.sin(out)  # (M, D/2)
    emb_cos = np.cos(out)  # (M, D/2)

    emb = np.concatenate([emb_sin, emb_cos], axis=1)  # (M, D)
    return emb


@pytest.mark.parametrize("cls_token", [True, False])
@pytest.mark.parametrize("embed_dim, grid_size", [(128, 8), (64, 8), (16, 3)])
def test_sincos_pos_embed_is_the_official_table(xp, embed_dim, grid_size, cls_token):
    ref = ref_get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=cls_token)
    ours = get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=cls_token, dtype="float64")
    assert ours.shape == (1, grid_size ** 2 + cls_token, embed_dim)
    np.testing.assert_allclose(to_numpy(ours)[0], ref, rtol=0, atol=1e-15)


def test_model_uses_the_official_tables(xp):
    model = MaskedAutoencoderViT()
    np.testing.assert_allclose(to_numpy(model.pos_embed)[0], ref_get_2d_sincos_pos_embed(128, 8, True), atol=1e-7)
    np.testing.assert_allclose(to_numpy(model.decoder_pos_embed)[0], ref_get_2d_sincos_pos_embed(64, 8, True),
                               atol=1e-7)
    assert model.pos_embed.shape == (1, 65, 128) and model.decoder_pos_embed.shape == (1, 65, 64)


# ----------------------------------------------------------------------------------------------
# shapes, initialisation, weight decay

def test_default_shapes_and_parameter_count(xp):
    model = MaskedAutoencoderViT()
    cfg = model.config
    assert (cfg.num_patches, cfg.patch_dim, cfg.len_keep) == (64, 108, 16)
    imgs = batch(0, n=2, size=48)
    latent, mask, ids_restore, _ = model.forward_encoder(imgs, random_noise(backend.host_rng(1), 2, 64))
    assert latent.shape == (2, 1 + 16, 128) and mask.shape == (2, 64) and ids_restore.shape == (2, 64)
    pred, _ = model.forward_decoder(latent, ids_restore)
    assert pred.shape == (2, 64, 108)

    def block(D):  # norm1, qkv, proj, norm2, fc1, fc2
        return 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)

    expected = (108 * 128 + 128) + 128 + 4 * block(128) + 2 * 128 \
        + (128 * 64 + 64) + 64 + 2 * block(64) + 2 * 64 + (64 * 108 + 108)
    assert model.num_params() == expected == model.config.param_count()


def test_initialisation_is_models_mae(xp):
    model = MaskedAutoencoderViT()
    params = {name: to_numpy(value) for name, value in model.params.items()}
    for name, value in params.items():
        assert value.dtype == np.float32, name
        if "norm" in name and name.endswith(".w"):
            assert (value == 1).all(), name  # LayerNorm weight 1
        elif name.endswith(".b"):
            assert (value == 0).all(), name  # Linear and LayerNorm biases 0
    for token in ("cls_token", "mask_token"):  # torch.nn.init.normal_(std=.02)
        assert abs(params[token].std() - 0.02) < 0.006 and abs(params[token].mean()) < 0.006, token
    # xavier_uniform_ on every Linear, qkv included (models_mae._init_weights), and on patch_embed as (D, P)
    for name, (d_in, d_out) in {"blocks.0.attn.qkv.w": (128, 384), "decoder_blocks.1.attn.qkv.w": (64, 192),
                                "blocks.3.mlp.fc1.w": (128, 512), "patch_embed.w": (108, 128),
                                "decoder_pred.w": (64, 108)}.items():
        bound = (6.0 / (d_in + d_out)) ** 0.5
        w = params[name]
        assert w.shape == (d_in, d_out)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound, name
        assert abs(w.std() - bound / 3 ** 0.5) < 0.05 * bound, name  # std of U(-a, a) is a / sqrt(3)
    # the same seed gives the same weights; another seed other weights
    again = MaskedAutoencoderViT(seed=0)
    assert all((to_numpy(again.params[n]) == v).all() for n, v in params.items())
    other = to_numpy(MaskedAutoencoderViT(seed=1).params["blocks.0.attn.qkv.w"])
    assert not (other == params["blocks.0.attn.qkv.w"]).all()


def test_no_weight_decay_on_biases_and_norms_as_main_pretrain():
    model = MaskedAutoencoderViT(ViTConfig(**SMALL))
    expected = {name for name in model.params if name.endswith(".b") or "norm" in name}
    assert set(model.no_decay) == expected
    assert {"norm.w", "decoder_norm.w", "blocks.0.norm1.w", "blocks.1.norm2.b"} <= expected
    # the Linear weights and, as in the official pre-training, the (1, 1, D) cls and mask tokens decay
    assert {"cls_token", "mask_token"} <= set(model.params) - expected


@pytest.mark.parametrize("bad, message", [({"loss_on": "some"}, "--loss-on must be one of masked, all, got 'some'"),
                                          ({"qkv_init": "some"}, "--qkv-init must be one of fused, per-projection"),
                                          ({"img_size": 25}, "--img-size 25 is not a multiple of --patch-size"),
                                          ({"mask_ratio": 0.999}, "--mask-ratio 0.999 keeps 0 of the 16 patches"),
                                          ({"mask_ratio": 0.0}, "--mask-ratio must be in \\(0, 1\\), got 0.0"),
                                          ({"depth": 0}, "--depth must be in \\[1, 64\\], got 0"),
                                          ({"embed_dim": 0}, "--embed-dim must be in \\[4, 65536\\], got 0"),
                                          ({"num_heads": 5}, "divisible by --num-heads 5"),
                                          ({"decoder_embed_dim": 18, "decoder_num_heads": 2}, "and by 4")])
def test_bad_config_is_a_clear_error(bad, message):
    with pytest.raises(TinymaeError, match=message):
        MaskedAutoencoderViT(ViTConfig(**{**SMALL, **bad}))


# ----------------------------------------------------------------------------------------------
# what the encoder sees, what the decoder uses

def test_encoder_sees_only_the_visible_patches(xp):
    model = MaskedAutoencoderViT(ViTConfig(**SMALL), seed=0)
    latent = assert_encoder_ignores_removed_pixels(model, batch(1), random_noise(backend.host_rng(2), 4, 16))
    assert latent.shape == (4, 1 + 4, 32)  # (N, 1+K, D): the K = 4 visible tokens, not L = 16


def test_encoder_without_masking_sees_every_patch(xp):
    """forward_encoder(..., mask_ratio=0.0), as for linear probing: all L tokens, none removed."""
    model = MaskedAutoencoderViT(ViTConfig(**SMALL), seed=0)
    latent, mask, ids_restore, _ = model.forward_encoder(batch(1), random_noise(backend.host_rng(2), 4, 16),
                                                         mask_ratio=0.0)
    assert latent.shape == (4, 1 + 16, 32)
    assert (to_numpy(mask) == 0).all()


def test_prediction_of_a_removed_patch_depends_on_visible_content(xp):
    """Attention mixes tokens: a removed patch's prediction depends on every visible patch."""
    assert_removed_predictions_read_the_visible_patches(MaskedAutoencoderViT(ViTConfig(**SMALL), seed=0), batch(4),
                                                        random_noise(backend.host_rng(5), 4, 16))


def test_attention_key_bias_changes_nothing_and_gets_zero_gradient(xp, rng):
    """The key third of qkv_b adds q_i . b_k to every score of row i; softmax ignores such a shift. So its
    true gradient is exactly zero (the gradient checks in test_gradients.py hold it fixed for that reason)."""
    N, T, D, H = 2, 5, 8, 2
    x = backend.asarray(rng.standard_normal((N, T, D)))
    qkv_w = backend.asarray(rng.standard_normal((D, 3 * D)) * 0.5)
    qkv_b = rng.standard_normal(3 * D) * 0.5
    proj_w, proj_b = backend.asarray(rng.standard_normal((D, D))), backend.asarray(rng.standard_normal(D))
    out, cache = attention.attention_forward(x, qkv_w, backend.asarray(qkv_b), proj_w, proj_b, H)
    shifted = qkv_b.copy()
    shifted[D:2 * D] += 3.0 * rng.standard_normal(D)  # a large change of the key bias only
    out2, _ = attention.attention_forward(x, qkv_w, backend.asarray(shifted), proj_w, proj_b, H)
    np.testing.assert_allclose(to_numpy(out2), to_numpy(out), rtol=1e-12, atol=1e-12)
    _, _, dqkv_b, _, _ = attention.attention_backward(backend.asarray(rng.standard_normal((N, T, D))), cache)
    dqkv_b = to_numpy(dqkv_b)
    assert np.abs(dqkv_b[D:2 * D]).max() < 1e-12 * np.abs(dqkv_b).max()
    assert np.abs(dqkv_b[:D]).min() > 0 and np.abs(dqkv_b[2 * D:]).min() > 0  # queries' and values' are not


# ----------------------------------------------------------------------------------------------
# float32: safe and stays float32

def test_softmax_of_huge_logits_stays_finite_in_float32(xp):
    x = backend.asarray([[1e4, 0.0, -1e4, 1e4 - 1.0], [-1e4, -1e4, -1e4, -1e4]], dtype="float32")
    y, cache = attention.softmax_forward(x)
    y_h = to_numpy(y)
    assert y.dtype == xp.float32 and np.isfinite(y_h).all()
    np.testing.assert_allclose(y_h.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y_h[0], [1 / (1 + np.e ** -1), 0, 0, 1 / (1 + np.e)], rtol=1e-6)
    np.testing.assert_allclose(y_h[1], 0.25)
    dx = attention.softmax_backward(backend.asarray(np.ones((2, 4)) * [1, 2, 3, 4], dtype="float32"), cache)
    assert dx.dtype == xp.float32 and np.isfinite(to_numpy(dx)).all()


def test_layernorm_of_a_constant_row_is_its_bias_in_float32(xp):
    x = backend.asarray(np.full((2, 3, 16), 7.25), dtype="float32")  # variance exactly 0: eps keeps 1/sqrt finite
    w = backend.asarray(np.linspace(0.5, 2, 16), dtype="float32")
    b = backend.asarray(np.linspace(-1, 1, 16), dtype="float32")
    out, cache = layers.layernorm_forward(x, w, b)
    np.testing.assert_array_equal(to_numpy(out), np.broadcast_to(to_numpy(b), (2, 3, 16)))
    grads = layers.layernorm_backward(backend.asarray(np.ones((2, 3, 16)), dtype="float32"), cache)
    for g in (out, *grads):
        assert g.dtype == xp.float32 and np.isfinite(to_numpy(g)).all()


def float_arrays(obj):
    """Every floating-point array inside a (nested) cache: tuples, lists, dicts."""
    if isinstance(obj, (tuple, list)):
        return [a for item in obj for a in float_arrays(item)]
    if isinstance(obj, dict):
        return [a for item in obj.values() for a in float_arrays(item)]
    if hasattr(obj, "dtype") and obj.dtype.kind == "f":
        return [obj]
    return []


@pytest.mark.parametrize("overrides", [{}, {"norm_pix_loss": True}, {"encoder_mask_tokens": True}],
                         ids=["default", "norm-pix", "encoder-mask-tokens"])
def test_float32_model_stays_float32(xp, overrides):
    model = build_model("vit", {**SMALL, **overrides}, seed=0)
    loss, pred, mask, cache = model.forward(batch(6), random_noise(backend.host_rng(7), 4, 16))
    assert loss.dtype == xp.float32 and pred.dtype == xp.float32 and mask.dtype == xp.float32
    cached = float_arrays(cache)
    assert len(cached) > 50 and all(a.dtype == xp.float32 for a in cached)  # no float64 copy anywhere inside
    grads = model.backward(1.0, cache)
    assert list(grads) == list(model.params)
    for name, g in grads.items():
        assert g.dtype == xp.float32 and g.shape == model.params[name].shape, name


# ----------------------------------------------------------------------------------------------
# it learns

def test_a_few_adamw_steps_reduce_the_loss(xp):
    """Images of one colour each (plus a little noise): a removed patch is predictable from the visible
    ones only, so the loss can fall far below the ~1.0 of predicting the average colour only if the
    decoder reads the encoder's tokens. It falls from ~1.4 to ~0.17 in 40 steps."""
    model = MaskedAutoencoderViT(ViTConfig(**SMALL), seed=0)
    opt = AdamW(model.params, lr=3e-3, no_decay=model.no_decay)
    rng = backend.host_rng(8)
    colours = rng.standard_normal((8, 3, 1, 1))
    imgs = backend.asarray(colours + 0.1 * rng.standard_normal((8, 3, 24, 24)), dtype="float32")
    noise = random_noise(backend.host_rng(9), 8, 16)
    first = None
    for _ in range(40):
        loss, _, _, cache = model.forward(imgs, noise)
        first = float(loss) if first is None else first
        opt.step(model.backward(1.0, cache))
    assert float(model.forward(imgs, noise)[0]) < 0.25 * first


def test_encoder_with_mask_tokens_ablation_sees_every_position(xp):
    """Table 1c's "encoder w/ [M]": L tokens through the encoder, the decoder adds no mask tokens."""
    model = build_model("vit", dict(SMALL, encoder_mask_tokens=True), seed=0)
    assert isinstance(model, MaskedAutoencoderViTEncoderMaskTokens)
    assert "encoder_mask_token" in model.params and "mask_token" not in model.params
    imgs = backend.asarray(backend.host_rng(0).standard_normal((2, 3, 24, 24)), dtype="float32")
    noise = random_noise(backend.host_rng(1), 2, 16)
    latent, mask, _, _ = model.forward_encoder(imgs, noise)
    assert latent.shape == (2, 1 + 16, 32)
    loss, pred, mask2, cache = model.forward(imgs, noise)
    assert pred.shape == (2, 16, 108) and float(to_numpy(mask2).sum()) == 2 * 12
    assert set(model.backward(1.0, cache)) == set(model.params)


def test_qkv_per_projection_init_draws_three_xavier_projections(xp):
    """qkv_init="per-projection": q, k and v each U(-a, a) with a = sqrt(6 / (D + D)), sqrt(2) wider than
    the fused (D, 3D) draw of models_mae.py."""
    D = 128
    fused = to_numpy(MaskedAutoencoderViT(ViTConfig(), seed=0).params["blocks.0.attn.qkv.w"])
    split = to_numpy(MaskedAutoencoderViT(ViTConfig(qkv_init="per-projection"), seed=0).params["blocks.0.attn.qkv.w"])
    assert fused.shape == split.shape == (D, 3 * D)
    for w, bound in ((fused, (6 / (4 * D)) ** 0.5), (split, (6 / (2 * D)) ** 0.5)):
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    for block in range(3):  # each of q, k, v fills its own range
        assert np.abs(split[:, block * D:(block + 1) * D]).max() > 0.99 * (6 / (2 * D)) ** 0.5
