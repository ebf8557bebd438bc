"""Build a model from its architecture name and settings (a command line, or a checkpoint's header)."""
from ..config import MODEL_CONFIGS, model_config
from .ablations import MaskedAutoencoderViTEncoderMaskTokens
from .mae_mlp import MaskedAutoencoderMLP
from .mae_vit import MaskedAutoencoderViT

ARCHS = tuple(MODEL_CONFIGS)


def build_model(arch, settings, seed=0):
    """A freshly initialised model of `arch` ('mlp' or 'vit') with the given config settings (a dict)."""
    config = model_config(arch, settings)
    if arch == "mlp":
        return MaskedAutoencoderMLP(config, seed=seed)
    if config.encoder_mask_tokens:
        return MaskedAutoencoderViTEncoderMaskTokens(config, seed=seed)
    return MaskedAutoencoderViT(config, seed=seed)
