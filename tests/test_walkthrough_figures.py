"""examples/walkthrough_figures.py draws docs/pipeline.png, docs/mask_grid.png and docs/attention.png from a
checkpoint.

On tiny ViTs trained here (random and block-wise masking): the command writes three small, non-empty PNGs; the mask
grid's green cells are exactly the patches the engine keeps for that validation photo (read back from the PNG's
pixels); the attention maps are the cls token's softmax row, put back in patch order; and a checkpoint or a folder
the figures cannot be drawn from is one line, with exit status 1.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.evaluate import fixed_noise
from tinymae.util.checkpoint import read_checkpoint

from conftest import make_photos, train_tiny

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # the scripts of examples/ are not a package
import walkthrough_figures  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (checkpoint, photos)}: tiny ViTs with random and block-wise masking, and a tiny MLP, on one folder."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as monkeypatch:  # TINYMAE_CACHE stays in root while the module's tests run
        photos = make_photos(root, monkeypatch, per_class=20)
        for name, arch, extra in (("random", "vit", ()), ("block", "vit", ("--masking", "block")), ("mlp", "mlp", ())):
            train_tiny(root / name, photos, arch, *extra)
        yield {name: (root / name / "checkpoint.npz", photos) for name in ("random", "block", "mlp")}


def one_line_error(capsys, argv, expected):
    assert walkthrough_figures.main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], captured.err


@pytest.mark.parametrize("masking", ["random", "block"])
def test_the_mask_grid_draws_the_engines_mask(runs, tmp_path, masking):
    checkpoint, photos = runs[masking]
    result = walkthrough_figures.draw(str(checkpoint), str(photos), str(tmp_path / "figures"), images=3, image=1)
    for name in ("pipeline", "mask_grid", "attention"):
        path = tmp_path / "figures" / f"{name}.png"
        assert path == Path(result["paths"][name])
        assert 5_000 < path.stat().st_size < 150_000, f"{path}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            assert image.mode == "P" and min(image.size) > 300  # a small palette PNG

    # The engine's mask for that validation photo, computed here from the checkpoint alone: the run's fixed
    # validation noise (evaluate.fixed_noise with the run's seed and masking), through the model's forward_encoder.
    header, model, _ = read_checkpoint(checkpoint)
    cfg = model.config
    assert cfg.masking == masking
    pick = result["picks"][result["image"]]
    noise = fixed_noise(header["data"]["n_val"], cfg, header["settings"]["seed"])[pick:pick + 1]
    imgs = asarray(host_rng(0).standard_normal((1, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    _, mask, _, _ = model.forward_encoder(imgs, asarray(noise))  # the mask does not depend on the pixels
    kept = to_numpy(mask)[0] == 0  # (L,)
    assert kept.sum() == cfg.len_keep
    np.testing.assert_array_equal(result["mask"] == 0, kept)

    with Image.open(result["paths"]["mask_grid"]) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0  # (height, width, 3)
    colours = np.array([pixels[int(round(y)), int(round(x))] for x, y in result["cells"]])  # (L, 3)
    to_kept = np.abs(colours - np.array(walkthrough_figures.KEPT_COLOUR)).max(axis=1)  # (L,)
    to_removed = np.abs(colours - np.array(walkthrough_figures.REMOVED_COLOUR)).max(axis=1)
    assert (np.minimum(to_kept, to_removed) < 0.05).all(), "a sampled point is not inside a grid cell"
    drawn_kept = to_kept < to_removed
    wrong = np.flatnonzero(drawn_kept != kept)
    assert not len(wrong), f"patches {wrong.tolist()} are drawn {'kept' if drawn_kept[wrong[0]] else 'removed'}"


def test_the_command_finds_the_run_s_photos_and_prints_what_it_drew(runs, tmp_path, capsys):
    checkpoint, _ = runs["random"]
    assert walkthrough_figures.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path), "--block", "0"]) == 0
    out = capsys.readouterr().out
    assert "ViT MAE after 3 epochs; validation image 0 of 8" in out and "kept patches (ids_keep, in slot order)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention.png", "mask_grid.png", "pipeline.png"]


def test_what_the_figures_cannot_be_drawn_from_is_one_line(runs, tmp_path, monkeypatch, capsys):
    checkpoint, photos = runs["random"]
    one_line_error(capsys, ["--checkpoint", str(runs["mlp"][0]), "--out", str(tmp_path)], "need MAE's ViT")
    other = make_photos(tmp_path, monkeypatch, per_class=20, seed=1, name="other")
    one_line_error(capsys, ["--checkpoint", str(checkpoint), "--data", str(other), "--out", str(tmp_path)],
                   "point --data at the run's photo folder")
    one_line_error(capsys, ["--checkpoint", str(checkpoint), "--block", "1", "--out", str(tmp_path)],
                   "--block 1: the encoder has blocks 0 to 0")
    one_line_error(capsys, ["--checkpoint", str(checkpoint), "--image", "4", "--out", str(tmp_path)],
                   "--image 4 is not one of the 4 photos drawn")
    (tmp_path / "a-file").write_text("")
    one_line_error(capsys, ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "a-file")], "--out")
    one_line_error(capsys, ["--checkpoint", str(tmp_path / "none.npz")], "no checkpoint at")
    assert not any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_help_prints_the_usage():
    shown = subprocess.run([sys.executable, str(ROOT / "examples" / "walkthrough_figures.py"), "--help"],
                           capture_output=True, text=True, timeout=120)
    usage = "usage: python examples/walkthrough_figures.py"
    assert shown.returncode == 0 and shown.stdout.startswith(usage), shown.stderr
    assert "--checkpoint" in shown.stdout and "--block" in shown.stdout


def test_cls_attention_maps_put_the_cls_row_in_patch_order():
    rng = host_rng(0)
    N, H, L, K = 2, 3, 8, 2
    scores = rng.standard_normal((N, H, 1 + K, 1 + K))
    attn = np.exp(scores) / np.exp(scores).sum(axis=-1, keepdims=True)  # (N, H, 1+K, 1+K) softmax rows
    ids_restore = np.argsort(np.argsort(rng.random((N, L)), axis=1), axis=1)  # (N, L)
    maps, cls_self = walkthrough_figures.cls_attention_maps(attn, ids_restore, K)
    assert maps.shape == (N, H, L) and cls_self.shape == (N, H)
    for n in range(N):
        for l in range(L):
            slot = ids_restore[n, l]
            if slot < K:  # kept: token 1 + slot is patch l
                np.testing.assert_array_equal(maps[n, :, l], attn[n, :, 0, 1 + slot])
            else:
                assert np.isnan(maps[n, :, l]).all()
    np.testing.assert_allclose(np.nansum(maps, axis=2) + cls_self, 1.0, rtol=1e-12)
