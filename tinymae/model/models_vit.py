"""The fine-tuning network: the MAE's ViT encoder with a classification head, as models_vit.py of the
official MAE (timm's VisionTransformer with global_pool=True, the paper's fine-tuning default):

  forward_encoder   patchify -> patch_embed (Linear P -> D) -> + pos_embed[:, 1:]
                    -> prepend cls_token + pos_embed[:, :1]                          (N, 1+L, D)
                    -> depth x Block                                                 (N, 1+L, D)
  forward_features  forward_encoder -> global pool: the mean of the L patch tokens (the cls token
                    is left out) -> fc_norm (a fresh LayerNorm)                      (N, D)
  forward_head      head (Linear D -> num_classes)                                   = logits (N, C)
  forward           + softmax cross-entropy with label smoothing, or against mixup's soft targets (loss.py)
  backward          the same steps in reverse order

Two options of main_finetune.py's recipe change how it trains, not what it computes at test time:
  * drop path (stochastic depth, layers.py): while training, each block's two residual branches are
    skipped per image with a rate that grows linearly over the blocks, from 0 to `drop_path` (timm's
    `dpr = linspace(0, drop_path_rate, depth)`); the factors are drawn on the host (drop_path_keep)
    and passed to forward, so NumPy and CuPy runs drop the same branches;
  * partial fine-tuning (the paper's Sec. 4.3, Figure 9): only the last `trainable_blocks` blocks,
    fc_norm and the head train; the rest of the encoder stays as pre-trained, and backward stops at
    the first frozen block. With 0 blocks only fc_norm and the head train: a linear classifier on the
    pooled features, the linear probe of the paper's Figure 9.

The encoder is MaskedAutoencoderViT's (mae_vit.py): the same parameters under the same names, the same
fixed sin-cos position table, the same Blocks, every patch visible. Two steps of the MAE's encoder are
not here, as in the official models_vit.py:
  * masking: the classifier sees every patch, so there is nothing to remove (the MAE's forward_encoder
    with mask_ratio=0 keeps all L tokens too, only shuffled, which changes nothing after attention and
    the mean: tests/test_finetune.py checks that both encoders compute the same tokens);
  * the final `norm`: with global_pool the official VisionTransformer deletes it (`del self.norm`) and
    normalises the pooled vector with a new LayerNorm, fc_norm, instead. The MAE's norm.w / norm.b are
    therefore not parameters of this model at all: neither used nor trained.
The decoder and the mask token are dropped. The pre-trained weights are copied, so fine-tuning never
changes the MAE they came from.

Initialisation of the new parts, as main_finetune.py: fc_norm weight 1 and bias 0 (a fresh LayerNorm),
head weight trunc_normal(std=2e-5) (a normal with std 2e-5 here: cut off at +-2 std or not, values
that small make the same near-zero start) and bias 0, so that at the first step every class has the
same probability and the pre-trained features are not disturbed by a random head.
"""
from typing import NamedTuple

import numpy  # host-side: the drop-path factors are drawn there

from ..backend import host_rng, xp
from .layers import layernorm_backward, layernorm_forward, linear_backward, linear_forward, normal, ones, zeros
from .loss import (soft_target_cross_entropy_backward, soft_target_cross_entropy_forward,
                   softmax_cross_entropy_backward, softmax_cross_entropy_forward)
from .mae_vit import embed_patches, embed_patches_backward, prepend_cls_token, prepend_cls_token_backward
from .transformer import BLOCK_PARAM_NAMES, blocks_backward, blocks_forward


def encoder_param_names(config):
    """The MAE parameters the classifier takes over, in the MAE's order: the encoder without its norm."""
    names = ["patch_embed.w", "patch_embed.b", "cls_token"]
    for i in range(config.depth):
        names += [f"blocks.{i}.{name}" for name in BLOCK_PARAM_NAMES]
    return names


class ClassifierEncoderCache(NamedTuple):
    patch_embed: tuple  # linear_forward's cache
    blocks: list  # one block_forward cache per block


class ClassifierCache(NamedTuple):
    encoder: ClassifierEncoderCache
    fc_norm: tuple  # layernorm_forward's cache
    head: tuple  # linear_forward's cache
    loss: tuple  # the loss's cache
    soft_targets: bool  # which loss: soft_target_cross_entropy (mixup) or softmax_cross_entropy


class ViTClassifier:
    """The MAE's ViT encoder + global pooling + fc_norm + a Linear head; parameters in `self.params`."""

    arch = "vit_classifier"
    shard_images = 32  # fast/cpu.py's shard, as the MAE's encoder

    def __init__(self, mae, num_classes=2, smoothing=0.1, seed=0, trainable_blocks=None):
        """mae: a MaskedAutoencoderViT, pre-trained or freshly initialised (its encoder's weights are copied;
        the ablation that put mask tokens in the encoder works too: with every patch visible its encoder
        mask token is never used, as the paper's Table 1c fine-tunes it).
        smoothing: the label smoothing of the loss. seed: draws the head's initial weights (an int, or a
        list of ints: any seed backend.host_rng takes). trainable_blocks: train only the last K blocks (and
        fc_norm and the head); None: every parameter."""
        if mae.arch != "vit":
            raise ValueError("ViTClassifier needs a MaskedAutoencoderViT (the MLP MAE has no tokens to pool)")
        cfg = mae.config
        if trainable_blocks is not None and not 0 <= trainable_blocks <= cfg.depth:
            raise ValueError(f"trainable_blocks must be between 0 and the encoder's depth {cfg.depth}, "
                             f"got {trainable_blocks}")
        self.config = cfg
        # blocks 0 .. frozen_blocks-1 (and the embeddings before them) keep their pre-trained weights
        self.frozen_blocks = 0 if trainable_blocks is None else cfg.depth - trainable_blocks
        self.num_classes = num_classes
        self.smoothing = smoothing
        D = cfg.embed_dim
        rng = host_rng(seed)

        params = {name: mae.params[name].copy() for name in encoder_param_names(cfg)}
        params["fc_norm.w"] = ones(D)  # (D,)
        params["fc_norm.b"] = zeros(D)  # (D,)
        params["head.w"] = normal(rng, (D, num_classes), std=2e-5)  # (D, C)
        params["head.b"] = zeros(num_classes)  # (C,)
        self.params = params
        self.pos_embed = mae.pos_embed  # (1, 1+L, D) the fixed sin-cos table, a constant (read-only)
        self.block = mae.block  # the Transformer block's implementation, as the MAE's

    @property
    def trainable(self):
        """The names of the parameters that train (and that backward returns gradients for)."""
        if self.frozen_blocks == 0:
            return list(self.params)
        frozen = ["patch_embed.w", "patch_embed.b", "cls_token"] + [
            f"blocks.{i}.{name}" for i in range(self.frozen_blocks) for name in BLOCK_PARAM_NAMES]
        return [name for name in self.params if name not in frozen]

    def num_params(self):
        return sum(int(v.size) for v in self.params.values())

    # ------------------------------------------------------------------------------------------
    def forward_encoder(self, imgs, keep=None):
        """imgs: (N, 3, H, W) -> tokens (N, 1+L, D) after the last block (no final norm), cache.
        keep: None, or (N, depth, 2) drop-path factors (drop_path_keep) while training."""
        cfg, params = self.config, self.params

        # embed patches, add pos embed w/o cls token (the MAE's own steps, mae_vit.py)
        x, embed_cache = embed_patches(imgs, params, self.pos_embed, cfg.patch_size)  # (N, L, D)

        # append cls token
        x = prepend_cls_token(x, params["cls_token"], self.pos_embed)  # (N, 1+L, D)

        # apply Transformer blocks
        x, block_caches = blocks_forward(x, params, "blocks", cfg.depth, cfg.num_heads, keep, self.block)  # (N, 1+L, D)
        return x, ClassifierEncoderCache(embed_cache, block_caches)

    def forward_features(self, imgs, keep=None):
        """imgs: (N, 3, H, W) -> the normalised, pooled features (N, D), and the caches of both steps."""
        x, encoder_cache = self.forward_encoder(imgs, keep)  # (N, 1+L, D)
        x = x[:, 1:].mean(axis=1)  # (N, D) global pool, without the cls token
        outcome, fc_norm_cache = layernorm_forward(x, self.params["fc_norm.w"], self.params["fc_norm.b"])  # (N, D)
        return outcome, encoder_cache, fc_norm_cache

    def forward_head(self, features):
        """features: (N, D) -> logits (N, C), cache."""
        return linear_forward(features, self.params["head.w"], self.params["head.b"])

    def predict(self, imgs):
        """imgs: (N, 3, H, W) -> logits (N, C), for evaluation (the caches are dropped)."""
        features, _, _ = self.forward_features(imgs)  # (N, D)
        logits, _ = self.forward_head(features)  # (N, C)
        return logits

    def forward(self, imgs, labels, keep=None):
        """The training step's forward: imgs (N, 3, H, W), labels (N,) class ids, or (N, C) soft targets
        (mixup: data.mixup_targets) -> loss, logits (N, C), cache.
        keep: None, or (N, depth, 2) drop-path factors (drop_path_keep)."""
        features, encoder_cache, fc_norm_cache = self.forward_features(imgs, keep)  # (N, D)
        logits, head_cache = self.forward_head(features)  # (N, C)
        soft = labels.ndim == 2  # main_finetune.py's choice: SoftTargetCrossEntropy when mixup is on
        if soft:
            loss, loss_cache = soft_target_cross_entropy_forward(logits, labels)
        else:
            loss, loss_cache = softmax_cross_entropy_forward(logits, labels, self.smoothing)
        return loss, logits, ClassifierCache(encoder_cache, fc_norm_cache, head_cache, loss_cache, soft)

    # ------------------------------------------------------------------------------------------
    def backward(self, dloss, cache):
        """dloss: the upstream gradient of the loss (1.0 for the loss itself) -> a dict of gradients of the
        trainable parameters (every parameter unless some blocks are frozen). Every step of forward, last
        one first."""
        grads = {}
        loss_backward = soft_target_cross_entropy_backward if cache.soft_targets else softmax_cross_entropy_backward
        dlogits = loss_backward(dloss, cache.loss)  # (N, C)
        dfeatures, grads["head.w"], grads["head.b"] = linear_backward(dlogits, cache.head)  # (N, D)
        dpooled, grads["fc_norm.w"], grads["fc_norm.b"] = layernorm_backward(dfeatures, cache.fc_norm)  # (N, D)

        # global pool: each of the L patch tokens gets 1/L of the pooled gradient; the cls token, left
        # out of the mean, gets none here (it still has one through attention in the blocks).
        N, D = dpooled.shape
        L = self.pos_embed.shape[1] - 1
        dx = xp.zeros((N, 1 + L, D), dtype=dpooled.dtype)  # (N, 1+L, D)
        dx[:, 1:] = (dpooled / L)[:, None, :]  # broadcast over the L tokens
        grads.update(self.backward_encoder(dx, cache.encoder))
        return {name: grads[name] for name in self.trainable}

    def backward_encoder(self, dx, cache):
        """forward_encoder in reverse: dx (N, 1+L, D) -> the encoder's gradients (the image needs none);
        with frozen blocks, only those of the blocks after them."""
        dx, grads = blocks_backward(dx, cache.blocks, "blocks", self.frozen_blocks, self.block)  # (N, 1+L, D)
        if self.frozen_blocks > 0:
            return grads  # nothing below the first frozen block trains
        dx, grads["cls_token"] = prepend_cls_token_backward(dx)  # (N, L, D)
        grads["patch_embed.w"], grads["patch_embed.b"] = embed_patches_backward(dx, cache.patch_embed)
        return grads


def drop_path_keep(rng, n_images, depth, drop_path):
    """Drop-path factors for a batch: host float32 (n_images, depth, 2), 0 where an image skips a block's
    branch (attention, MLP) and 1 / (1 - p_i) where it keeps it. Block i's rate p_i grows linearly from 0
    (the first block) to drop_path (the last), as timm's `dpr = linspace(0, drop_path_rate, depth)`."""
    rates = numpy.linspace(0.0, drop_path, depth)  # (depth,)
    kept = rng.random((n_images, depth, 2)) >= rates[None, :, None]  # (n, depth, 2)
    return (kept / (1.0 - rates)[None, :, None]).astype("float32")
