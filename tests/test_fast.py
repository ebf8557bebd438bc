"""The fast path (tinymae/fast/) computes what the plain reference computes, and one value chooses it.

  * fast.training_step: "reference" is engine.Step and model/optim.py's AdamW, "fast" is cpu.DataParallel and
    optim.FlatAdamW on NumPy (with TINYMAE_FAST_GPU on CuPy: cuda.BLOCK in the model, the fused AdamW, the photos
    resident); the choice is a value, nothing global changes, and a run with either gives the same losses;
  * cpu.DataParallel: the batch in shards on worker threads; its loss and gradients equal the plain step's
    (model.forward, model.backward(1.0, cache)) up to float32 rounding (float64 rounding in float64), the
    same bit for bit from run to run, and an interrupted sharded run resumes bit-identical;
  * optim.FlatAdamW: model/optim.py's AdamW over one flat buffer, equal to it, bit-identical in pieces
    of any size and on any number of workers, with the same state_dict;
  * cpu.keep_freed_memory: applies on Linux/glibc, refuses nonsense, changes no result;
  * the training step stays float32 from end to end;
  * cuda.py's formulas (the fused block, LayerNorm, the one-kernel AdamW, the batches cut on the device) equal
    the reference on NumPy, and a run with resident photos is the host-side run.
"""
import inspect
import json
import pathlib
import re
import sys
from functools import partial

import numpy as np
import pytest

from tinymae import backend, data, engine, fast
from tinymae.backend import to_numpy
from tinymae.fast import cpu, cuda
from tinymae.fast import optim as fast_optim
from tinymae.fast.optim import FlatAdamW
from tinymae.model import build_model, layers, transformer
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import masking_noise
from tinymae.model.optim import AdamW
from tinymae.pretrain import Pretraining

from conftest import random_noise, tiny_run_args, train_tiny

SMALL = {"vit": dict(img_size=24, patch_size=6, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16,
                     decoder_depth=1, decoder_num_heads=2),
         "mlp": dict(img_size=24, patch_size=6, embed_dim=8, encoder_dims=(32, 16), decoder_dims=(32,))}


def batch(n, dtype="float32", seed=0):
    rng = backend.host_rng(seed)
    imgs = backend.asarray(rng.standard_normal((n, 3, 24, 24)), dtype=dtype)
    return imgs, random_noise(rng, n, 16, dtype=dtype)


def reference(model, imgs, noise):
    loss, _, _, cache = model.forward(imgs, noise)
    return loss, model.backward(1.0, cache)


def max_rel_diff(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def host(arrays):
    return {name: to_numpy(value).copy() for name, value in arrays.items()}


# ----------------------------------------------------------------------------------------------
# the one place that chooses: fast.training_step

@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_a_reference_run_and_a_fast_run_give_the_same_losses_to_float32_rounding(photos, tmp_path, monkeypatch, arch):
    """The same tiny pre-training with --kernels reference (engine.Step, model/optim.py's AdamW) and with --kernels
    fast on 2 threads (cpu.DataParallel, FlatAdamW): every epoch's training and validation loss agree to float32
    rounding, and the final weights closely."""
    real, paths = fast.training_step, []

    def spy(model, kernels="fast", threads=0):
        paths.append((kernels, real(model, kernels, threads)))
        return paths[-1][1]

    monkeypatch.setattr(fast, "training_step", spy)
    runs = {kernels: train_tiny(tmp_path / kernels, photos, arch, "--kernels", kernels, "--threads", "2")
            for kernels in ("reference", "fast")}
    (ref_kernels, ref_path), (fast_kernels, fast_path) = paths
    assert (ref_kernels, fast_kernels) == ("reference", "fast")  # the run hands its setting to training_step
    assert type(ref_path.step) is engine.Step and ref_path.AdamW is AdamW and not ref_path.resident
    assert isinstance(fast_path.step, cpu.DataParallel) and fast_path.step.threads == 2
    assert fast_path.AdamW is FlatAdamW and not fast_path.resident

    histories = {kernels: run["history"] for kernels, run in runs.items()}
    assert len(histories["reference"]) == len(histories["fast"]) == 3
    for ref, fst in zip(histories["reference"], histories["fast"]):
        for key in ("train_loss", "val_loss", "val_masked_mse"):
            assert fst[key] == pytest.approx(ref[key], rel=1e-4), (ref["epoch"], key)
    assert runs["fast"]["final_validation"]["masked_mse"] == pytest.approx(
        runs["reference"]["final_validation"]["masked_mse"], rel=1e-4)
    with np.load(tmp_path / "reference" / "checkpoint.npz") as a, np.load(tmp_path / "fast" / "checkpoint.npz") as b:
        names = [key for key in a.files if key.startswith("param/")]
        assert names and names == [key for key in b.files if key.startswith("param/")]
        for key in names:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-3, err_msg=key)


def test_the_reference_choice_is_the_plain_step_and_adamw():
    """kernels="reference" is engine.Step and model/optim.py's AdamW on the host-side batches, for any thread count."""
    for threads in (0, 1, 2):
        path = fast.training_step(build_model("vit", SMALL["vit"]), "reference", threads)
        assert type(path.step) is engine.Step and path.AdamW is AdamW and path.resident is False
        assert path.step.describe() == "the reference step"


def test_the_fast_choice_on_the_cpu_is_data_parallel():
    """kernels="fast" on NumPy: cpu.DataParallel over the threads asked for, FlatAdamW, host-side batches."""
    path = fast.training_step(build_model("vit", SMALL["vit"]), "fast", threads=2)
    try:
        assert isinstance(path.step, cpu.DataParallel) and path.step.describe() == "2 worker threads"
        assert path.AdamW is FlatAdamW and path.resident is False
    finally:
        path.step.close()


def test_the_choice_is_a_value_and_changes_no_other_model():
    """Building a reference path for one model and a fast one for another (and stepping both) leaves every model's
    block the reference's (transformer.BLOCK, on NumPy) and a third model computing bit for bit what it did:
    nothing global is swapped."""
    bystander = build_model("vit", SMALL["vit"], seed=1)
    imgs, noise = batch(4)
    before_loss, before_grads = reference(bystander, imgs, noise)
    models = {kernels: build_model("vit", SMALL["vit"], seed=0) for kernels in fast.KERNELS}
    for kernels, model in models.items():
        path = fast.training_step(model, kernels, threads=2)
        try:
            optimizer = path.AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
            _, grads = path.step.loss_and_grads(imgs, noise)
            path.step.optimizer_step(optimizer, grads)
        finally:
            path.step.close()
        assert model.block is transformer.BLOCK, kernels
    assert bystander.block is transformer.BLOCK
    assert inspect.signature(transformer.blocks_forward).parameters["block"].default is transformer.BLOCK
    assert layers.layernorm_forward.__module__ == "tinymae.model.layers"
    after_loss, after_grads = reference(bystander, imgs, noise)
    assert float(after_loss) == float(before_loss)
    for name in before_grads:
        np.testing.assert_array_equal(to_numpy(after_grads[name]), to_numpy(before_grads[name]), err_msg=name)


def test_the_fast_choice_on_a_gpu_hands_the_model_the_fused_block(monkeypatch):
    """On CuPy with TINYMAE_FAST_GPU=1 (cuda.ENABLED) the fast choice gives the model cuda.BLOCK, a fused FlatAdamW and
    resident photos, with the plain engine.Step (the GPU needs no shards); the reference choice gives none of them.
    (backend.name says "cupy" while the strict stand-in computes: the formulas run as NumPy.)"""
    monkeypatch.setattr(backend, "name", "cupy")
    monkeypatch.setattr(cuda, "ENABLED", True)
    model = build_model("vit", SMALL["vit"])
    path = fast.training_step(model, "fast")
    assert model.block is cuda.BLOCK and type(path.step) is engine.Step and path.resident is True
    optimizer = path.AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    assert isinstance(optimizer, FlatAdamW) and optimizer.fused is True

    plain = build_model("vit", SMALL["vit"])
    path = fast.training_step(plain, "reference")
    assert plain.block is transformer.BLOCK and type(path.step) is engine.Step and path.resident is False
    assert path.AdamW is AdamW

    monkeypatch.setattr(cuda, "ENABLED", False)  # CuPy without TINYMAE_FAST_GPU: the reference, nothing fused
    unfused = build_model("vit", SMALL["vit"])
    path = fast.training_step(unfused, "fast")
    assert unfused.block is transformer.BLOCK and type(path.step) is engine.Step and path.resident is False
    assert path.AdamW is AdamW


def test_the_gpu_fast_path_takes_the_reference_step(monkeypatch):
    """A step of a ViT through the GPU's fast path (cuda.BLOCK, the fused FlatAdamW), its formulas run on the strict
    stand-in, gives the reference step's loss and updated weights to float32 rounding."""
    imgs, noise = batch(6)
    results = []
    for kernels in ("reference", "fast"):
        with monkeypatch.context() as m:
            m.setattr(backend, "name", "cupy")
            m.setattr(cuda, "ENABLED", True)
            model = build_model("vit", {**SMALL["vit"], "norm_pix_loss": True}, seed=0)
            path = fast.training_step(model, kernels)
        optimizer = path.AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
        loss, grads = path.step.loss_and_grads(imgs, noise)
        path.step.optimizer_step(optimizer, grads)
        results.append((float(loss), host(grads), host(model.params)))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    worst = max((max_rel_diff(results[1][1][k], results[0][1][k]), k) for k in results[0][1])
    assert worst[0] < 1e-5, f"{worst[1]}: {worst[0]:.1e}"
    for name in results[0][2]:
        np.testing.assert_allclose(results[1][2][name], results[0][2][name], rtol=1e-5, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------------------------
# cpu.DataParallel against the plain step

@pytest.mark.parametrize("arch", ["vit", "mlp"])
@pytest.mark.parametrize("n", [40, 37], ids=["even-shards", "uneven-shards"])
def test_sharded_gradients_equal_the_plain_step(xp, arch, n):
    """The loss and gradients of a batch cut into shards of 8 on 2 threads are the whole batch's (float32 rounding)."""
    model = build_model(arch, SMALL[arch], seed=0)
    imgs, noise = batch(n)
    loss, grads = reference(model, imgs, noise)
    runner = cpu.DataParallel(model, threads=2, shard_images=8)
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
    runner = cpu.DataParallel(model, threads=2, shard_images=3)
    try:
        p_loss, p_grads = runner.loss_and_grads(imgs, noise)
    finally:
        runner.close()
    assert float(p_loss) == pytest.approx(float(loss), rel=1e-13)
    for name in grads:
        assert p_grads[name].dtype == grads[name].dtype == np.float64, name
        assert max_rel_diff(p_grads[name], grads[name]) < 1e-11, name


def test_sharded_step_is_the_same_bit_for_bit_every_time(xp):
    model = build_model("vit", SMALL["vit"], seed=0)
    imgs, noise = batch(40)
    runner = cpu.DataParallel(model, threads=2, shard_images=4)
    try:
        runs = [runner.loss_and_grads(imgs, noise) for _ in range(3)]
    finally:
        runner.close()
    for loss, grads in runs[1:]:
        assert float(loss) == float(runs[0][0])
        for name in grads:
            np.testing.assert_array_equal(to_numpy(grads[name]), to_numpy(runs[0][1][name]), err_msg=name)


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_parallel_adamw_step_is_bit_identical_to_flat_adamw_step(xp, arch, monkeypatch):
    """FlatAdamW's pieces updated on 2 workers (DataParallel.optimizer_step) end bit-identical to one thread's."""
    monkeypatch.setattr(fast_optim, "CHUNK", 1000)  # many pieces, spread over the workers
    runs = []
    for threads in (1, 2):
        model = build_model(arch, SMALL[arch], seed=0)
        imgs, noise = batch(8)
        optimizer = FlatAdamW(model.params, lr=1e-3, no_decay=model.no_decay)
        runner = cpu.DataParallel(model, threads=threads)
        try:
            for _ in range(3):
                _, grads = reference(model, imgs, noise)
                runner.optimizer_step(optimizer, grads)
        finally:
            runner.close()
        runs.append(host(model.params))
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[0][name], err_msg=name)


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_the_shard_size_is_the_models_unless_given(arch):
    """DataParallel cuts shards of model.shard_images images by default, of shard_images when it is given."""
    model = build_model(arch, SMALL[arch])
    for shard_images, expected in ((None, type(model).shard_images), (5, 5)):
        runner = cpu.DataParallel(model, threads=2, shard_images=shard_images)
        try:
            assert runner.shard_images == expected
        finally:
            runner.close()


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_the_sharded_step_is_the_same_bit_for_bit_on_any_number_of_threads(arch):
    """The shards and the order of their sums do not depend on the threads: 1, 2 or 3 threads give the same loss and
    gradients, bit for bit (so a sweep's jobs give the same numbers on any share of the cores)."""
    model = build_model(arch, SMALL[arch])
    imgs, noise = batch(37)
    results = []
    for threads in (1, 2, 3):
        runner = cpu.DataParallel(model, threads=threads, shard_images=8)
        assert (runner.pool is None) == (threads == 1)
        results.append(runner.loss_and_grads(imgs, noise))
        runner.close()
    for loss, grads in results[1:]:
        assert float(loss) == float(results[0][0])
        for name, g in grads.items():
            np.testing.assert_array_equal(to_numpy(g), to_numpy(results[0][1][name]), err_msg=name)


def test_map_keeps_the_order_on_many_workers():
    runner = cpu.DataParallel(build_model("vit", SMALL["vit"]), threads=2)
    try:
        assert runner.map(lambda x: x * x, range(9)) == [x * x for x in range(9)]
    finally:
        runner.close()


def test_a_sharded_run_resumes_bit_identical(photos, tmp_path, monkeypatch):
    """The training loop on shards of 2 images (4 shards per batch of 8): an interrupted and resumed run
    ends where an uninterrupted one does, bit for bit."""
    from tinymae import pretrain
    monkeypatch.setattr(MaskedAutoencoderViT, "shard_images", 2)
    straight = tmp_path / "straight"
    train_tiny(straight, photos, "vit", "--threads", "2")
    interrupted = tmp_path / "interrupted"
    real, calls = data.random_crop_flip, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # epoch 2, step 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "random_crop_flip", crash)
    assert pretrain.main(tiny_run_args(interrupted, photos, "vit", "--threads", "2")) == 130
    monkeypatch.setattr(data, "random_crop_flip", real)
    with np.load(interrupted / "checkpoint.npz") as kept:
        assert json.loads(str(kept["meta"]))["epoch"] == 1  # the interrupted run kept its first epoch only
    Pretraining.from_argv(["--data", str(photos), "--out", str(interrupted), "--resume", "--no-progress"]).run()
    with np.load(straight / "checkpoint.npz") as a, np.load(interrupted / "checkpoint.npz") as b:
        assert a.files == b.files
        for key in a.files:
            if key != "meta":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (straight, interrupted)]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]
    assert [h["val_loss"] for h in history[0]] == [h["val_loss"] for h in history[1]]


# ----------------------------------------------------------------------------------------------
# process settings and dtypes

def glibc():
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").gnu_get_libc_version
        return True
    except (OSError, AttributeError):
        return False


def test_keep_freed_memory_applies_on_linux_glibc_only():
    applied = cpu.keep_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux"):
        if not glibc():
            pytest.skip("not glibc")
        assert applied, "glibc's mallopt refused the settings"
    else:
        assert not applied
    assert cpu.keep_freed_memory() == applied  # calling it again is harmless


def test_keep_freed_memory_rejects_thresholds_that_are_not_a_c_int():
    """mallopt takes a C int: 0 or a negative threshold makes no sense, and 2**31 or more would be cut to 32 bits
    by ctypes (2**32 becomes 0: every block mmapped and trimmed, the opposite of the request). Refused, naming the
    argument, before glibc is asked."""
    try:
        for bad in (0, -1, 2 ** 31, 2 ** 32, 2 ** 33):
            with pytest.raises(ValueError, match="threshold_bytes"):
                cpu.keep_freed_memory(bad)
    finally:
        cpu.keep_freed_memory()  # whatever an accepted bad value set, the usual settings again


def one_step(arch, n=2, seed=0):
    """A training step of the default-size model -> loss, pred, mask, cache, grads, optimizer."""
    model = build_model(arch, {}, seed=seed)
    rng = backend.host_rng(1)
    cfg = model.config
    imgs = backend.asarray(rng.standard_normal((n, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    noise = backend.asarray(masking_noise(rng, n, cfg))
    loss, pred, mask, cache = model.forward(imgs, noise)
    grads = model.backward(1.0, cache)
    opt = FlatAdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    opt.step(grads)
    return model, loss, pred, mask, cache, grads, opt


def arrays_in(obj, path="step"):
    """Every backend array inside nested tuples, lists and dicts, with where it was found."""
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            yield from arrays_in(item, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from arrays_in(item, f"{path}[{key!r}]")


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_training_step_stays_float32(xp, arch):
    """Every float array of a step (the loss, the caches, the gradients, the parameters, FlatAdamW's buffers) is
    float32: nothing is upcast on the way."""
    model, loss, pred, mask, cache, grads, opt = one_step(arch)
    everything = {"loss": loss, "pred": pred, "mask": mask, "cache": cache, "grads": grads,
                  "params": model.params, "adamw.m": opt.m, "adamw.v": opt.v, "adamw.decay": opt.decay,
                  "adamw.scale": opt.scale, "adamw.flat": opt.flat}
    found = list(arrays_in(everything))
    assert len(found) > 20
    upcast = [(where, str(a.dtype)) for where, a in found if a.dtype.kind == "f" and a.dtype != xp.float32]
    assert not upcast, f"float arrays that are not float32: {upcast[:10]}"


def test_the_sharded_step_stays_float32(xp):
    """DataParallel's summed loss and gradients stay float32 too."""
    model = build_model("vit", SMALL["vit"], seed=0)
    runner = cpu.DataParallel(model, threads=2, shard_images=3)
    try:
        loss, grads = runner.loss_and_grads(*batch(10))
    finally:
        runner.close()
    upcast = [(where, str(a.dtype)) for where, a in arrays_in({"loss": loss, "grads": grads}) if a.dtype != xp.float32]
    assert not upcast, f"float arrays that are not float32: {upcast[:10]}"


def test_keep_freed_memory_changes_no_result():
    before = one_step("vit")
    cpu.keep_freed_memory()
    after = one_step("vit")
    assert float(before[1]) == float(after[1])
    for name in before[5]:
        np.testing.assert_array_equal(to_numpy(before[5][name]), to_numpy(after[5][name]), err_msg=name)


# ----------------------------------------------------------------------------------------------
# FlatAdamW against the reference AdamW

def adamw_runs(optimizer_class, steps=3, lr_scale=None):
    """Three AdamW steps on a few parameters -> their values and the state_dict, on the host."""
    shapes = {"w": (13, 11), "b": (11,), "token": (1, 1, 5)}
    generator = np.random.default_rng(0)
    params = {k: backend.asarray(generator.standard_normal(s), dtype="float32") for k, s in shapes.items()}
    grads = [{k: backend.asarray(generator.standard_normal(s), dtype="float32") for k, s in shapes.items()}
             for _ in range(steps)]
    opt = optimizer_class(params, lr=0.01, no_decay=("b",), lr_scale=lr_scale)
    for g in grads:
        opt.step(g)
    return host(params), host(opt.state_dict())


@pytest.mark.parametrize("fused", [False, True], ids=["pieces", "fused"])
@pytest.mark.parametrize("lr_scale", [None, {"w": 0.5, "token": 0.25}], ids=["plain", "layer-decay"])
def test_flat_adamw_equals_the_reference_adamw(xp, lr_scale, fused):
    """FlatAdamW, in pieces (the CPU) or in one kernel (fused=True, cuda.adamw_flat), takes the reference AdamW's steps
    and has its state_dict."""
    ref_params, ref_state = adamw_runs(AdamW, lr_scale=lr_scale)
    flat_params, flat_state = adamw_runs(partial(FlatAdamW, fused=fused), lr_scale=lr_scale)
    assert list(flat_state) == list(ref_state)  # the same checkpoint keys: t, m.<name>, v.<name>
    for k in ref_params:
        assert np.isfinite(flat_params[k]).all(), k
        np.testing.assert_allclose(flat_params[k], ref_params[k], rtol=2e-6, atol=1e-7, err_msg=k)
    for k in ref_state:
        np.testing.assert_allclose(flat_state[k], ref_state[k], rtol=2e-6, atol=1e-7, err_msg=k)


def test_flat_adamw_puts_the_parameters_in_one_buffer(xp):
    model = build_model("vit", SMALL["vit"], seed=0)
    before = host(model.params)
    opt = FlatAdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    assert opt.flat.size == sum(v.size for v in before.values())
    for name, value in model.params.items():
        np.testing.assert_array_equal(to_numpy(value), before[name], err_msg=name)  # the same values ...
        assert value.base is opt.flat or value.base is opt.flat.base  # ... now views into the buffer


def test_flat_adamw_in_pieces_is_bit_identical_to_one_piece(xp, monkeypatch):
    results = []
    for chunk in (7, 10 ** 9):
        monkeypatch.setattr(fast_optim, "CHUNK", chunk)
        results.append(adamw_runs(FlatAdamW)[0])
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_flat_adamw_state_loads_into_the_reference_and_back(xp):
    """Checkpoints keep their format: a FlatAdamW state continues in the reference AdamW and vice versa."""
    params, state = adamw_runs(FlatAdamW)
    ref = AdamW({k: backend.asarray(v) for k, v in params.items()}, lr=0.01)
    ref.load_state_dict({k: backend.asarray(v) for k, v in state.items()})
    flat = FlatAdamW({k: backend.asarray(v) for k, v in params.items()}, lr=0.01)
    flat.load_state_dict({k: backend.asarray(v) for k, v in ref.state_dict().items()})
    for k, v in flat.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), state[k], err_msg=k)


def test_flat_adamw_refuses_a_gradient_of_another_shape():
    opt = FlatAdamW({"w": backend.asarray(np.zeros((3, 4)), dtype="float32")}, lr=0.01)
    with pytest.raises(ValueError, match="'w'"):
        opt.step({"w": backend.asarray(np.zeros((4, 3)), dtype="float32")})


# ----------------------------------------------------------------------------------------------
# the reference is plain, and cuda.py's functions stand in for its functions

REFERENCE_FILES = sorted(p.name for p in (pathlib.Path(__file__).parent.parent / "tinymae" / "model").glob("*.py"))


@pytest.mark.parametrize("filename", REFERENCE_FILES)
def test_the_reference_is_plain(filename):
    """The model's files hold the formulas: no branch on the backend, no chunking, no out= arguments, no
    allocator settings, nothing of tinymae/fast/ (the fast path hands a model its block, never the reverse)."""
    source = (pathlib.Path(__file__).parent.parent / "tinymae" / "model" / filename).read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())  # comments may talk about them
    for pattern, what in ((r"backend\.name|\bcupy\b", "a branch on the backend"), (r"\bCHUNK\b|chunk", "chunking"),
                          (r"\bout=", "an out= argument"), (r"mallopt|keep_freed_memory", "allocator settings"),
                          (r"from \.\.fast|tinymae\.fast|import fast", "an import of the fast path")):
        assert not re.search(pattern, code), f"{filename} contains {what}"


@pytest.mark.parametrize("name, reference_function", [
    ("block_forward", transformer.block_forward), ("block_backward", transformer.block_backward),
    ("layernorm_forward", layers.layernorm_forward), ("layernorm_backward", layers.layernorm_backward)])
def test_every_cuda_function_has_its_references_signature(name, reference_function):
    assert inspect.signature(getattr(cuda, name)) == inspect.signature(reference_function)
    assert cuda.BLOCK == transformer.Block(cuda.block_forward, cuda.block_backward)
    assert isinstance(cuda.BLOCK, transformer.Block) and cuda.BLOCK != transformer.BLOCK


def test_the_fused_block_runs_the_models_as_the_reference_does(xp):
    """A whole training step of a ViT MAE, and of a ViT classifier with drop path, with cuda.BLOCK as the model's
    block (its formulas on NumPy here) gives the reference block's loss and gradients (float32 rounding)."""
    from tinymae.model.models_vit import ViTClassifier
    mae = build_model("vit", {**SMALL["vit"], "norm_pix_loss": True}, seed=0)
    imgs, noise = batch(6)
    results = []
    for block in (transformer.BLOCK, cuda.BLOCK):
        mae.block = block
        results.append(reference(mae, imgs, noise))
    assert float(results[1][0]) == pytest.approx(float(results[0][0]), rel=1e-6)
    worst = max((max_rel_diff(results[1][1][k], results[0][1][k]), k) for k in results[0][1])
    assert worst[0] < 1e-5, f"mae {worst[1]}: {worst[0]:.1e}"

    labels = backend.asarray(np.array([0, 1, 2, 0, 1, 2]))
    keep = backend.asarray(np.array([[[1.25, 0.0], [1.25, 1.25]]] * 3 + [[[0.0, 1.25], [1.25, 0.0]]] * 3,
                                    dtype="float32"))  # (6, depth 2, 2) drop-path factors
    results = []
    for block in (transformer.BLOCK, cuda.BLOCK):
        mae.block = block
        classifier = ViTClassifier(mae, 3, 0.1)
        assert classifier.block is block  # the classifier computes with its MAE's block
        outputs = classifier.forward(imgs, labels, keep)
        results.append((outputs[0], classifier.backward(1.0, outputs[-1])))
    assert float(results[1][0]) == pytest.approx(float(results[0][0]), rel=1e-6)
    worst = max((max_rel_diff(results[1][1][k], results[0][1][k]), k) for k in results[0][1])
    assert worst[0] < 1e-5, f"classifier {worst[1]}: {worst[0]:.1e}"


# ----------------------------------------------------------------------------------------------
# the CUDA kernels' formulas, checked on NumPy (cuda.fused does nothing there)

def test_cuda_formulas_equal_their_references(xp, rng):
    """cuda.layernorm_forward/backward are layers.py's, and cuda.block_forward/backward transformer.py's (with and
    without drop path), to float64 rounding; either block backward reads either block forward's cache."""
    def randn(*shape):
        return backend.asarray(rng.standard_normal(shape))  # float64

    def same(got, expected, what):
        assert len(got) == len(expected), what
        for i, (a, b) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-10, atol=1e-12, err_msg=f"{what} {i}")

    x, w, b, dout = randn(2, 5, 8) * 2 + 0.5, randn(8), randn(8), randn(2, 5, 8)
    out, cache = cuda.layernorm_forward(x, w, b)
    ref_out, ref_cache = layers.layernorm_forward(x, w, b)
    same([out, *cache], [ref_out, *ref_cache], "layernorm forward")
    same(cuda.layernorm_backward(dout, cache), layers.layernorm_backward(dout, ref_cache), "layernorm backward")

    params = {k: randn(*v.shape) * 0.5 for k, v in transformer.init_block_params(rng, 8, 2.0).items()}
    for keep in (None, backend.asarray(np.array([[1.25, 0.0], [0.0, 1.25]]))):
        x, dout = randn(2, 3, 8), randn(2, 3, 8)
        out, cache = cuda.block_forward(x, params, 2, keep)
        ref_out, ref_cache = transformer.block_forward(x, params, 2, keep)
        same([out], [ref_out], "block forward")
        assert type(cache) is type(ref_cache) and cache._fields == ref_cache._fields
        ref_dx, ref_grads = transformer.block_backward(dout, ref_cache)
        for backward_cache in (cache, ref_cache):  # either backward reads either forward's cache
            for backward in (cuda.block_backward, transformer.block_backward):
                dx, grads = backward(dout, backward_cache)
                assert set(grads) == set(ref_grads)
                same([dx, *(grads[k] for k in ref_grads)], [ref_dx, *ref_grads.values()], "block backward")


def test_the_cuda_adamw_is_the_flat_adamw_update(xp, rng):
    """cuda.adamw_flat writes adamw_update's parameters and moments into the same buffers. The second moment is
    drawn non-negative, as it always is, and the results must be finite (a NaN on both sides would pass unseen)."""
    p, g, m = (backend.asarray(rng.standard_normal(50)) for _ in range(3))
    v = backend.asarray(rng.random(50))  # v >= 0: a running mean of squares
    decay = backend.asarray(np.repeat([0.05, 0.0], 25))
    scale = backend.asarray(np.repeat([1.0, 0.5], 25))
    expected = [a.copy() for a in (p, g, m, v)]
    fast_optim.adamw_update(*expected, decay, scale, 0.01, 0.9, 0.95, 1e-8, 1.3)
    got = [a.copy() for a in (p, g, m, v)]
    buffers = list(got)
    cuda.adamw_flat(*got, decay, scale, 0.01, 0.9, 0.95, 1e-8, 1.3)
    assert all(a is b for a, b in zip(got, buffers))  # in place: the model reads the same buffers
    for i in (0, 2, 3):
        assert np.isfinite(to_numpy(got[i])).all(), i
        assert not np.array_equal(to_numpy(got[i]), to_numpy([p, g, m, v][i])), i  # it did update
        np.testing.assert_allclose(to_numpy(got[i]), to_numpy(expected[i]), rtol=1e-12, err_msg=str(i))


# ----------------------------------------------------------------------------------------------
# the photos resident on the device (cuda.DeviceImages)

def test_device_batches_are_the_host_batches(xp):
    """DeviceImages cuts from the same draws (cuda.draws) the very batches data.augmented_batches makes on the host."""
    images = np.random.default_rng(0).integers(0, 256, (12, 10, 10, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images)
    perm = np.random.default_rng(1).permutation(12)
    expected = list(data.augmented_batches(images, mean, std, perm, 4, 7, backend.host_rng(2)))
    device = cuda.DeviceImages(images, mean, std, 7)
    draws = list(cuda.draws(perm, 4, 10, 7, backend.host_rng(2)))
    got = [device.batch(*(backend.asarray(a) for a in d)) for d in draws]
    assert len(got) == len(expected) == 3
    for (idx, imgs), d, device_imgs in zip(expected, draws, got):
        np.testing.assert_array_equal(d[0], idx)
        assert device_imgs.dtype == xp.float32
        np.testing.assert_array_equal(to_numpy(device_imgs), imgs)  # the same numbers, bit for bit


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_a_run_with_resident_photos_is_the_host_side_run(xp, photos, tmp_path, monkeypatch, arch):
    """The training loop with the photos on the device (and each batch made there) ends bit-identical to the
    host-side loop: the same draws, the same images, the same steps."""
    host_run = train_tiny(tmp_path / "host", photos, arch, "--epochs", "2")
    real, resident_paths = fast.training_step, []

    def resident_step(*args, **kwargs):
        resident_paths.append(real(*args, **kwargs)._replace(resident=True))
        return resident_paths[-1]

    monkeypatch.setattr(fast, "training_step", resident_step)
    resident = train_tiny(tmp_path / "resident", photos, arch, "--epochs", "2")
    assert len(resident_paths) == 1  # run.py took the path through the module attribute
    assert [h["train_loss"] for h in resident["history"]] == [h["train_loss"] for h in host_run["history"]]
    assert [h["val_loss"] for h in resident["history"]] == [h["val_loss"] for h in host_run["history"]]
    assert resident["final_validation"]["masked_mse"] == host_run["final_validation"]["masked_mse"]
    with np.load(tmp_path / "host" / "checkpoint.npz") as a, np.load(tmp_path / "resident" / "checkpoint.npz") as b:
        for key in a.files:
            if key.startswith("param/"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
