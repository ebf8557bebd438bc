"""The live gradient check of `python examples/walkthrough.py`: the whole ViT MAE's backward against finite
differences, by the engine's own checker, tinymae/util/gradcheck.py.

gradcheck.check_backward(forward, backward, inputs) perturbs every element of its inputs, which for a
model of 922,860 parameters would take two forward passes per parameter. So each input here is a single
number t, a step along a fixed random direction: in one parameter (mask_token, cls_token,
blocks.0.attn.qkv.w, patch_embed.w: spread along the chain from the decoder's mask token back to the
patch embedding), and in every parameter at once, which exercises every backward of the model in one
number. The chain rule gives d loss / dt = sum(grad * direction), which is what `backward` below returns
from MaskedAutoencoderViT.backward's gradients; check_backward compares it with the centered difference.

A key bias on its own could not be checked this way: its gradient is exactly zero (softmax ignores a
constant added to a row), so finite differences see only rounding noise (tinymae/util/gradcheck.py's
docstring). Inside a random direction over many parameters it adds nothing, and does no harm.
"""
import numpy as np

from tinymae.backend import asarray, host_rng
from tinymae.config import ViTConfig
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import masking_noise
from tinymae.util.gradcheck import check_backward

TOLERANCE = 1e-7  # the largest relative error allowed: assert_backward_matches' default
CHECKED = ("mask_token", "cls_token", "blocks.0.attn.qkv.w", "patch_embed.w")


def float64_model(seed=0):
    """The default ViT MAE in float64, for finite differences: its parameters and constant position tables."""
    model = MaskedAutoencoderViT(ViTConfig(), seed=seed)
    for name, value in model.params.items():
        model.params[name] = value.astype("float64")
    model.pos_embed = model.pos_embed.astype("float64")
    model.decoder_pos_embed = model.decoder_pos_embed.astype("float64")
    return model


def gradient_check(seed=0, n_images=2, names=CHECKED):
    """d loss / dt along a random direction in each parameter of `names`, and in every parameter at once,
    analytic against numeric, on n_images random images -> a list of gradcheck.GradReport, one per direction."""
    model = float64_model(seed)
    rng = host_rng(seed + 2)
    imgs = asarray(rng.standard_normal((n_images, 3, 48, 48)))  # (n, 3, 48, 48) float64
    noise = masking_noise(rng, n_images, model.config.num_patches)  # (n, 64)
    saved = dict(model.params)
    directions = {name: {name: asarray(rng.standard_normal(saved[name].shape))} for name in names}
    directions["every parameter"] = {name: asarray(rng.standard_normal(p.shape)) for name, p in saved.items()}

    def forward(*steps):
        """One (1,) step t per direction -> the loss at params + sum of t * direction, and its cache."""
        for name, base in saved.items():
            model.params[name] = sum((t[0] * d[name] for t, d in zip(steps, directions.values()) if name in d), base)
        loss, _, _, cache = model.forward(imgs, noise)
        return loss, cache

    def backward(dloss, cache):
        """-> one (1,) derivative per direction: sum(grad * direction) over the direction's parameters."""
        grads = model.backward(dloss, cache)
        return tuple(sum((grads[name] * d[name]).sum() for name in d).reshape(1) for d in directions.values())

    steps = {label: asarray(np.zeros(1)) for label in directions}  # float64, t = 0: the model as built
    # A step moves every element of a parameter at once, so the difference's O(h^2) error is larger than
    # for one element: h = 1e-6 (not gradcheck's 1e-5) keeps it and float64 rounding both near 1e-9.
    reports = check_backward(forward, backward, steps, seed=seed, h=1e-6)
    model.params.update(saved)
    return reports


def report_lines(reports):
    """The check as the walkthrough prints it, and whether it passed."""
    lines = [f"  {r.name:<20} analytic {r.analytic:+.8e}  numeric {r.numeric:+.8e}  rel error {r.rel_error:.1e}"
             for r in reports]
    worst = max(r.rel_error for r in reports)
    ok = worst <= TOLERANCE
    lines.append(f"worst relative error {worst:.1e}: {'OK' if ok else 'FAILED'} (tolerance {TOLERANCE:.0e})")
    return lines, ok
