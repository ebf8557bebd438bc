"""The ViT passes against PyTorch: forward values and every gradient, in float64 (skipped without torch).

torch is an oracle here only: LayerNorm, GELU and softmax against torch.nn.functional; attention, the block
and the whole model against the one PyTorch transcription of timm's Attention / Block and of models_mae.py's
MaskedAutoencoderViT that the benchmarks time too (benchmarks/torch_models.py), loaded with our weights
and fed the same noise (so the same ids_shuffle). The transcription's modules hold torch's layouts (a
Linear weight (D_out, D_in), the patch embedding a Conv2d kernel); torch_models.tinymae_params(..., grad=True) turns
their gradients back into ours by transposes and reshapes alone, which change no number.

Tolerances: both sides compute in float64 and differ only in the order of their sums. Measured worst:
the losses agree to 2e-16 (one rounding), no element of any array is off by more than 3e-15 of that
array's largest value, and elements above 1e-6 of it agree to 3e-11 relative (the rest are cancellations,
such as the key bias's gradient, exactly zero in theory). We assert rtol 1e-10, and an atol of 1e-12 times
the array's largest value for the elements near zero.
"""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.config import ViTConfig
from tinymae.model import attention, layers, transformer
from tinymae.model.mae_vit import MaskedAutoencoderViT

from conftest import random_noise

torch = pytest.importorskip("torch", reason="torch is optional; pip install torch==2.13.0 for the oracle tests")
F = torch.nn.functional

from test_torch_models import torch_models  # noqa: E402  (benchmarks/torch_models.py, loaded there)

RTOL = 1e-10


def assert_close(ours, theirs, what=""):
    """ours: a backend array, theirs: a torch tensor or a NumPy array; rtol RTOL, atol 1e-12 of the largest
    |value|."""
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    atol = 1e-12 * max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(to_numpy(ours), theirs, rtol=RTOL, atol=atol, err_msg=what)


def leaf(a):
    return torch.tensor(np.asarray(a, dtype="float64"), requires_grad=True)


def ours(a):
    return backend.asarray(a, dtype="float64")


# ----------------------------------------------------------------------------------------------
# elementwise and row-wise layers

def test_layernorm_matches_torch(xp, rng):
    x = rng.standard_normal((2, 3, 6)) * 3.0 + 1.0
    w, b, dout = rng.standard_normal(6), rng.standard_normal(6), rng.standard_normal((2, 3, 6))
    out, cache = layers.layernorm_forward(ours(x), ours(w), ours(b))
    dx, dw, db = layers.layernorm_backward(ours(dout), cache)

    tx, tw, tb = leaf(x), leaf(w), leaf(b)
    tout = F.layer_norm(tx, (6,), tw, tb, eps=1e-6)  # partial(nn.LayerNorm, eps=1e-6) in models_mae.py
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    for name, g, t in (("dx", dx, tx), ("dw", dw, tw), ("db", db, tb)):
        assert_close(g, t.grad, name)


def test_gelu_matches_torch_tanh_approximation(xp, rng):
    x = np.concatenate([rng.standard_normal(50) * 3.0, [-12.0, -3.0, 0.0, 3.0, 12.0]])
    dout = rng.standard_normal(x.shape)
    out, cache = layers.gelu_forward(ours(x))
    dx = layers.gelu_backward(ours(dout), cache)

    tx = leaf(x)
    tout = F.gelu(tx, approximate="tanh")
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


def test_softmax_matches_torch(xp, rng):
    x = rng.standard_normal((2, 3, 7)) * 4.0
    dout = rng.standard_normal(x.shape)  # random, not ones: softmax's backward of ones is zero
    out, cache = attention.softmax_forward(ours(x))
    dx = attention.softmax_backward(ours(dout), cache)

    tx = leaf(x)
    tout = torch.softmax(tx, dim=-1)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")


# ----------------------------------------------------------------------------------------------
# timm's Attention and Block (timm 0.3.2, as pinned by the MAE repository): torch_models.Attention and .Block

def twin_of(module, arrays):
    """`module` (a torch_models piece) in float64 holding `arrays` (our names and layouts) -> (module, our params)."""
    params = {name: ours(a) for name, a in arrays.items()}
    module = module.double()
    torch_models.load_tinymae_params(module, params)  # checks that the names match, both ways
    return module, params


@pytest.mark.parametrize("fused", [False, True], ids=["timm", "sdpa"])
def test_attention_matches_torch(xp, rng, fused):
    """fused=False: timm's softmax(q k^T * scale) v; fused=True: torch's scaled_dot_product_attention."""
    N, T, D, H = 2, 5, 12, 3
    x = rng.standard_normal((N, T, D))
    arrays = {"qkv.w": rng.standard_normal((D, 3 * D)) * 0.4, "qkv.b": rng.standard_normal(3 * D) * 0.4,
              "proj.w": rng.standard_normal((D, D)) * 0.4, "proj.b": rng.standard_normal(D)}
    dout = rng.standard_normal((N, T, D))
    out, cache = attention.attention_forward(ours(x), *(ours(a) for a in arrays.values()), num_heads=H)
    dx, *grads = attention.attention_backward(ours(dout), cache)

    twin, params = twin_of(torch_models.Attention(D, H, fused=fused), arrays)
    tx = leaf(x)
    tout = twin(tx)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    theirs = torch_models.tinymae_params(twin, params, grad=True)
    for name, g in zip(arrays, grads):
        assert_close(g, theirs[name], "d" + name)


def test_block_matches_torch(xp, rng):
    N, T, D, H = 2, 5, 8, 2
    shapes = {name: v.shape for name, v in transformer.init_block_params(rng, D, mlp_ratio=4.0).items()}
    arrays = {name: rng.standard_normal(shape) * 0.5 for name, shape in shapes.items()}  # not the 1 / 0 init
    x, dout = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    out, cache = transformer.block_forward(ours(x), {n: ours(a) for n, a in arrays.items()}, num_heads=H)
    dx, grads = transformer.block_backward(ours(dout), cache)

    # GELU in its tanh form, as tinymae computes it (see layers.py)
    twin, params = twin_of(torch_models.Block(D, H, mlp_ratio=4.0, gelu="tanh"), arrays)
    tx = leaf(x)
    tout = twin(tx)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert set(grads) == set(arrays)
    theirs = torch_models.tinymae_params(twin, params, grad=True)
    for name in arrays:
        assert_close(grads[name], theirs[name], "d" + name)


# ----------------------------------------------------------------------------------------------
# The whole model: MaskedAutoencoderViT.forward of models_mae.py, as torch_models.TorchViTMAE transcribes it

ORACLE_CONFIG = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=4,
                     decoder_embed_dim=8, decoder_depth=2, decoder_num_heads=2, mlp_ratio=4.0)


@pytest.mark.parametrize("overrides", [{}, {"norm_pix_loss": True}, {"loss_on": "all"}, {"mask_ratio": 0.5}],
                         ids=["default", "norm-pix", "all-loss", "mask-half"])
def test_vit_mae_matches_models_mae(xp, overrides):
    cfg = ViTConfig(**{**ORACLE_CONFIG, **overrides})
    model = MaskedAutoencoderViT(cfg, seed=0)
    rng = backend.host_rng(1)
    # Every parameter random (not the init), so no LayerNorm scale of one or zero bias hides a gradient.
    arrays = {name: rng.standard_normal(v.shape) * 0.5 for name, v in model.params.items()}
    model.params = {name: ours(a) for name, a in arrays.items()}
    model.pos_embed = ours(to_numpy(model.pos_embed))
    model.decoder_pos_embed = ours(to_numpy(model.decoder_pos_embed))
    imgs = rng.standard_normal((3, 3, 16, 16))
    noise = to_numpy(random_noise(rng, 3, cfg.num_patches, dtype="float64"))

    loss, pred, mask, cache = model.forward(ours(imgs), ours(noise))
    dloss = 1.7  # a non-unit upstream gradient
    grads = model.backward(dloss, cache)

    twin = torch_models.from_tinymae(model, dtype=torch.float64)  # our weights and sin-cos tables, in float64
    tloss, tpred, tmask = twin(torch.tensor(imgs), torch.tensor(noise))
    (tloss * dloss).backward()
    np.testing.assert_array_equal(to_numpy(mask), tmask.numpy())
    assert float(loss) == pytest.approx(tloss.item(), rel=RTOL)
    assert_close(pred, tpred, "pred")
    assert list(grads) == list(arrays)
    theirs = torch_models.tinymae_params(twin, model.params, grad=True)
    for name in arrays:
        assert_close(grads[name], theirs[name], "d" + name)
