"""The PyTorch twins (benchmarks/torch_models.py) against tinymae, end to end (skipped without torch).

benchmarks/bench_step.py times tinymae against these twins, and tests/test_torch_oracle_vit.py checks the
ViT layer by layer against the same transcription, so first they must compute the same thing: for both
models at their default sizes (a small batch), built from tinymae's own weights and fed the same images
and mask noise, the loss, the prediction and every gradient agree, and AdamW steps from the same
gradients land on the same parameters, with tinymae's plain AdamW (model/optim.py) and with the flat one
the training runs use (fast/optim.py's FlatAdamW). In float32 (what the benchmark times) and in float64.

Tolerances, each as max |ours - torch| / max |torch| over one array (benchmarks' `max_rel_diff`), the
loss relative: measured worst in float32 7e-7 (gradients, prediction) and 7e-8 (loss), asserted 1e-4
and 1e-5; in float64 3e-15 and 3e-16, asserted 1e-10 and 1e-12. A wrong or missing term is off by O(1).
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.fast.optim import FlatAdamW
from tinymae.model import build_model
from tinymae.model.optim import AdamW

from conftest import random_noise

torch = pytest.importorskip("torch", reason="torch is optional; pip install torch==2.13.0 for the benchmark's twins")

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark_module(name):
    """benchmarks/<name>.py as a module: benchmarks/ is a folder of scripts, not a package."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # so that a benchmark module importing `name` finds this one
        spec.loader.exec_module(module)
    return sys.modules[name]


torch_models = load_benchmark_module("torch_models")

TOLERANCES = {"float32": dict(loss=1e-5, arrays=1e-4), "float64": dict(loss=1e-12, arrays=1e-10)}


def model_and_batch(arch, dtype, n=4):
    model = build_model(arch, {}, seed=0)  # the default sizes, as benchmarked
    if dtype == "float64":
        model.params = {name: value.astype("float64") for name, value in model.params.items()}
        model.pos_embed = model.pos_embed.astype("float64")
        if arch == "vit":
            model.decoder_pos_embed = model.decoder_pos_embed.astype("float64")
    rng = backend.host_rng(1)
    cfg = model.config
    imgs = backend.asarray(rng.standard_normal((n, 3, cfg.img_size, cfg.img_size)), dtype=dtype)
    noise = random_noise(rng, n, cfg.num_patches, dtype=dtype)
    return model, imgs, noise


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_torch_twin_gives_same_loss_and_gradients(xp, arch, dtype):
    model, imgs, noise = model_and_batch(arch, dtype)
    twin = torch_models.from_tinymae(model, dtype=getattr(torch, dtype))
    r = torch_models.compare_step(model, twin, imgs, noise, dloss=1.7)  # a non-unit upstream gradient
    tol = TOLERANCES[dtype]

    ours, theirs = r["loss"]
    assert abs(ours - theirs) <= tol["loss"] * abs(theirs), f"loss: tinymae {ours}, torch {theirs}"
    assert r["mask_equal"], "the same noise must remove the same patches"
    assert r["pred"] <= tol["arrays"], f"pred differs by {r['pred']:.2e} of its scale"
    assert set(r["grads"]) == set(model.params)
    worst = max(r["grads"], key=r["grads"].get)
    assert r["grads"][worst] <= tol["arrays"], f"gradient of {worst} differs by {r['grads'][worst]:.2e} of its scale"


@pytest.mark.parametrize("optimizer", [AdamW, FlatAdamW], ids=["AdamW", "FlatAdamW"])
@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_torch_adamw_step_matches_tinymae_adamw(xp, arch, optimizer):
    """Two optimiser steps from the same gradients (float64): tinymae's AdamW is torch's, groups included,
    both the plain one and the flat-buffer one (which puts views of its buffer into model.params)."""
    model, imgs, noise = model_and_batch(arch, "float64")
    twin = torch_models.from_tinymae(model, dtype=torch.float64)
    grads = model.backward(1.0, model.forward(imgs, noise)[3])
    ours = optimizer(model.params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, no_decay=model.no_decay)
    theirs = torch.optim.AdamW(torch_models.no_decay_param_groups(twin, model.no_decay, 0.05),
                               lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(2):
        ours.step(grads)
        torch_models.load_tinymae_params(twin, grads, grad=True)
        theirs.step()
    after = torch_models.tinymae_params(twin, model.params)
    for name, value in model.params.items():
        np.testing.assert_allclose(to_numpy(value), after[name], rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("arch", ["mlp", "vit"])
def test_benchmark_flop_count_matches_torch_flop_counter(arch):
    """The benchmarks' analytic FLOPs of a step (benchmarks/common.py's formula) = torch's own count of the
    twin's matmuls and convolutions, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    common = load_benchmark_module("common")
    model, imgs, noise = model_and_batch(arch, "float32", n=8)
    twin = torch_models.from_tinymae(model)
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = twin(torch.tensor(to_numpy(imgs)), torch.tensor(to_numpy(noise)))
        loss.backward()
    assert common.step_flops(model, 8) == counter.get_total_flops()


def test_torch_names_and_layouts_round_trip():
    """Every tinymae parameter has a torch twin; converting to torch's layout and back is the identity."""
    for arch in ("mlp", "vit"):
        model = build_model(arch, {}, seed=0)
        twin = torch_models.from_tinymae(model)
        back = torch_models.tinymae_params(twin, model.params)
        for name, value in model.params.items():
            np.testing.assert_array_equal(back[name], to_numpy(value), err_msg=name)
