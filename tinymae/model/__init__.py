"""The models (read them in the order of the README's map). build_model: a freshly initialised MAE of an
architecture from its settings (a command line's, or a checkpoint's header)."""
from ..config import model_config
from .ablations import MaskedAutoencoderViTEncoderMaskTokens
from .mae_mlp import MaskedAutoencoderMLP
from .mae_vit import MaskedAutoencoderViT

MODELS = {"mlp": MaskedAutoencoderMLP, "vit": MaskedAutoencoderViT}


def build_model(arch, settings, seed=0):
    """A fresh model of `arch` ('mlp' or 'vit') with the settings given (a dict; the rest are the defaults)."""
    config = model_config(arch, settings)
    if getattr(config, "encoder_mask_tokens", False):  # the paper's Table 1c ablation (ablations.py)
        return MaskedAutoencoderViTEncoderMaskTokens(config, seed=seed)
    return MODELS[arch](config, seed=seed)
