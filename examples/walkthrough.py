"""Follow one batch of 8 images through the paper's ViT MAE, print every stage's shape, check a gradient live.

    python examples/walkthrough.py                                  # 8 synthetic images: always runs
    python examples/walkthrough.py --data ../shared/data/catsdogs   # 4 cats and 4 dogs from a photo folder
    python examples/walkthrough.py --markdown                       # the trace as the tables of the doc
    python examples/walkthrough.py --values                         # numbers: masking worked out, attention
    python examples/walkthrough.py --values --markdown              # the value blocks as the doc quotes them

This is the companion of docs/walkthrough.md. It builds the default ViT MAE (the training script's
defaults: ViTConfig()), takes one batch of 8 images and runs the forward pass one stage at a time with
the engine's own functions, recording (section, stage, file:function, shape) for each stage; then the
backward pass in reverse, one AdamW step, and a finite-difference check of the gradient.

The stages are spelled out here, not hidden inside MaskedAutoencoderViT.forward, so that a reader can see every
shape. To make sure this spelled-out version *is* the model, every result is compared with the
engine's own calls: the two detailed blocks with transformer.block_forward / block_backward, the loss
and prediction with MaskedAutoencoderViT.forward, every gradient with MaskedAutoencoderViT.backward. If the engine changes, this
script fails loudly instead of describing a model that no longer exists, and tests/test_walkthrough.py
checks that the doc's tables list exactly the stages and shapes printed here.

--values prints numbers instead: random_masking worked out on one image of 8 patches (noise, ids_shuffle,
ids_restore, ids_keep, mask, the kept tokens), the decoder's append of mask tokens and un-shuffle, and the
gradient back through both; image 0's mask grid and index arrays; the cls token's attention row in encoder
block 0; the gradient with the loss on removed or on all patches; and the blocks' cost by mask ratio. All
from the engine's own functions with a fixed seed; the doc quotes each block and the test compares them.
"""
import argparse
import os
import sys
import time
from typing import NamedTuple

import numpy as np

from tinymae import backend
from tinymae.model.attention import softmax_backward, softmax_forward
from tinymae.backend import asarray, host_rng, to_numpy, xp
from tinymae.data import channel_stats, normalize, random_crop_flip
from tinymae.util.datasets import load_dataset
from tinymae.model.layers import (gelu_backward, gelu_forward, layernorm_backward, layernorm_forward, linear_backward,
                            linear_forward, relu_forward)
from tinymae.config import MLPConfig, ViTConfig
from tinymae.model.loss import mse_backward, mse_forward
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import (append_mask_tokens, append_mask_tokens_backward, gather_tokens, masking_noise,
                             random_masking, random_masking_backward)
from tinymae.model.optim import AdamW, cosine_lr
from tinymae.model.patches import patchify
from tinymae.model.transformer import block_backward, block_forward

BATCH = 8  # the batch the doc follows
LOAD_SIZE = 54  # the training script's default --load-size: img_size * 9/8


# ----------------------------------------------------------------------------------------------
# the trace: a plain list of stages

class Trace:
    """The list of recorded stages, each a tuple (section, stage, where, shape)."""

    def __init__(self):
        self.stages = []
        self.section = ""

    def add(self, stage, where, array_or_shape):
        shape = array_or_shape if isinstance(array_or_shape, tuple) else tuple(array_or_shape.shape)
        self.stages.append((self.section, stage, where, tuple(int(n) for n in shape)))


def format_shape(shape):
    """(8, 64, 108) -> '(8, 64, 108)'; () -> '()'; (64,) -> '(64,)': Python's own tuple spelling."""
    return str(tuple(shape))


def check_close(what, ours, engine, rtol=1e-4):
    """The spelled-out stage must give the engine's numbers (float32: small rounding differences allowed)."""
    ours, engine = to_numpy(ours).astype(np.float64), to_numpy(engine).astype(np.float64)
    if ours.shape != engine.shape:
        raise RuntimeError(f"walkthrough drifted from the engine: {what} has shape {ours.shape} here, "
                           f"{engine.shape} in the engine. Update examples/walkthrough.py and docs/walkthrough.md.")
    scale = max(float(np.abs(engine).max()), 1e-12)
    diff = float(np.abs(ours - engine).max())
    if diff > rtol * scale:
        raise RuntimeError(f"walkthrough drifted from the engine: {what} differs by {diff:.3e} "
                           f"(largest value {scale:.3e}). Update examples/walkthrough.py and docs/walkthrough.md.")


def blocks_label(name, first, last):
    """'blocks 1..3', or 'decoder_blocks 1' when the range holds one block."""
    return f"{name} {first}" if first == last else f"{name} {first}..{last}"


# ----------------------------------------------------------------------------------------------
# one batch of images

def load_photos(data, n=BATCH, seed=0):
    """uint8 (n, 54, 54, 3): n/2 cats and n/2 dogs from `data` if it is a folder, else random pixels."""
    if data and os.path.isdir(data):
        dataset = load_dataset(data, size=LOAD_SIZE, per_class=n, progress=False)
        picks = np.concatenate([np.flatnonzero(dataset.labels == label)[:n // 2] for label in (0, 1)])
        if len(picks) == n:
            return dataset.images[picks], f"{n} photos from {data}"
        print(f"note: fewer than {n // 2} readable images per class in {data}; using synthetic images")
    rng = host_rng(seed)
    return rng.integers(0, 256, size=(n, LOAD_SIZE, LOAD_SIZE, 3), dtype=np.uint8), f"{n} synthetic images"


class Batch(NamedTuple):
    photos: object  # (8, 54, 54, 3) uint8, host
    mean: object  # (3,) per-channel mean in [0, 1] units, host
    std: object  # (3,)
    batch: object  # (8, 48, 48, 3) uint8 after the random crop and flip, host
    imgs: object  # (8, 3, 48, 48) normalised float32, backend
    noise: object  # (8, 64) masking noise, backend
    source: str  # where the photos came from, in words
    seed: int


def the_batch(data, seed, cfg):
    """The one batch the tour follows (the shape trace and --values alike), drawn as the training script
    draws it: the crops and flips, then the masking noise, from one seeded host generator."""
    rng = host_rng(seed + 1)
    photos, source = load_photos(data, seed=seed)  # (8, 54, 54, 3) uint8
    mean, std = channel_stats(photos)  # (3,), (3,): training uses the whole training split's
    batch = random_crop_flip(photos, cfg.img_size, rng)  # (8, 48, 48, 3)
    imgs = asarray(normalize(batch, mean, std))  # (8, 3, 48, 48)
    # The crops draw the same count of numbers whatever the pixels, so the noise, and with it every mask
    # and index array of the tour, depends on the seed only: the same for synthetic images and photos.
    noise = masking_noise(rng, BATCH, cfg.num_patches)  # (8, 64)
    return Batch(photos, mean, std, batch, imgs, noise, source, seed)


# ----------------------------------------------------------------------------------------------
# one Transformer block, stage by stage (the same arithmetic as transformer.py and attention.py)

def traced_block_forward(trace, x, p, num_heads):
    """x: (N, T, D) -> out (N, T, D), cache; records the block's inner stages."""
    N, T, D = x.shape
    H = num_heads
    d = D // H
    h1, norm1_cache = layernorm_forward(x, p["norm1.w"], p["norm1.b"])  # (N, T, D)
    trace.add("norm1", "tinymae/layers.py:layernorm_forward", h1)
    qkv, qkv_cache = linear_forward(h1, p["attn.qkv.w"], p["attn.qkv.b"])  # (N, T, 3D)
    trace.add("qkv = norm1 @ qkv.w + qkv.b", "tinymae/attention.py:attention_forward", qkv)
    qkv = qkv.reshape(N, T, 3, H, d).transpose(2, 0, 3, 1, 4)  # (3, N, H, T, d)
    q, k, v = qkv[0] * d ** -0.5, qkv[1], qkv[2]  # (N, H, T, d) each; q already scaled
    trace.add("q, k, v (heads by reshape)", "tinymae/attention.py:attention_forward", q)
    scores = q @ k.transpose(0, 1, 3, 2)  # (N, H, T, T)
    trace.add("scores = q k^T / sqrt(d)", "tinymae/attention.py:attention_forward", scores)
    attn, softmax_cache = softmax_forward(scores)  # (N, H, T, T)
    trace.add("attn = softmax(scores)", "tinymae/attention.py:softmax_forward", attn)
    heads = attn @ v  # (N, H, T, d)
    trace.add("attn @ v", "tinymae/attention.py:attention_forward", heads)
    merged = heads.transpose(0, 2, 1, 3).reshape(N, T, D)  # (N, T, D)
    trace.add("merge heads", "tinymae/attention.py:attention_forward", merged)
    a, proj_cache = linear_forward(merged, p["attn.proj.w"], p["attn.proj.b"])  # (N, T, D)
    trace.add("proj", "tinymae/attention.py:attention_forward", a)
    x1 = x + a  # (N, T, D)
    trace.add("x + attn(norm1(x))", "tinymae/transformer.py:block_forward", x1)
    h2, norm2_cache = layernorm_forward(x1, p["norm2.w"], p["norm2.b"])  # (N, T, D)
    trace.add("norm2", "tinymae/layers.py:layernorm_forward", h2)
    f1, fc1_cache = linear_forward(h2, p["mlp.fc1.w"], p["mlp.fc1.b"])  # (N, T, 4D)
    trace.add("fc1", "tinymae/layers.py:linear_forward", f1)
    g, gelu_cache = gelu_forward(f1)  # (N, T, 4D)
    trace.add("gelu", "tinymae/layers.py:gelu_forward", g)
    f2, fc2_cache = linear_forward(g, p["mlp.fc2.w"], p["mlp.fc2.b"])  # (N, T, D)
    trace.add("fc2", "tinymae/layers.py:linear_forward", f2)
    out = x1 + f2  # (N, T, D)
    trace.add("x + mlp(norm2(x))", "tinymae/transformer.py:block_forward", out)
    cache = (norm1_cache, qkv_cache, q, k, v, d, softmax_cache, proj_cache, norm2_cache, fc1_cache, gelu_cache,
             fc2_cache)
    return out, cache


def traced_block_backward(trace, dout, cache):
    """dout: (N, T, D) -> dx (N, T, D), grads; records the inner stages in reverse order."""
    (norm1_cache, qkv_cache, q, k, v, d, softmax_cache, proj_cache, norm2_cache, fc1_cache, gelu_cache,
     fc2_cache) = cache
    N, H, T, _ = q.shape
    attn = softmax_cache  # (N, H, T, T) the softmax output
    g = {}
    # x = x1 + mlp(norm2(x1))
    dg, g["mlp.fc2.w"], g["mlp.fc2.b"] = linear_backward(dout, fc2_cache)  # (N, T, 4D)
    trace.add("fc2 backward: dgelu", "tinymae/layers.py:linear_backward", dg)
    df1 = gelu_backward(dg, gelu_cache)  # (N, T, 4D)
    trace.add("gelu backward", "tinymae/layers.py:gelu_backward", df1)
    dh2, g["mlp.fc1.w"], g["mlp.fc1.b"] = linear_backward(df1, fc1_cache)  # (N, T, D)
    trace.add("fc1 backward", "tinymae/layers.py:linear_backward", dh2)
    dx1, g["norm2.w"], g["norm2.b"] = layernorm_backward(dh2, norm2_cache)  # (N, T, D)
    trace.add("norm2 backward", "tinymae/layers.py:layernorm_backward", dx1)
    dx1 = dx1 + dout  # (N, T, D) residual fan-out: branch + skip
    trace.add("+ dout (second residual)", "tinymae/transformer.py:block_backward", dx1)
    # x1 = x + attn(norm1(x))
    dmerged, g["attn.proj.w"], g["attn.proj.b"] = linear_backward(dx1, proj_cache)  # (N, T, D)
    trace.add("proj backward", "tinymae/attention.py:attention_backward", dmerged)
    dheads = dmerged.reshape(N, T, H, d).transpose(0, 2, 1, 3)  # (N, H, T, d)
    trace.add("split heads", "tinymae/attention.py:attention_backward", dheads)
    dv = attn.transpose(0, 1, 3, 2) @ dheads  # (N, H, T, d)
    trace.add("dv = attn^T dheads", "tinymae/attention.py:attention_backward", dv)
    dattn = dheads @ v.transpose(0, 1, 3, 2)  # (N, H, T, T)
    trace.add("dattn = dheads v^T", "tinymae/attention.py:attention_backward", dattn)
    dscores = softmax_backward(dattn, softmax_cache)  # (N, H, T, T)
    trace.add("softmax backward: dscores", "tinymae/attention.py:softmax_backward", dscores)
    dq = (dscores @ k) * d ** -0.5  # (N, H, T, d) through the scaling of q
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (N, H, T, d) q here is the scaled one
    trace.add("dq, dk", "tinymae/attention.py:attention_backward", dq)
    dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, T, 3 * H * d)  # (N, T, 3D)
    trace.add("dqkv (heads merged)", "tinymae/attention.py:attention_backward", dqkv)
    dh1, g["attn.qkv.w"], g["attn.qkv.b"] = linear_backward(dqkv, qkv_cache)  # (N, T, D)
    trace.add("qkv backward", "tinymae/attention.py:attention_backward", dh1)
    dx, g["norm1.w"], g["norm1.b"] = layernorm_backward(dh1, norm1_cache)  # (N, T, D)
    trace.add("norm1 backward", "tinymae/layers.py:layernorm_backward", dx)
    dx = dx + dx1  # (N, T, D) the first residual's fan-out
    trace.add("+ dx1 (first residual)", "tinymae/transformer.py:block_backward", dx)
    return dx, g


# ----------------------------------------------------------------------------------------------
# the whole step

def walkthrough(data=None, seed=0):
    """Run one batch through the default ViT MAE, stage by stage, checked against the engine.

    Returns (stages, results): stages is the list of (section, stage, where, shape) tuples that
    docs/walkthrough.md tabulates; results: the loss, where the images came from, the learning rate of the
    update and the number of parameters.
    """
    trace = Trace()
    cfg = ViTConfig()  # the defaults of examples/train_catsdogs.py --arch vit
    model = MaskedAutoencoderViT(cfg, seed=seed)
    p = model.params

    # ---- data -----------------------------------------------------------------------------------
    trace.section = "data"
    b = the_batch(data, seed, cfg)
    imgs, noise = b.imgs, b.noise  # (8, 3, 48, 48), (8, 64)
    trace.add("photos, resized and cached", "tinymae/data.py:load_dataset", b.photos)
    trace.add("per-channel mean (and std)", "tinymae/data.py:channel_stats", b.mean)
    trace.add("random crop and flip", "tinymae/data.py:random_crop_flip", b.batch)
    trace.add("imgs = (x/255 - mean) / std", "tinymae/data.py:normalize", imgs)
    trace.add("noise", "tinymae/masking.py:masking_noise", noise)

    # ---- encoder --------------------------------------------------------------------------------
    trace.section = "encoder"
    where = "tinymae/mae_vit.py:MaskedAutoencoderViT.forward_encoder"
    x = patchify(imgs, cfg.patch_size)  # (8, 64, 108)
    trace.add("patchify", "tinymae/patches.py:patchify", x)
    x, embed_cache = linear_forward(x, p["patch_embed.w"], p["patch_embed.b"])  # (8, 64, 128)
    trace.add("patch_embed", "tinymae/layers.py:linear_forward", x)
    trace.add("pos_embed[:, 1:]", "tinymae/pos_embed.py:get_2d_sincos_pos_embed", model.pos_embed[:, 1:])
    x = x + model.pos_embed[:, 1:]  # (8, 64, 128)
    trace.add("x + pos_embed", where, x)
    x, mask, ids_restore, mask_cache = random_masking(x, cfg.mask_ratio, noise)  # (8, 16, 128)
    ids_shuffle = xp.argsort(noise, axis=1)  # (8, 64) as random_masking computes it
    check_close("ids_restore", xp.argsort(ids_shuffle, axis=1), ids_restore, rtol=0)
    trace.add("ids_shuffle = argsort(noise)", "tinymae/masking.py:random_masking", ids_shuffle)
    trace.add("ids_restore = argsort(ids_shuffle)", "tinymae/masking.py:random_masking", ids_restore)
    trace.add("ids_keep = ids_shuffle[:, :K]", "tinymae/masking.py:random_masking", ids_shuffle[:, :cfg.len_keep])
    trace.add("mask (1 = removed)", "tinymae/masking.py:random_masking", mask)
    trace.add("x_masked (visible tokens)", "tinymae/masking.py:gather_tokens", x)
    cls_token = p["cls_token"] + model.pos_embed[:, :1]  # (1, 1, 128)
    trace.add("cls_token + pos_embed[:, :1]", where, cls_token)
    x = xp.concatenate([xp.broadcast_to(cls_token, (BATCH, 1, cfg.embed_dim)), x], axis=1)  # (8, 17, 128)
    trace.add("prepend cls token", where, x)

    trace.section = "encoder block 0"
    engine_x, engine_block0_cache = block_forward(x, model.block_params("blocks.0."), cfg.num_heads)
    x, traced_block0_cache = traced_block_forward(trace, x, model.block_params("blocks.0."), cfg.num_heads)
    check_close("encoder block 0", x, engine_x)  # (8, 17, 128)

    trace.section = "encoder"
    enc_caches = [engine_block0_cache]
    for i in range(1, cfg.depth):
        x, block_cache = block_forward(x, model.block_params(f"blocks.{i}."), cfg.num_heads)  # (8, 17, 128)
        enc_caches.append(block_cache)
    trace.add(blocks_label("blocks", 1, cfg.depth - 1), "tinymae/transformer.py:block_forward", x)
    latent, norm_cache = layernorm_forward(x, p["norm.w"], p["norm.b"])  # (8, 17, 128)
    trace.add("norm: latent", "tinymae/layers.py:layernorm_forward", latent)

    # ---- decoder --------------------------------------------------------------------------------
    trace.section = "decoder"
    where = "tinymae/mae_vit.py:MaskedAutoencoderViT.forward_decoder"
    x, dec_embed_cache = linear_forward(latent, p["decoder_embed.w"], p["decoder_embed.b"])  # (8, 17, 64)
    trace.add("decoder_embed", "tinymae/layers.py:linear_forward", x)
    x_cls, x = x[:, :1], x[:, 1:]  # (8, 1, 64), (8, 16, 64)
    trace.add("set the cls token aside", where, x)
    trace.add("mask_token, one per removed patch", "tinymae/masking.py:append_mask_tokens",
              (BATCH, cfg.num_patches - cfg.len_keep, cfg.decoder_embed_dim))
    x, mask_token_cache = append_mask_tokens(x, p["mask_token"], ids_restore)  # (8, 64, 64)
    trace.add("append and unshuffle (ids_restore)", "tinymae/masking.py:append_mask_tokens", x)
    x = xp.concatenate([x_cls, x], axis=1)  # (8, 65, 64)
    trace.add("cls token back in front", where, x)
    trace.add("decoder_pos_embed", "tinymae/pos_embed.py:get_2d_sincos_pos_embed", model.decoder_pos_embed)
    x = x + model.decoder_pos_embed  # (8, 65, 64)
    trace.add("x + decoder_pos_embed", where, x)

    trace.section = "decoder block 0"
    engine_x, engine_block0_cache = block_forward(x, model.block_params("decoder_blocks.0."), cfg.decoder_num_heads)
    x, _ = traced_block_forward(trace, x, model.block_params("decoder_blocks.0."), cfg.decoder_num_heads)
    check_close("decoder block 0", x, engine_x)  # (8, 65, 64)

    trace.section = "decoder"
    dec_caches = [engine_block0_cache]
    for i in range(1, cfg.decoder_depth):
        x, block_cache = block_forward(x, model.block_params(f"decoder_blocks.{i}."), cfg.decoder_num_heads)
        dec_caches.append(block_cache)
    trace.add(blocks_label("decoder_blocks", 1, cfg.decoder_depth - 1), "tinymae/transformer.py:block_forward", x)
    x, dec_norm_cache = layernorm_forward(x, p["decoder_norm.w"], p["decoder_norm.b"])  # (8, 65, 64)
    trace.add("decoder_norm", "tinymae/layers.py:layernorm_forward", x)
    x, pred_cache = linear_forward(x, p["decoder_pred.w"], p["decoder_pred.b"])  # (8, 65, 108)
    trace.add("decoder_pred", "tinymae/layers.py:linear_forward", x)
    pred = x[:, 1:]  # (8, 64, 108)
    trace.add("pred (cls token dropped)", where, pred)

    # ---- loss -----------------------------------------------------------------------------------
    trace.section = "loss"
    target = patchify(imgs, cfg.patch_size)  # (8, 64, 108)
    trace.add("target = patchify(imgs)", "tinymae/mae_vit.py:MaskedAutoencoderViT.forward_loss", target)
    loss, loss_cache = mse_forward(pred, target, mask)  # ()
    trace.add("per-patch MSE, weighted by mask", "tinymae/loss.py:mse_forward", mask)
    trace.add("loss", "tinymae/loss.py:mse_forward", loss)

    engine_loss, engine_pred, engine_mask, engine_cache = model.forward(imgs, noise)
    check_close("pred", pred, engine_pred)
    check_close("mask", mask, engine_mask, rtol=0)
    check_close("loss", loss, engine_loss)

    # ---- backward: the same stages in reverse ---------------------------------------------------
    trace.section = "backward: loss and decoder"
    grads = {}
    where = "tinymae/mae_vit.py:MaskedAutoencoderViT.backward"
    dpred = mse_backward(1.0, loss_cache)  # (8, 64, 108)
    trace.add("dpred (zero on visible patches)", "tinymae/loss.py:mse_backward", dpred)
    dx = xp.concatenate([xp.zeros((BATCH, 1, cfg.patch_dim), dtype=dpred.dtype), dpred], axis=1)  # (8, 65, 108)
    trace.add("zero row for the dropped cls prediction", where, dx)
    dx, grads["decoder_pred.w"], grads["decoder_pred.b"] = linear_backward(dx, pred_cache)  # (8, 65, 64)
    trace.add("decoder_pred backward: dx", "tinymae/layers.py:linear_backward", dx)
    trace.add("ddecoder_pred.w = x^T dout", "tinymae/layers.py:linear_backward", grads["decoder_pred.w"])
    dx, grads["decoder_norm.w"], grads["decoder_norm.b"] = layernorm_backward(dx, dec_norm_cache)  # (8, 65, 64)
    trace.add("decoder_norm backward", "tinymae/layers.py:layernorm_backward", dx)
    for i in reversed(range(cfg.decoder_depth)):
        dx, block_grads = block_backward(dx, dec_caches[i])  # (8, 65, 64)
        for name, g in block_grads.items():
            grads[f"decoder_blocks.{i}.{name}"] = g
    trace.add(blocks_label("decoder_blocks", cfg.decoder_depth - 1, 0) + " backward",
              "tinymae/transformer.py:block_backward", dx)
    dx_cls, dx = dx[:, :1], dx[:, 1:]  # (8, 1, 64), (8, 64, 64)
    trace.add("set the cls gradient aside", where, dx)
    dx, grads["mask_token"] = append_mask_tokens_backward(dx, mask_token_cache)  # (8, 16, 64), (1, 1, 64)
    trace.add("dx of the visible tokens (reshuffled)", "tinymae/masking.py:append_mask_tokens_backward", dx)
    trace.add("dmask_token = sum over removed slots", "tinymae/masking.py:append_mask_tokens_backward",
              grads["mask_token"])
    dx = xp.concatenate([dx_cls, dx], axis=1)  # (8, 17, 64)
    trace.add("cls gradient back in front", where, dx)
    dlatent, grads["decoder_embed.w"], grads["decoder_embed.b"] = linear_backward(dx, dec_embed_cache)  # (8, 17, 128)
    trace.add("decoder_embed backward: dlatent", "tinymae/layers.py:linear_backward", dlatent)

    trace.section = "backward: encoder"
    dx, grads["norm.w"], grads["norm.b"] = layernorm_backward(dlatent, norm_cache)  # (8, 17, 128)
    trace.add("norm backward", "tinymae/layers.py:layernorm_backward", dx)
    for i in reversed(range(1, cfg.depth)):
        dx, block_grads = block_backward(dx, enc_caches[i])  # (8, 17, 128)
        for name, g in block_grads.items():
            grads[f"blocks.{i}.{name}"] = g
    trace.add(blocks_label("blocks", cfg.depth - 1, 1) + " backward", "tinymae/transformer.py:block_backward", dx)

    trace.section = "backward: encoder block 0"
    engine_dx, engine_block_grads = block_backward(dx, enc_caches[0])
    dx, block_grads = traced_block_backward(trace, dx, traced_block0_cache)  # (8, 17, 128)
    check_close("encoder block 0 backward", dx, engine_dx)
    for name, g in block_grads.items():
        check_close(f"encoder block 0 backward, d{name}", g, engine_block_grads[name])
        grads[f"blocks.0.{name}"] = g

    trace.section = "backward: embedding"
    grads["cls_token"] = dx[:, :1].sum(axis=0, keepdims=True)  # (1, 1, 128) fan-out over the batch
    trace.add("dcls_token = sum over images", where, grads["cls_token"])
    dx = random_masking_backward(dx[:, 1:], mask_cache)  # (8, 64, 128)
    trace.add("back at their places, zeros at removed", "tinymae/masking.py:random_masking_backward", dx)
    _, grads["patch_embed.w"], grads["patch_embed.b"] = linear_backward(dx, embed_cache, need_dx=False)
    trace.add("dpatch_embed.w = patches^T dx", "tinymae/layers.py:linear_backward", grads["patch_embed.w"])

    engine_grads = model.backward(1.0, engine_cache)
    if set(grads) != set(engine_grads):
        raise RuntimeError(f"walkthrough drifted from the engine: gradients {sorted(set(engine_grads) ^ set(grads))} "
                           "are computed by only one of them. Update examples/walkthrough.py and docs/walkthrough.md.")
    for name in engine_grads:
        check_close(f"d{name}", grads[name], engine_grads[name])

    # ---- one optimiser step ---------------------------------------------------------------------
    trace.section = "update"
    optimizer = AdamW(model.params, lr=0.0, betas=(0.9, 0.95), weight_decay=0.05, no_decay=model.no_decay)
    optimizer.lr = cosine_lr(step=1, total_steps=50 * 15, warmup_steps=5 * 15, base_lr=0.005)
    trace.add("lr (warm-up, then cosine)", "tinymae/optim.py:cosine_lr", ())
    optimizer.step(grads)
    trace.add("AdamW moments m, v of patch_embed.w", "tinymae/optim.py:AdamW.step", optimizer.m["patch_embed.w"])

    results = {"loss": float(loss), "source": b.source, "lr": optimizer.lr, "n_params": model.num_params()}
    return trace.stages, results


# ----------------------------------------------------------------------------------------------
# how the MLP differs: its stages, briefly

def mlp_walkthrough(seed=0):
    """The MLP MAE on 8 random images: (section, stage, where, shape) tuples, checked against MaskedAutoencoderMLP.forward."""
    trace = Trace()
    trace.section = "mlp"
    cfg = MLPConfig()
    model = MaskedAutoencoderMLP(cfg, seed=seed)
    p = model.params
    rng = host_rng(seed + 1)
    imgs = asarray(rng.standard_normal((BATCH, 3, cfg.img_size, cfg.img_size)), dtype="float32")  # (8, 3, 48, 48)
    noise = masking_noise(rng, BATCH, cfg.num_patches)  # (8, 64)
    x = patchify(imgs, cfg.patch_size)  # (8, 64, 108)
    x, _ = linear_forward(x, p["patch_embed.w"], p["patch_embed.b"])  # (8, 64, 64)
    trace.add("patch_embed + pos_embed", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_encoder", x)
    x, mask, _, _ = random_masking(x + model.pos_embed, cfg.mask_ratio, noise, keep_order=True)  # (8, 16, 64)
    trace.add("random_masking, raster order", "tinymae/masking.py:random_masking", x)
    h = x.reshape(BATCH, -1)  # (8, 1024)
    trace.add("flatten the visible tokens", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_encoder", h)
    for i in range(len(cfg.encoder_dims)):
        h, _ = linear_forward(h, p[f"encoder.{i}.w"], p[f"encoder.{i}.b"])
        h, _ = relu_forward(h)
        trace.add(f"encoder.{i} Linear + ReLU", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_encoder", h)
    for i in range(len(cfg.decoder_dims)):
        h, _ = linear_forward(h, p[f"decoder.{i}.w"], p[f"decoder.{i}.b"])
        h, _ = relu_forward(h)
        trace.add(f"decoder.{i} Linear + ReLU", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_decoder", h)
    h, _ = linear_forward(h, p["decoder_pred.w"], p["decoder_pred.b"])  # (8, 6912)
    trace.add("decoder_pred: one slot per patch", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_decoder", h)
    pred = h.reshape(BATCH, cfg.num_patches, cfg.patch_dim)  # (8, 64, 108)
    trace.add("pred", "tinymae/mae_mlp.py:MaskedAutoencoderMLP.forward_decoder", pred)
    _, engine_pred, engine_mask, _ = model.forward(imgs, noise)
    check_close("MLP pred", pred, engine_pred)
    check_close("MLP mask", mask, engine_mask, rtol=0)
    return trace.stages


# ----------------------------------------------------------------------------------------------
# the numbers, not only the shapes (--values)
#
# Each function below returns named blocks of text; docs/walkthrough.md quotes every block verbatim and
# tests/test_walkthrough.py regenerates them and compares. Every number comes from the engine's own
# functions on seeded inputs; the only numbers typed in are the worked example's easy inputs (its tokens,
# mask token and upstream gradient), chosen so that every row shows where it came from.

EXAMPLE_L, EXAMPLE_D, EXAMPLE_RATIO = 8, 3, 0.75  # 8 patches, tokens 3 wide: K = int(8 * 0.25) = 2


def row_text(values, width=5, decimals=1):
    """(7.0, 7.1, 7.2) -> '(  7.0   7.1   7.2)': one token on one line."""
    return "(" + " ".join(f"{float(v):{width}.{decimals}f}" for v in values) + ")"


def ints_text(values, width=3):
    return " ".join(f"{int(v):{width}d}" for v in values)


def masking_example(seed=0):
    """The masking steps of MAE on one image of L = 8 patches, with the engine's functions -> a dict of host
    arrays (N = 1 dropped), forward and backward.

    The tokens are easy numbers, x[l] = (l, l + 0.1, l + 0.2), so that each row tells which patch it is;
    the noise is drawn by masking_noise from host_rng(seed), as in training. The encoder (and the
    decoder_embed Linear) would change the kept tokens' values but never their order, so here the kept
    tokens go straight to the decoder's step, and its gradient straight back to the masking.
    """
    L, D = EXAMPLE_L, EXAMPLE_D
    noise = masking_noise(host_rng(seed), 1, L)  # (1, L)
    x = asarray(np.arange(L)[:, None] + 0.1 * np.arange(D)[None, :], dtype="float32")[None]  # (1, L, D)
    x_masked, mask, ids_restore, masking_cache = random_masking(x, EXAMPLE_RATIO, noise)  # (1, K, D)
    K = x_masked.shape[1]
    ids_shuffle = xp.argsort(noise, axis=1)  # (1, L) as random_masking computes it

    mask_token = asarray(np.full((1, 1, D), -1.0), dtype="float32")  # (1, 1, D) an easy value to spot
    x_full, append_cache = append_mask_tokens(x_masked, mask_token, ids_restore)  # (1, L, D)
    x_shuffled = xp.concatenate([x_masked, xp.broadcast_to(mask_token, (1, L - K, D))], axis=1)  # (1, L, D)

    # An upstream gradient for the decoder's input with easy numbers: row l = (l, 1, 10 l) belongs to patch l.
    dx_full = asarray(np.arange(L)[:, None] * np.array([1.0, 0.0, 10.0]) + np.array([0.0, 1.0, 0.0]),
                      dtype="float32")[None]  # (1, L, D)
    dx_masked, dmask_token = append_mask_tokens_backward(dx_full, append_cache)  # (1, K, D), (1, 1, D)
    dx_shuffled = gather_tokens(dx_full, xp.argsort(ids_restore, axis=1))  # (1, L, D) what the backward gathers
    check_close("append_mask_tokens as a gather of the appended sequence", gather_tokens(x_shuffled, ids_restore),
                x_full, rtol=0)
    check_close("append_mask_tokens_backward's kept slots", dx_shuffled[:, :K], dx_masked, rtol=0)
    dx = random_masking_backward(dx_masked, masking_cache)  # (1, L, D)
    dx_padded = xp.concatenate([dx_masked, xp.zeros((1, L - K, D), dtype=dx_masked.dtype)], axis=1)  # (1, L, D)
    check_close("random_masking_backward as a gather of the padded gradient", gather_tokens(dx_padded, ids_restore),
                dx, rtol=0)
    arrays = dict(noise=noise, ids_shuffle=ids_shuffle, ids_restore=ids_restore, ids_keep=ids_shuffle[:, :K],
                  mask=mask, x=x, x_masked=x_masked, mask_token=mask_token, x_shuffled=x_shuffled, x_full=x_full,
                  dx_full=dx_full, dx_shuffled=dx_shuffled, dx_masked=dx_masked, dmask_token=dmask_token,
                  dx_padded=dx_padded, dx=dx)
    example = {name: to_numpy(a)[0] for name, a in arrays.items()}  # drop N = 1
    example.update(K=K, L=L, D=D, seed=seed)
    return example


def masking_example_blocks(ex):
    """The worked example as three blocks: masking, unshuffle (the decoder's side) and backward."""
    L, K, D = ex["L"], ex["K"], ex["D"]
    kept = [int(i) for i in ex["ids_keep"]]
    removed = [int(i) for i in ex["ids_shuffle"][K:]]
    cells = "".join(f"{i:6d}" for i in range(L))

    def cells_of(values, fmt):
        return "".join(f"{v:{fmt}}" for v in values)

    masking = [
        f"L = {L} patches, mask_ratio = {EXAMPLE_RATIO}: K = int({L} * (1 - {EXAMPLE_RATIO})) = {K} kept, "
        f"{L - K} removed. One image,",
        f"tokens D = {D} wide with easy values, x[l] = (l, l + 0.1, l + 0.2): the first number is the patch.",
        "",
        f"noise = masking_noise(host_rng({ex['seed']}), 1, {L})",
        "  patch l     " + cells,
        "  noise       " + cells_of(ex["noise"], "6.2f"),
        "ids_shuffle = argsort(noise): the patches, smallest noise first",
        "  slot s      " + cells,
        "  patch       " + cells_of(ex["ids_shuffle"], "6d"),
        "ids_restore = argsort(ids_shuffle): the slot each patch went to",
        "  patch l     " + cells,
        "  slot        " + cells_of(ex["ids_restore"], "6d"),
        f"ids_keep = ids_shuffle[:{K}] = [{' '.join(map(str, kept))}]: the {K} smallest noise values are kept",
        f"mask = (ids_restore >= {K}): 1 = removed, in patch order",
        "  patch l     " + cells,
        "  mask        " + cells_of(ex["mask"].astype(int), "6d"),
        "",
        "x_masked = gather_tokens(x, ids_keep): x_masked[k] = x[ids_keep[k]], what the encoder sees",
    ]
    for k, l in enumerate(kept):
        masking.append(f"  k = {k}   x[{l}] = {row_text(ex['x_masked'][k])}")

    unshuffle = [
        f"mask_token = {row_text(ex['mask_token'][0])}: in the model one learned vector shared by every removed",
        "patch; -1 here, to be easy to spot",
        "append_mask_tokens(x_masked, mask_token, ids_restore), in two steps:",
        f"1. x_shuffled = x_masked followed by {L - K} copies of mask_token: the slot order of ids_shuffle",
    ]
    for s in range(L):
        what = f"kept token of patch {kept[s]}" if s < K else f"mask token, for patch {removed[s - K]}"
        unshuffle.append(f"  slot {s}   {row_text(ex['x_shuffled'][s])}   {what}")
    unshuffle.append("2. un-shuffle, gather_tokens(x_shuffled, ids_restore): x_full[l] = x_shuffled[ids_restore[l]]")
    for l in range(L):
        s = int(ex["ids_restore"][l])
        what = "kept" if s < K else "mask token"
        unshuffle.append(f"  patch {l} <- slot {s}   {row_text(ex['x_full'][l])}   {what}")
    unshuffle.append("Every row is back at its patch: the decoder adds decoder_pos_embed[l] to row l, so each mask")
    unshuffle.append("token learns where it is.")

    def grad_text(row):
        return row_text(row, width=3, decimals=0)

    backward = [
        "An upstream gradient for x_full with easy numbers, row l = (l, 1, 10 l):",
        "  " + "   ".join(f"patch {l} {grad_text(ex['dx_full'][l])}" for l in range(0, L // 2)),
        "  " + "   ".join(f"patch {l} {grad_text(ex['dx_full'][l])}" for l in range(L // 2, L)),
        "",
        "append_mask_tokens_backward(dx_full, cache): undo the un-shuffle by a gather with",
        "ids_shuffle = argsort(ids_restore), dx_shuffled[s] = dx_full[ids_shuffle[s]]",
    ]
    for s in range(L):
        l = int(ex["ids_shuffle"][s])
        what = f"-> dx_masked[{s}], the kept token's gradient" if s < K else "-> summed into dmask_token"
        backward.append(f"  slot {s} <- patch {l}   {grad_text(ex['dx_shuffled'][s])}   {what}")
    backward += [
        f"dmask_token = sum of slots {K}..{L - 1} (patches {' + '.join(map(str, removed))}) = "
        f"{grad_text(ex['dmask_token'][0])}:",
        f"  the one mask token was used {L - K} times, so its gradient is the sum of the {L - K} uses",
        f"  (middle column: {L - K} ones).",
        "",
        "random_masking_backward(dx_masked, cache): pad the K gradients with L - K zero rows (slot",
        "order), then gather with ids_restore, the same un-shuffle as the decoder's:",
        "  dx_padded   " + "   ".join(f"slot {s} {grad_text(ex['dx_padded'][s])}" for s in range(K))
        + f"   slots {K}..{L - 1} zero",
    ]
    for l in range(L):
        s = int(ex["ids_restore"][l])
        what = "kept: the gradient it sent" if s < K else "removed: zero, the encoder never saw it"
        backward.append(f"  patch {l} <- slot {s}   {grad_text(ex['dx'][l])}   {what}")
    backward.append("(The encoder between is taken as the identity here, so each kept patch gets back exactly")
    backward.append("the gradient the decoder sent it; in the model the encoder's backward changes the values.)")
    return [("masking", masking), ("unshuffle", unshuffle), ("backward", backward)]


def grid_text(values_by_patch, grid, fmt):
    """L values in patch order -> grid rows of text (patch l at row l // grid, column l % grid)."""
    return ["".join(format(v, fmt) for v in values_by_patch[r * grid:(r + 1) * grid]) for r in range(grid)]


def image_blocks(b, cfg, index=0):
    """Image `index` of the tour's batch: its noise, mask grid and index arrays (L = 64, K = 16)."""
    L, K, grid = cfg.num_patches, cfg.len_keep, cfg.img_size // cfg.patch_size
    noise = to_numpy(b.noise)[index]  # (L,)
    _, mask, ids_restore, _ = random_masking(asarray(np.zeros((1, L, 1), dtype="float32")), cfg.mask_ratio,
                                             b.noise[index:index + 1])  # the tokens do not matter, only the noise
    mask, ids_restore = to_numpy(mask)[0].astype(int), to_numpy(ids_restore)[0]  # (L,), (L,)
    ids_shuffle = np.argsort(ids_restore)  # (L,) the inverse permutation
    cells = [f"[{l:2d}]" if not mask[l] else f" {l:2d} " for l in range(L)]
    lines = [
        f"Image {index} of the tour's batch ({b.source}, --seed {b.seed}), on the {grid} x {grid} patch grid: "
        "patch l at",
        f"row l // {grid}, column l % {grid}. L = {L}, K = {K} kept. The noise depends on the seed only: --data gives "
        "the",
        "same arrays.",
        "",
    ]
    noise_rows = grid_text(noise, grid, "5.2f")
    restore_rows = grid_text(ids_restore, grid, "4d")
    left = 2 + len(noise_rows[0]) + 6  # where the right-hand grid starts
    lines.append(f"{'noise (the K smallest are kept)':<{left}}ids_restore (the slot of each patch)")
    lines += [f"  {n}      {r}" for n, r in zip(noise_rows, restore_rows)]
    mask_rows = [" ".join(cells[r * grid:(r + 1) * grid]) for r in range(grid)]
    left = 2 + len(mask_rows[0]) + 6
    lines += ["", f"{f'mask grid: [l] kept (slot < {K}), l removed':<{left}}mask (1 = removed)"]
    for r in range(grid):
        row_mask = " ".join(str(m) for m in mask[r * grid:(r + 1) * grid])
        lines.append(f"  {mask_rows[r]}      {row_mask}")
    lines += ["", f"ids_shuffle (slot s -> patch), {grid * 2} slots a line; the first line is ids_keep, what the "
                  "encoder sees:"]
    per_line = 2 * grid
    for start in range(0, L, per_line):
        label = "ids_keep" if start == 0 else "removed "
        lines.append(f"  slots {start:2d}-{start + per_line - 1:2d} {label}  {ints_text(ids_shuffle[start:start + per_line])}")
    return [("image", lines)]


def attention_blocks(b, model, index=0):
    """The cls token's row of encoder block 0's attention for image `index`, per head, from the engine's cache."""
    cfg = model.config
    _, _, ids_restore, cache = model.forward_encoder(b.imgs, b.noise)
    attn = to_numpy(cache.blocks[0].attn.attn)[index]  # (H, 1+K, 1+K) softmax rows
    ids_keep = np.argsort(to_numpy(ids_restore)[index])[:cfg.len_keep]  # (K,) the patch behind each token
    H, T = attn.shape[0], attn.shape[1]
    row = attn[:, 0, :]  # (H, T) the cls token (query 0) over every token
    lines = [
        f"Image {index} of the tour's batch ({b.source}), encoder block 0 of the default ViT, initial weights",
        f"(--seed {b.seed}): cache.blocks[0].attn.attn[{index}, h, 0, :], row 0 of softmax(q k^T / sqrt(d)) in "
        "head h,",
        f"how much the cls token reads from each of the T = 1 + K = {T} tokens. Token t >= 1 holds patch",
        "ids_keep[t - 1].",
        "",
        "  token   patch  " + "".join(f"  head {h}" for h in range(H)),
    ]
    for t in range(T):
        patch = "cls" if t == 0 else str(int(ids_keep[t - 1]))
        lines.append(f"  {t:5d}  {patch:>5}  " + "".join(f"{row[h, t]:8.3f}" for h in range(H)))
    lines.append("  sum           " + "".join(f"{row[h].sum():8.3f}" for h in range(H)))
    lines.append(f"Each head's row sums to 1 (uniform would be 1 / {T} = {1 / T:.3f} each). These are untrained")
    lines.append("weights; docs/attention.png draws a trained model's rows on the image.")
    return [("attention", lines)]


def loss_on_blocks(b, seed=0):
    """dpred on visible and removed patches, with the loss on removed patches (MAE) and on all."""
    lines = ["dpred = mse_backward(1.0, cache.loss) of the default ViT on the tour's batch, |dpred| summed over",
             "the patches of each kind:", "",
             "  loss_on    removed patches    visible patches"]
    for loss_on in ("masked", "all"):
        model = MaskedAutoencoderViT(ViTConfig(loss_on=loss_on), seed=seed)
        _, _, mask, cache = model.forward(b.imgs, b.noise)
        dpred = np.abs(to_numpy(mse_backward(1.0, cache.loss))).sum(axis=-1)  # (N, L)
        removed = to_numpy(mask).astype(bool)
        lines.append(f"  {loss_on:<8} {dpred[removed].sum():17.6f} {dpred[~removed].sum():18.6f}")
    lines.append("With --loss-on masked (the paper) no gradient reaches a visible patch's prediction.")
    return [("loss_on", lines)]


def block_multiply_adds(T, D, mlp_ratio=4.0):
    """Multiply-adds of one Transformer block's matrix products on T tokens of width D (per image):
    qkv T D 3D, scores and attn @ v T T D each (all heads together), proj T D D, fc1 and fc2 T D 4D each."""
    hidden = int(D * mlp_ratio)
    return T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * hidden


def cost_blocks(ratios=(0.0, 0.5, 0.75, 0.9)):
    """What removing patches saves: the blocks' multiply-adds per image, by mask ratio, for the default ViT."""
    cfg = ViTConfig()
    L = cfg.num_patches
    decoder = cfg.decoder_depth * block_multiply_adds(1 + L, cfg.decoder_embed_dim, cfg.mlp_ratio)
    lines = ["Multiply-adds per image in the Transformer blocks' matrix products (qkv, q k^T, attn @ v, proj, fc1,",
             f"fc2), default ViT: {cfg.depth} encoder blocks of D = {cfg.embed_dim} on T = 1 + K tokens, "
             f"{cfg.decoder_depth} decoder blocks of",
             f"Dd = {cfg.decoder_embed_dim} on T = 1 + L = {1 + L}. block_multiply_adds() in examples/walkthrough.py.",
             "",
             "  mask_ratio    K    T   encoder    decoder    whole"]
    cost = {}
    for ratio in ratios:
        K = int(L * (1 - ratio))
        encoder = cfg.depth * block_multiply_adds(1 + K, cfg.embed_dim, cfg.mlp_ratio)
        cost[ratio] = (encoder, encoder + decoder)
        lines.append(f"  {ratio:10.2f} {K:4d} {1 + K:4d} {encoder / 1e6:8.1f} M {decoder / 1e6:8.1f} M "
                     f"{(encoder + decoder) / 1e6:6.1f} M")
    full, mae = cost[0.0], cost[cfg.mask_ratio]
    lines.append(f"mask_ratio 0: the encoder processes all {L} patches (as the mask-token encoder of ablations.py "
                 "does).")
    lines.append(f"At the default {cfg.mask_ratio}: the encoder costs {full[0] / mae[0]:.1f}x less, the whole model "
                 f"{full[1] / mae[1]:.1f}x less.")
    return [("cost", lines)]


def values(data=None, seed=0):
    """Every --values block, in order: a list of (name, lines)."""
    cfg = ViTConfig()
    b = the_batch(data, seed, cfg)
    blocks = masking_example_blocks(masking_example(seed))
    blocks += image_blocks(b, cfg)
    blocks += attention_blocks(b, MaskedAutoencoderViT(cfg, seed=seed))
    blocks += loss_on_blocks(b, seed)
    blocks += cost_blocks()
    return [(name, [line.rstrip() for line in lines]) for name, lines in blocks]


def values_text(blocks, markdown=False):
    """The blocks as the terminal shows them, or (markdown) as docs/walkthrough.md quotes them."""
    out = []
    for name, lines in blocks:
        if markdown:
            out += [f"<!-- walkthrough --values: {name} -->", "```text", *lines, "```", ""]
        else:
            out += [f"-- {name} " + "-" * (96 - len(name)), *lines, ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# the live gradient check

def to_float64(model):
    """A float64 model for finite differences: the parameters and the constant position tables."""
    for name, value in model.params.items():
        model.params[name] = value.astype("float64")
    model.pos_embed = model.pos_embed.astype("float64")
    model.decoder_pos_embed = model.decoder_pos_embed.astype("float64")
    return model


def gradient_check(seed=0, per_param=3, h=1e-5):
    """Centered finite differences of the whole default ViT MAE's loss, in float64, on 8 random images.

    Checks `per_param` random elements of a few parameters spread along the chain (the decoder's
    mask_token, the cls token, the first block's qkv weight, the patch embedding) and the directional
    derivative along one random direction in *all* parameters at once. Returns a list of
    (what, analytic, numeric, relative error), the error as cs231n's |a - n| / max(1e-8, |a| + |n|).
    """
    model = to_float64(MaskedAutoencoderViT(ViTConfig(), seed=seed))
    rng = host_rng(seed + 2)
    imgs = asarray(rng.standard_normal((BATCH, 3, 48, 48)))  # (8, 3, 48, 48) float64
    noise = masking_noise(rng, BATCH, model.config.num_patches)  # (8, 64)

    def loss_now():
        return float(model.forward(imgs, noise)[0])

    _, _, _, cache = model.forward(imgs, noise)
    grads = model.backward(1.0, cache)
    rows = []
    for name in ("mask_token", "cls_token", "blocks.0.attn.qkv.w", "patch_embed.w"):
        flat = model.params[name].reshape(-1)  # a view: writing into it perturbs the parameter
        g = to_numpy(grads[name]).reshape(-1)
        # Elements whose gradient is at least 1% of the parameter's largest: for a gradient near zero the
        # difference quotient is all rounding (loss ~ 1, float64 eps ~ 1e-16, h = 1e-5: ~1e-11 absolute).
        candidates = np.flatnonzero(np.abs(g) >= 0.01 * np.abs(g).max())
        for i in rng.choice(candidates, size=min(per_param, len(candidates)), replace=False):
            old = float(flat[i])
            flat[i] = old + h
            f_plus = loss_now()
            flat[i] = old - h
            f_minus = loss_now()
            flat[i] = old
            numeric = (f_plus - f_minus) / (2 * h)
            analytic = float(g[i])
            rows.append((f"d{name}[{int(i)}]", analytic, numeric, rel_error(analytic, numeric)))

    # Every backward in the chain at once: d/dt loss(params + t v) at t = 0 equals sum(grad * v).
    direction = {name: asarray(rng.standard_normal(p.shape)) for name, p in model.params.items()}
    analytic = sum(float((grads[name] * direction[name]).sum()) for name in model.params)
    saved = {name: p.copy() for name, p in model.params.items()}
    values = []
    for sign in (1.0, -1.0):
        for name in model.params:
            model.params[name] = saved[name] + sign * h * direction[name]
        values.append(loss_now())
    model.params.update(saved)
    numeric = (values[0] - values[1]) / (2 * h)
    rows.append(("all parameters, random direction", analytic, numeric, rel_error(analytic, numeric)))
    return rows


def rel_error(a, n):
    return abs(a - n) / max(1e-8, abs(a) + abs(n))


# ----------------------------------------------------------------------------------------------
# output

def markdown_tables(stages):
    """The trace as the doc's tables: one per section, columns stage | where | shape."""
    lines, section = [], None
    for sec, stage, where, shape in stages:
        if sec != section:
            lines += ["", f"<!-- {sec} -->", "| stage | where | shape |", "| --- | --- | --- |"]
            section = sec
        lines.append(f"| {stage} | `{where}` | `{format_shape(shape)}` |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Follow one batch of 8 images through the default ViT MAE: every stage's file, function and "
                    "shape, forward and backward, then a live finite-difference check of the gradient.")
    parser.add_argument("--data", default=None,
                        help="photo folder (any layout train_catsdogs.py reads); default: 8 synthetic images")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, the crops and the masks")
    parser.add_argument("--markdown", action="store_true",
                        help="print the trace as the tables of docs/walkthrough.md (with --values: the value blocks "
                             "as the doc quotes them)")
    parser.add_argument("--values", action="store_true",
                        help="print numbers instead of shapes: masking worked out on 8 patches (forward and backward), "
                             "image 0's mask grid and index arrays, the cls token's attention row in encoder block 0, "
                             "the gradient with the loss on removed or all patches, the blocks' cost by mask ratio")
    args = parser.parse_args(argv)

    if args.values:
        print(values_text(values(args.data, seed=args.seed), markdown=args.markdown), end="")
        return 0

    t0 = time.perf_counter()
    stages, results = walkthrough(args.data, seed=args.seed)
    stages += mlp_walkthrough(seed=args.seed)
    if args.markdown:
        print(markdown_tables(stages))
        return 0

    print(f"default ViT MAE ({results['n_params']:,} parameters), backend {backend.name}, {results['source']}; "
          "every stage below was checked against the engine's own forward and backward")
    section = None
    for sec, stage, where, shape in stages:
        if sec != section:
            print(f"\n-- {sec} " + "-" * (96 - len(sec)))
            section = sec
        print(f"{stage:<40} {where:<52} {format_shape(shape)}")
    print(f"\nloss {results['loss']:.4f}")

    print("\ngradient check: float64, centered differences (h = 1e-5), 8 random images")
    rows = gradient_check(seed=args.seed)
    for what, analytic, numeric, err in rows:
        print(f"  {what:<34} analytic {analytic:+.8e}  numeric {numeric:+.8e}  rel error {err:.1e}")
    worst = max(err for *_, err in rows)
    ok = worst < 1e-6
    print(f"worst relative error {worst:.1e}: {'OK' if ok else 'FAILED'} (tolerance 1e-6); "
          f"{time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
