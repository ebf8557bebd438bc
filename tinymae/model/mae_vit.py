"""The paper's MAE: a ViT encoder on the visible patches and a small ViT decoder for all patches.

The steps, names and initialisation follow MaskedAutoencoderViT in models_mae.py of the official MAE
(facebookresearch/mae), with a Linear per patch for its PatchEmbed (a Conv2d with kernel = stride =
patch size is exactly that Linear applied to patchify's vectors):

  forward_encoder   patchify -> patch_embed (Linear P -> D) -> + pos_embed[:, 1:]
                    -> random_masking: keep K = L * (1 - mask_ratio) tokens, in the shuffled order
                    -> prepend cls_token + pos_embed[:, :1]              (N, 1+K, D)
                    -> depth x Block -> norm (LayerNorm)                 = latent
  forward_decoder   decoder_embed (Linear D -> Dd)
                    -> append one shared mask_token per removed patch and un-shuffle with
                       ids_restore (the cls token passes around them)   (N, 1+L, Dd)
                    -> + decoder_pos_embed -> decoder_depth x Block -> decoder_norm
                    -> decoder_pred (Linear Dd -> P) -> drop the cls token   = pred (N, L, P)
  forward_loss      MSE on the removed patches (or all), optionally on normalised pixels
  backward          the same steps in reverse order, each layer's backward pass

A Block is timm's pre-norm Transformer block (transformer.py): x + attn(norm1(x)), then
x + mlp(norm2(x)). The position embeddings are fixed 2-D sin-cos tables (pos_embed.py), not learned.
The encoder never sees a removed patch: masking happens before the first block, so its cost scales
with K, not L (the paper's Sec. 3, "MAE encoder").

The paper's ablation of an encoder that also processes mask tokens (Table 1c) lives in ablations.py,
as a subclass that replaces the two masking steps; this class is MAE itself.
"""
from typing import NamedTuple

from ..backend import host_rng, xp
from ..config import ViTConfig, check
from .layers import (layernorm_backward, layernorm_forward, linear_backward, linear_forward, normal, ones,
                     xavier_uniform, zeros)
from .mae import MaskedAutoencoder
from .masking import append_mask_tokens, append_mask_tokens_backward, random_masking, random_masking_backward
from .patches import patchify
from .pos_embed import get_2d_sincos_pos_embed
from .transformer import BLOCK, blocks_backward, blocks_forward, init_block_params


class EncoderCache(NamedTuple):
    patch_embed: tuple  # linear_forward's cache
    masking: tuple  # random_masking's cache
    blocks: list  # one block_forward cache per block
    norm: tuple  # layernorm_forward's cache


class DecoderCache(NamedTuple):
    decoder_embed: tuple
    mask_tokens: tuple  # append_mask_tokens' cache
    blocks: list
    decoder_norm: tuple
    decoder_pred: tuple


class MaskedAutoencoderViT(MaskedAutoencoder):
    """Parameters live in `self.params` (name -> array); forward/backward are plain functions of them."""

    arch = "vit"
    shard_images = 16  # fast/cpu.py's shard: an elementwise-heavy step keeps a few images' activations in cache

    def __init__(self, config=None, seed=0):
        cfg = config if config is not None else ViTConfig()
        check(cfg)
        self.config = cfg
        self.block = BLOCK  # the Transformer block's implementation (transformer.py; fast/ may hand it fused kernels)
        P, D, Dd = cfg.patch_dim, cfg.embed_dim, cfg.decoder_embed_dim
        rng = host_rng(seed)  # every initial value comes from here, so NumPy and CuPy start identical

        # models_mae.initialize_weights: xavier-uniform for every Linear (patch_embed's Conv2d too, as a
        # (D, P) matrix), zero biases, LayerNorm 1 / 0, normal(std=.02) for the cls and mask tokens.
        params = {}
        params["patch_embed.w"] = xavier_uniform(rng, P, D)  # (P, D)
        # One difference from the official init: models_mae.py re-initialises only patch_embed's weight and
        # leaves its Conv2d bias at PyTorch's default, uniform in +-1/sqrt(P) (+-0.096 for 6x6x3 patches).
        # Here it starts at zero, as every other bias does; the results in docs/ were measured with this start.
        params["patch_embed.b"] = zeros(D)  # (D,)
        params["cls_token"] = normal(rng, (1, 1, D))  # (1, 1, D)
        for i in range(cfg.depth):
            for name, value in init_block_params(rng, D, cfg.mlp_ratio, cfg.qkv_init).items():
                params[f"blocks.{i}.{name}"] = value
        params["norm.w"] = ones(D)  # (D,)
        params["norm.b"] = zeros(D)  # (D,)
        params["decoder_embed.w"] = xavier_uniform(rng, D, Dd)  # (D, Dd)
        params["decoder_embed.b"] = zeros(Dd)  # (Dd,)
        params["mask_token"] = normal(rng, (1, 1, Dd))  # (1, 1, Dd)
        for i in range(cfg.decoder_depth):
            for name, value in init_block_params(rng, Dd, cfg.mlp_ratio, cfg.qkv_init).items():
                params[f"decoder_blocks.{i}.{name}"] = value
        params["decoder_norm.w"] = ones(Dd)  # (Dd,)
        params["decoder_norm.b"] = zeros(Dd)  # (Dd,)
        params["decoder_pred.w"] = xavier_uniform(rng, Dd, P)  # (Dd, P)
        params["decoder_pred.b"] = zeros(P)  # (P,)
        self.params = params

        # Fixed 2-D sin-cos position embeddings (constants, not parameters), with a zero cls slot first.
        grid = cfg.img_size // cfg.patch_size
        self.pos_embed = get_2d_sincos_pos_embed(D, grid, cls_token=True)  # (1, 1+L, D)
        self.decoder_pos_embed = get_2d_sincos_pos_embed(Dd, grid, cls_token=True)  # (1, 1+L, Dd)

    # ------------------------------------------------------------------------------------------
    # The two steps that hide and restore patches, as methods (models_mae.py has random_masking as
    # one) so that the ablation in ablations.py can replace them and nothing else.

    def random_masking(self, x, mask_ratio, noise):
        """x: (N, L, D) -> the K kept tokens (N, K, D) in shuffled order, mask, ids_restore, cache."""
        return random_masking(x, mask_ratio, noise)

    def random_masking_backward(self, dx_masked, cache):
        """-> dx (N, L, D) and the gradients of this step's own parameters (none here)."""
        return random_masking_backward(dx_masked, cache), {}

    def append_mask_tokens(self, x, ids_restore):
        """x: (N, 1+K, Dd) -> (N, 1+L, Dd): a mask token for every removed patch, un-shuffled, the cls
        token in front (models_mae.forward_decoder: "append mask tokens to sequence", "unshuffle")."""
        x_patches, cache = append_mask_tokens(x[:, 1:], self.params["mask_token"], ids_restore)  # (N, L, Dd)
        return xp.concatenate([x[:, :1], x_patches], axis=1), cache  # (N, 1+L, Dd) the cls token first

    def append_mask_tokens_backward(self, dx, cache):
        """dx: (N, 1+L, Dd) -> dx (N, 1+K, Dd) and {"mask_token": (1, 1, Dd)}."""
        dx_patches, dmask_token = append_mask_tokens_backward(dx[:, 1:], cache)  # (N, K, Dd)
        return xp.concatenate([dx[:, :1], dx_patches], axis=1), {"mask_token": dmask_token}

    # ------------------------------------------------------------------------------------------
    def forward_encoder(self, imgs, noise, mask_ratio=None):
        """imgs: (N, 3, H, W), noise: (N, L) -> latent (N, 1+K, D), mask (N, L), ids_restore (N, L), cache.

        mask_ratio overrides the config's: 0.0 keeps every patch, for features of whole images.
        """
        cfg, params = self.config, self.params
        mask_ratio = cfg.mask_ratio if mask_ratio is None else mask_ratio

        # embed patches, add pos embed w/o cls token
        x, embed_cache = embed_patches(imgs, params, self.pos_embed, cfg.patch_size)  # (N, L, D)

        # masking: length -> length * (1 - mask_ratio)
        x, mask, ids_restore, masking_cache = self.random_masking(x, mask_ratio, noise)  # (N, K, D)

        # append cls token
        x = prepend_cls_token(x, params["cls_token"], self.pos_embed)  # (N, 1+K, D)

        # apply Transformer blocks
        x, block_caches = blocks_forward(x, params, "blocks", cfg.depth, cfg.num_heads, block=self.block)  # (N, 1+K, D)
        latent, norm_cache = layernorm_forward(x, params["norm.w"], params["norm.b"])  # (N, 1+K, D)

        return latent, mask, ids_restore, EncoderCache(embed_cache, masking_cache, block_caches, norm_cache)

    def forward_decoder(self, latent, ids_restore):
        """latent: (N, 1+K, D), ids_restore: (N, L) -> pred: (N, L, P) pixel predictions for every patch, cache."""
        cfg, params = self.config, self.params

        # embed tokens
        x, embed_cache = linear_forward(latent, params["decoder_embed.w"], params["decoder_embed.b"])  # (N, 1+K, Dd)

        # append mask tokens to sequence and unshuffle
        x, mask_tokens_cache = self.append_mask_tokens(x, ids_restore)  # (N, 1+L, Dd)

        # add pos embed
        x = x + self.decoder_pos_embed  # (N, 1+L, Dd)

        # apply Transformer blocks
        x, block_caches = blocks_forward(x, params, "decoder_blocks", cfg.decoder_depth, cfg.decoder_num_heads,
                                         block=self.block)  # (N, 1+L, Dd)
        x, norm_cache = layernorm_forward(x, params["decoder_norm.w"], params["decoder_norm.b"])  # (N, 1+L, Dd)

        # predictor projection
        x, pred_cache = linear_forward(x, params["decoder_pred.w"], params["decoder_pred.b"])  # (N, 1+L, P)

        # remove cls token
        pred = x[:, 1:]  # (N, L, P)

        return pred, DecoderCache(embed_cache, mask_tokens_cache, block_caches, norm_cache, pred_cache)

    # forward_loss, forward and backward: mae.py (the same for both MAEs)

    def forward_features(self, imgs):
        """What the frozen encoder says of whole images: every patch visible -> {"mean": the mean of the patch
        tokens after the final norm (N, D), "cls": the cls token (N, D)}, for the linear probe."""
        noise = xp.zeros((imgs.shape[0], self.config.num_patches), dtype=imgs.dtype)  # (N, L) unused at ratio 0
        latent, _, _, _ = self.forward_encoder(imgs, noise, mask_ratio=0.0)  # (N, 1+L, D)
        return {"mean": latent[:, 1:].mean(axis=1), "cls": latent[:, 0]}

    # ------------------------------------------------------------------------------------------
    def backward_decoder(self, dpred, cache):
        """forward_decoder in reverse: dpred (N, L, P) -> dlatent (N, 1+K, D), the decoder's gradients."""
        grads = {}
        N, L, P = dpred.shape
        dx = xp.zeros((N, 1 + L, P), dtype=dpred.dtype)  # (N, 1+L, P) the cls token's prediction was
        dx[:, 1:] = dpred  # dropped: it gets zero gradient
        dx, grads["decoder_pred.w"], grads["decoder_pred.b"] = linear_backward(dx, cache.decoder_pred)  # (N, 1+L, Dd)
        dx, grads["decoder_norm.w"], grads["decoder_norm.b"] = layernorm_backward(dx, cache.decoder_norm)
        dx, block_grads = blocks_backward(dx, cache.blocks, "decoder_blocks", block=self.block)  # (N, 1+L, Dd)
        grads.update(block_grads)
        # decoder_pos_embed is a constant: the gradient passes through the addition unchanged.
        dx, step_grads = self.append_mask_tokens_backward(dx, cache.mask_tokens)  # (N, 1+K, Dd)
        grads.update(step_grads)
        dlatent, grads["decoder_embed.w"], grads["decoder_embed.b"] = linear_backward(dx, cache.decoder_embed)
        return dlatent, grads

    def backward_encoder(self, dlatent, cache):
        """forward_encoder in reverse: dlatent (N, 1+K, D) -> the encoder's gradients (the image needs none)."""
        grads = {}
        dx, grads["norm.w"], grads["norm.b"] = layernorm_backward(dlatent, cache.norm)  # (N, 1+K, D)
        dx, block_grads = blocks_backward(dx, cache.blocks, "blocks", block=self.block)  # (N, 1+K, D)
        grads.update(block_grads)
        dx, grads["cls_token"] = prepend_cls_token_backward(dx)  # (N, K, D)
        dx, step_grads = self.random_masking_backward(dx, cache.masking)  # (N, L, D) zeros at removed patches
        grads.update(step_grads)
        grads["patch_embed.w"], grads["patch_embed.b"] = embed_patches_backward(dx, cache.patch_embed)
        return grads


# ----------------------------------------------------------------------------------------------
# The encoder's first steps, which the fine-tuned classifier (models_vit.py) takes over as they are.

def embed_patches(imgs, params, pos_embed, patch_size):
    """patchify -> patch_embed (a Linear per patch) -> + pos_embed without its cls slot.
    imgs: (N, 3, H, W), params: patch_embed.w (P, D) and .b (D,), pos_embed: (1, 1+L, D) -> x (N, L, D), cache."""
    x = patchify(imgs, patch_size)  # (N, L, P)
    x, cache = linear_forward(x, params["patch_embed.w"], params["patch_embed.b"])  # (N, L, D)
    x = x + pos_embed[:, 1:]  # (N, L, D)
    return x, cache


def embed_patches_backward(dx, cache):
    """dx: (N, L, D) -> dpatch_embed.w (P, D), dpatch_embed.b (D,). The position table is a constant, and
    the image needs no gradient."""
    _, dw, db = linear_backward(dx, cache, need_dx=False)
    return dw, db


def prepend_cls_token(x, cls_token, pos_embed):
    """x: (N, K, D), cls_token: (1, 1, D), pos_embed: (1, 1+L, D) -> (N, 1+K, D), the cls token (plus its
    position, the table's slot 0) in front of every image's tokens."""
    N, _, D = x.shape
    cls_tokens = xp.broadcast_to(cls_token + pos_embed[:, :1], (N, 1, D))  # (N, 1, D) expand, no copy
    return xp.concatenate([cls_tokens, x], axis=1)  # (N, 1+K, D)


def prepend_cls_token_backward(dx):
    """dx: (N, 1+K, D) -> dx (N, K, D) for the tokens, dcls_token (1, 1, D). The one cls token was expanded
    to every image (a fan-out): its gradient is the sum over them."""
    return dx[:, 1:], dx[:, :1].sum(axis=0, keepdims=True)
