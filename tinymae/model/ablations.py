"""The paper's ablations that change the model, kept out of the main class so that it reads like models_mae.py.

MaskedAutoencoderViTEncoderMaskTokens is Table 1c's "encoder w/ [M]": instead of dropping the removed
patches, the encoder keeps all L positions and puts a learned mask token (plus its position) where a
patch was removed; the decoder then receives all L positions from the encoder and adds no mask tokens
of its own. The paper finds it slower (the encoder processes 4x the tokens at mask ratio 0.75) and
worse. Only the two masking steps differ from MAE; everything else is inherited.
"""
from ..backend import host_rng
from .layers import normal
from .mae_vit import MaskedAutoencoderViT
from .masking import random_masking


class MaskedAutoencoderViTEncoderMaskTokens(MaskedAutoencoderViT):

    def __init__(self, config=None, seed=0):
        super().__init__(config, seed)
        # The encoder's own [M] (width D) replaces the decoder's (width Dd). Drawn after every other
        # parameter, from a generator of its own, so the shared parameters start as the main model's.
        del self.params["mask_token"]
        self.params["encoder_mask_token"] = normal(host_rng((seed, 1)), (1, 1, self.config.embed_dim))

    def random_masking(self, x, mask_ratio, noise):
        """x: (N, L, D) with positions added -> (N, L, D): removed positions hold the mask token plus their
        position embedding, kept ones are unchanged. The mask and ids_restore are MAE's."""
        _, mask, ids_restore, _ = random_masking(x, mask_ratio, noise)  # only the mask is used
        removed = mask[:, :, None]  # (N, L, 1)
        token = self.params["encoder_mask_token"] + self.pos_embed[:, 1:]  # (1, L, D) [M] at each position
        x = x * (1 - removed) + token * removed  # (N, L, D)
        return x, mask, ids_restore, removed

    def random_masking_backward(self, dx, cache):
        removed = cache  # (N, L, 1)
        # The one encoder mask token filled every removed position of every image: sum its gradients.
        dtoken = (dx * removed).sum(axis=(0, 1), keepdims=True)  # (1, 1, D)
        return dx * (1 - removed), {"encoder_mask_token": dtoken}

    def append_mask_tokens(self, x, ids_restore):
        return x, None  # the encoder already returned every position, in place

    def append_mask_tokens_backward(self, dx, cache):
        return dx, {}

