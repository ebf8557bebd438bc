"""What the speed work must not change: results, dtypes, and what it promises about memory.

  * tinymae.speed.keep_freed_memory: applies on Linux/glibc, refuses nonsense, changes no result;
  * the training step (forward, backward, AdamW) stays float32 from end to end: no array in any cache,
    gradient or optimiser state is silently upcast to float64 (which would double its memory traffic);
  * AdamW's step allocates no arrays, and updating in cache-sized pieces gives bit-identical results.
"""
import sys

import numpy as np
import pytest

from tinymae import backend, optim, speed
from tinymae.backend import to_numpy
from tinymae.masking import masking_noise
from tinymae.models import build_model
from tinymae.optim import AdamW


def test_keep_freed_memory_applies_on_linux_glibc_only():
    applied = speed.keep_freed_memory()
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
    assert speed.keep_freed_memory() == applied  # calling it again is harmless


def test_keep_freed_memory_rejects_thresholds_that_are_not_a_c_int():
    for bad in (0, -1, 2 ** 31, 2 ** 33):
        with pytest.raises(ValueError, match="threshold_bytes"):
            speed.keep_freed_memory(bad)


def one_step(arch, n=2, seed=0):
    """A training step of the default-size model -> loss, pred, mask, cache, grads, optimizer."""
    model = build_model(arch, {}, seed=seed)
    rng = backend.host_rng(1)
    cfg = model.config
    imgs = backend.asarray(rng.standard_normal((n, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    noise = masking_noise(rng, n, cfg.num_patches)
    loss, pred, mask, cache = model.forward(imgs, noise)
    grads = model.backward(1.0, cache)
    opt = AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
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
                  "params": model.params, "adamw.m": opt.m, "adamw.v": opt.v, "adamw.work": opt.work}
    found = list(arrays_in(everything))
    assert len(found) > 20
    upcast = [(where, str(a.dtype)) for where, a in found if a.dtype.kind == "f" and a.dtype != xp.float32]
    assert not upcast, f"float arrays that are not float32: {upcast[:10]}"


def test_keep_freed_memory_changes_no_result():
    before = one_step("vit")
    speed.keep_freed_memory()
    after = one_step("vit")
    assert float(before[1]) == float(after[1])
    for name in before[5]:
        np.testing.assert_array_equal(to_numpy(before[5][name]), to_numpy(after[5][name]), err_msg=name)


def test_adamw_step_allocates_no_arrays(xp):
    """AdamW writes every intermediate into its `work` array: a step of the MLP's 4.6M parameters (18 MB)
    allocates a few kilobytes of Python objects (views of its pieces), no array memory (NumPy reports to
    tracemalloc). The gradients are backend arrays, as the model's backward makes them."""
    import tracemalloc

    model = build_model("mlp", {}, seed=0)
    rng = np.random.default_rng(0)
    grads = {name: backend.asarray(rng.standard_normal(p.shape), dtype="float32") for name, p in model.params.items()}
    opt = AdamW(model.params, lr=1e-3, no_decay=model.no_decay)
    opt.step(grads)
    tracemalloc.start()
    try:
        opt.step(grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"AdamW.step allocated {peak} bytes at its peak"


def test_adamw_in_pieces_is_bit_identical_to_whole_arrays(xp, monkeypatch, rng):
    """The CPU update runs in pieces of optim.CHUNK elements; pieces of 7 and one piece agree exactly."""
    shapes = {"w": (13, 11), "b": (11,), "token": (1, 1, 5)}
    init = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: backend.asarray(rng.standard_normal(s)) for k, s in shapes.items()} for _ in range(3)]
    results = []
    for chunk in (7, 10 ** 9):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        params = {k: backend.asarray(v) for k, v in init.items()}
        opt = AdamW(params, lr=0.01, no_decay=("b",))
        for g in grads:
            opt.step(g)
        results.append({k: to_numpy(v) for k, v in params.items()})
    for k in shapes:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_adamw_refuses_a_parameter_it_cannot_update_in_place(xp):
    w = backend.asarray(np.arange(12.0).reshape(3, 4))
    params = {"w": w.T}  # a transposed view: not contiguous
    opt = AdamW(params, lr=0.1)
    with pytest.raises(ValueError, match="not a contiguous array"):
        opt.step({"w": backend.asarray(np.ones((4, 3)))})
