"""tinymae's two MAEs in PyTorch (eager), built from a tinymae model's own weights: the one transcription.

bench_step.py and train_torch.py time and train these; tests/test_torch_models.py and tests/test_torch_oracle_vit.py
check tinymae against them. tinymae itself never imports torch; only this folder and the tests do.

    TorchViTMAE   MaskedAutoencoderViT of models_mae.py (facebookresearch/mae) with timm 0.3.2's Block and Attention;
                  one deliberate difference, tinymae's: GELU in its tanh form (tinymae has no erf; see layers.py)
    TorchMLPMAE   tinymae's mae_mlp.py: a Linear per patch + pos embed, random_masking with keep_order=True, the
                  visible tokens flattened, Linear + ReLU layers, decoder_pred

Each torch parameter is named as tinymae's (torch_name) and holds the same numbers in torch's layout
(to_torch_layout). Both sides argsort the same `noise` (N, L), so they keep the same patches.
"""
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinymae.backend import to_numpy  # the one device -> host door of tinymae

# Names and layouts: tinymae <-> torch

def torch_name(name):
    """tinymae's parameter name -> the torch module's: 'blocks.0.attn.qkv.w' -> 'blocks.0.attn.qkv.weight'."""
    return re.sub(r"\.w$", ".weight", re.sub(r"\.b$", ".bias", name))  # cls_token, mask_token stay


def to_torch_layout(ours, torch_shape):
    """A tinymae parameter (NumPy array) -> the same numbers in the torch parameter's layout."""
    if len(torch_shape) == 4:  # Conv2d kernel (D, C, p, p) <- tinymae's patch_embed.w (p*p*C, D), as models_mae.py
        D, C, p, _ = torch_shape
        return ours.T.reshape(D, p, p, C).transpose(0, 3, 1, 2)
    if len(torch_shape) == 2:  # nn.Linear weight (D_out, D_in) <- tinymae's (D_in, D_out)
        return ours.T
    return ours.reshape(torch_shape)


def to_tinymae_layout(theirs, our_shape):
    """A torch tensor (a parameter or its gradient) -> a NumPy array in tinymae's layout."""
    a = theirs.detach().cpu().numpy()
    if a.ndim == 4:  # Conv2d kernel (D, C, p, p) -> (p*p*C, D)
        return a.transpose(0, 2, 3, 1).reshape(len(a), -1).T
    if a.ndim == 2:
        return a.T
    return a.reshape(our_shape)


def load_tinymae_params(module, arrays, grad=False):
    """Copy a tinymae dict of backend arrays (its params, or with grad=True their gradients: to compare optimisers
    alone) into `module`'s parameters (or their .grad), converting layouts; the names must match both ways."""
    theirs = dict(module.named_parameters())
    differ = sorted(set(map(torch_name, arrays)) ^ set(theirs))
    if differ:
        raise ValueError(f"tinymae and torch parameter names differ: {differ}")
    with torch.no_grad():
        for name, value in arrays.items():
            t = theirs[torch_name(name)]
            value = torch.tensor(np.ascontiguousarray(to_torch_layout(to_numpy(value), tuple(t.shape))),
                                 dtype=t.dtype, device=t.device)
            if grad:
                t.grad = value
            else:
                t.copy_(value)


def tinymae_params(module, params, grad=False):
    """`module`'s parameters (or with grad=True their .grad) as NumPy arrays in tinymae's names and layouts."""
    theirs = {name: t.grad if grad else t for name, t in module.named_parameters()}
    return {name: to_tinymae_layout(theirs[torch_name(name)], tuple(value.shape)) for name, value in params.items()}


def no_decay_param_groups(module, no_decay, weight_decay):
    """AdamW's two parameter groups, from tinymae's `model.no_decay` names."""
    skip = set(map(torch_name, no_decay))
    named = list(module.named_parameters())
    return [{"params": [t for n, t in named if n not in skip], "weight_decay": weight_decay},
            {"params": [t for n, t in named if n in skip], "weight_decay": 0.0}]


# The steps both models share (models_mae.py)

def patchify(imgs, p):
    """imgs: (N, 3, H, W) -> (N, L, p*p*3), as MaskedAutoencoderViT.patchify."""
    N, C, H, W = imgs.shape
    h, w = H // p, W // p
    x = imgs.reshape(N, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(N, h * w, p * p * C)


def random_masking(x, mask_ratio, noise, keep_order=False):
    """MaskedAutoencoderViT.random_masking with the noise given; keep_order as tinymae's masking.py."""
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
    if keep_order:
        ids_shuffle = torch.cat([ids_shuffle[:, :len_keep].sort(dim=1).values, ids_shuffle[:, len_keep:]], dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], dtype=x.dtype, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


def forward_loss(imgs, pred, mask, patch_size, norm_pix_loss, loss_on):
    """MaskedAutoencoderViT.forward_loss; loss_on='all' averages over every patch (tinymae's option)."""
    target = patchify(imgs, patch_size)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
    if loss_on == "all":
        return loss.mean()
    return (loss * mask).sum() / mask.sum()  # mean loss on removed patches


# The ViT MAE: timm 0.3.2's Attention, Mlp and Block, and models_mae.py's MaskedAutoencoderViT

class Attention(nn.Module):
    """timm's Attention. fused=True uses F.scaled_dot_product_attention (current timm's fused_attn)."""

    def __init__(self, dim, num_heads, fused=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, gelu="tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        # "tanh": the form tinymae computes (layers.py); "none": torch's exact erf GELU, as timm's Mlp
        self.gelu = gelu

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.gelu))


class Block(nn.Module):
    """timm's Block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio, gelu="tanh"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), gelu)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class TorchViTMAE(nn.Module):
    """MaskedAutoencoderViT from models_mae.py for a tinymae ViTConfig; `forward(imgs, noise)` -> loss, pred, mask."""

    def __init__(self, cfg, pos_embed, decoder_pos_embed, gelu="tanh"):
        super().__init__()
        if cfg.encoder_mask_tokens:
            raise NotImplementedError("the encoder-mask-tokens ablation has no torch transcription here")
        self.cfg = cfg
        D, Dd = cfg.embed_dim, cfg.decoder_embed_dim
        # timm's PatchEmbed: this Conv2d (its .proj, named as tinymae's), then forward_encoder's flatten + transpose
        self.patch_embed = nn.Conv2d(cfg.in_chans, D, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks = nn.ModuleList([Block(D, cfg.num_heads, cfg.mlp_ratio, gelu) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_blocks = nn.ModuleList([Block(Dd, cfg.decoder_num_heads, cfg.mlp_ratio, gelu)
                                             for _ in range(cfg.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, cfg.patch_dim)
        # fixed sin-cos tables (requires_grad=False parameters in models_mae.py; buffers here)
        self.register_buffer("pos_embed", pos_embed)
        self.register_buffer("decoder_pos_embed", decoder_pos_embed)

    def forward_encoder(self, x, noise):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # embed patches, BCHW -> BNC
        x = x + self.pos_embed[:, 1:, :]  # add pos embed w/o cls token
        x, mask, ids_restore = random_masking(x, self.cfg.mask_ratio, noise)  # length -> length * mask_ratio
        cls_token = self.cls_token + self.pos_embed[:, :1, :]  # append cls token
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:  # apply Transformer blocks
            x = blk(x)
        x = self.norm(x)
        return x, mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)  # embed tokens
        # append mask tokens to sequence
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token
        x = x + self.decoder_pos_embed  # add pos embed
        for blk in self.decoder_blocks:  # apply Transformer blocks
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # predictor projection
        return x[:, 1:, :]  # remove cls token

    def forward(self, imgs, noise):
        latent, mask, ids_restore = self.forward_encoder(imgs, noise)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
        loss = forward_loss(imgs, pred, mask, self.cfg.patch_size, self.cfg.norm_pix_loss, self.cfg.loss_on)
        return loss, pred, mask


# The MLP MAE of mae_mlp.py

class TorchMLPMAE(nn.Module):
    """tinymae's MaskedAutoencoderMLP for an MLPConfig; `forward(imgs, noise)` -> loss, pred, mask."""

    def __init__(self, cfg, pos_embed):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.embed_dim)  # one Linear applied to every patch
        dims = [cfg.len_keep * cfg.embed_dim, *cfg.encoder_dims]
        self.encoder = nn.ModuleList([nn.Linear(dims[i], dims[i + 1]) for i in range(len(cfg.encoder_dims))])
        dims = [cfg.encoder_dims[-1], *cfg.decoder_dims]
        self.decoder = nn.ModuleList([nn.Linear(dims[i], dims[i + 1]) for i in range(len(cfg.decoder_dims))])
        self.decoder_pred = nn.Linear(dims[-1], cfg.num_patches * cfg.patch_dim)
        self.register_buffer("pos_embed", pos_embed)

    def forward(self, imgs, noise):
        cfg = self.cfg
        N = imgs.shape[0]
        x = self.patch_embed(patchify(imgs, cfg.patch_size)) + self.pos_embed  # (N, L, E)
        x, mask, _ = random_masking(x, cfg.mask_ratio, noise, keep_order=True)  # (N, K, E)
        h = x.reshape(N, -1)  # (N, K*E) the visible tokens, flattened
        for layer in (*self.encoder, *self.decoder):
            h = F.relu(layer(h))
        pred = self.decoder_pred(h).reshape(N, cfg.num_patches, cfg.patch_dim)  # (N, L, P)
        loss = forward_loss(imgs, pred, mask, cfg.patch_size, cfg.norm_pix_loss, cfg.loss_on)
        return loss, pred, mask


# Building from a tinymae model, and comparing

def from_tinymae(model, device="cpu", dtype=torch.float32, gelu="tanh"):
    """The torch twin of a tinymae MaskedAutoencoderMLP or MaskedAutoencoderViT, with its weights (copied,
    converted) and tables."""
    if model.arch == "mlp":
        twin = TorchMLPMAE(model.config, torch.tensor(to_numpy(model.pos_embed)))
    elif model.arch == "vit":
        twin = TorchViTMAE(model.config, torch.tensor(to_numpy(model.pos_embed)),
                           torch.tensor(to_numpy(model.decoder_pos_embed)), gelu)
    else:
        raise ValueError(f"no torch twin for arch {model.arch!r}")
    twin = twin.to(device=device, dtype=dtype)  # the tables (buffers) too
    load_tinymae_params(twin, model.params)
    return twin


def max_rel_diff(ours, theirs):
    """max |ours - theirs| / max |theirs| (ours a backend array): the worst error relative to the array's own scale."""
    ours, theirs = np.asarray(to_numpy(ours), dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    diff, scale = float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
    return diff / scale if scale > 0 else diff


def compare_step(model, twin, imgs, noise, dloss=1.0):
    """One forward + backward on each side (same weights; the same batch and noise, backend arrays, copied for torch)
    -> {"loss": (ours, theirs), "mask_equal": bool, "pred": max_rel_diff, "grads": {name: max_rel_diff}}."""
    loss, pred, mask, cache = model.forward(imgs, noise)
    grads = model.backward(dloss, cache)

    p = next(twin.parameters())
    twin.zero_grad(set_to_none=True)
    tloss, tpred, tmask = twin(torch.tensor(to_numpy(imgs), dtype=p.dtype, device=p.device),
                               torch.tensor(to_numpy(noise), device=p.device))
    (tloss * dloss).backward()

    theirs = tinymae_params(twin, model.params, grad=True)
    return {"loss": (float(loss), tloss.item()),
            "mask_equal": bool(np.array_equal(to_numpy(mask), tmask.cpu().numpy())),
            "pred": max_rel_diff(pred, tpred.detach().cpu().numpy()),
            "grads": {name: max_rel_diff(grads[name], theirs[name]) for name in model.params}}
