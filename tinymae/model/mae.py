"""What both masked autoencoders share: the loss, the training step's forward, and its backward.

models_mae.py's MaskedAutoencoderViT ends with forward_loss and forward; tinymae's two MAEs (mae_vit.py, the
paper's ViT, and mae_mlp.py, an MLP) differ only in their encoder and decoder, so those last steps live
here once. A subclass defines forward_encoder, forward_decoder, backward_encoder and backward_decoder, and
its parameters in self.params.
"""
from typing import NamedTuple

from .loss import mse_backward, mse_forward
from .optim import one_dimensional
from .patches import patchify


class MAECache(NamedTuple):
    encoder: tuple  # the model's EncoderCache
    decoder: tuple  # the model's DecoderCache
    loss: tuple  # mse_forward's cache


class MaskedAutoencoder:
    """Parameters live in `self.params` (name -> array); forward/backward are plain functions of them."""

    @property
    def no_decay(self):
        """No weight decay on 1-D parameters (biases, LayerNorm weights and biases), exactly as MAE's
        main_pretrain.py: timm's add_weight_decay skips 1-D tensors, and models_mae.py lists nothing in
        no_weight_decay(), so the (1, 1, D) cls and mask tokens are decayed there and here."""
        return one_dimensional(self.params)

    def num_params(self):
        return sum(int(v.size) for v in self.params.values())

    def forward_loss(self, imgs, pred, mask):
        """imgs: (N, 3, H, W), pred: (N, L, P), mask: (N, L) -> scalar loss, cache."""
        target = patchify(imgs, self.config.patch_size)  # (N, L, P)
        weights = mask if self.config.loss_on == "masked" else None
        return mse_forward(pred, target, weights, norm_pix_loss=self.config.norm_pix_loss)

    def forward(self, imgs, noise):
        """The training step's forward, as MaskedAutoencoderViT.forward -> loss, pred, mask, cache."""
        latent, mask, ids_restore, encoder_cache = self.forward_encoder(imgs, noise)
        pred, decoder_cache = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
        loss, loss_cache = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask, MAECache(encoder_cache, decoder_cache, loss_cache)

    def backward(self, dloss, cache):
        """dloss: the upstream gradient of the loss (1.0 for the loss itself) -> a dict of gradients like
        self.params. Every step of forward, last one first."""
        dpred = mse_backward(dloss, cache.loss)  # (N, L, P) forward_loss
        dlatent, grads = self.backward_decoder(dpred, cache.decoder)
        grads.update(self.backward_encoder(dlatent, cache.encoder))
        return {name: grads[name] for name in self.params}
