"""The ViT passes against PyTorch: forward values and every gradient, in float64 (skipped without torch).

torch is an oracle here only: LayerNorm, GELU and softmax against torch.nn.functional; attention, the
block and the whole model against direct transcriptions of timm's Attention / Block and of
MaskedAutoencoderViT.forward in models_mae.py, loaded with our weights and fed the same noise (so the
same ids_shuffle). Our Linear weights are (D_in, D_out); torch's are (D_out, D_in), so each transcription
uses w.T, and the leaves that autograd differentiates are in our layout: their .grad compares directly.

Tolerances: both sides compute in float64 and differ only in the order of their sums. Measured worst:
the losses agree to 2e-16 (one rounding), no element of any array is off by more than 3e-15 of that
array's largest value, and elements above 1e-6 of it agree to 3e-11 relative (the rest are cancellations,
such as the key bias's gradient, exactly zero in theory). We assert rtol 1e-10, and an atol of 1e-12 times
the array's largest value for the elements near zero.
"""
import numpy as np
import pytest

from tinymae import backend
from tinymae.model import attention
from tinymae.model import layers
from tinymae.model import transformer
from tinymae.backend import to_numpy
from tinymae.config import ViTConfig
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import masking_noise

torch = pytest.importorskip("torch", reason="torch is optional; pip install torch==2.13.0 for the oracle tests")
F = torch.nn.functional

RTOL = 1e-10


def assert_close(ours, theirs, what=""):
    """ours: a backend array, theirs: a torch tensor; rtol RTOL, atol 1e-12 of the largest |value|."""
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
# timm's Attention and Block (timm 0.3.2, as pinned by the MAE repository), transcribed

def timm_attention(x, qkv_w, qkv_b, proj_w, proj_b, num_heads):
    """timm.models.vision_transformer.Attention.forward, with our (D_in, D_out) weights."""
    B, N, C = x.shape
    scale = (C // num_heads) ** -0.5
    qkv = F.linear(x, qkv_w.T, qkv_b).reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(x, proj_w.T, proj_b)


def sdpa_attention(x, qkv_w, qkv_b, proj_w, proj_b, num_heads):
    """The same attention through torch's fused scaled_dot_product_attention (default scale d**-0.5)."""
    B, N, C = x.shape
    qkv = F.linear(x, qkv_w.T, qkv_b).reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, N, C)
    return F.linear(x, proj_w.T, proj_b)


def timm_block(x, p, num_heads):
    """timm Block.forward: x + attn(norm1(x)), then x + mlp(norm2(x)); GELU in its tanh form (see layers.py)."""
    D = x.shape[-1]
    h = F.layer_norm(x, (D,), p["norm1.w"], p["norm1.b"], eps=1e-6)
    x = x + timm_attention(h, p["attn.qkv.w"], p["attn.qkv.b"], p["attn.proj.w"], p["attn.proj.b"], num_heads)
    h = F.layer_norm(x, (D,), p["norm2.w"], p["norm2.b"], eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, p["mlp.fc1.w"].T, p["mlp.fc1.b"]), approximate="tanh"), p["mlp.fc2.w"].T,
                 p["mlp.fc2.b"])
    return x + h


@pytest.mark.parametrize("reference", [timm_attention, sdpa_attention], ids=["timm", "sdpa"])
def test_attention_matches_torch(xp, rng, reference):
    N, T, D, H = 2, 5, 12, 3
    arrays = {"x": rng.standard_normal((N, T, D)), "qkv_w": rng.standard_normal((D, 3 * D)) * 0.4,
              "qkv_b": rng.standard_normal(3 * D) * 0.4, "proj_w": rng.standard_normal((D, D)) * 0.4,
              "proj_b": rng.standard_normal(D)}
    dout = rng.standard_normal((N, T, D))
    out, cache = attention.attention_forward(*(ours(a) for a in arrays.values()), num_heads=H)
    grads = attention.attention_backward(ours(dout), cache)

    leaves = {name: leaf(a) for name, a in arrays.items()}
    tout = reference(*leaves.values(), num_heads=H)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    for (name, t), g in zip(leaves.items(), grads):
        assert_close(g, t.grad, "d" + name)


def test_block_matches_torch(xp, rng):
    N, T, D, H = 2, 5, 8, 2
    shapes = {name: v.shape for name, v in transformer.init_block_params(rng, D, mlp_ratio=4.0).items()}
    arrays = {name: rng.standard_normal(shape) * 0.5 for name, shape in shapes.items()}  # not the 1 / 0 init
    x, dout = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    out, cache = transformer.block_forward(ours(x), {n: ours(a) for n, a in arrays.items()}, num_heads=H)
    dx, grads = transformer.block_backward(ours(dout), cache)

    tx, leaves = leaf(x), {name: leaf(a) for name, a in arrays.items()}
    tout = timm_block(tx, leaves, num_heads=H)
    tout.backward(torch.tensor(dout))
    assert_close(out, tout, "out")
    assert_close(dx, tx.grad, "dx")
    assert set(grads) == set(leaves)
    for name, t in leaves.items():
        assert_close(grads[name], t.grad, "d" + name)


# ----------------------------------------------------------------------------------------------
# The whole model: MaskedAutoencoderViT.forward of models_mae.py, transcribed

def models_mae_forward(p, pos_embed, decoder_pos_embed, cfg, imgs, noise):
    """MaskedAutoencoderViT.forward(imgs, mask_ratio) with our weights and the given noise -> loss, pred, mask.

    p: dict of torch leaves in our layout and names. PatchEmbed is the Conv2d of timm; our patch_embed.w
    (P, D) has its P inputs in patchify's (row, col, channel) order, so the conv kernel is its transpose,
    reshaped (D, p, p, C) and permuted to (D, C, p, p).
    """
    ps, C = cfg.patch_size, cfg.in_chans
    D = cfg.embed_dim

    # forward_encoder
    kernel = p["patch_embed.w"].T.reshape(D, ps, ps, C).permute(0, 3, 1, 2)  # (D, C, p, p)
    x = F.conv2d(imgs, kernel, p["patch_embed.b"], stride=ps).flatten(2).transpose(1, 2)  # PatchEmbed, BCHW -> BNC
    x = x + pos_embed[:, 1:, :]
    # random_masking
    N, L, _ = x.shape
    len_keep = int(L * (1 - cfg.mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], dtype=x.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    cls_token = p["cls_token"] + pos_embed[:, :1, :]
    x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    for i in range(cfg.depth):
        x = timm_block(x, {n: p[f"blocks.{i}.{n}"] for n in transformer.BLOCK_PARAM_NAMES}, cfg.num_heads)
    x = F.layer_norm(x, (D,), p["norm.w"], p["norm.b"], eps=1e-6)

    # forward_decoder
    Dd = cfg.decoder_embed_dim
    x = F.linear(x, p["decoder_embed.w"].T, p["decoder_embed.b"])
    mask_tokens = p["mask_token"].repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
    x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, Dd))  # unshuffle
    x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token
    x = x + decoder_pos_embed
    for i in range(cfg.decoder_depth):
        x = timm_block(x, {n: p[f"decoder_blocks.{i}.{n}"] for n in transformer.BLOCK_PARAM_NAMES},
                       cfg.decoder_num_heads)
    x = F.layer_norm(x, (Dd,), p["decoder_norm.w"], p["decoder_norm.b"], eps=1e-6)
    x = F.linear(x, p["decoder_pred.w"].T, p["decoder_pred.b"])
    pred = x[:, 1:, :]  # remove cls token

    # forward_loss
    h = imgs.shape[2] // ps
    target = imgs.reshape(N, C, h, ps, h, ps)
    target = torch.einsum("nchpwq->nhwpqc", target).reshape(N, h * h, ps ** 2 * C)  # patchify
    if cfg.norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
    loss = ((pred - target) ** 2).mean(dim=-1)  # [N, L], mean loss per patch
    loss = (loss * mask).sum() / mask.sum() if cfg.loss_on == "masked" else loss.mean()
    return loss, pred, mask


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
    noise = to_numpy(masking_noise(rng, 3, cfg.num_patches, dtype="float64"))

    loss, pred, mask, cache = model.forward(ours(imgs), ours(noise))
    dloss = 1.7  # a non-unit upstream gradient
    grads = model.backward(dloss, cache)

    leaves = {name: leaf(a) for name, a in arrays.items()}
    tloss, tpred, tmask = models_mae_forward(leaves, torch.tensor(to_numpy(model.pos_embed)),
                                             torch.tensor(to_numpy(model.decoder_pos_embed)), cfg,
                                             torch.tensor(imgs), torch.tensor(noise))
    (tloss * dloss).backward()
    np.testing.assert_array_equal(to_numpy(mask), tmask.numpy())
    assert float(loss) == pytest.approx(tloss.item(), rel=RTOL)
    assert_close(pred, tpred, "pred")
    assert list(grads) == list(leaves)
    for name, t in leaves.items():
        assert_close(grads[name], t.grad, "d" + name)
