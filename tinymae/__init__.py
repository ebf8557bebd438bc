"""tinymae: Masked Autoencoders (He et al., CVPR 2022) written by hand in NumPy / CuPy, without autograd.

The model, in reading order (model/): patches.py, masking.py, layers.py, attention.py, transformer.py, mae_vit.py
(MaskedAutoencoderViT, as models_mae.py), mae.py, loss.py, optim.py; beside it mae_mlp.py, pos_embed.py,
models_vit.py (the fine-tuning network) and ablations.py. Around it: config.py (every setting), backend.py
(NumPy or CuPy), photos.py and data.py (the photos a run trains on), engine.py (the training loop), run.py (a run's
skeleton), pretrain.py, finetune.py, evaluate.py, probe.py, predict.py (the commands), fast/ (the fast path) and
util/ (checkpoints, files, figures, gradient checks, ...). The README has the map.
"""
__version__ = "0.2.0"


def load(path):
    """A trained model from its checkpoint, ready to use in your own code (predict.py; the README's example)."""
    from .predict import load
    return load(path)
