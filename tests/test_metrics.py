"""Pixel-space metrics and baselines on hand-made examples."""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.util import metrics


def test_pred_to_pixels_undoes_the_normalisation(xp, rng):
    mean, std = np.array([0.4, 0.5, 0.6], "float32"), np.array([0.2, 0.25, 0.3], "float32")
    pix = rng.random((2, 4, 12)).astype("float32")  # 2x2 patches, channel = index % 3
    norm = (pix - np.tile(mean, 4)) / np.tile(std, 4)
    back = metrics.pred_to_pixels(backend.asarray(norm), None, backend.asarray(mean), backend.asarray(std))
    np.testing.assert_allclose(to_numpy(back), pix, rtol=1e-6, atol=1e-6)
    # norm_pix_loss: a perfect per-patch-normalised prediction maps back to the true patch
    m, v = norm.mean(-1, keepdims=True), norm.var(-1, keepdims=True, ddof=1)
    perfect = (norm - m) / np.sqrt(v + 1e-6)
    back = metrics.pred_to_pixels(backend.asarray(perfect), backend.asarray(norm), backend.asarray(mean),
                                  backend.asarray(std), norm_pix_loss=True)
    np.testing.assert_allclose(to_numpy(back), pix, rtol=1e-5, atol=1e-5)


def test_masked_patch_error_counts_removed_patches_only(xp):
    pred = backend.asarray(np.zeros((1, 3, 2), "float32"))
    target = backend.asarray(np.array([[[1, 1], [2, 2], [3, 3]]], "float32"))
    mask = backend.asarray(np.array([[1, 0, 1]], "float32"))
    total, count = metrics.masked_patch_sq_error(pred, target, mask)
    assert float(total) == 1 + 9 and float(count) == 2
    assert metrics.psnr(0.01) == pytest.approx(20.0)


def test_baselines_on_a_hand_made_image(xp):
    # a 2x2 grid of single-pixel patches (P = 3), colours 0.1 .. 0.4 (grey); patches 1 and 3 removed
    target = backend.asarray(np.repeat(np.array([0.1, 0.2, 0.3, 0.4], "float32"), 3).reshape(1, 4, 3))
    mask = backend.asarray(np.array([[0, 1, 0, 1]], "float32"))
    mean_patch = backend.asarray(np.full((4, 3), 0.5, "float32"))
    np.testing.assert_allclose(to_numpy(metrics.mean_patch_baseline(target, mask, mean_patch)), 0.5)
    vis_mean = to_numpy(metrics.visible_mean_baseline(target, mask))
    np.testing.assert_allclose(vis_mean, 0.2)  # mean of the visible 0.1 and 0.3
    nearest = to_numpy(metrics.nearest_visible_baseline(target, mask, grid_size=2))[0, :, 0]
    # patch 1 (row 0, col 1): neighbours 0 and 3 at distance 1, only 0 visible -> 0.1; patch 3 -> patch 2 (0.3)
    np.testing.assert_allclose(nearest, [0.1, 0.1, 0.3, 0.3])
