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
                       ids_restore (the cls token passes around it)     (N, 1+L, Dd)
                    -> + decoder_pos_embed -> decoder_depth x Block -> decoder_norm
                    -> decoder_pred (Linear Dd -> P) -> drop the cls token   = pred (N, L, P)
  forward_loss      MSE on the removed patches (or all), optionally on normalised pixels

A Block is timm's pre-norm Transformer block (transformer.py): x + attn(norm1(x)), then
x + mlp(norm2(x)). The position embeddings are fixed 2-D sin-cos tables (pos_embed.py), not learned.
The encoder never sees a removed patch: masking happens before the first block, so its cost scales
with K, not L (the paper's Sec. 3, "MAE encoder").

With cls_token=False the model has no cls token anywhere (latent (N, K, D), tables without the
cls slot); models_mae.py always has one.
"""
from dataclasses import dataclass

from .backend import host_rng, xp
from .config import MAEConfig
from .layers import (layernorm_backward, layernorm_forward, linear_backward, linear_forward, normal, ones,
                     xavier_uniform, zeros)
from .loss import mse_backward, mse_forward
from .masking import append_mask_tokens, append_mask_tokens_backward, random_masking, random_masking_backward
from .patches import patchify
from .pos_embed import get_2d_sincos_pos_embed
from .transformer import BLOCK_PARAM_NAMES, block_backward, block_forward, init_block_params


@dataclass
class ViTConfig(MAEConfig):
    # img_size, patch_size, in_chans, mask_ratio, norm_pix_loss, loss_on: see config.MAEConfig
    embed_dim: int = 128  # encoder width D
    depth: int = 4  # encoder blocks
    num_heads: int = 4  # encoder heads, width D / num_heads each
    decoder_embed_dim: int = 64  # decoder width Dd
    decoder_depth: int = 2  # decoder blocks
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, relative to the block's width
    cls_token: bool = True  # prepend a learned cls token, as models_mae.py
    # The paper's Table 1c ablation "encoder w/ [M]": the encoder also processes the removed positions,
    # each holding a learned mask token, and the decoder gets all L tokens from it. Slower and worse;
    # off for MAE proper.
    encoder_mask_tokens: bool = False


class ViTMAE:
    """Parameters live in `self.params` (name -> array); forward/backward are plain functions of them."""

    arch = "vit"

    def __init__(self, config=ViTConfig(), seed=0):
        cfg = config
        cfg.validate()
        for width_name, heads_name in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            width, heads = getattr(cfg, width_name), getattr(cfg, heads_name)
            if width % heads:
                raise ValueError(f"{width_name}={width} must be divisible by {heads_name}={heads} (the head width)")
            if width % 4:
                raise ValueError(f"{width_name}={width} must be divisible by 4 (the 2-D sin-cos position embedding)")
        self.config = cfg
        P, D, Dd = cfg.patch_dim, cfg.embed_dim, cfg.decoder_embed_dim
        rng = host_rng(seed)  # every initial value comes from here, so NumPy and CuPy start identical

        # models_mae.initialize_weights: xavier-uniform for every Linear (patch_embed's Conv2d too, as a
        # (D, P) matrix), zero biases, LayerNorm 1 / 0, normal(std=.02) for the cls and mask tokens.
        p = {}
        p["patch_embed.w"] = xavier_uniform(rng, P, D)  # (P, D)
        p["patch_embed.b"] = zeros(D)  # (D,)
        if cfg.cls_token:
            p["cls_token"] = normal(rng, (1, 1, D))  # (1, 1, D)
        if cfg.encoder_mask_tokens:
            p["encoder_mask_token"] = normal(rng, (1, 1, D))  # (1, 1, D) the ablation's encoder-side [M]
        for i in range(cfg.depth):
            for name, value in init_block_params(rng, D, cfg.mlp_ratio).items():
                p[f"blocks.{i}.{name}"] = value
        p["norm.w"] = ones(D)  # (D,)
        p["norm.b"] = zeros(D)  # (D,)
        p["decoder_embed.w"] = xavier_uniform(rng, D, Dd)  # (D, Dd)
        p["decoder_embed.b"] = zeros(Dd)  # (Dd,)
        if not cfg.encoder_mask_tokens:
            p["mask_token"] = normal(rng, (1, 1, Dd))  # (1, 1, Dd)
        for i in range(cfg.decoder_depth):
            for name, value in init_block_params(rng, Dd, cfg.mlp_ratio).items():
                p[f"decoder_blocks.{i}.{name}"] = value
        p["decoder_norm.w"] = ones(Dd)  # (Dd,)
        p["decoder_norm.b"] = zeros(Dd)  # (Dd,)
        p["decoder_pred.w"] = xavier_uniform(rng, Dd, P)  # (Dd, P)
        p["decoder_pred.b"] = zeros(P)  # (P,)
        self.params = p

        # Fixed 2-D sin-cos position embeddings (constants, not parameters), with a zero cls slot first.
        grid = cfg.img_size // cfg.patch_size
        self.pos_embed = get_2d_sincos_pos_embed(D, grid, cls_token=cfg.cls_token)  # (1, 1+L, D)
        self.decoder_pos_embed = get_2d_sincos_pos_embed(Dd, grid, cls_token=cfg.cls_token)  # (1, 1+L, Dd)

        # No weight decay on 1-D parameters (biases, LayerNorm weights and biases), exactly as MAE's
        # main_pretrain.py: timm's add_weight_decay skips 1-D tensors, and models_mae.py lists nothing in
        # no_weight_decay(), so the (1, 1, D) cls and mask tokens are decayed there and here.
        self.no_decay = tuple(name for name, value in p.items() if value.ndim <= 1)

    def block_params(self, prefix):
        """The parameters of one block ("blocks.{i}." or "decoder_blocks.{i}.") under timm's names."""
        return {name: self.params[prefix + name] for name in BLOCK_PARAM_NAMES}

    # ------------------------------------------------------------------------------------------
    def forward_encoder(self, imgs, noise, mask_ratio=None):
        """imgs: (N, 3, H, W), noise: (N, L) -> latent (N, 1+K, D), mask (N, L), ids_restore (N, L), cache.

        Without a cls token, latent is (N, K, D). mask_ratio overrides the config's: 0.0 keeps every
        patch, for features of whole images (linear probing).
        """
        cfg, p = self.config, self.params
        mask_ratio = cfg.mask_ratio if mask_ratio is None else mask_ratio
        N = imgs.shape[0]
        D = cfg.embed_dim

        # embed patches
        x = patchify(imgs, cfg.patch_size)  # (N, L, P)
        x, embed_cache = linear_forward(x, p["patch_embed.w"], p["patch_embed.b"])  # (N, L, D)
        pos_embed = self.pos_embed[:, 1:] if cfg.cls_token else self.pos_embed  # (1, L, D) w/o cls token

        if cfg.encoder_mask_tokens:
            # Ablation (Table 1c): keep all L positions; removed ones get the mask token, then position.
            _, mask, ids_restore, _ = random_masking(x, mask_ratio, noise)  # only the mask is used
            removed = mask[:, :, None]  # (N, L, 1)
            x = x * (1 - removed) + p["encoder_mask_token"] * removed  # (N, L, D)
            x += pos_embed  # (N, L, D)
            mask_cache = removed
        else:
            # add pos embed w/o cls token (in place: x is fresh and no cache holds it)
            x += pos_embed
            # masking: length -> length * (1 - mask_ratio), the kept tokens in MAE's shuffled order
            x, mask, ids_restore, mask_cache = random_masking(x, mask_ratio, noise)  # (N, K, D)

        # append cls token
        if cfg.cls_token:
            cls_token = p["cls_token"] + self.pos_embed[:, :1]  # (1, 1, D)
            cls_tokens = xp.broadcast_to(cls_token, (N, 1, D))  # (N, 1, D) expand, no copy
            x = xp.concatenate([cls_tokens, x], axis=1)  # (N, 1+K, D)

        # apply Transformer blocks
        block_caches = []
        for i in range(cfg.depth):
            x, block_cache = block_forward(x, self.block_params(f"blocks.{i}."), cfg.num_heads)  # (N, 1+K, D)
            block_caches.append(block_cache)
        latent, norm_cache = layernorm_forward(x, p["norm.w"], p["norm.b"])  # (N, 1+K, D)

        cache = (embed_cache, mask_cache, block_caches, norm_cache)
        return latent, mask, ids_restore, cache

    def forward_decoder(self, latent, ids_restore):
        """latent: (N, 1+K, D), ids_restore: (N, L) -> pred: (N, L, P) pixel predictions for every patch, cache."""
        cfg, p = self.config, self.params

        # embed tokens
        x, embed_cache = linear_forward(latent, p["decoder_embed.w"], p["decoder_embed.b"])  # (N, 1+K, Dd)

        # append mask tokens to sequence and unshuffle; the cls token passes around them
        mask_token_cache = None
        if not cfg.encoder_mask_tokens:  # (the ablation's encoder already returns all L positions)
            if cfg.cls_token:
                x_cls, x = x[:, :1], x[:, 1:]  # (N, 1, Dd), (N, K, Dd)
            x, mask_token_cache = append_mask_tokens(x, p["mask_token"], ids_restore)  # (N, L, Dd)
            if cfg.cls_token:
                x = xp.concatenate([x_cls, x], axis=1)  # (N, 1+L, Dd)

        # add pos embed (x is fresh, but the ablation's may be the cached linear output: not in place)
        x = x + self.decoder_pos_embed

        # apply Transformer blocks
        block_caches = []
        for i in range(cfg.decoder_depth):
            x, block_cache = block_forward(x, self.block_params(f"decoder_blocks.{i}."),
                                           cfg.decoder_num_heads)  # (N, 1+L, Dd)
            block_caches.append(block_cache)
        x, norm_cache = layernorm_forward(x, p["decoder_norm.w"], p["decoder_norm.b"])  # (N, 1+L, Dd)

        # predictor projection
        x, pred_cache = linear_forward(x, p["decoder_pred.w"], p["decoder_pred.b"])  # (N, 1+L, P)

        # remove cls token
        pred = x[:, 1:] if cfg.cls_token else x  # (N, L, P)

        cache = (embed_cache, mask_token_cache, block_caches, norm_cache, pred_cache)
        return pred, cache

    def forward_loss(self, imgs, pred, mask):
        """imgs: (N, 3, H, W), pred: (N, L, P), mask: (N, L) -> scalar loss, cache."""
        target = patchify(imgs, self.config.patch_size)  # (N, L, P)
        weights = mask if self.config.loss_on == "masked" else None
        return mse_forward(pred, target, weights, norm_pix_loss=self.config.norm_pix_loss)

    def forward(self, imgs, noise):
        """The training step's forward, as MaskedAutoencoderViT.forward -> loss, pred, mask, cache."""
        latent, mask, ids_restore, enc_cache = self.forward_encoder(imgs, noise)
        pred, dec_cache = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
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

        # forward_decoder, last step first
        embed_cache, mask_token_cache, block_caches, norm_cache, pred_cache = dec_cache
        if cfg.cls_token:
            N, L, P = dpred.shape
            dx = xp.zeros((N, 1 + L, P), dtype=dpred.dtype)  # (N, 1+L, P) the cls token's prediction was dropped:
            dx[:, 1:] = dpred  # it gets zero gradient
        else:
            dx = dpred  # (N, L, P)
        dx, grads["decoder_pred.w"], grads["decoder_pred.b"] = linear_backward(dx, pred_cache)  # (N, 1+L, Dd)
        dx, grads["decoder_norm.w"], grads["decoder_norm.b"] = layernorm_backward(dx, norm_cache)  # (N, 1+L, Dd)
        for i in reversed(range(cfg.decoder_depth)):
            dx, block_grads = block_backward(dx, block_caches[i])  # (N, 1+L, Dd)
            for name, g in block_grads.items():
                grads[f"decoder_blocks.{i}.{name}"] = g
        # decoder_pos_embed is a constant: the gradient passes through the addition unchanged.
        if not cfg.encoder_mask_tokens:
            if cfg.cls_token:
                dx_cls, dx = dx[:, :1], dx[:, 1:]  # (N, 1, Dd), (N, L, Dd)
            dx, grads["mask_token"] = append_mask_tokens_backward(dx, mask_token_cache)  # (N, K, Dd)
            if cfg.cls_token:
                dx = xp.concatenate([dx_cls, dx], axis=1)  # (N, 1+K, Dd)
        dlatent, grads["decoder_embed.w"], grads["decoder_embed.b"] = linear_backward(dx, embed_cache)  # (N, 1+K, D)

        # forward_encoder, last step first
        embed_cache, mask_cache, block_caches, norm_cache = enc_cache
        dx, grads["norm.w"], grads["norm.b"] = layernorm_backward(dlatent, norm_cache)  # (N, 1+K, D)
        for i in reversed(range(cfg.depth)):
            dx, block_grads = block_backward(dx, block_caches[i])  # (N, 1+K, D)
            for name, g in block_grads.items():
                grads[f"blocks.{i}.{name}"] = g
        if cfg.cls_token:
            # The one cls token was expanded to every image (a fan-out): its gradient is the sum over them.
            grads["cls_token"] = dx[:, :1].sum(axis=0, keepdims=True)  # (1, 1, D)
            dx = dx[:, 1:]  # (N, K, D)
        if cfg.encoder_mask_tokens:
            removed = mask_cache  # (N, L, 1)
            # the one encoder mask token filled every removed position of every image: sum its gradients
            grads["encoder_mask_token"] = (dx * removed).sum(axis=(0, 1), keepdims=True)  # (1, 1, D)
            dx = dx * (1 - removed)  # (N, L, D)
        else:
            dx = random_masking_backward(dx, mask_cache)  # (N, L, D) zeros at removed patches
        # pos_embed is a constant: the gradient passes through the addition unchanged.
        _, grads["patch_embed.w"], grads["patch_embed.b"] = linear_backward(dx, embed_cache, need_dx=False)
        return {name: grads[name] for name in self.params}

    # ------------------------------------------------------------------------------------------
    def num_params(self):
        return sum(int(v.size) for v in self.params.values())
