"""The data-parallel step (tinymae/parallel.py) computes the reference step's numbers.

The reference is the plain step: model.forward, model.backward(1.0, cache), optimizer.step. DataParallel
splits the batch into shards on worker threads; its loss and gradients must equal the reference's up
to float32 rounding (and to float64 rounding in float64), be the same bit for bit from run to run, and
its AdamW step must be bit-identical to AdamW.step.
"""
import json

import numpy as np
import pytest

from conftest import tiny_run_args, train_tiny
from tinymae import backend, parallel, pretrain
from tinymae.backend import to_numpy
from tinymae.masking import masking_noise
from tinymae.models import build_model
from tinymae.optim import AdamW

SMALL = {"vit": dict(img_size=24, patch_size=6, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16,
                     decoder_depth=1, decoder_num_heads=2),
         "mlp": dict(img_size=24, patch_size=6, embed_dim=8, encoder_dims=(32, 16), decoder_dims=(32,))}


def batch(n, dtype="float32", seed=0):
    rng = backend.host_rng(seed)
    imgs = backend.asarray(rng.standard_normal((n, 3, 24, 24)), dtype=dtype)
    return imgs, masking_noise(rng, n, 16, dtype=dtype)


def reference(model, imgs, noise):
    loss, _, _, cache = model.forward(imgs, noise)
    return loss, model.backward(1.0, cache)


def max_rel_diff(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("arch", ["vit", "mlp"])
@pytest.mark.parametrize("n", [40, 37], ids=["even-shards", "uneven-shards"])
def test_sharded_gradients_equal_the_plain_step(xp, arch, n):
    model = build_model(arch, SMALL[arch], seed=0)
    imgs, noise = batch(n)
    loss, grads = reference(model, imgs, noise)
    runner = parallel.DataParallel(model, threads=2, shard_images=8)
    try:
        p_loss, p_grads = runner.loss_and_grads(imgs, noise)
    finally:
        runner.close()
    assert float(p_loss) == pytest.approx(float(loss), rel=1e-6)
    assert list(p_grads) == list(grads)
    worst = max((max_rel_diff(p_grads[k], grads[k]), k) for k in grads)
    assert worst[0] < 1e-5, f"{worst[1]}: {worst[0]:.1e}"


def test_sharded_gradients_are_exact_in_float64(xp):
    """In float64 the shard sum equals the whole-batch gradient to rounding: the weighting is exact."""
    model = build_model("vit", SMALL["vit"], seed=0)
    for name, value in model.params.items():
        model.params[name] = value.astype("float64")
    model.pos_embed = model.pos_embed.astype("float64")
    model.decoder_pos_embed = model.decoder_pos_embed.astype("float64")
    imgs, noise = batch(20, dtype="float64")
    loss, grads = reference(model, imgs, noise)
    runner = parallel.DataParallel(model, threads=2, shard_images=3)
    try:
        p_loss, p_grads = runner.loss_and_grads(imgs, noise)
    finally:
        runner.close()
    assert float(p_loss) == pytest.approx(float(loss), rel=1e-13)
    for name in grads:
        assert max_rel_diff(p_grads[name], grads[name]) < 1e-11, name


def test_sharded_step_is_the_same_bit_for_bit_every_time(xp):
    model = build_model("vit", SMALL["vit"], seed=0)
    imgs, noise = batch(40)
    runner = parallel.DataParallel(model, threads=2, shard_images=4)
    try:
        runs = [runner.loss_and_grads(imgs, noise) for _ in range(3)]
    finally:
        runner.close()
    for loss, grads in runs[1:]:
        assert float(loss) == float(runs[0][0])
        for name in grads:
            np.testing.assert_array_equal(to_numpy(grads[name]), to_numpy(runs[0][1][name]), err_msg=name)


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_parallel_adamw_step_is_bit_identical_to_adamw_step(xp, arch, monkeypatch):
    monkeypatch.setattr("tinymae.optim.CHUNK", 1000)  # many pieces, spread over the workers
    runs = []
    for threads in (1, 2):
        model = build_model(arch, SMALL[arch], seed=0)
        imgs, noise = batch(8)
        optimizer = AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
        runner = parallel.DataParallel(model, threads=threads)
        try:
            for _ in range(3):
                _, grads = reference(model, imgs, noise)
                runner.optimizer_step(optimizer, grads)
        finally:
            runner.close()
        runs.append({name: to_numpy(value) for name, value in model.params.items()})
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[0][name], err_msg=name)


def test_one_thread_is_the_plain_step():
    runner = parallel.DataParallel(build_model("vit", SMALL["vit"]), threads=1)
    assert runner.pool is None and runner.shard_images is None


def test_a_sharded_run_resumes_bit_identical(photos, tmp_path, monkeypatch):
    """The training loop on shards of 2 images (4 shards per batch of 8): an interrupted and resumed run
    ends where an uninterrupted one does, bit for bit."""
    monkeypatch.setitem(parallel.SHARD_IMAGES, "vit", 2)
    straight = tmp_path / "straight"
    train_tiny(straight, photos, "vit", "--threads", "2")
    interrupted = tmp_path / "interrupted"
    real, calls = pretrain.random_crop_flip, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # epoch 2, step 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "random_crop_flip", crash)
    assert pretrain.main(tiny_run_args(interrupted, photos, "vit", "--threads", "2")) == 130
    monkeypatch.setattr(pretrain, "random_crop_flip", real)
    pretrain.pretrain(*pretrain.parse_args(["--data", str(photos), "--out", str(interrupted), "--resume",
                                            "--no-progress"]))
    a, b = np.load(straight / "checkpoint.npz"), np.load(interrupted / "checkpoint.npz")
    for key in a.files:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (straight, interrupted)]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]
