"""Forward correctness of the core passes (not only their gradients), on every backend."""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.config import ViTConfig
from tinymae.model import layers, loss, masking, patches

from conftest import random_noise


def test_patchify_hand_built_image(xp):
    # A 2x4 image of 2x2 patches: pixel value = 100*channel + 10*row + col, so every number says where it came from.
    c, r, q = np.meshgrid(np.arange(3), np.arange(2), np.arange(4), indexing="ij")
    img = (100 * c + 10 * r + q).astype("float32")[None]  # (1, 3, 2, 4)
    x = to_numpy(patches.patchify(backend.asarray(img), 2))  # (1, 2, 12)
    assert x.shape == (1, 2, 12)
    # patch 0 covers columns 0-1, patch 1 columns 2-3; inside a patch: (row, col, channel) order
    expected_patch0 = [0, 100, 200, 1, 101, 201, 10, 110, 210, 11, 111, 211]
    expected_patch1 = [2, 102, 202, 3, 103, 203, 12, 112, 212, 13, 113, 213]
    np.testing.assert_array_equal(x[0, 0], expected_patch0)
    np.testing.assert_array_equal(x[0, 1], expected_patch1)


def test_patchify_matches_reference_einsum(xp, rng):
    imgs = rng.standard_normal((2, 3, 12, 12)).astype("float32")
    p, h = 3, 4
    ref = np.einsum("nchpwq->nhwpqc", imgs.reshape(2, 3, h, p, h, p)).reshape(2, h * h, p * p * 3)  # models_mae
    got = to_numpy(patches.patchify(backend.asarray(imgs), p))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(to_numpy(patches.unpatchify(backend.asarray(ref), p)), imgs)


def test_patchify_and_unpatchify_are_each_others_backward(xp, rng):
    """<patchify(a), b> == <a, unpatchify(b)>: the adjoint of a permutation is its inverse."""
    a = rng.standard_normal((2, 3, 6, 6))
    b = rng.standard_normal((2, 4, 27))
    lhs = float((to_numpy(patches.patchify(backend.asarray(a), 3)) * b).sum())
    rhs = float((a * to_numpy(patches.patchify_backward(backend.asarray(b), 3))).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert patches.unpatchify_backward is not None and patches.patchify_backward is not None


def test_patchify_rejects_sizes_that_do_not_divide(xp):
    with pytest.raises(ValueError, match="not a multiple of the patch size 5"):
        patches.patchify(xp.zeros((1, 3, 12, 12)), 5)


@pytest.mark.parametrize("keep_order", [False, True])
@pytest.mark.parametrize("mask_ratio", [0.0, 0.25, 0.75, 0.9])
def test_random_masking_invariants(xp, rng, mask_ratio, keep_order):
    N, L, D = 4, 64, 5
    x = rng.standard_normal((N, L, D)).astype("float32")
    noise = random_noise(rng, N, L)
    x_masked, mask, ids_restore, cache = masking.random_masking(backend.asarray(x), mask_ratio, noise, keep_order)
    x_masked, mask, ids_restore = to_numpy(x_masked), to_numpy(mask), to_numpy(ids_restore)
    len_keep = int(L * (1 - mask_ratio))

    ids_shuffle = np.argsort(to_numpy(noise), axis=1)
    if keep_order:  # the same kept set, listed in raster order
        ids_shuffle[:, :len_keep] = np.sort(ids_shuffle[:, :len_keep], axis=1)
        assert (np.diff(ids_shuffle[:, :len_keep], axis=1) > 0).all()
    assert x_masked.shape == (N, len_keep, D)
    np.testing.assert_array_equal(np.take_along_axis(ids_shuffle, ids_restore, axis=1), np.tile(np.arange(L), (N, 1)))
    np.testing.assert_array_equal(mask.sum(axis=1), L - len_keep)
    # kept tokens are exactly the gathered ones, in shuffle order, and the mask is 0 there
    ids_keep = ids_shuffle[:, :len_keep]
    np.testing.assert_array_equal(x_masked, np.take_along_axis(x, ids_keep[:, :, None], axis=1))
    assert (np.take_along_axis(mask, ids_keep, axis=1) == 0).all()
    # mask built as in models_mae: ones, zero the first len_keep, then un-shuffle
    ref_mask = np.ones((N, L), dtype="float32")
    ref_mask[:, :len_keep] = 0
    np.testing.assert_array_equal(mask, np.take_along_axis(ref_mask, ids_restore, axis=1))


def test_random_masking_noise_is_uniform_noise_from_the_host_generator():
    noise = masking.masking_noise(backend.host_rng(7), 2, ViTConfig())
    assert isinstance(noise, np.ndarray) and noise.dtype == np.float32  # drawn on the host: the same on every backend
    np.testing.assert_array_equal(noise, np.random.default_rng(7).random((2, 64), dtype="float32"))


def kept_sets(noise, config):
    """The (n, L) 0/1 masks of the patches each row of noise keeps (its K smallest values)."""
    keep = np.argsort(noise, axis=1)[:, :config.len_keep]
    mask = np.ones(noise.shape)
    np.put_along_axis(mask, keep, 0.0, axis=1)
    return mask


def test_grid_masking_keeps_one_patch_of_every_two_by_two(xp):
    cfg = ViTConfig(masking="grid")
    mask = kept_sets(masking.masking_noise(backend.host_rng(0), 3, cfg), cfg).reshape(3, 8, 8)
    expected = np.ones((8, 8))
    expected[::2, ::2] = 0  # the top left of every 2 x 2 kept
    assert (mask == expected).all()


@pytest.mark.parametrize("mask_ratio", [0.5, 0.75])
def test_block_masking_removes_rectangles_and_exactly_the_ratio(xp, mask_ratio):
    cfg = ViTConfig(masking="block", mask_ratio=mask_ratio)
    noise = masking.masking_noise(backend.host_rng(0), 200, cfg)
    mask = kept_sets(noise, cfg).reshape(200, 8, 8)
    assert (mask.sum(axis=(1, 2)) == 64 - cfg.len_keep).all()  # exactly L - K removed, as random masking
    blocks = noise.reshape(200, 8, 8) >= 1  # the patches the rectangles covered
    assert (mask[blocks] == 1).all()  # every one of them removed
    assert blocks.sum() >= 0.9 * mask.sum()  # and they make nearly all of the removed patches
    # rectangles, not scattered patches: a removed patch has removed neighbours far more often than at random
    neighbours = (mask[:, 1:, :] * mask[:, :-1, :]).mean() / mask.mean() ** 2
    assert neighbours > 1.1
    block = masking.block_mask(backend.host_rng(3), 8, 48)
    assert block.sum() <= 48 and set(np.unique(block)) <= {0.0, 1.0}


def test_masking_refuses_grid_masking_at_another_ratio():
    from tinymae.config import check
    from tinymae.errors import TinymaeError
    with pytest.raises(TinymaeError, match="--masking grid"):
        check(ViTConfig(masking="grid", mask_ratio=0.5))


def test_append_mask_tokens_puts_every_token_at_its_place(xp, rng):
    N, L, D = 2, 8, 3
    x = np.arange(N * L * D, dtype="float32").reshape(N, L, D)
    noise = random_noise(rng, N, L)
    x_masked, mask, ids_restore, _ = masking.random_masking(backend.asarray(x), 0.75, noise)
    mask_token = backend.asarray(np.full((1, 1, D), -1.0, dtype="float32"))
    x_full, _ = masking.append_mask_tokens(x_masked, mask_token, ids_restore)
    x_full, mask = to_numpy(x_full), to_numpy(mask)
    kept = mask == 0
    np.testing.assert_array_equal(x_full[kept], x[kept])  # visible tokens back where they came from
    assert (x_full[~kept] == -1.0).all()  # the mask token everywhere else


def test_linear_and_relu_forward(xp, rng):
    x = rng.standard_normal((2, 3, 4)).astype("float32")
    w = rng.standard_normal((4, 5)).astype("float32")
    b = rng.standard_normal(5).astype("float32")
    out, _ = layers.linear_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b))
    np.testing.assert_allclose(to_numpy(out), x @ w + b, rtol=1e-5, atol=1e-6)
    out, _ = layers.relu_forward(backend.asarray(x))
    np.testing.assert_array_equal(to_numpy(out), np.maximum(x, 0))


def test_initialisers(xp):
    w = to_numpy(layers.xavier_uniform(backend.host_rng(0), 300, 500))
    a = np.sqrt(6 / 800)
    assert w.dtype == np.float32 and w.shape == (300, 500)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.99 * a
    assert np.var(w) == pytest.approx(a * a / 3, rel=0.02)  # variance of U(-a, a)
    t = to_numpy(layers.normal(backend.host_rng(0), (1, 1, 20000)))
    assert t.std() == pytest.approx(0.02, rel=0.03)
    assert (to_numpy(layers.zeros(7)) == 0).all()


def test_mse_forward_by_hand(xp):
    pred = np.zeros((1, 2, 2), dtype="float32")
    target = np.array([[[1.0, 1.0], [2.0, 4.0]]], dtype="float32")  # per-patch MSE: 1 and 10
    mask = np.array([[0.0, 1.0]], dtype="float32")
    value, _ = loss.mse_forward(backend.asarray(pred), backend.asarray(target), backend.asarray(mask))
    assert float(value) == pytest.approx(10.0)  # only the removed patch counts
    value, _ = loss.mse_forward(backend.asarray(pred), backend.asarray(target), None)
    assert float(value) == pytest.approx(5.5)  # mean over all patches
    value, _ = loss.mse_forward(backend.asarray(pred), backend.asarray(target), backend.asarray(mask),
                                norm_pix_loss=True)
    # patch [2, 4]: mean 3, unbiased var 2 -> target (-1, 1) / sqrt(2 + 1e-6); MSE = 1 / (2 + 1e-6)
    assert float(value) == pytest.approx(1 / (2 + 1e-6), rel=1e-6)
