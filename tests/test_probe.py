"""The linear probe and k-NN: the optimiser reaches the optimum, features have the right shapes, the
command runs end to end."""
import numpy as np
import pytest

from tinymae import backend, probe
from tinymae.backend import to_numpy
from tinymae.config import MLPConfig, ViTConfig
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import random_masking


def newton_logistic(X, y, l2, iters=30):
    """Reference: Newton's method (IRLS) in float64 on the same objective, mean BCE + l2/2 |w|^2."""
    N, F = X.shape
    Xb = np.hstack([X, np.ones((N, 1))])
    theta = np.zeros(F + 1)
    reg = np.diag(np.r_[np.full(F, l2), 0.0])  # no penalty on the bias
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Xb @ theta))
        grad = Xb.T @ (p - y) / N + reg @ theta
        hess = (Xb.T * (p * (1 - p))) @ Xb / N + reg
        theta -= np.linalg.solve(hess, grad)
    return theta[:F], theta[F]


def synthetic_classes(n=400, f=10, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    X = rng.standard_normal((n, f)) + 0.8 * (2 * y[:, None] - 1) * rng.random(f)
    return X.astype("float32"), y


@pytest.mark.parametrize("l2", [1e-2, 1e-1])
def test_fit_logistic_reaches_the_optimum(xp, l2):
    X, y = synthetic_classes()
    w, b = probe.fit_logistic(X, y, l2, steps=300)
    w_ref, b_ref = newton_logistic(X.astype("float64"), y, l2)
    np.testing.assert_allclose(w, w_ref, atol=0.02 * np.abs(w_ref).max())
    assert b == pytest.approx(b_ref, abs=0.02 * np.abs(w_ref).max())
    assert probe.logistic_accuracy(w, b, X, y) == probe.logistic_accuracy(w_ref, b_ref, X, y)


def test_linear_probe_picks_l2_on_held_out_training_data(xp):
    X, y = synthetic_classes(seed=1)
    result = probe.linear_probe(X[:300], y[:300], X[300:], y[300:], seed=0)
    assert result["l2"] in probe.L2_GRID and set(result["inner_accuracy"]) == set(probe.L2_GRID)
    assert result["accuracy"] > 0.8  # the classes are separable enough


def test_knn_by_hand(xp):
    X_train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], "float32")
    y_train = np.array([0, 0, 1, 1])
    X_val = np.array([[1, 0.05], [0.05, 1]], "float32")
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([0, 1]), k=1) == 1.0
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([1, 0]), k=1) == 0.0


def test_mlp_partition_masks_cover_every_patch_once(xp):
    noises = probe.mlp_partition_noise(2, 64, 16)
    assert len(noises) == 4
    seen = np.zeros((2, 64))
    for noise in noises:
        _, mask, _, _ = random_masking(backend.xp.zeros((2, 64, 1), dtype="float32"), 0.75, backend.asarray(noise))
        seen += 1 - to_numpy(mask)  # kept patches
    assert (seen == 1).all()


def test_features_have_the_documented_shapes(xp):
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    vit = MaskedAutoencoderViT(ViTConfig(img_size=24, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                                         decoder_depth=1, decoder_num_heads=2))
    feats = probe.extract_features(vit, images, mean, std, batch_size=2)
    assert {k: v.shape for k, v in feats.items()} == {"mean": (5, 16), "cls": (5, 16)}
    mlp = MaskedAutoencoderMLP(MLPConfig(img_size=24, embed_dim=8, encoder_dims=(32, 12), decoder_dims=()))
    feats = probe.extract_features(mlp, images, mean, std, batch_size=2)
    assert {k: v.shape for k, v in feats.items()} == {"latent": (5, 12)}
    assert all(v.dtype == np.float32 for v in feats.values())


def test_probe_command_end_to_end(tmp_path, monkeypatch, capsys):
    from conftest import make_photos, train_tiny

    photos = make_photos(tmp_path, monkeypatch)
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    capsys.readouterr()
    report_path = tmp_path / "probe.json"
    assert probe.main(["--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos), "--seeds", "2",
                       "--json", str(report_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "raw pixels" in printed and "random init" in printed and "pre-trained" in printed
    import json
    report = json.loads(report_path.read_text())
    assert report["n_train"] == 32 and report["n_val"] == 8 and report["seeds"] == [0, 1]
    for row in report["results"]:
        assert 0.0 <= row["linear_probe_mean"] <= 1.0 and 0.0 <= row["knn20"] <= 1.0
        assert len(row["linear_probe_runs"]) == 2


def test_probe_command_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    assert probe.main(["--checkpoint", str(bad), "--data", str(tmp_path)]) == 2
    assert "not a readable tinymae checkpoint" in capsys.readouterr().err
