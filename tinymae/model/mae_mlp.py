"""A small MAE of plain MLPs: an MLP encoder on the visible patches and an MLP decoder for all patches.

The steps and names follow models_mae.py (MaskedAutoencoderViT); only the blocks differ:

  forward_encoder  patchify -> patch_embed (Linear per patch) + pos_embed -> random_masking (keep 25%)
                   -> flatten the K visible tokens into one vector -> 3 x (Linear + ReLU)  = latent
  forward_decoder  latent -> Linear + ReLU -> decoder_pred (Linear) -> L patch vectors
  forward_loss     MSE on the removed patches (or all), optionally on normalised pixels

Why flatten: an MLP applied to each patch on its own never sees its neighbours, so the best it can
do for a removed patch is the average patch at that position. Flattening the visible tokens lets
every hidden unit combine all of them, so the prediction for a removed patch depends on the content
around it (tests/test_mae_mlp.py checks that).

Why the visible tokens are flattened in raster order (random_masking's keep_order), not in MAE's
shuffled order: the first Linear layer has separate weights for every slot of the flattened vector.
In shuffled order, slot k holds a visible patch from anywhere in the image, a different place every
time, so its weights must serve all 64 positions at once and can only learn what is common to them.
In raster order, slot k holds the k-th visible patch counted from the top left: with 16 of 64 kept,
that patch lies near position 4k, so slot k always looks at roughly the same region of the image and
its weights can specialise to it, as a ViT's shared weights need not (attention does not care about
the order of its tokens). Which patch exactly sits in slot k still varies from image to image; the
position embedding added to each token before masking tells the encoder.

Unlike the ViT's decoder, this decoder needs no mask tokens: its output layer has one slot per patch
position, so position is built into the weights.
"""
from typing import NamedTuple

from ..backend import asarray, host_rng
from ..config import MLPConfig, check
from .layers import linear_backward, linear_forward, relu_backward, relu_forward, xavier_uniform, zeros
from .mae import MaskedAutoencoder
from .masking import partition_noise, random_masking, random_masking_backward
from .patches import patchify
from .pos_embed import get_2d_sincos_pos_embed


class EncoderCache(NamedTuple):
    patch_embed: tuple  # linear_forward's cache
    masking: tuple  # random_masking's cache
    visible_shape: tuple  # (N, K, E), to un-flatten the gradient
    layers: list  # (linear cache, relu cache) per encoder layer


class DecoderCache(NamedTuple):
    layers: list  # (linear cache, relu cache) per hidden decoder layer
    decoder_pred: tuple


class MaskedAutoencoderMLP(MaskedAutoencoder):
    """Parameters live in `self.params` (name -> array); forward/backward are plain functions of them."""

    arch = "mlp"
    shard_images = 128  # fast/cpu.py's shard: large matrix products run best on large shards, one per core

    def __init__(self, config=None, seed=0):
        cfg = config if config is not None else MLPConfig()
        check(cfg)
        self.config = cfg
        L, P, E = cfg.num_patches, cfg.patch_dim, cfg.embed_dim
        rng = host_rng(seed)

        params = {}
        params["patch_embed.w"] = xavier_uniform(rng, P, E)  # (P, E)
        params["patch_embed.b"] = zeros(E)  # (E,)
        dims = [cfg.len_keep * E, *cfg.encoder_dims]
        for i in range(len(cfg.encoder_dims)):
            params[f"encoder.{i}.w"] = xavier_uniform(rng, dims[i], dims[i + 1])
            params[f"encoder.{i}.b"] = zeros(dims[i + 1])
        dims = [cfg.encoder_dims[-1], *cfg.decoder_dims]
        for i in range(len(cfg.decoder_dims)):
            params[f"decoder.{i}.w"] = xavier_uniform(rng, dims[i], dims[i + 1])
            params[f"decoder.{i}.b"] = zeros(dims[i + 1])
        params["decoder_pred.w"] = xavier_uniform(rng, dims[-1], L * P)  # (H, L*P): one slot per patch position
        params["decoder_pred.b"] = zeros(L * P)
        self.params = params
        # Fixed 2-D sin-cos position embedding, as MAE (not learned, so not a parameter).
        self.pos_embed = get_2d_sincos_pos_embed(E, cfg.img_size // cfg.patch_size)  # (1, L, E)

    # ------------------------------------------------------------------------------------------
    def forward_encoder(self, imgs, noise):
        """imgs: (N, 3, H, W), noise: (N, L) -> latent (N, Z), mask (N, L), ids_restore (N, L), cache."""
        cfg, params = self.config, self.params
        N = imgs.shape[0]

        # embed patches, add pos embed
        x = patchify(imgs, cfg.patch_size)  # (N, L, P)
        x, embed_cache = linear_forward(x, params["patch_embed.w"], params["patch_embed.b"])  # (N, L, E)
        x = x + self.pos_embed  # (N, L, E)

        # masking, with the kept tokens in raster order (keep_order): see the module docstring
        x, mask, ids_restore, masking_cache = random_masking(x, cfg.mask_ratio, noise, keep_order=True)  # (N, K, E)

        # flatten the visible tokens into one vector, then the MLP
        h = x.reshape(N, -1)  # (N, K*E)
        layer_caches = []
        for i in range(len(cfg.encoder_dims)):
            h, linear_cache = linear_forward(h, params[f"encoder.{i}.w"], params[f"encoder.{i}.b"])  # (N, D_i)
            h, relu_cache = relu_forward(h)  # (N, D_i)
            layer_caches.append((linear_cache, relu_cache))
        return h, mask, ids_restore, EncoderCache(embed_cache, masking_cache, x.shape, layer_caches)

    def forward_decoder(self, latent, ids_restore=None):
        """latent: (N, Z) -> pred: (N, L, P) pixel predictions for every patch, cache. (ids_restore, which the
        ViT's decoder needs to put its mask tokens in place, is not used: see the module docstring.)"""
        cfg, params = self.config, self.params
        h = latent
        layer_caches = []
        for i in range(len(cfg.decoder_dims)):
            h, linear_cache = linear_forward(h, params[f"decoder.{i}.w"], params[f"decoder.{i}.b"])  # (N, D_i)
            h, relu_cache = relu_forward(h)  # (N, D_i)
            layer_caches.append((linear_cache, relu_cache))
        # predictor projection: one output slot per patch position
        pred, pred_cache = linear_forward(h, params["decoder_pred.w"], params["decoder_pred.b"])  # (N, L*P)
        pred = pred.reshape(h.shape[0], cfg.num_patches, cfg.patch_dim)  # (N, L, P)
        return pred, DecoderCache(layer_caches, pred_cache)

    # forward_loss, forward and backward: mae.py (the same for both MAEs)

    def forward_features(self, imgs):
        """What the frozen encoder says of whole images, for the linear probe. It takes exactly K patches (its first
        layer is K * E wide), so it sees an image in L / K views of disjoint patch sets, and the latents of the views
        are averaged: every patch seen once -> {"latent": (N, Z)}."""
        latents = [self.forward_encoder(imgs, asarray(noise))[0]
                   for noise in partition_noise(imgs.shape[0], self.config)]
        return {"latent": sum(latents) / len(latents)}  # (N, Z)

    # ------------------------------------------------------------------------------------------
    def backward_decoder(self, dpred, cache):
        """forward_decoder in reverse: dpred (N, L, P) -> dlatent (N, Z), the decoder's gradients."""
        grads = {}
        dh = dpred.reshape(dpred.shape[0], -1)  # (N, L*P)
        dh, grads["decoder_pred.w"], grads["decoder_pred.b"] = linear_backward(dh, cache.decoder_pred)  # (N, D)
        for i in reversed(range(len(self.config.decoder_dims))):
            linear_cache, relu_cache = cache.layers[i]
            dh = relu_backward(dh, relu_cache)
            dh, grads[f"decoder.{i}.w"], grads[f"decoder.{i}.b"] = linear_backward(dh, linear_cache)
        return dh, grads

    def backward_encoder(self, dlatent, cache):
        """forward_encoder in reverse: dlatent (N, Z) -> the encoder's gradients (the image needs none)."""
        grads = {}
        dh = dlatent
        for i in reversed(range(len(self.config.encoder_dims))):
            linear_cache, relu_cache = cache.layers[i]
            dh = relu_backward(dh, relu_cache)
            dh, grads[f"encoder.{i}.w"], grads[f"encoder.{i}.b"] = linear_backward(dh, linear_cache)
        dx = dh.reshape(cache.visible_shape)  # (N, K, E) un-flatten
        dx = random_masking_backward(dx, cache.masking)  # (N, L, E) zeros at removed patches
        # pos_embed is a constant: the gradient passes through the addition unchanged.
        _, grads["patch_embed.w"], grads["patch_embed.b"] = linear_backward(dx, cache.patch_embed, need_dx=False)
        return grads
