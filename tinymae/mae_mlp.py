"""The task's small MAE: an MLP encoder on the visible patches and an MLP decoder for all patches.

The steps and names follow models_mae.py (MaskedAutoencoderViT); only the blocks differ:

  forward_encoder  patchify -> patch_embed (Linear per patch) + pos_embed -> random_masking (keep 25%)
                   -> flatten the K visible tokens into one vector -> 3 x (Linear + ReLU)  = latent
  forward_decoder  latent -> Linear + ReLU -> decoder_pred (Linear) -> L patch vectors
  forward_loss     MSE on the removed patches (or all), optionally on normalised pixels

Why flatten: an MLP applied to each patch on its own never sees its neighbours, so the best it can
do for a removed patch is the average patch at that position. Flattening the visible tokens lets
every hidden unit combine all of them, so the prediction for a removed patch depends on the content
around it (tests/test_mae_mlp.py checks that). The K visible tokens enter in raster order, so a slot
of the flattened vector always holds "the k-th visible patch"; which patch that is changes from image
to image, and the position embedding added to each token before masking tells the encoder.

Unlike the ViT's decoder, this decoder needs no mask tokens: its output layer has one slot per patch
position, so position is built into the weights.
"""
from dataclasses import dataclass

from .backend import host_rng
from .config import MAEConfig
from .layers import linear_backward, linear_forward, relu_backward, relu_forward, xavier_uniform, zeros
from .loss import mse_backward, mse_forward
from .masking import random_masking, random_masking_backward
from .patches import patchify
from .pos_embed import get_2d_sincos_pos_embed


@dataclass
class MLPConfig(MAEConfig):
    # img_size, patch_size, in_chans, mask_ratio, norm_pix_loss, loss_on: see config.MAEConfig. For this
    # model mask_ratio is part of the architecture: the encoder's input width is K * embed_dim.
    embed_dim: int = 64  # width of each token before the K visible tokens are flattened
    encoder_dims: tuple = (512, 512, 256)  # three Linear + ReLU layers; the last width is the latent
    decoder_dims: tuple = (512,)  # hidden Linear + ReLU layers of the decoder, before decoder_pred


class MLPMAE:
    """Parameters live in `self.params` (name -> array); forward/backward are plain functions of them."""

    arch = "mlp"

    def __init__(self, config=MLPConfig(), seed=0):
        config.validate()
        self.config = config
        cfg = config
        L, P, E = cfg.num_patches, cfg.patch_dim, cfg.embed_dim
        rng = host_rng(seed)

        p = {}
        p["patch_embed.w"] = xavier_uniform(rng, P, E)  # (P, E)
        p["patch_embed.b"] = zeros(E)  # (E,)
        dims = [cfg.len_keep * E, *cfg.encoder_dims]
        for i in range(len(cfg.encoder_dims)):
            p[f"encoder.{i}.w"] = xavier_uniform(rng, dims[i], dims[i + 1])
            p[f"encoder.{i}.b"] = zeros(dims[i + 1])
        dims = [cfg.encoder_dims[-1], *cfg.decoder_dims]
        for i in range(len(cfg.decoder_dims)):
            p[f"decoder.{i}.w"] = xavier_uniform(rng, dims[i], dims[i + 1])
            p[f"decoder.{i}.b"] = zeros(dims[i + 1])
        p["decoder_pred.w"] = xavier_uniform(rng, dims[-1], L * P)  # (H, L*P): one slot per patch position
        p["decoder_pred.b"] = zeros(L * P)
        self.params = p
        # Fixed 2-D sin-cos position embedding, as MAE (not learned, so not a parameter).
        self.pos_embed = get_2d_sincos_pos_embed(E, cfg.img_size // cfg.patch_size)  # (1, L, E)
        # No weight decay on biases (MAE's optim_factory.param_groups_weight_decay).
        self.no_decay = tuple(name for name in p if name.endswith(".b"))

    # ------------------------------------------------------------------------------------------
    def forward_encoder(self, imgs, noise):
        """imgs: (N, 3, H, W), noise: (N, L) -> latent (N, Z), mask (N, L), ids_restore (N, L), cache."""
        cfg, p = self.config, self.params
        N = imgs.shape[0]
        x = patchify(imgs, cfg.patch_size)  # (N, L, P)
        x, embed_cache = linear_forward(x, p["patch_embed.w"], p["patch_embed.b"])  # (N, L, E)
        x = x + self.pos_embed  # (N, L, E)
        # keep_order: slot k of the flattened vector always holds the k-th visible patch in raster order
        # (validation masked MSE 0.63x the mean-patch baseline after 50 epochs, against 0.72x in shuffle order).
        x, mask, ids_restore, mask_cache = random_masking(x, cfg.mask_ratio, noise, keep_order=True)  # (N, K, E)
        h = x.reshape(N, -1)  # (N, K*E) the visible tokens, flattened
        layer_caches = []
        for i in range(len(cfg.encoder_dims)):
            h, lin_cache = linear_forward(h, p[f"encoder.{i}.w"], p[f"encoder.{i}.b"])  # (N, D_i)
            h, relu_cache = relu_forward(h)  # (N, D_i)
            layer_caches.append((lin_cache, relu_cache))
        cache = (embed_cache, mask_cache, x.shape, layer_caches)
        return h, mask, ids_restore, cache

    def forward_decoder(self, latent):
        """latent: (N, Z) -> pred: (N, L, P) pixel predictions for every patch, cache."""
        cfg, p = self.config, self.params
        h = latent
        layer_caches = []
        for i in range(len(cfg.decoder_dims)):
            h, lin_cache = linear_forward(h, p[f"decoder.{i}.w"], p[f"decoder.{i}.b"])  # (N, D_i)
            h, relu_cache = relu_forward(h)  # (N, D_i)
            layer_caches.append((lin_cache, relu_cache))
        pred, pred_cache = linear_forward(h, p["decoder_pred.w"], p["decoder_pred.b"])  # (N, L*P)
        pred = pred.reshape(h.shape[0], cfg.num_patches, cfg.patch_dim)  # (N, L, P)
        return pred, (layer_caches, pred_cache)

    def forward_loss(self, imgs, pred, mask):
        """imgs: (N, 3, H, W), pred: (N, L, P), mask: (N, L) -> scalar loss, cache."""
        target = patchify(imgs, self.config.patch_size)  # (N, L, P)
        weights = mask if self.config.loss_on == "masked" else None
        return mse_forward(pred, target, weights, norm_pix_loss=self.config.norm_pix_loss)

    def forward(self, imgs, noise):
        """The training step's forward, as MaskedAutoencoderViT.forward -> loss, pred, mask, cache."""
        latent, mask, ids_restore, enc_cache = self.forward_encoder(imgs, noise)
        pred, dec_cache = self.forward_decoder(latent)
        loss, loss_cache = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask, (enc_cache, dec_cache, loss_cache)

    # ------------------------------------------------------------------------------------------
    def backward(self, cache, dloss=1.0):
        """Gradients of the loss for every parameter (a dict like self.params), in reverse order."""
        enc_cache, dec_cache, loss_cache = cache
        cfg = self.config
        grads = {}

        # forward_loss
        dpred = mse_backward(loss_cache, dloss)  # (N, L, P)

        # forward_decoder, last layer first
        layer_caches, pred_cache = dec_cache
        dh = dpred.reshape(dpred.shape[0], -1)  # (N, L*P)
        dh, grads["decoder_pred.w"], grads["decoder_pred.b"] = linear_backward(dh, pred_cache)  # (N, D)
        for i in reversed(range(len(cfg.decoder_dims))):
            lin_cache, relu_cache = layer_caches[i]
            dh = relu_backward(dh, relu_cache)
            dh, grads[f"decoder.{i}.w"], grads[f"decoder.{i}.b"] = linear_backward(dh, lin_cache)

        # forward_encoder
        embed_cache, mask_cache, visible_shape, layer_caches = enc_cache
        for i in reversed(range(len(cfg.encoder_dims))):
            lin_cache, relu_cache = layer_caches[i]
            dh = relu_backward(dh, relu_cache)
            dh, grads[f"encoder.{i}.w"], grads[f"encoder.{i}.b"] = linear_backward(dh, lin_cache)
        dx = dh.reshape(visible_shape)  # (N, K, E) un-flatten
        dx = random_masking_backward(dx, mask_cache)  # (N, L, E) zeros at removed patches
        # pos_embed is a constant: the gradient passes through the addition unchanged.
        _, grads["patch_embed.w"], grads["patch_embed.b"] = linear_backward(dx, embed_cache, need_dx=False)
        return {name: grads[name] for name in self.params}

    # ------------------------------------------------------------------------------------------
    def num_params(self):
        return sum(int(v.size) for v in self.params.values())
