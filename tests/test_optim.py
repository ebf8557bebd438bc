"""AdamW and the learning-rate schedule."""
import math

import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.model.optim import AdamW, cosine_lr


def params_of(**arrays):
    return {k: backend.asarray(np.asarray(v, dtype="float64")) for k, v in arrays.items()}


def test_adamw_two_steps_by_hand(xp):
    """lr 0.1, betas (0.9, 0.95), eps 1e-8, weight decay 0.05; w is decayed, b is not.

    step 1, g = 0.5:   w: 1 * (1 - 0.1*0.05) = 0.995;  m = 0.05, v = 0.0125;
                       m^ = 0.05/0.1 = 0.5, sqrt(v^) = sqrt(0.0125/0.05) = 0.5  ->  w = 0.995 - 0.1*0.5/(0.5+1e-8)
                       = 0.895000002;  b (no decay, g = 0.5): 2 - 0.1*0.5/(0.5+1e-8) = 1.900000002
    step 2, g = -0.25: w: 0.895000002 * 0.995 = 0.890525002;  m = 0.045 - 0.025 = 0.02,
                       v = 0.011875 + 0.003125 = 0.015;  m^ = 0.02/0.19, sqrt(v^) = sqrt(0.015/0.0975)
                       ->  w = 0.890525002 - 0.1 * 0.10526316 / 0.39223227 = 0.863688058
    """
    params = params_of(w=[1.0], b=[2.0])
    opt = AdamW(params, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, no_decay=("b",))
    opt.step(params_of(w=[0.5], b=[0.5]))
    assert float(params["w"][0]) == pytest.approx(0.895000002, abs=1e-12)
    assert float(params["b"][0]) == pytest.approx(1.900000002, abs=1e-12)
    opt.step(params_of(w=[-0.25], b=[-0.25]))
    assert float(params["w"][0]) == pytest.approx(0.8636880578658, abs=1e-12)
    assert opt.t == 2


def test_adamw_state_dict_restores_exactly(xp, rng):
    shapes = {"w": (3, 4), "b": (4,)}
    init = {k: rng.standard_normal(s).astype("float32") for k, s in shapes.items()}
    grads = [{k: backend.asarray(rng.standard_normal(s).astype("float32")) for k, s in shapes.items()}
             for _ in range(6)]

    straight = {k: backend.asarray(v) for k, v in init.items()}
    opt = AdamW(straight, lr=0.01, no_decay=("b",))
    for g in grads:
        opt.step(g)

    first = {k: backend.asarray(v) for k, v in init.items()}
    opt1 = AdamW(first, lr=0.01, no_decay=("b",))
    for g in grads[:3]:
        opt1.step(g)
    saved_state = {k: (to_numpy(v) if hasattr(v, "shape") else v) for k, v in opt1.state_dict().items()}
    saved_params = {k: to_numpy(v) for k, v in first.items()}

    resumed = {k: backend.asarray(v) for k, v in saved_params.items()}
    opt2 = AdamW(resumed, lr=0.01, no_decay=("b",))
    opt2.load_state_dict(saved_state)
    for g in grads[3:]:
        opt2.step(g)
    for k in shapes:
        np.testing.assert_array_equal(to_numpy(resumed[k]), to_numpy(straight[k]))


def test_adamw_rejects_bad_input(xp):
    params = params_of(w=[1.0, 2.0])
    with pytest.raises(ValueError, match="no_decay or lr_scale names that are not parameters"):
        AdamW(params, lr=0.1, no_decay=("bias",))
    opt = AdamW(params, lr=0.1)
    with pytest.raises(ValueError, match="gradient for 'w' has shape"):
        opt.step(params_of(w=[1.0]))
    with pytest.raises(KeyError, match="optimizer state has no 'm.w'"):
        opt.load_state_dict({"t": 1})


def test_adamw_matches_torch(xp, rng):
    torch = pytest.importorskip("torch", reason="torch is optional; pip install torch==2.13.0 for this oracle")
    shapes = {"w": (5, 3), "b": (3,)}
    init = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(5)]
    lrs = [0.01, 0.02, 0.03, 0.015, 0.001]  # a schedule, set before each step

    ours = {k: backend.asarray(v) for k, v in init.items()}
    opt = AdamW(ours, lr=lrs[0], betas=(0.9, 0.95), weight_decay=0.05, no_decay=("b",))
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    topt = torch.optim.AdamW([{"params": [theirs["w"]], "weight_decay": 0.05},
                              {"params": [theirs["b"]], "weight_decay": 0.0}],
                             lr=lrs[0], betas=(0.9, 0.95), eps=1e-8)
    for lr, g in zip(lrs, grads):
        opt.lr = lr
        opt.step({k: backend.asarray(v) for k, v in g.items()})
        for group in topt.param_groups:
            group["lr"] = lr
        for k, t in theirs.items():
            t.grad = torch.tensor(g[k])
        topt.step()
    for k in shapes:
        np.testing.assert_allclose(to_numpy(ours[k]), theirs[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_cosine_schedule_matches_mae_lr_sched():
    base, warm, total = 0.005, 10, 110
    assert cosine_lr(0, total, warm, base) == 0.0
    assert cosine_lr(5, total, warm, base) == pytest.approx(base / 2)
    assert cosine_lr(10, total, warm, base) == pytest.approx(base)
    assert cosine_lr(60, total, warm, base) == pytest.approx(base / 2)  # half way down the cosine
    assert cosine_lr(110, total, warm, base, min_lr=1e-4) == pytest.approx(1e-4)
    # util/lr_sched.py: epoch-based with fractional epochs gives the same numbers
    for step in range(total):
        epoch = step / 1.0
        cosine = base * 0.5 * (1 + math.cos(math.pi * (epoch - warm) / (total - warm)))
        ref = base * epoch / warm if epoch < warm else cosine
        assert cosine_lr(step, total, warm, base) == pytest.approx(ref)
