"""research/figures.py draws docs/pipeline.png, docs/mask_grid.png and docs/attention.png from a checkpoint.

On a tiny ViT trained here: the command writes three small, non-empty PNGs; the mask grid's green cells are
exactly the patches the engine keeps for that validation image (read back from the PNG's pixels); and the
attention maps are the cls token's softmax row, put back in patch order.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.evaluate import fixed_noise
from tinymae.util.checkpoint import load_checkpoint
from tinymae.util.figures import KEPT_COLOUR, REMOVED_COLOUR, cls_attention_maps

from conftest import make_photos, train_tiny

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("figures_script", ROOT / "research" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_vit(tmp_path, monkeypatch):
    photos = make_photos(tmp_path, monkeypatch, per_class=20)
    train_tiny(tmp_path / "run", photos, "vit")
    return tmp_path / "run" / "checkpoint.npz", photos


def test_figure_command_draws_the_engines_mask(tiny_vit, tmp_path):
    checkpoint, photos = tiny_vit
    out = tmp_path / "figures"
    result = load_script().main(["--checkpoint", str(checkpoint), "--data", str(photos), "--out", str(out),
                                 "--images", "3", "--image", "1"])
    for name in ("pipeline", "mask_grid", "attention"):
        path = out / f"{name}.png"
        assert path == Path(result["paths"][name])
        assert 5_000 < path.stat().st_size < 150_000, f"{path}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            assert min(image.size) > 300

    # The engine's mask for that validation image, computed here from the checkpoint alone: the run's fixed
    # validation noise (evaluate.fixed_noise with the run's seed), through the model's own forward_encoder.
    model, header, _ = load_checkpoint(str(checkpoint))
    cfg = model.config
    pick = result["picks"][result["image"]]
    noise = fixed_noise(header["data"]["n_val"], cfg.num_patches, header["settings"]["seed"])[pick:pick + 1]
    imgs = asarray(host_rng(0).standard_normal((1, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    _, mask, _, _ = model.forward_encoder(imgs, asarray(noise))  # the mask does not depend on the pixels
    kept = to_numpy(mask)[0] == 0  # (L,)
    assert kept.sum() == cfg.len_keep

    with Image.open(result["paths"]["mask_grid"]) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0  # (height, width, 3)
    colours = np.array([pixels[int(round(y)), int(round(x))] for x, y in result["cells"]])  # (L, 3)
    to_kept = np.abs(colours - np.array(KEPT_COLOUR)).max(axis=1)  # (L,)
    to_removed = np.abs(colours - np.array(REMOVED_COLOUR)).max(axis=1)
    assert (np.minimum(to_kept, to_removed) < 0.05).all(), "a sampled point is not inside a grid cell"
    drawn_kept = to_kept < to_removed
    wrong = np.flatnonzero(drawn_kept != kept)
    assert not len(wrong), f"patches {wrong.tolist()} are drawn {'kept' if drawn_kept[wrong[0]] else 'removed'}"


def test_figure_command_refuses_an_mlp_checkpoint(tmp_path, monkeypatch):
    photos = make_photos(tmp_path, monkeypatch, per_class=10)
    train_tiny(tmp_path / "run", photos, "mlp")
    with pytest.raises(SystemExit, match="need MAE's ViT"):
        load_script().main(["--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--data", str(photos),
                            "--out", str(tmp_path / "figures")])


def test_cls_attention_maps_put_the_cls_row_in_patch_order():
    rng = host_rng(0)
    N, H, L, K = 2, 3, 8, 2
    scores = rng.standard_normal((N, H, 1 + K, 1 + K))
    attn = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)  # (N, H, 1+K, 1+K) softmax rows
    ids_restore = np.argsort(np.argsort(rng.random((N, L)), axis=1), axis=1)  # (N, L)
    maps, cls_self = cls_attention_maps(attn, ids_restore, K)
    assert maps.shape == (N, H, L) and cls_self.shape == (N, H)
    for n in range(N):
        for l in range(L):
            slot = ids_restore[n, l]
            if slot < K:  # kept: token 1 + slot is patch l
                np.testing.assert_array_equal(maps[n, :, l], attn[n, :, 0, 1 + slot])
            else:
                assert np.isnan(maps[n, :, l]).all()
    np.testing.assert_allclose(np.nansum(maps, axis=2) + cls_self, 1.0, rtol=1e-12)
