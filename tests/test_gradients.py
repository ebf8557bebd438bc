"""Float64 finite-difference checks of every hand-written backward pass, on every backend.

GRADIENT_CHECKS maps each `*_backward` function of the package to a case: a forward, a backward and
tiny float64 inputs. `test_every_backward_has_a_gradient_check` fails when a backward function is
added to tinymae without a row here.
"""
import inspect

import pytest

from tinymae import backend, layers, loss, masking, patches
from tinymae.gradcheck import assert_backward_matches

TOL = 1e-7  # max elementwise relative error; float64 centered differences reach ~1e-9 here


def randn(rng, *shape, dtype="float64"):
    return backend.asarray(rng.standard_normal(shape), dtype=dtype)


# ---- one case per backward: (forward(*inputs) -> (out, cache), backward(dout, cache) -> grads, inputs).
# Each case builds its inputs (and any constants) in `dtype`: float64 here, float32 in test_dtypes.py.

def case_linear(rng, dtype):
    inputs = {"x": randn(rng, 2, 3, 4, dtype=dtype),
              "w": randn(rng, 4, 5, dtype=dtype),
              "b": randn(rng, 5, dtype=dtype)}
    return layers.linear_forward, layers.linear_backward, inputs


def case_relu(rng, dtype):
    x = randn(rng, 3, 7, dtype=dtype)
    x = x + (x > 0).astype(x.dtype) * 0.2 - 0.1  # keep every input at least 0.1 away from the kink at 0
    return layers.relu_forward, layers.relu_backward, {"x": x}


def case_patchify(rng, dtype):
    p = 2
    return ((lambda imgs: (patches.patchify(imgs, p), None)),
            (lambda dout, cache: patches.patchify_backward(dout, p, grid=(2, 3))),
            {"imgs": randn(rng, 2, 3, 4, 6, dtype=dtype)})


def case_unpatchify(rng, dtype):
    p = 2
    return ((lambda x: (patches.unpatchify(x, p), None)),
            (lambda dout, cache: patches.unpatchify_backward(dout, p)),
            {"x": randn(rng, 2, 4, 12, dtype=dtype)})


def case_random_masking(rng, dtype, keep_order=False):
    noise = backend.asarray(rng.random((2, 8)), dtype=dtype)

    def forward(x):
        x_masked, mask, ids_restore, cache = masking.random_masking(x, 0.75, noise, keep_order)
        return x_masked, cache

    return forward, masking.random_masking_backward, {"x": randn(rng, 2, 8, 3, dtype=dtype)}


def case_append_mask_tokens(rng, dtype):
    noise = backend.asarray(rng.random((2, 8)), dtype=dtype)
    _, _, ids_restore, _ = masking.random_masking(randn(rng, 2, 8, 3, dtype=dtype), 0.75, noise)
    return ((lambda x, mask_token: masking.append_mask_tokens(x, mask_token, ids_restore)),
            masking.append_mask_tokens_backward,
            {"x": randn(rng, 2, 2, 3, dtype=dtype), "mask_token": randn(rng, 1, 1, 3, dtype=dtype)})


def mse_case(rng, dtype, with_mask, norm_pix_loss):
    target = randn(rng, 2, 4, 6, dtype=dtype)
    mask = backend.asarray(rng.random((2, 4)) < 0.5, dtype=dtype) if with_mask else None
    if with_mask:
        mask[0, 0] = 1.0  # at least one removed patch

    def forward(pred):
        loss_value, cache = loss.mse_forward(pred, target, mask, norm_pix_loss=norm_pix_loss)
        return loss_value, cache

    return forward, (lambda dloss, cache: loss.mse_backward(cache, dloss)), {"pred": randn(rng, 2, 4, 6, dtype=dtype)}


GRADIENT_CHECKS = {
    "layers.linear_backward": case_linear,
    "layers.relu_backward": case_relu,
    "patches.patchify_backward": case_patchify,
    "patches.unpatchify_backward": case_unpatchify,
    "masking.random_masking_backward": case_random_masking,
    "masking.random_masking_backward[keep_order]": lambda rng, dtype: case_random_masking(rng, dtype, True),
    "masking.append_mask_tokens_backward": case_append_mask_tokens,
    "loss.mse_backward": lambda rng, dtype: mse_case(rng, dtype, with_mask=True, norm_pix_loss=False),
    "loss.mse_backward[all patches]": lambda rng, dtype: mse_case(rng, dtype, with_mask=False, norm_pix_loss=False),
    "loss.mse_backward[norm_pix_loss]": lambda rng, dtype: mse_case(rng, dtype, with_mask=True, norm_pix_loss=True),
}


@pytest.mark.parametrize("name", list(GRADIENT_CHECKS))
def test_gradient_check(xp, name):
    forward, backward, inputs = GRADIENT_CHECKS[name](backend.host_rng(1), "float64")
    reports = assert_backward_matches(forward, backward, inputs, tol=TOL)
    assert [r.name for r in reports] == list(inputs)


def package_backward_functions():
    """Qualified names of every module-level `*_backward` function and `backward` method in tinymae."""
    from conftest import TINYMAE_MODULES

    names = set()
    for module in TINYMAE_MODULES:
        if module.__name__ == "tinymae.gradcheck":
            continue  # the checker, not a layer
        short = module.__name__.split(".")[-1]
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere
            if inspect.isfunction(obj) and attr.endswith("_backward"):
                names.add(f"{short}.{attr}")
            elif inspect.isclass(obj):
                for meth in vars(obj):
                    if meth == "backward" or meth.endswith("_backward"):
                        names.add(f"{short}.{attr}.{meth}")
    return names


def test_every_backward_has_a_gradient_check():
    from test_model_gradients import MODEL_GRADIENT_CHECKS

    checked = {name.split("[")[0] for name in GRADIENT_CHECKS} | set(MODEL_GRADIENT_CHECKS)
    missing = package_backward_functions() - checked
    assert not missing, f"backward passes without a finite-difference gradient check: {sorted(missing)}"


def test_gradient_check_catches_a_wrong_backward(xp):
    """The checker itself must fail loudly: a backward off by a factor 1.001 is reported."""
    forward, _, inputs = case_linear(backend.host_rng(1), "float64")

    def wrong_backward(dout, cache):
        dx, dw, db = layers.linear_backward(dout, cache)
        return dx, dw * 1.001, db

    with pytest.raises(AssertionError, match="w: rel error"):
        assert_backward_matches(forward, wrong_backward, inputs, tol=TOL)
