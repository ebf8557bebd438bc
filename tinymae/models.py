"""Build a model from its architecture name and settings (the training script's flags, or a checkpoint)."""
from .mae_mlp import MLPConfig, MLPMAE

ARCHS = ("mlp", "vit")


def build_config(arch, settings):
    """The config dataclass of `arch` from a dict of settings; unknown names are a clear error."""
    if arch == "mlp":
        config_class = MLPConfig
    elif arch == "vit":
        from .mae_vit import ViTConfig
        config_class = ViTConfig
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    known = config_class.__dataclass_fields__
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"settings {unknown} do not apply to the {arch} model (it takes {sorted(known)})")
    # JSON has no tuples: lists saved in a checkpoint come back as lists.
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


def build_model(arch, settings, seed=0):
    """A freshly initialised model of `arch` ('mlp' or 'vit') with the given config settings."""
    config = build_config(arch, settings)
    if arch == "mlp":
        return MLPMAE(config, seed=seed)
    from .mae_vit import ViTMAE
    return ViTMAE(config, seed=seed)
