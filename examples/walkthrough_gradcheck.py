"""The live gradient check of `python examples/walkthrough.py`, also on its own (exit status 1 when it fails):

    python examples/walkthrough_gradcheck.py [--seed N]

tinymae/util/gradcheck.py's check_backward perturbs every element of its inputs: two forward passes for each of
922,860 parameters. So each input here is one number t, a step along a fixed random direction in one parameter
(mask_token, cls_token, blocks.0.attn.qkv.w, patch_embed.w: from the decoder back to the patch embedding), and in
every parameter at once, which exercises every backward of the model; d loss / dt = sum(grad * direction). (A key
bias alone would fail: its true gradient is exactly zero, section 8 of docs/walkthrough.md.)
"""
import argparse
import sys

import numpy as np

from tinymae.backend import asarray, host_rng
from tinymae.config import ViTConfig
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import masking_noise
from tinymae.util import cli
from tinymae.util.gradcheck import check_backward

from walkthrough_values import seed_number

TOLERANCE = 1e-7  # the largest relative error allowed: assert_backward_matches' default
CHECKED = ("mask_token", "cls_token", "blocks.0.attn.qkv.w", "patch_embed.w")


def gradient_check(seed=0, n_images=2, names=CHECKED):
    """d loss / dt along a random direction in each parameter of `names`, and in every parameter at once,
    analytic against numeric, on n_images random images -> a list of gradcheck.GradReport, one per direction."""
    model = MaskedAutoencoderViT(ViTConfig(), seed=seed)
    # float64, for finite differences: the parameters (the point every step starts from), the position tables
    saved = {name: p.astype("float64") for name, p in model.params.items()}
    model.pos_embed, model.decoder_pos_embed = (t.astype("float64") for t in (model.pos_embed, model.decoder_pos_embed))
    rng = host_rng(seed + 2)
    imgs = asarray(rng.standard_normal((n_images, 3, 48, 48)))  # (n, 3, 48, 48) float64
    noise = asarray(masking_noise(rng, n_images, model.config))  # (n, 64)
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
    return check_backward(forward, backward, steps, seed=seed, h=1e-6)


def check(seed=0):
    """Run the check and print it -> 0 when it passed, 1 when it failed."""
    reports = gradient_check(seed=seed)
    for r in reports:
        print(f"  {r.name:<20} analytic {r.analytic:+.8e}  numeric {r.numeric:+.8e}  rel error {r.rel_error:.1e}")
    worst = max(r.rel_error for r in reports)
    print(f"worst relative error {worst:.1e}: {'OK' if worst <= TOLERANCE else 'FAILED'} "
          f"(tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="python examples/walkthrough_gradcheck.py", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--seed", type=seed_number, default=0, help="seeds the model, the images, the masks, the directions")
    return cli.run(check, p.parse_args(argv).seed)


if __name__ == "__main__":
    sys.exit(main())
