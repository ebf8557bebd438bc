"""Float64 finite-difference checks of every hand-written backward pass, on every backend.

GRADIENT_CHECKS maps each `*_backward` function of the package to a case: a forward, a backward and
tiny float64 inputs. `test_every_backward_has_a_gradient_check` fails when a backward function is
added to tinymae without a row here.
"""
import inspect

import numpy as np
import pytest

from tinymae import backend
from tinymae.fast import cuda
from tinymae.model import attention, layers, loss, mae_vit, masking, patches, transformer
from tinymae.util.gradcheck import assert_backward_matches

TOL = 1e-7  # max elementwise relative error; float64 centered differences reach ~1e-9 here
# A whole Transformer block runs hundreds of float64 operations between input and output, so its finite
# differences carry ~1e-10 of rounding noise: 2e-7 relative on its smallest gradient elements (measured).
CASE_TOL = {"transformer.block_backward": 1e-6, "transformer.block_backward[drop_path]": 1e-6,
            "transformer.blocks_backward": 1e-6, "cuda.block_backward": 1e-6, "cuda.block_backward[no drop path]": 1e-6}


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

    return forward, loss.mse_backward, {"pred": randn(rng, 2, 4, 6, dtype=dtype)}


def case_layernorm(rng, dtype):
    # Scale and shift away from 1 and 0, so the checks see their effect on the gradient of x.
    inputs = {"x": randn(rng, 2, 3, 5, dtype=dtype) * 2.0 + 0.5,
              "w": randn(rng, 5, dtype=dtype),
              "b": randn(rng, 5, dtype=dtype)}
    return layers.layernorm_forward, layers.layernorm_backward, inputs


def case_gelu(rng, dtype):
    return layers.gelu_forward, layers.gelu_backward, {"x": randn(rng, 3, 7, dtype=dtype) * 2.0}


def case_drop_path(rng, dtype):
    keep = backend.asarray(np.array([0.0, 1.25, 1.25]), dtype=dtype)  # image 0 drops the branch, 1 and 2 keep it
    return ((lambda x: layers.drop_path_forward(x, keep)), layers.drop_path_backward,
            {"x": randn(rng, 3, 2, 4, dtype=dtype)})


def case_softmax(rng, dtype):
    # Rows of varied spread, so some softmax rows are peaked and some flat.
    return attention.softmax_forward, attention.softmax_backward, {"x": randn(rng, 2, 3, 5, dtype=dtype) * 2.0}


# The key third of an attention's qkv bias has an exactly zero gradient: it adds q_i . b_k to every score
# of row i, and softmax ignores a constant added to a row. Finite differences see only float64 rounding
# noise there (~1e-10), which no relative error can judge against a true zero, so the attention and
# block cases hold the key bias fixed and check the query and value biases ("qv_b", rows q and v);
# tests/test_mae_vit.py checks exactly that the key bias changes nothing and gets a zero gradient.

def qkv_bias(qv_b, k_b):
    """qv_b: (2, D) query and value biases, k_b: (D,) -> qkv_b: (3D,) laid out (3, H, d) as qkv_w's columns."""
    return backend.xp.concatenate([qv_b[0], k_b, qv_b[1]])  # (3D,)


def qv_bias_grad(dqkv_b):
    """dqkv_b: (3D,) -> the query and value rows (2, D), as qv_b."""
    return dqkv_b.reshape(3, -1)[0::2]  # (2, D)


def case_attention(rng, dtype):
    N, T, D, H = 2, 3, 8, 2  # head width 4
    k_b = randn(rng, D, dtype=dtype) * 0.5  # held fixed, see above
    inputs = {"x": randn(rng, N, T, D, dtype=dtype),
              "qkv_w": randn(rng, D, 3 * D, dtype=dtype) * 0.5,
              "qv_b": randn(rng, 2, D, dtype=dtype) * 0.5,
              "proj_w": randn(rng, D, D, dtype=dtype) * 0.5,
              "proj_b": randn(rng, D, dtype=dtype)}

    def forward(x, qkv_w, qv_b, proj_w, proj_b):
        return attention.attention_forward(x, qkv_w, qkv_bias(qv_b, k_b), proj_w, proj_b, num_heads=H)

    def backward(dout, cache):
        dx, dqkv_w, dqkv_b, dproj_w, dproj_b = attention.attention_backward(dout, cache)
        return dx, dqkv_w, qv_bias_grad(dqkv_b), dproj_w, dproj_b

    return forward, backward, inputs


def case_block(rng, dtype, drop_path=False, implementation=transformer):
    N, T, D, H = 2, 3, 8, 2
    # Random values everywhere, not the init's LayerNorm 1 / 0 and zero biases, behind which a swapped
    # or missing gradient could hide.
    shapes = {name: value.shape for name, value in transformer.init_block_params(rng, D, mlp_ratio=2.0).items()}
    k_b = randn(rng, D, dtype=dtype) * 0.5  # held fixed, see above
    inputs = {"x": randn(rng, N, T, D, dtype=dtype)}
    for name, shape in shapes.items():
        if name == "attn.qkv.b":
            inputs["attn.qv_b"] = randn(rng, 2, D, dtype=dtype) * 0.5
        else:
            inputs[name] = randn(rng, *shape, dtype=dtype) * 0.5
    names = list(inputs)[1:]

    def forward(x, *values):
        p = dict(zip(names, values))
        p["attn.qkv.b"] = qkv_bias(p.pop("attn.qv_b"), k_b)
        keep = backend.asarray(np.array([[1.25, 0.0], [0.0, 1.25]]), dtype=dtype) if drop_path else None  # (N, 2)
        return implementation.block_forward(x, p, num_heads=H, keep=keep)

    def backward(dout, cache):
        dx, grads = implementation.block_backward(dout, cache)
        grads["attn.qv_b"] = qv_bias_grad(grads.pop("attn.qkv.b"))
        return (dx, *(grads[name] for name in names))

    return forward, backward, inputs


def case_blocks(rng, dtype):
    """Two blocks as a stack (blocks_forward's loop and parameter names), the input's gradient checked; each
    block's parameters are checked by case_block."""
    N, T, D, H = 2, 3, 8, 2
    params = {}
    for i in range(2):
        for name, value in transformer.init_block_params(rng, D, mlp_ratio=2.0).items():
            params[f"blocks.{i}.{name}"] = randn(rng, *value.shape, dtype=dtype) * 0.5

    def forward(x):
        return transformer.blocks_forward(x, params, "blocks", 2, num_heads=H)

    def backward(dout, caches):
        return transformer.blocks_backward(dout, caches, "blocks")[0]

    return forward, backward, {"x": randn(rng, N, T, D, dtype=dtype)}


def case_embed_patches(rng, dtype):
    pos_embed = randn(rng, 1, 1 + 4, 5, dtype=dtype)  # (1, 1+L, D): 4 patches of 2x2 in an image of 4x4

    def forward(w, b):
        return mae_vit.embed_patches(imgs, {"patch_embed.w": w, "patch_embed.b": b}, pos_embed, 2)

    imgs = randn(rng, 2, 3, 4, 4, dtype=dtype)
    params = {"w": randn(rng, 12, 5, dtype=dtype), "b": randn(rng, 5, dtype=dtype)}
    return forward, mae_vit.embed_patches_backward, params


def case_prepend_cls_token(rng, dtype):
    pos_embed = randn(rng, 1, 1 + 4, 5, dtype=dtype)

    def forward(x, cls_token):
        return mae_vit.prepend_cls_token(x, cls_token, pos_embed), None

    return (forward, lambda dout, cache: mae_vit.prepend_cls_token_backward(dout),
            {"x": randn(rng, 2, 3, 5, dtype=dtype), "cls_token": randn(rng, 1, 1, 5, dtype=dtype)})


def fast_case(case, **functions):
    """A reference case with fast/cuda.py's functions in place of the reference's (same inputs)."""
    def build(rng, dtype):
        forward, backward, inputs = case(rng, dtype)
        return functions.get("forward", forward), functions["backward"], inputs
    return build


def softmax_cross_entropy_case(rng, dtype, smoothing):
    labels = backend.asarray(rng.integers(0, 3, 5))  # (N,) class ids of 3 classes
    logits = randn(rng, 5, 3, dtype=dtype) * 3  # peaked and flat rows

    def forward(z):
        return loss.softmax_cross_entropy_forward(z, labels, smoothing)

    return forward, loss.softmax_cross_entropy_backward, {"logits": logits}


def case_soft_target_cross_entropy(rng, dtype):
    targets = backend.asarray(rng.dirichlet(np.ones(3), size=5), dtype=dtype)  # (N, C), rows summing to 1

    def forward(z):
        return loss.soft_target_cross_entropy_forward(z, targets)

    return forward, loss.soft_target_cross_entropy_backward, {"logits": randn(rng, 5, 3, dtype=dtype) * 3}


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
    "loss.softmax_cross_entropy_backward": lambda rng, dtype: softmax_cross_entropy_case(rng, dtype, 0.1),
    "loss.soft_target_cross_entropy_backward": case_soft_target_cross_entropy,
    "layers.layernorm_backward": case_layernorm,
    "layers.gelu_backward": case_gelu,
    "attention.softmax_backward": case_softmax,
    "attention.attention_backward": case_attention,
    "transformer.block_backward": case_block,
    "transformer.block_backward[drop_path]": lambda rng, dtype: case_block(rng, dtype, drop_path=True),
    "layers.drop_path_backward": case_drop_path,
    "transformer.blocks_backward": case_blocks,
    "mae_vit.embed_patches_backward": case_embed_patches,
    "mae_vit.prepend_cls_token_backward": case_prepend_cls_token,
    # the fused CUDA kernels' formulas (fast/cuda.py), on the same cases
    "cuda.layernorm_backward": fast_case(case_layernorm, forward=cuda.layernorm_forward,
                                         backward=cuda.layernorm_backward),
    "cuda.block_backward": lambda rng, dtype: case_block(rng, dtype, drop_path=True, implementation=cuda),
    "cuda.block_backward[no drop path]": lambda rng, dtype: case_block(rng, dtype, implementation=cuda),
}


@pytest.mark.parametrize("name", list(GRADIENT_CHECKS))
def test_gradient_check(xp, name):
    forward, backward, inputs = GRADIENT_CHECKS[name](backend.host_rng(1), "float64")
    reports = assert_backward_matches(forward, backward, inputs, tol=CASE_TOL.get(name, TOL))
    assert [r.name for r in reports] == list(inputs)


def package_backward_functions():
    """Qualified names of every module-level `*_backward` function and `backward` method in tinymae."""
    from conftest import TINYMAE_MODULES

    names = set()
    for module in TINYMAE_MODULES:
        if module.__name__ == "tinymae.util.gradcheck":
            continue  # the checker, not a layer
        short = module.__name__.split(".")[-1]
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported from elsewhere
            if inspect.isfunction(obj) and attr.endswith("_backward"):
                names.add(f"{short}.{attr}")
            elif inspect.isclass(obj):
                for meth, value in vars(obj).items():
                    if inspect.isfunction(value) and (meth == "backward" or meth.endswith("_backward")):
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
