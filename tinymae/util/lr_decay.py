"""Layer-wise learning-rate decay for fine-tuning a ViT: util/lr_decay.py of the official MAE (from BEiT)."""
from ..model.optim import one_dimensional


def get_layer_id_for_vit(name, num_layers):
    """The layer a parameter belongs to (BEiT's rule, as the official code): 0 for the embeddings, i + 1
    for block i, num_layers for everything after the blocks (fc_norm, head)."""
    if name in ("cls_token", "pos_embed"):
        return 0
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def param_groups_lrd(params, depth, layer_decay=0.75, no_weight_decay_list=("cls_token", "pos_embed")):
    """Layer-wise learning-rate decay (Clark et al., 2020, ELECTRA; BEiT; the paper's A.1), as the
    official param_groups_lrd: -> (lr_scale {name: factor}, no_decay names), what AdamW takes.

    Each layer's rate is layer_decay times the one above it: the head trains at the full rate, the last
    block at layer_decay, ..., the embeddings at layer_decay ** (depth + 1). Lower layers, which carry
    the most general pre-trained features, move least. No weight decay on 1-D parameters (biases,
    LayerNorms) nor on timm's no_weight_decay() list (cls_token, pos_embed).
    """
    num_layers = depth + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    lr_scale = {name: layer_scales[get_layer_id_for_vit(name, num_layers)] for name in params}
    no_decay = one_dimensional(params) + tuple(name for name in no_weight_decay_list if name in params)
    return lr_scale, no_decay


