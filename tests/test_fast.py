"""The fast path (tinymae/fast/) computes what the plain reference computes.

  * cpu.DataParallel: the batch in shards on worker threads; its loss and gradients equal the plain step's
    (model.forward, model.backward(1.0, cache)) up to float32 rounding (float64 rounding in float64), the
    same bit for bit from run to run, and an interrupted sharded run resumes bit-identical;
  * optim.FlatAdamW: model/optim.py's AdamW over one flat buffer, equal to it, bit-identical in pieces
    of any size and on any number of workers, with the same state_dict;
  * cpu.keep_freed_memory: applies on Linux/glibc, refuses nonsense, changes no result;
  * the training step stays float32 from end to end.
"""
import json
import sys

import numpy as np
import pytest

from tinymae import backend, data, fast, pretrain
from tinymae.backend import to_numpy
from tinymae.fast import cpu
from tinymae.fast import optim as fast_optim
from tinymae.fast.optim import FlatAdamW
from tinymae.model import build_model
from conftest import random_noise
from tinymae.model.optim import AdamW

from conftest import tiny_run_args, train_tiny

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


@pytest.mark.parametrize("arch", ["vit", "mlp"])
@pytest.mark.parametrize("n", [40, 37], ids=["even-shards", "uneven-shards"])
def test_sharded_gradients_equal_the_plain_step(xp, arch, n):
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
        runs.append({name: to_numpy(value) for name, value in model.params.items()})
    for name in runs[0]:
        np.testing.assert_array_equal(runs[1][name], runs[0][name], err_msg=name)


def test_one_thread_is_the_plain_step():
    runner = cpu.DataParallel(build_model("vit", SMALL["vit"]), threads=1)
    assert runner.pool is None and runner.shard_images is None


def test_a_sharded_run_resumes_bit_identical(photos, tmp_path, monkeypatch):
    """The training loop on shards of 2 images (4 shards per batch of 8): an interrupted and resumed run
    ends where an uninterrupted one does, bit for bit."""
    monkeypatch.setitem(cpu.SHARD_IMAGES, "vit", 2)
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
    pretrain.pretrain(*pretrain.parse_args(["--data", str(photos), "--out", str(interrupted), "--resume",
                                            "--no-progress"]))
    a, b = np.load(straight / "checkpoint.npz"), np.load(interrupted / "checkpoint.npz")
    for key in a.files:
        if key != "meta":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = [json.loads((d / "metrics.json").read_text())["history"] for d in (straight, interrupted)]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


# ----------------------------------------------------------------------------------------------
# process settings and dtypes

def test_keep_freed_memory_applies_on_linux_glibc_only():
    applied = cpu.keep_freed_memory()
    assert isinstance(applied, bool)
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL("libc.so.6").gnu_get_libc_version
        except (OSError, AttributeError):
            pytest.skip("not glibc")
        assert applied, "glibc's mallopt refused the settings"
    else:
        assert not applied
    assert cpu.keep_freed_memory() == applied  # calling it again is harmless


def test_keep_freed_memory_rejects_thresholds_that_are_not_a_c_int():
    for bad in (0, -1, 2 ** 31, 2 ** 33):
        with pytest.raises(ValueError, match="threshold_bytes"):
            cpu.keep_freed_memory(bad)


def one_step(arch, n=2, seed=0):
    """A training step of the default-size model -> loss, pred, mask, cache, grads, optimizer."""
    model = build_model(arch, {}, seed=seed)
    rng = backend.host_rng(1)
    cfg = model.config
    imgs = backend.asarray(rng.standard_normal((n, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    noise = random_noise(rng, n, cfg.num_patches)
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
    model, loss, pred, mask, cache, grads, opt = one_step(arch)
    everything = {"loss": loss, "pred": pred, "mask": mask, "cache": cache, "grads": grads,
                  "params": model.params, "adamw.m": opt.m, "adamw.v": opt.v, "adamw.decay": opt.decay,
                  "adamw.scale": opt.scale}
    found = list(arrays_in(everything))
    assert len(found) > 20
    upcast = [(where, str(a.dtype)) for where, a in found if a.dtype.kind == "f" and a.dtype != xp.float32]
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

def adamw_runs(optimizer_class, rng, steps=3, lr_scale=None):
    """Three AdamW steps on a few parameters -> their values and the state_dict, on the host."""
    shapes = {"w": (13, 11), "b": (11,), "token": (1, 1, 5)}
    generator = np.random.default_rng(0)
    params = {k: backend.asarray(generator.standard_normal(s), dtype="float32") for k, s in shapes.items()}
    grads = [{k: backend.asarray(generator.standard_normal(s), dtype="float32") for k, s in shapes.items()}
             for _ in range(steps)]
    opt = optimizer_class(params, lr=0.01, no_decay=("b",), lr_scale=lr_scale)
    for g in grads:
        opt.step(g)
    return ({k: to_numpy(v) for k, v in params.items()},
            {k: to_numpy(v) for k, v in opt.state_dict().items()})


@pytest.mark.parametrize("lr_scale", [None, {"w": 0.5, "token": 0.25}], ids=["plain", "layer-decay"])
def test_flat_adamw_equals_the_reference_adamw(xp, rng, lr_scale):
    ref_params, ref_state = adamw_runs(AdamW, rng, lr_scale=lr_scale)
    flat_params, flat_state = adamw_runs(FlatAdamW, rng, lr_scale=lr_scale)
    assert list(flat_state) == list(ref_state)  # the same checkpoint keys: t, m.<name>, v.<name>
    for k in ref_params:
        np.testing.assert_allclose(flat_params[k], ref_params[k], rtol=2e-6, atol=1e-7, err_msg=k)
    for k in ref_state:
        np.testing.assert_allclose(flat_state[k], ref_state[k], rtol=2e-6, atol=1e-7, err_msg=k)


def test_flat_adamw_puts_the_parameters_in_one_buffer(xp):
    model = build_model("vit", SMALL["vit"], seed=0)
    before = {k: to_numpy(v) for k, v in model.params.items()}
    opt = FlatAdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    assert opt.flat.size == sum(v.size for v in before.values())
    for name, value in model.params.items():
        np.testing.assert_array_equal(to_numpy(value), before[name], err_msg=name)  # the same values ...
        assert value.base is opt.flat or value.base is opt.flat.base  # ... now views into the buffer


def test_flat_adamw_in_pieces_is_bit_identical_to_one_piece(xp, monkeypatch, rng):
    results = []
    for chunk in (7, 10 ** 9):
        monkeypatch.setattr(fast_optim, "CHUNK", chunk)
        results.append(adamw_runs(FlatAdamW, rng)[0])
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_flat_adamw_state_loads_into_the_reference_and_back(xp, rng):
    """Checkpoints keep their format: a FlatAdamW state continues in the reference AdamW and vice versa."""
    params, state = adamw_runs(FlatAdamW, rng)
    ref = AdamW({k: backend.asarray(v) for k, v in params.items()}, lr=0.01)
    ref.load_state_dict({k: backend.asarray(v) for k, v in state.items()})
    flat = FlatAdamW({k: backend.asarray(v) for k, v in params.items()}, lr=0.01)
    flat.load_state_dict({k: backend.asarray(v) for k, v in ref.state_dict().items()})
    for k, v in flat.state_dict().items():
        np.testing.assert_array_equal(to_numpy(v), state[k], err_msg=k)


def test_the_runner_is_data_parallel_on_the_cpu():
    runner = fast.runner(build_model("vit", SMALL["vit"]), threads=2)
    try:
        assert isinstance(runner, cpu.DataParallel) and runner.describe() == ", 2 threads"
    finally:
        runner.close()


# ----------------------------------------------------------------------------------------------
# the fast kernels against the reference functions they stand in for

def kernel_inputs(name, rng, dtype):
    """Arguments of the forward function behind kernel `name` (its forward and backward are checked together)."""
    def randn(*shape):
        return backend.asarray(rng.standard_normal(shape), dtype=dtype)
    if name.startswith("linear"):
        return (randn(2, 5, 8), randn(8, 6), randn(6))
    if name.startswith("layernorm"):
        return (randn(2, 5, 8) * 2.0 + 0.5, randn(8), randn(8))
    if name.startswith("gelu"):
        return (randn(3, 7) * 2.0,)
    if name.startswith("softmax"):
        return (randn(2, 3, 5) * 2.0,)
    return (randn(2, 5, 8), randn(8, 24) * 0.5, randn(24) * 0.5, randn(8, 8) * 0.5, randn(8) * 0.5, 2)  # attention


def forward_backward(kernels, name, inputs, dout_seed=3):
    """Forward and backward of the function pair behind `name` with `kernels`' functions in place."""
    fast.use_kernels(kernels)
    from tinymae.model import attention as attention_module
    from tinymae.model import layers as layers_module
    family = name.rsplit("_", 1)[0]
    module = attention_module if family in ("softmax", "attention") else layers_module
    forward = kernels.get(f"{family}_forward", getattr(module, f"{family}_forward"))
    backward = kernels[f"{family}_backward"]
    out, cache = forward(*inputs)
    dout = backend.asarray(backend.host_rng(dout_seed).standard_normal(out.shape), dtype=out.dtype)
    grads = backward(dout, cache)
    return [out, *(grads if isinstance(grads, tuple) else (grads,))]


@pytest.mark.parametrize("name", sorted(fast.CPU_KERNELS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cpu_kernel_equals_its_reference(xp, name, dtype):
    inputs = kernel_inputs(name, backend.host_rng(1), dtype)
    expected = forward_backward(fast.REFERENCE, name, inputs)
    got = forward_backward(fast.CPU_KERNELS, name, inputs)
    tol = 1e-12 if dtype == "float64" else 2e-6
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == b.dtype, (name, i)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=tol, atol=tol, err_msg=f"{name}: output {i}")


def test_every_fast_kernel_stands_in_for_a_reference_function():
    import inspect
    assert set(fast.CPU_KERNELS) <= set(fast.REFERENCE) and set(fast.CUDA_KERNELS) <= set(fast.REFERENCE)
    for name, function in fast.REFERENCE.items():
        assert function.__name__ == name and function.__module__.startswith("tinymae.model.")
        for kernels in (fast.CPU_KERNELS, fast.CUDA_KERNELS):
            if name in kernels:  # the same name and the same signature
                assert kernels[name].__name__ == name
                assert inspect.signature(kernels[name]) == inspect.signature(function), name


@pytest.mark.parametrize("kernels", ["cpu", "cuda"])
def test_the_fast_kernels_run_the_models_as_the_reference_does(xp, kernels):
    """A whole training step of each model with the CPU kernels (or the CUDA kernels' formulas, which run on
    NumPy here) in place gives the reference's loss and gradients (float32 rounding)."""
    fast_kernels = fast.CPU_KERNELS if kernels == "cpu" else fast.CUDA_KERNELS
    for arch in ("vit", "mlp"):
        model = build_model(arch, {**SMALL[arch], "norm_pix_loss": arch == "vit"}, seed=0)
        imgs, noise = batch(6)
        results = []
        for kernels in (fast.REFERENCE, fast_kernels):
            fast.use_kernels(kernels)
            results.append(reference(model, imgs, noise))
        assert float(results[1][0]) == pytest.approx(float(results[0][0]), rel=1e-6)
        worst = max((max_rel_diff(results[1][1][k], results[0][1][k]), k) for k in results[0][1])
        assert worst[0] < 1e-5, f"{arch} {worst[1]}: {worst[0]:.1e}"


REFERENCE_FILES = ["layers.py", "attention.py", "transformer.py", "loss.py", "optim.py", "masking.py", "patches.py",
                   "mae_vit.py", "mae_mlp.py", "models_vit.py", "ablations.py", "pos_embed.py", "build.py"]


@pytest.mark.parametrize("filename", REFERENCE_FILES)
def test_the_reference_is_plain(filename):
    """The model's files hold the formulas: no branch on the backend, no chunking, no out= arguments, no
    allocator settings (those belong to tinymae/fast/)."""
    import pathlib
    import re
    source = (pathlib.Path(__file__).parent.parent / "tinymae" / "model" / filename).read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())  # comments may talk about them
    for pattern, what in ((r"backend\.name|\bcupy\b", "a branch on the backend"), (r"\bCHUNK\b|chunk", "chunking"),
                          (r"\bout=", "an out= argument"), (r"mallopt|keep_freed_memory", "allocator settings")):
        assert not re.search(pattern, code), f"{filename} contains {what}"



# ----------------------------------------------------------------------------------------------
# the CUDA kernels' formulas, checked on NumPy (cuda.fused does nothing there)

def test_cuda_kernels_equal_their_references(xp, rng):
    from tinymae.fast import cuda
    from tinymae.model import layers, loss, transformer
    fast.use_kernels(fast.REFERENCE)

    def randn(*shape):
        return backend.asarray(rng.standard_normal(shape))  # float64

    def same(got, expected, what):
        for i, (a, b) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-10, atol=1e-12, err_msg=f"{what} {i}")

    x, w, b, dout = randn(2, 5, 8) * 2 + 0.5, randn(8), randn(8), randn(2, 5, 8)
    out, cache = cuda.layernorm_forward(x, w, b)
    ref_out, ref_cache = layers.layernorm_forward(x, w, b)
    same([out, *cache], [ref_out, *ref_cache], "layernorm forward")
    same(cuda.layernorm_backward(dout, cache), layers.layernorm_backward(dout, ref_cache), "layernorm backward")

    pred, target = randn(2, 4, 6), randn(2, 4, 6)
    mask = backend.asarray(np.array([[1.0, 0, 1, 0], [0, 1, 1, 1]]))
    for m, norm_pix in ((mask, False), (None, False), (mask, True)):
        value, cache = cuda.mse_forward(pred, target, m, norm_pix)
        ref_value, ref_cache = loss.mse_forward(pred, target, m, norm_pix)
        same([value, cuda.mse_backward(0.7, cache)], [ref_value, loss.mse_backward(0.7, ref_cache)], "mse")

    params = {k: randn(*v.shape) * 0.5 for k, v in transformer.init_block_params(rng, 8, 2.0).items()}
    for keep in (None, backend.asarray(np.array([[1.25, 0.0], [0.0, 1.25]]))):
        x, dout = randn(2, 3, 8), randn(2, 3, 8)
        out, cache = cuda.block_forward(x, params, 2, keep)
        ref_out, ref_cache = transformer.block_forward(x, params, 2, keep)
        same([out], [ref_out], "block forward")
        for backward_cache in (cache, ref_cache):  # either backward reads either forward's cache
            dx, grads = cuda.block_backward(dout, backward_cache)
            ref_dx, ref_grads = transformer.block_backward(dout, ref_cache)
            same([dx, *(grads[k] for k in ref_grads)], [ref_dx, *ref_grads.values()], "block backward")


def test_the_cuda_adamw_is_the_flat_adamw_update(xp, rng):
    from tinymae.fast import cuda
    arrays = [backend.asarray(rng.standard_normal(50)) for _ in range(4)]
    decay = backend.asarray(np.repeat([0.05, 0.0], 25))
    scale = backend.asarray(np.repeat([1.0, 0.5], 25))
    expected = [a.copy() for a in arrays]
    fast_optim.adamw_update(expected[0], expected[1], expected[2], expected[3], decay, scale, 0.01, 0.9, 0.95, 1e-8, 1.3)
    got = [a.copy() for a in arrays]
    cuda.adamw_flat(got[0], got[1], got[2], got[3], decay, scale, 0.01, 0.9, 0.95, 1e-8, 1.3)
    for i in (0, 2, 3):
        np.testing.assert_allclose(to_numpy(got[i]), to_numpy(expected[i]), rtol=1e-12, err_msg=str(i))


# ----------------------------------------------------------------------------------------------
# the photos resident on the device (fast/data.py)

def test_device_batches_are_the_reference_batches(xp):
    from tinymae.fast.data import DeviceImages, draws
    images = np.random.default_rng(0).integers(0, 256, (12, 10, 10, 3), dtype=np.uint8)
    mean, std = data.channel_stats(images)
    perm = np.random.default_rng(1).permutation(12)
    expected = list(data.augmented_batches(images, mean, std, perm, 4, 7, backend.host_rng(2)))
    device = DeviceImages(images, mean, std, 7)
    got = [device.batch(*(backend.asarray(a) for a in d)) for d in draws(perm, 4, 10, 7, backend.host_rng(2))]
    assert len(got) == len(expected) == 3
    for (idx, imgs), device_imgs in zip(expected, got):
        assert device_imgs.dtype == xp.float32
        np.testing.assert_array_equal(to_numpy(device_imgs), imgs)  # the same numbers, bit for bit


@pytest.mark.parametrize("arch", ["vit", "mlp"])
def test_a_run_with_resident_photos_is_the_reference_run(xp, photos, tmp_path, monkeypatch, arch):
    """The training loop with the photos on the device (and the batch made there) ends bit-identical to the
    host-side loop: the same draws, the same images, the same steps."""
    host = train_tiny(tmp_path / "host", photos, arch, "--epochs", "2")
    monkeypatch.setattr(fast, "resident_data", lambda: True)
    resident = train_tiny(tmp_path / "resident", photos, arch, "--epochs", "2")
    assert [h["train_loss"] for h in resident["history"]] == [h["train_loss"] for h in host["history"]]
    assert resident["final_validation"]["masked_mse"] == host["final_validation"]["masked_mse"]
