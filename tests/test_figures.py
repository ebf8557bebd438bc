"""The figures of a run (tinymae/util/figures.py), drawn on the host with matplotlib: the four columns of the
reconstruction figure hold what their titles say, the saved files are images of the format their name asks for,
and save() is atomic: a failure while writing leaves the previous file and no temporary behind.

(The mask grid and the attention maps are drawn by research/ and tested with it.)
"""
import os

import numpy as np
import pytest
from PIL import Image

from tinymae.model.patches import patchify
from tinymae.util import figures
from tinymae.util.files import TEMPORARY

PATCH = 4


def reconstruction_inputs(n=3, side=8, seed=0):
    """Host imgs (n, 3, side, side) in [0, 1], a mask (n, L) with both kinds of patch in every image, and
    predictions (n, L, P) that stray outside [0, 1]."""
    rng = np.random.default_rng(seed)
    L, P = (side // PATCH) ** 2, PATCH * PATCH * 3
    imgs = rng.random((n, 3, side, side)).astype(np.float32)
    mask = np.zeros((n, L), dtype=np.float32)
    for i in range(n):
        mask[i, rng.permutation(L)[:3]] = 1.0  # 3 of the 4 patches removed
    pred = (rng.random((n, L, P)) * 1.6 - 0.3).astype(np.float32)
    return imgs, mask, pred


def test_reconstruction_panels_are_the_four_columns():
    """original, masked (removed patches mid-grey), reconstruction (the predictions as an image, clipped to [0, 1]),
    reconstruction + visible (the visible patches put back); each (n, H, W, 3)."""
    imgs, mask, pred = reconstruction_inputs()
    columns = figures.reconstruction_panels(imgs, mask, pred, PATCH)
    assert len(columns) == 4 and all(c.shape == (3, 8, 8, 3) for c in columns)
    original, masked, reconstruction, pasted = (patchify(c.transpose(0, 3, 1, 2), PATCH) for c in columns)
    expected_original = patchify(imgs, PATCH)  # (n, L, P)
    clipped = np.clip(pred, 0.0, 1.0)
    np.testing.assert_array_equal(original, expected_original)
    np.testing.assert_array_equal(reconstruction, clipped)
    removed = mask[:, :, None] == 1  # (n, L, 1)
    np.testing.assert_array_equal(masked, np.where(removed, 0.5, expected_original))
    np.testing.assert_array_equal(pasted, np.where(removed, clipped, expected_original))
    assert all(c.min() >= 0.0 and c.max() <= 1.0 for c in columns)


def test_saved_figures_open_as_png(tmp_path):
    """The reconstruction figure and the loss curves are PNG files of a sensible size."""
    imgs, mask, pred = reconstruction_inputs()
    figures.save_reconstructions(tmp_path / "reconstructions.png", imgs, mask, pred, PATCH, title="a title")
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_masked_mse": 0.02 / e} for e in (1, 2, 3)]
    figures.save_loss_curves(tmp_path / "loss.png", history, baseline_mse=0.03)
    figures.save_loss_curves(tmp_path / "loss-no-baseline.png", history)
    for name in ("reconstructions.png", "loss.png", "loss-no-baseline.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and min(image.size) > 100, name
            image.load()  # the whole file decodes
    assert sorted(os.listdir(tmp_path)) == ["loss-no-baseline.png", "loss.png", "reconstructions.png"]


def a_figure():
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_writes_the_format_its_ending_names(tmp_path):
    """.png is PNG, .svg is SVG, no ending is PNG; colors=16 writes a palette PNG of at most 16 colours."""
    figures.save(a_figure(), str(tmp_path / "plot.svg"))
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:1000]
    figures.save(a_figure(), str(tmp_path / "plot"))
    figures.save(a_figure(), str(tmp_path / "small.png"), colors=16)
    with Image.open(tmp_path / "plot") as image:
        assert image.format == "PNG"
    with Image.open(tmp_path / "small.png") as image:
        assert image.format == "PNG" and image.mode == "P" and len(image.getcolors()) <= 16


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while the new file is written (here the disk refuses the flush) leaves the previous file as it
    was and no temporary file behind; the error reaches the caller."""
    path = tmp_path / "loss.png"
    figures.save(a_figure(), str(path))
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space left"):
            figures.save(a_figure(), str(path), dpi=50)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["loss.png"]
    assert not any(name.startswith(TEMPORARY[0]) for name in os.listdir(tmp_path))


def test_save_closes_the_figure(tmp_path):
    """A saved figure is closed: a run that draws every epoch keeps no figures open."""
    plt = figures.pyplot()
    fig = a_figure()
    figures.save(fig, str(tmp_path / "plot.png"))
    assert not plt.fignum_exists(fig.number)
