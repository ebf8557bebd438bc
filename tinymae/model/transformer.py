"""The Transformer block of the ViT in models_mae.py (timm's `Block`): pre-norm, two residual branches.

    x = x + attn(norm1(x))        multi-head self-attention (attention.py)
    x = x + mlp(norm2(x))         mlp = fc1 (D -> mlp_ratio * D) -> GELU -> fc2 (-> D)

Fine-tuning may also drop each branch per image (drop path, layers.py): x = x + drop_path(branch(x)).

A block's parameters are a dict with timm's names (without the "blocks.{i}." prefix the model adds):
    norm1.w, norm1.b, attn.qkv.w, attn.qkv.b, attn.proj.w, attn.proj.b,
    norm2.w, norm2.b, mlp.fc1.w, mlp.fc1.b, mlp.fc2.w, mlp.fc2.b
Linear weights are (D_in, D_out), the transpose of torch's.
"""
from typing import NamedTuple

from ..backend import xp
from .attention import attention_backward, attention_forward
from .layers import (drop_path_backward, drop_path_forward, gelu_backward, gelu_forward, layernorm_backward,
                     layernorm_forward, linear_backward, linear_forward, ones, xavier_uniform, zeros)

BLOCK_PARAM_NAMES = ("norm1.w", "norm1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
                     "norm2.w", "norm2.b", "mlp.fc1.w", "mlp.fc1.b", "mlp.fc2.w", "mlp.fc2.b")


def init_block_params(rng, dim, mlp_ratio, qkv_init="fused"):
    """One block's parameters as models_mae._init_weights: xavier-uniform for every Linear, zero biases,
    LayerNorm weight 1 and bias 0.

    qkv_init: "fused" draws the fused (D, 3D) qkv weight as one Linear, as models_mae.py does; its
    xavier bound sqrt(6 / (D + 3D)) is sqrt(2) smaller than that of three separate D -> D projections.
    "per-projection" draws q, k and v as three Linear layers, as the JAX ViT that models_mae.py's
    comment follows has them (MoCo v3 re-initialises timm's fused qkv the same way)."""
    hidden = int(dim * mlp_ratio)  # as timm's Block: mlp_hidden_dim = int(dim * mlp_ratio)
    params = {}
    params["norm1.w"] = ones(dim)  # (D,)
    params["norm1.b"] = zeros(dim)  # (D,)
    if qkv_init == "fused":
        params["attn.qkv.w"] = xavier_uniform(rng, dim, 3 * dim)  # (D, 3D)
    else:  # the columns are (q | k | v), each block a D -> D projection
        params["attn.qkv.w"] = xp.concatenate([xavier_uniform(rng, dim, dim) for _ in range(3)], axis=1)  # (D, 3D)
    params["attn.qkv.b"] = zeros(3 * dim)  # (3D,)
    params["attn.proj.w"] = xavier_uniform(rng, dim, dim)  # (D, D)
    params["attn.proj.b"] = zeros(dim)  # (D,)
    params["norm2.w"] = ones(dim)  # (D,)
    params["norm2.b"] = zeros(dim)  # (D,)
    params["mlp.fc1.w"] = xavier_uniform(rng, dim, hidden)  # (D, 4D)
    params["mlp.fc1.b"] = zeros(hidden)  # (4D,)
    params["mlp.fc2.w"] = xavier_uniform(rng, hidden, dim)  # (4D, D)
    params["mlp.fc2.b"] = zeros(dim)  # (D,)
    return params


class BlockCache(NamedTuple):
    norm1: tuple
    attn: tuple  # attention.AttentionCache
    norm2: tuple
    fc1: tuple
    gelu: tuple
    fc2: tuple
    drop_path: tuple  # (attention branch, MLP branch) drop_path_forward caches, or None without drop path


def block_forward(x, params, num_heads, keep=None):
    """x: (N, T, D), params: a block's parameter dict -> out: (N, T, D).

    keep: None, or (N, 2) drop-path factors of each image's attention and MLP branch (layers.py)."""
    h, norm1_cache = layernorm_forward(x, params["norm1.w"], params["norm1.b"])  # (N, T, D)
    h, attn_cache = attention_forward(h, params["attn.qkv.w"], params["attn.qkv.b"],
                                      params["attn.proj.w"], params["attn.proj.b"], num_heads)  # (N, T, D)
    if keep is not None:
        h, drop1_cache = drop_path_forward(h, keep[:, 0])  # (N, T, D)
    x = x + h  # (N, T, D) first residual

    h, norm2_cache = layernorm_forward(x, params["norm2.w"], params["norm2.b"])  # (N, T, D)
    h, fc1_cache = linear_forward(h, params["mlp.fc1.w"], params["mlp.fc1.b"])  # (N, T, 4D)
    h, gelu_cache = gelu_forward(h)  # (N, T, 4D)
    h, fc2_cache = linear_forward(h, params["mlp.fc2.w"], params["mlp.fc2.b"])  # (N, T, D)
    if keep is not None:
        h, drop2_cache = drop_path_forward(h, keep[:, 1])  # (N, T, D)
    out = x + h  # (N, T, D) second residual

    drop_caches = (drop1_cache, drop2_cache) if keep is not None else None
    return out, BlockCache(norm1_cache, attn_cache, norm2_cache, fc1_cache, gelu_cache, fc2_cache, drop_caches)


def block_backward(dout, cache):
    """dout: (N, T, D) -> dx (N, T, D), grads: a dict with the keys of the block's parameters."""
    g = {}

    # x = x + mlp(norm2(x))
    dh = dout if cache.drop_path is None else drop_path_backward(dout, cache.drop_path[1])  # (N, T, D)
    dh, g["mlp.fc2.w"], g["mlp.fc2.b"] = linear_backward(dh, cache.fc2)  # (N, T, 4D)
    dh = gelu_backward(dh, cache.gelu)  # (N, T, 4D)
    dh, g["mlp.fc1.w"], g["mlp.fc1.b"] = linear_backward(dh, cache.fc1)  # (N, T, D)
    dx, g["norm2.w"], g["norm2.b"] = layernorm_backward(dh, cache.norm2)  # (N, T, D)
    # The residual fan-out: x fed both the MLP branch and the skip connection, so its gradient is the
    # sum of the two (into dx, fresh from layernorm_backward; dout belongs to the caller).
    dx += dout

    # x = x + attn(norm1(x))
    dh = dx if cache.drop_path is None else drop_path_backward(dx, cache.drop_path[0])  # (N, T, D)
    dh, g["attn.qkv.w"], g["attn.qkv.b"], g["attn.proj.w"], g["attn.proj.b"] = attention_backward(dh, cache.attn)
    dh, g["norm1.w"], g["norm1.b"] = layernorm_backward(dh, cache.norm1)  # (N, T, D)
    dh += dx  # the same fan-out for the first residual: the branch's gradient plus the skip's
    dx = dh

    grads = {name: g[name] for name in BLOCK_PARAM_NAMES}
    return dx, grads


# ----------------------------------------------------------------------------------------------
# A stack of blocks: timm's `for blk in self.blocks: x = blk(x)`, the parameters of block i under
# "<prefix>.{i}.<name>" in the model's parameter dict (prefix "blocks" or "decoder_blocks").

class Block(NamedTuple):
    """An implementation of the block: this file's (BLOCK, the reference), or fast/cuda.py's fused kernels. A
    model holds the one it computes with (model.block) and hands it to blocks_forward and blocks_backward."""
    forward: object
    backward: object


BLOCK = Block(block_forward, block_backward)


def blocks_forward(x, params, prefix, depth, num_heads, keep=None, block=BLOCK):
    """x: (N, T, D) -> out: (N, T, D) after `depth` blocks, and their caches (a list, first block first).
    keep: None, or (N, depth, 2) drop-path factors, block i's in keep[:, i]."""
    caches = []
    for i in range(depth):
        p = {name: params[f"{prefix}.{i}.{name}"] for name in BLOCK_PARAM_NAMES}
        x, cache = block.forward(x, p, num_heads, None if keep is None else keep[:, i])  # (N, T, D)
        caches.append(cache)
    return x, caches


def blocks_backward(dout, caches, prefix, first=0, block=BLOCK):
    """dout: (N, T, D) -> dx (N, T, D), and the blocks' gradients under their names in the model's dict.
    The blocks in reverse order, the last one first; first > 0 stops after block `first` (the blocks
    before it are frozen, and no gradient is computed for them)."""
    grads = {}
    dx = dout
    for i in reversed(range(first, len(caches))):
        dx, block_grads = block.backward(dx, caches[i])  # (N, T, D)
        for name, g in block_grads.items():
            grads[f"{prefix}.{i}.{name}"] = g
    return dx, grads
