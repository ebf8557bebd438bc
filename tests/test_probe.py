"""The linear probe and k-NN (tinymae/probe.py): the softmax regression reaches the optimum, the L2 strength is
chosen on training data, k-NN votes over any number of classes, the features have the documented shapes (the MLP
sees every patch once over its partition views), and the command runs end to end: on the run's own photos and
split, on another folder of three classes, never validating on a photo the encoder trained on, and every error
one line."""
import json

import numpy as np
import pytest

from tinymae import backend, data, probe
from tinymae.backend import to_numpy
from tinymae.config import MLPConfig, ViTConfig
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import masking_indices, partition_noise
from tinymae.photos import file_hash, find_photos, fingerprint
from tinymae.util.checkpoint import read_checkpoint

from conftest import make_photos, train_tiny

TINY_VIT = ViTConfig(img_size=24, patch_size=6, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
                     decoder_depth=1, decoder_num_heads=2)
TINY_MLP = MLPConfig(img_size=24, patch_size=6, embed_dim=8, encoder_dims=(32, 12), decoder_dims=())


def newton_softmax(X, y, num_classes, l2, iters=30):
    """Reference: Newton's method in float64 on the same objective, the mean cross-entropy of X w + b plus
    l2/2 |w|^2 (no penalty on b). The logits are unchanged by a constant added to every class's bias, so the
    Hessian is singular along it: the pseudo-inverse takes the step that leaves the biases' sum at 0."""
    N, F = X.shape
    C = num_classes
    Xb = np.hstack([X, np.ones((N, 1))])  # (N, F+1)
    Y = np.eye(C)[y]  # (N, C)
    theta = np.zeros((F + 1, C))
    reg = np.r_[np.full(F, l2), 0.0][:, None]  # (F+1, 1)
    for _ in range(iters):
        logits = Xb @ theta
        P = np.exp(logits - logits.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)  # (N, C)
        grad = Xb.T @ (P - Y) / N + reg * theta  # (F+1, C)
        W = np.einsum("nc,cd->ncd", P, np.eye(C)) - np.einsum("nc,nd->ncd", P, P)  # (N, C, C)
        hess = np.einsum("nf,ng,ncd->fcgd", Xb, Xb, W) / N  # (F+1, C, F+1, C)
        hess += np.einsum("fg,cd->fcgd", np.diag(reg[:, 0]), np.eye(C))
        step = np.linalg.pinv(hess.reshape((F + 1) * C, -1)) @ grad.reshape(-1)
        theta -= step.reshape(F + 1, C)
    return theta[:F], theta[F]


def synthetic_classes(n=400, f=10, num_classes=2, seed=0):
    """n points in f dimensions, each class's around its own centre."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    centres = rng.standard_normal((num_classes, f)) * 0.8
    X = rng.standard_normal((n, f)) + centres[y]
    return X.astype("float32"), y


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("l2", [1e-2, 1e-1])
def test_fit_softmax_reaches_the_optimum(xp, l2, num_classes):
    """fit_softmax's Adam with a cosine to zero ends at the optimum Newton's method finds: the same weights and
    bias differences (the biases are defined up to a constant), the same training accuracy."""
    X, y = synthetic_classes(num_classes=num_classes)
    w, b = probe.fit_softmax(X, y, num_classes, l2, steps=300)
    assert w.shape == (10, num_classes) and b.shape == (num_classes,)
    w_ref, b_ref = newton_softmax(X.astype("float64"), y, num_classes, l2)
    scale = np.abs(w_ref).max()
    np.testing.assert_allclose(w, w_ref, atol=0.02 * scale)
    np.testing.assert_allclose(b - b.mean(), b_ref - b_ref.mean(), atol=0.02 * scale)
    assert probe.accuracy(w, b, X, y) == pytest.approx(probe.accuracy(w_ref, b_ref, X, y), abs=1 / len(y))


def test_linear_probe_picks_l2_on_held_out_training_data(xp):
    """The L2 strength comes from the grid, chosen on a held-out part of the training split: the validation
    photos' labels cannot change it; the probe then scores well on these separable classes."""
    X, y = synthetic_classes(num_classes=3, seed=1)
    accuracy, l2 = probe.linear_probe(X[:300], y[:300], X[300:], y[300:], 3, seed=0)
    assert l2 in probe.L2_GRID
    assert accuracy > 0.8
    scrambled = np.random.default_rng(5).permutation(y[300:])
    other_accuracy, other_l2 = probe.linear_probe(X[:300], y[:300], X[300:], scrambled, 3, seed=0)
    assert other_l2 == l2 and other_accuracy < accuracy


def test_knn_by_hand(xp):
    X_train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], "float32")
    y_train = np.array([0, 0, 1, 1])
    X_val = np.array([[1, 0.05], [0.05, 1]], "float32")
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([0, 1]), 2, k=1) == 1.0
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([1, 0]), 2, k=1) == 0.0


def test_knn_votes_over_three_classes(xp):
    """A majority vote of the k most similar (cosine) training features over three classes, ties to the lower
    class, the same in batches of any size."""
    X_train = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0, 1], [0, 0.1, 0.9]], "float32")
    y_train = np.array([0, 0, 1, 1, 2, 2])
    X_val = np.array([[0.05, 0.05, 1], [0, 1, 0.05], [1, 0, 0.02], [0.0, 0.05, 1.0]], "float32")
    expected = np.array([2, 1, 0, 2])
    for batch_size in (1, 3, 512):
        assert probe.knn_accuracy(X_train, y_train, X_val, expected, 3, k=1, batch_size=batch_size) == 1.0
        assert probe.knn_accuracy(X_train, y_train, X_val, (expected + 1) % 3, 3, k=1, batch_size=batch_size) == 0.0
    # k = 2 with one training feature of class 2 and one of class 1: a tie, so class 1 (the lower)
    pair, pair_labels = np.array([[1, 0, 0], [0, 1, 0]], "float32"), np.array([2, 1])
    assert probe.knn_accuracy(pair, pair_labels, np.array([[1, 0, 0]], "float32"), np.array([2]), 3, k=1) == 1.0
    assert probe.knn_accuracy(pair, pair_labels, np.array([[1, 0, 0]], "float32"), np.array([1]), 3, k=2) == 1.0
    # k = 3 for a point by the class-2 pair, and one class-1 feature nearer than any class-0 one: class 2 wins 2:1
    assert probe.knn_accuracy(X_train, y_train, np.array([[0, 0.3, 1]], "float32"), np.array([2]), 3, k=3) == 1.0


def test_knn_with_fewer_training_features_than_k_lets_every_one_vote(xp):
    """k = 20 with 5 training features: all 5 vote (no error), so the majority class wins everywhere; the
    report's knn_k says how many voted."""
    X_train = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9]], "float32")
    y_train = np.array([0, 0, 0, 1, 1])
    X_val = np.array([[0, 1], [1, 0]], "float32")
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([1, 0]), 2, k=1) == 1.0
    assert probe.knn_accuracy(X_train, y_train, X_val, np.array([0, 0]), 2) == 1.0  # k = 20: every one votes
    X, y = synthetic_classes(n=12, f=4, seed=2)
    row = probe.probe_features("x", X[:10], y[:10], X[10:], y[10:], 2, seeds=range(1))
    assert row["knn_k"] == 10 and 0.0 <= row["knn"] <= 1.0


def test_partition_views_show_every_patch_once(xp):
    """masking.partition_noise: L / K views of K patches each, disjoint, together every patch once, the same for
    every image."""
    noises = partition_noise(3, TINY_MLP)
    L, K = TINY_MLP.num_patches, TINY_MLP.len_keep
    assert len(noises) == L // K == 4
    seen = np.zeros((3, L))
    for noise in noises:
        assert noise.shape == (3, L)
        _, _, ids_keep = masking_indices(backend.asarray(noise), K)  # (3, K)
        ids_keep = to_numpy(ids_keep)
        assert (np.sort(ids_keep, axis=1) == np.sort(ids_keep[:1], axis=1)).all()  # the same view for every image
        for n in range(3):
            seen[n, ids_keep[n]] += 1
    assert (seen == 1).all()


def test_features_have_the_documented_shapes(xp):
    """The ViT's features are the mean patch token and the cls token (N, D), the MLP's its latent (N, Z); float32
    host arrays, the same whatever the batch size."""
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    mean, std = [0.5] * 3, [0.25] * 3
    for model, shapes in ((MaskedAutoencoderViT(TINY_VIT), {"mean": (5, 16), "cls": (5, 16)}),
                          (MaskedAutoencoderMLP(TINY_MLP), {"latent": (5, 12)})):
        feats = probe.extract_features(model, images, mean, std, batch_size=2)
        assert {k: v.shape for k, v in feats.items()} == shapes
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in feats.values())
        whole = probe.extract_features(model, images, mean, std, batch_size=5)
        for name in feats:
            np.testing.assert_allclose(feats[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_mlp_features_see_every_patch(xp):
    """The MLP's encoder takes exactly K of the L patches; its features average the L / K partition views, so
    changing any one patch of an image changes that image's features (and no other image's)."""
    model = MaskedAutoencoderMLP(TINY_MLP, seed=0)
    imgs = backend.asarray(backend.host_rng(1).standard_normal((2, 3, 24, 24)), dtype="float32")
    base = to_numpy(model.forward_features(imgs)["latent"])
    side, p = 24 // 6, 6
    for patch in range(TINY_MLP.num_patches):
        row, col = divmod(patch, side)
        changed = to_numpy(imgs).copy()
        changed[0, :, row * p:(row + 1) * p, col * p:(col + 1) * p] += 1.0
        latent = to_numpy(model.forward_features(backend.asarray(changed))["latent"])
        assert np.abs(latent[0] - base[0]).max() > 1e-6, f"patch {patch} is not seen"
        np.testing.assert_array_equal(latent[1], base[1])


# ----------------------------------------------------------------------------------------------
# the command

def probe_report(capsys, tmp_path, *argv):
    """Run `python -m tinymae.probe argv --json <file>` in-process -> (report, printed table, stderr)."""
    path = tmp_path / "probe.json"
    assert probe.main([*argv, "--json", str(path)]) == 0
    captured = capsys.readouterr()
    return json.loads(path.read_text()), captured.out, captured.err


def test_probe_command_end_to_end(tmp_path, monkeypatch, capsys):
    """An MLP run probed on its own folder: the table and the JSON report, every encoder (pre-trained, random init,
    raw pixels) probed on its features, the MLP's through its partition views ("latent")."""
    photos = make_photos(tmp_path, monkeypatch)
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    capsys.readouterr()
    report, printed, _ = probe_report(capsys, tmp_path, "--checkpoint", str(out / "checkpoint.npz"), "--data",
                                      str(photos), "--seeds", "2", "--no-progress")
    assert "raw pixels" in printed and "random init" in printed and "pre-trained" in printed
    assert "32 training / 8 validation photos of 2 classes" in printed
    assert report["arch"] == "mlp" and report["classes"] == ["cat", "dog"] and report["seeds"] == 2
    assert report["data"]["n_train"] == 32 and report["data"]["n_val"] == 8
    assert [(r["encoder"], r["features"], r["dim"]) for r in report["results"]] == [
        ("pre-trained", "latent", 16), ("random init", "latent", 16), ("raw pixels", "pixels", 48 * 48 * 3)]
    for row in report["results"]:
        assert 0.0 <= row["linear_probe_mean"] <= 1.0 and 0.0 <= row["knn"] <= 1.0 and row["knn_k"] == 20
        assert len(row["linear_probe_runs"]) == 2 and len(row["l2_chosen"]) == 2
        assert set(row["l2_chosen"]) <= set(probe.L2_GRID)
        assert row["linear_probe_mean"] == pytest.approx(np.mean(row["linear_probe_runs"]))


def test_probing_the_runs_own_folder_uses_its_validation_split(tmp_path, monkeypatch, capsys):
    """Without --data the probe takes the run's own photos and split from the checkpoint: its validation photos
    are the run's (n_val is the record's), and the photos' fingerprint is the pre-training's."""
    photos = make_photos(tmp_path, monkeypatch, per_class=15)
    out = tmp_path / "run"
    train_tiny(out, photos, "vit", "--epochs", "1", "--val-fraction", "0.4")
    header, _, _ = read_checkpoint(out / "checkpoint.npz", "pretrain")
    capsys.readouterr()
    report, _, _ = probe_report(capsys, tmp_path, "--checkpoint", str(out / "checkpoint.npz"), "--seeds", "1",
                                "--no-baselines", "--no-progress")
    assert report["data"]["n_val"] == len(header["data"]["val"]) == 12
    assert report["data"]["n_train"] == 30 - 12
    assert report["data"]["fingerprint"] == report["pretraining_fingerprint"] == header["data"]["fingerprint"]
    assert [(r["encoder"], r["features"], r["dim"]) for r in report["results"]] == [
        ("pre-trained", "mean", 8), ("pre-trained", "cls", 8)]


def test_a_three_class_folder_gives_three_class_results(tmp_path, monkeypatch, capsys):
    """Another folder, of three classes, probed with a two-class run's encoder: split anew, three-class results,
    and the report records both fingerprints (the probed photos' and the pre-training's). Progress bars are drawn
    while features are extracted and probes fitted."""
    photos = make_photos(tmp_path, monkeypatch)
    out = tmp_path / "run"
    train_tiny(out, photos, "vit", "--epochs", "1")
    three = make_photos(tmp_path, monkeypatch, classes=("a", "b", "c"), name="three", seed=1)
    header, _, _ = read_checkpoint(out / "checkpoint.npz", "pretrain")
    capsys.readouterr()
    report, printed, err = probe_report(capsys, tmp_path, "--checkpoint", str(out / "checkpoint.npz"), "--data",
                                        str(three), "--seeds", "1", "--no-baselines")
    assert report["classes"] == ["a", "b", "c"] and "of 3 classes" in printed
    assert report["data"]["n_train"] == 48 and report["data"]["n_val"] == 12  # 20% of each class
    found = find_photos(three)
    assert report["data"]["fingerprint"] == fingerprint(found.paths, found.labels, [file_hash(p) for p in found.paths])
    assert report["pretraining_fingerprint"] == header["data"]["fingerprint"] != report["data"]["fingerprint"]
    assert [(r["encoder"], r["features"]) for r in report["results"]] == [("pre-trained", "mean"),
                                                                           ("pre-trained", "cls")]
    for row in report["results"]:
        assert 0.0 <= row["linear_probe_mean"] <= 1.0 and 0.0 <= row["knn"] <= 1.0
    assert "pre-trained, train" in err and "probing" in err  # the progress bars


def test_another_split_never_validates_on_a_photo_the_encoder_trained_on(tmp_path, monkeypatch, capsys):
    """A new split of the run's own photos (--per-class forces one) with --val-fraction 0.5 would validate on 12 of
    the run's training photos: they are moved to the probe's training part, so validation is the run's 8 unseen
    photos only."""
    photos = make_photos(tmp_path, monkeypatch)
    out = tmp_path / "run"
    train_tiny(out, photos, "mlp", "--epochs", "1")
    header, _, _ = read_checkpoint(out / "checkpoint.npz", "pretrain")
    record = header["data"]
    made = []
    real = data.new_photos  # what data.encoder_photos calls for a new split
    monkeypatch.setattr(data, "new_photos", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    capsys.readouterr()
    report, _, _ = probe_report(capsys, tmp_path, "--checkpoint", str(out / "checkpoint.npz"), "--data", str(photos),
                                "--per-class", "20", "--val-fraction", "0.5", "--seeds", "1", "--no-baselines",
                                "--no-progress")
    assert len(made) == 1
    split = made[0].record
    assert split["moved_to_training"] == 12
    assert report["data"]["n_val"] == 8 and report["data"]["n_train"] == 32
    trained_on = set(record["hashes"]) - {record["hashes"][i] for i in record["val"]}
    assert not trained_on & {split["hashes"][i] for i in split["val"]}
    assert split["mean"] == record["mean"] and split["std"] == record["std"]  # the run's normalisation


def test_the_probe_needs_two_classes(tmp_path, monkeypatch, capsys):
    """A run pre-trained on a flat folder (no classes) cannot be probed on its photos: one line, exit status 1."""
    flat = make_photos(tmp_path, monkeypatch, classes=None, name="flat")
    out = tmp_path / "run"
    train_tiny(out, flat, "mlp", "--epochs", "1")
    capsys.readouterr()
    assert probe.main(["--checkpoint", str(out / "checkpoint.npz"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "at least two classes" in err and len(err.splitlines()) == 1


def test_probe_command_bad_checkpoint(tmp_path, capsys):
    """A file that is not a checkpoint: one line "error: ..." on stderr, exit status 1."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    assert probe.main(["--checkpoint", str(bad), "--data", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not an .npz archive" in err and len(err.splitlines()) == 1


def test_probe_command_refuses_to_overwrite_its_json_before_any_work(tmp_path, capsys):
    existing = tmp_path / "probe.json"
    existing.write_text("keep me")
    assert probe.main(["--checkpoint", str(tmp_path / "missing.npz"), "--json", str(existing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --json") and "already exists" in err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("argv", [[], ["--checkpoint"], ["--checkpoint", "x.npz", "--no-such-flag"],
                                  ["--checkpoint", "x.npz", "--seeds", "two"]],
                         ids=["no-checkpoint", "no-value", "unknown-flag", "not-a-number"])
def test_probe_command_usage_errors_exit_2(argv, capsys):
    """A command line argparse refuses: its usage message and exit status 2."""
    with pytest.raises(SystemExit) as exit_info:
        probe.main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
