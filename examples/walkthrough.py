"""Follow one batch of 8 images through the paper's ViT MAE, print every stage's shape, check a gradient live.

    python examples/walkthrough.py                                  # 8 synthetic images: always runs
    python examples/walkthrough.py --data ../shared/data/catsdogs   # 4 cats and 4 dogs from a photo folder
    python examples/walkthrough.py --markdown                       # the trace as the tables of the doc

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
"""
import argparse
import os
import sys
import time

import numpy as np

from tinymae import backend
from tinymae.attention import softmax_backward, softmax_forward
from tinymae.backend import asarray, host_rng, to_numpy, xp
from tinymae.data import channel_stats, load_dataset, normalize, random_crop_flip
from tinymae.layers import (gelu_backward, gelu_forward, layernorm_backward, layernorm_forward, linear_backward,
                            linear_forward, relu_forward)
from tinymae.config import MLPConfig, ViTConfig
from tinymae.loss import mse_backward, mse_forward
from tinymae.mae_mlp import MaskedAutoencoderMLP
from tinymae.mae_vit import MaskedAutoencoderViT
from tinymae.masking import (append_mask_tokens, append_mask_tokens_backward, masking_noise, random_masking,
                             random_masking_backward)
from tinymae.optim import AdamW, cosine_lr
from tinymae.patches import patchify
from tinymae.transformer import block_backward, block_forward

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
    rng = host_rng(seed + 1)  # as the training script: crops and flips, then masks, from one generator

    # ---- data -----------------------------------------------------------------------------------
    trace.section = "data"
    photos, source = load_photos(data, seed=seed)  # (8, 54, 54, 3) uint8
    trace.add("photos, resized and cached", "tinymae/data.py:load_dataset", photos)
    mean, std = channel_stats(photos)  # (3,), (3,): training uses the whole training split's
    trace.add("per-channel mean (and std)", "tinymae/data.py:channel_stats", mean)
    batch = random_crop_flip(photos, cfg.img_size, rng)  # (8, 48, 48, 3)
    trace.add("random crop and flip", "tinymae/data.py:random_crop_flip", batch)
    imgs = asarray(normalize(batch, mean, std))  # (8, 3, 48, 48)
    trace.add("imgs = (x/255 - mean) / std", "tinymae/data.py:normalize", imgs)
    noise = masking_noise(rng, BATCH, cfg.num_patches)  # (8, 64)
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

    results = {"loss": float(loss), "source": source, "lr": optimizer.lr, "n_params": model.num_params()}
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
    parser.add_argument("--markdown", action="store_true", help="print the trace as the tables of docs/walkthrough.md")
    args = parser.parse_args(argv)

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
