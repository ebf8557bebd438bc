"""The batch of docs/walkthrough.md, and its numbers: what `python examples/walkthrough.py --values` prints.

    python examples/walkthrough_values.py [--data FOLDER] [--seed N] [--markdown]   # the same as --values

Each *_blocks function returns named blocks of lines; docs/walkthrough.md quotes every block verbatim after a line
`<!-- walkthrough --values: NAME -->`, and tests/test_walkthrough.py regenerates and compares them. Every number
comes from the engine's own functions on seeded inputs; the only numbers typed in are the worked example's easy
inputs (its tokens, mask token and upstream gradient), chosen so that every row shows where it came from.
"""
import argparse
import sys
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import FinetuneConfig, ViTConfig
from tinymae.data import channel_stats, crop_flip_draws, normalize, random_crop_flip
from tinymae.errors import TinymaeError
from tinymae.model.loss import mse_backward
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import (append_mask_tokens, append_mask_tokens_backward, gather_tokens, masking_indices,
                                   masking_noise, random_masking, random_masking_backward)
from tinymae.model.models_vit import ViTClassifier
from tinymae.photos import decode, find_photos
from tinymae.util import cli
from tinymae.util.lr_decay import param_groups_lrd

BATCH, LOAD_SIZE = 8, 54  # the batch the doc follows; the training script's default --load-size, img_size * 9/8
# The worked example: one image of 8 patches (a strip, not a square grid), tokens 3 wide, K = int(8 * 0.25) = 2.
# masking_noise reads these settings of a model (side = img_size // patch_size only for block and grid masking).
EXAMPLE = SimpleNamespace(num_patches=8, len_keep=2, mask_ratio=0.75, masking="random", img_size=8, patch_size=1)
EXAMPLE_D = 3


# ---- the tour's batch ------------------------------------------------------------------------

class Batch(NamedTuple):
    photos: object  # (8, 54, 54, 3) uint8, host
    mean: object  # (3,) per-channel mean in [0, 1] units, host
    batch: object  # (8, 48, 48, 3) uint8 after the random crop and flip, host
    imgs: object  # (8, 3, 48, 48) normalised float32, backend
    noise: object  # (8, 64) masking noise, backend
    source: str  # where the photos came from, in words
    seed: int


def the_batch(data=None, seed=0):
    """The one batch the tour follows (the trace and --values alike): 8 photos spread evenly over the folder `data`
    (sorted by class: 4 cats and 4 dogs), or random pixels when it is None, drawn as the training script draws a
    batch: the crops and flips, then the masking noise, from one seeded host generator."""
    if data is None:
        photos = host_rng(seed).integers(0, 256, (BATCH, LOAD_SIZE, LOAD_SIZE, 3), dtype=np.uint8)  # (8, 54, 54, 3)
        source = f"{BATCH} synthetic images"
    else:
        decoded = decode(find_photos(data, per_class=BATCH), LOAD_SIZE, progress=False)
        if len(decoded.images) < BATCH:
            raise TinymaeError(f"{data} holds {len(decoded.images)} readable photos; the walkthrough needs {BATCH}")
        picks = [round(i * (len(decoded.images) - 1) / (BATCH - 1)) for i in range(BATCH)]
        photos, source = decoded.images[picks], f"{BATCH} photos from {data}"
    cfg = ViTConfig()
    rng = host_rng(seed + 1)
    mean, std = channel_stats(photos)  # (3,), (3,): training uses the whole training split's
    batch = random_crop_flip(photos, cfg.img_size, rng)  # (8, 48, 48, 3)
    # The crops draw the same count of numbers whatever the pixels, so the noise, and with it every mask and
    # index array of the tour, depends on the seed only: the same for synthetic images and photos.
    noise = asarray(masking_noise(rng, BATCH, cfg))  # (8, 64)
    return Batch(photos, mean, batch, asarray(normalize(batch, mean, std)), noise, source, seed)


def seed_number(text):
    """argparse type of --seed: a whole number, 0 or more (NumPy's generators take no negative seed)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more; got {text!r}")
    return int(text)


def parser(prog, description):
    """The flags of the batch, --data and --seed, which walkthrough.py and this file share."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=cli.HelpFormatter)
    p.add_argument("--data", help="a folder of photos, e.g. data/catsdogs: 8 of them, spread over its classes (4 cats "
                                  "and 4 dogs); default: 8 synthetic images")
    p.add_argument("--seed", type=seed_number, default=0, help="seeds the weights, the crops and the masks")
    return p


# ---- masking worked out on 8 patches ---------------------------------------------------------

def row_text(values, width=5, decimals=1):
    """(7.0, 7.1, 7.2) -> '(  7.0   7.1   7.2)': one token on one line."""
    return "(" + " ".join(f"{float(v):{width}.{decimals}f}" for v in values) + ")"


def check_equal(what, ours, engine):
    """The worked example spells two engine steps out on the host; they must give the engine's numbers."""
    if not np.array_equal(to_numpy(ours), to_numpy(engine)):
        raise RuntimeError(f"the worked example drifted from the engine: {what}. Update "
                           "examples/walkthrough_values.py and docs/walkthrough.md.")


def masking_example(seed=0):
    """The masking steps of MAE on one image of L = 8 patches, forward and backward, with the engine's functions
    -> a dict of host arrays (N = 1 dropped). The tokens are easy numbers, x[l] = (l, l + 0.1, l + 0.2), so that
    each row tells which patch it is. The encoder (and decoder_embed) would change the kept tokens' values but
    never their order, so here they go straight to the decoder's step, and its gradient straight back."""
    L, K, D = EXAMPLE.num_patches, EXAMPLE.len_keep, EXAMPLE_D
    noise = asarray(masking_noise(host_rng(seed), 1, EXAMPLE))  # (1, L)
    ids_shuffle, ids_restore, ids_keep = masking_indices(noise, K)  # (1, L), (1, L), (1, K)
    x = asarray(np.arange(L)[:, None] + 0.1 * np.arange(D)[None, :], dtype="float32")[None]  # (1, L, D)
    x_masked, mask, _, masking_cache = random_masking(x, EXAMPLE.mask_ratio, noise)  # (1, K, D)

    mask_token = asarray(np.full((1, 1, D), -1.0), dtype="float32")  # (1, 1, D) an easy value to spot
    x_full, append_cache = append_mask_tokens(x_masked, mask_token, ids_restore)  # (1, L, D)
    # append_mask_tokens' first step, spelled out on the host for the block: the kept tokens, then L - K
    # copies of the mask token (slot order); its second step is the engine's gather with ids_restore.
    x_shuffled = np.concatenate([to_numpy(x_masked)[0], np.repeat(to_numpy(mask_token)[0], L - K, axis=0)])  # (L, D)
    check_equal("append_mask_tokens is a gather of the appended sequence",
                gather_tokens(asarray(x_shuffled[None]), ids_restore), x_full)

    # An upstream gradient for the decoder's input with easy numbers: row l = (l, 1, 10 l) belongs to patch l.
    dx_full = asarray(np.arange(L)[:, None] * np.array([1.0, 0.0, 10.0]) + np.array([0.0, 1.0, 0.0]),
                      dtype="float32")[None]  # (1, L, D)
    dx_masked, dmask_token = append_mask_tokens_backward(dx_full, append_cache)  # (1, K, D), (1, 1, D)
    dx_shuffled = gather_tokens(dx_full, ids_shuffle)  # (1, L, D) the gather append_mask_tokens_backward does
    check_equal("append_mask_tokens_backward's kept slots", dx_shuffled[:, :K], dx_masked)
    dx = random_masking_backward(dx_masked, masking_cache)  # (1, L, D)
    dx_padded = np.concatenate([to_numpy(dx_masked)[0], np.zeros((L - K, D), dtype="float32")])  # (L, D)
    check_equal("random_masking_backward is a gather of the padded gradient",
                gather_tokens(asarray(dx_padded[None]), ids_restore), dx)
    arrays = dict(noise=noise, ids_shuffle=ids_shuffle, ids_restore=ids_restore, ids_keep=ids_keep, mask=mask, x=x,
                  x_masked=x_masked, mask_token=mask_token, x_full=x_full, dx_full=dx_full, dx_shuffled=dx_shuffled,
                  dx_masked=dx_masked, dmask_token=dmask_token, dx=dx)
    example = {name: to_numpy(a)[0] for name, a in arrays.items()}  # drop N = 1
    example.update(x_shuffled=x_shuffled, dx_padded=dx_padded, K=K, L=L, D=D, seed=seed)
    return example


def masking_example_blocks(ex):
    """The worked example as three blocks: masking, unshuffle (the decoder's side) and backward."""
    L, K, D, ratio = ex["L"], ex["K"], ex["D"], EXAMPLE.mask_ratio
    kept = [int(i) for i in ex["ids_keep"]]
    removed = [int(i) for i in ex["ids_shuffle"][K:]]
    cells = "".join(f"{i:6d}" for i in range(L))

    def cells_of(values, fmt):
        return "".join(f"{v:{fmt}}" for v in values)

    def grad_text(row):
        return row_text(row, width=3, decimals=0)

    masking = [
        f"L = {L} patches, mask_ratio = {ratio}: K = int({L} * (1 - {ratio})) = {K} kept, {L - K} removed. One image,",
        f"tokens D = {D} wide with easy values, x[l] = (l, l + 0.1, l + 0.2): the first number is the patch.",
        "",
        f"noise = masking_noise(host_rng({ex['seed']}), 1, config): --masking {EXAMPLE.masking}, L = {L}",
        "  patch l     " + cells,
        "  noise       " + cells_of(ex["noise"], "6.2f"),
        "ids_shuffle = argsort(noise): the patches, smallest noise first",
        "  slot s      " + cells,
        "  patch       " + cells_of(ex["ids_shuffle"], "6d"),
        "ids_restore = argsort(ids_shuffle): the slot each patch went to",
        "  patch l     " + cells,
        "  slot        " + cells_of(ex["ids_restore"], "6d"),
        f"ids_keep = ids_shuffle[:{K}] = [{' '.join(map(str, kept))}]: the {K} smallest noise values are kept",
        f"mask = (ids_restore >= {K}): 1 = removed, in patch order",
        "  patch l     " + cells,
        "  mask        " + cells_of(ex["mask"].astype(int), "6d"),
        "",
        "x_masked = gather_tokens(x, ids_keep): x_masked[k] = x[ids_keep[k]], what the encoder sees",
        *(f"  k = {k}   x[{l}] = {row_text(ex['x_masked'][k])}" for k, l in enumerate(kept)),
    ]

    unshuffle = [
        f"mask_token = {row_text(ex['mask_token'][0])}: in the model one learned vector shared by every removed",
        "patch; -1 here, to be easy to spot",
        "append_mask_tokens(x_masked, mask_token, ids_restore), in two steps:",
        f"1. x_shuffled = x_masked followed by {L - K} copies of mask_token: the slot order of ids_shuffle",
        *(f"  slot {s}   {row_text(ex['x_shuffled'][s])}   "
          + (f"kept token of patch {kept[s]}" if s < K else f"mask token, for patch {removed[s - K]}")
          for s in range(L)),
        "2. un-shuffle, gather_tokens(x_shuffled, ids_restore): x_full[l] = x_shuffled[ids_restore[l]]",
        *(f"  patch {l} <- slot {s}   {row_text(ex['x_full'][l])}   {'kept' if s < K else 'mask token'}"
          for l, s in enumerate(ex["ids_restore"])),
        "Every row is back at its patch: the decoder adds decoder_pos_embed[l] to row l, so each mask",
        "token learns where it is.",
    ]

    backward = [
        "An upstream gradient for x_full with easy numbers, row l = (l, 1, 10 l):",
        *("  " + "   ".join(f"patch {l} {grad_text(ex['dx_full'][l])}" for l in half)
          for half in (range(0, L // 2), range(L // 2, L))),
        "",
        "append_mask_tokens_backward(dx_full, cache): undo the un-shuffle by a gather with",
        "ids_shuffle = argsort(ids_restore), dx_shuffled[s] = dx_full[ids_shuffle[s]]",
        *(f"  slot {s} <- patch {int(ex['ids_shuffle'][s])}   {grad_text(ex['dx_shuffled'][s])}   "
          + (f"-> dx_masked[{s}], the kept token's gradient" if s < K else "-> summed into dmask_token")
          for s in range(L)),
        f"dmask_token = sum of slots {K}..{L - 1} (patches {' + '.join(map(str, removed))}) = "
        f"{grad_text(ex['dmask_token'][0])}:",
        f"  the one mask token was used {L - K} times, so its gradient is the sum of the {L - K} uses",
        f"  (middle column: {L - K} ones).",
        "",
        "random_masking_backward(dx_masked, cache): pad the K gradients with L - K zero rows (slot",
        "order), then gather with ids_restore, the same un-shuffle as the decoder's:",
        "  dx_padded   " + "   ".join(f"slot {s} {grad_text(ex['dx_padded'][s])}" for s in range(K))
        + f"   slots {K}..{L - 1} zero",
        *(f"  patch {l} <- slot {s}   {grad_text(ex['dx'][l])}   "
          + ("kept: the gradient it sent" if s < K else "removed: zero, the encoder never saw it")
          for l, s in enumerate(ex["ids_restore"])),
        "(The encoder between is taken as the identity here, so each kept patch gets back exactly",
        "the gradient the decoder sent it; in the model the encoder's backward changes the values.)",
    ]
    return [("masking", masking), ("unshuffle", unshuffle), ("backward", backward)]


# ---- the tour's batch: one image's mask, one row of attention, the loss's gradient -----------

def grid_rows(cells, grid, sep=""):
    """L strings in patch order -> grid rows of text (patch l at row l // grid, column l % grid)."""
    return [sep.join(cells[r * grid:(r + 1) * grid]) for r in range(grid)]


def image_blocks(batch, cfg, index=0):
    """Image `index` of the tour's batch: its noise, mask grid and index arrays (L = 64, K = 16)."""
    L, K, grid = cfg.num_patches, cfg.len_keep, cfg.img_size // cfg.patch_size
    noise = batch.noise[index:index + 1]  # (1, L)
    ids_shuffle, _, _ = masking_indices(noise, K)  # (1, L)
    # the mask and ids_restore as random_masking returns them (the tokens do not matter, only the noise)
    _, mask, ids_restore, _ = random_masking(asarray(np.zeros((1, L, 1), dtype="float32")), cfg.mask_ratio, noise)
    noise, ids_shuffle = to_numpy(noise)[0], to_numpy(ids_shuffle)[0]  # (L,), (L,)
    mask, ids_restore = to_numpy(mask)[0].astype(int), to_numpy(ids_restore)[0]  # (L,), (L,)
    noise_rows = grid_rows([f"{v:5.2f}" for v in noise], grid)
    mask_rows = grid_rows([f"[{l:2d}]" if not mask[l] else f" {l:2d} " for l in range(L)], grid, " ")
    lines = [f"Image {index} of the tour's batch ({batch.source}, --seed {batch.seed}), on the {grid} x {grid} patch "
             "grid: patch l at", f"row l // {grid}, column l % {grid}. L = {L}, K = {K} kept. The noise depends on the "
             "seed only: --data gives the", "same arrays.", ""]
    lines.append(f"{'noise (the K smallest are kept)':<{len(noise_rows[0]) + 8}}ids_restore (the slot of each patch)")
    lines += [f"  {n}      {r}" for n, r in zip(noise_rows, grid_rows([f"{v:4d}" for v in ids_restore], grid))]
    lines += ["", f"{f'mask grid: [l] kept (slot < {K}), l removed':<{len(mask_rows[0]) + 8}}mask (1 = removed)"]
    lines += [f"  {row}      {m}" for row, m in zip(mask_rows, grid_rows([str(m) for m in mask], grid, " "))]
    lines += ["", f"ids_shuffle (slot s -> patch), {grid * 2} slots a line; the first line is ids_keep, what the "
                  "encoder sees:"]
    for start in range(0, L, 2 * grid):
        lines.append(f"  slots {start:2d}-{start + 2 * grid - 1:2d} {'ids_keep' if start == 0 else 'removed '}  "
                     + " ".join(f"{int(v):3d}" for v in ids_shuffle[start:start + 2 * grid]))
    return [("image", lines)]


def strategy_blocks(batch, index=0):
    """Image `index`'s mask under each --masking: the tour's noise drawn by masking_noise with ViTConfig(masking=...),
    after the crops and flips as the_batch draws it; its K smallest values are the kept patches."""
    masks = {}
    for masking in ("random", "block", "grid"):
        cfg, rng = ViTConfig(masking=masking), host_rng(batch.seed + 1)
        grid = cfg.img_size // cfg.patch_size
        crop_flip_draws(rng, BATCH, LOAD_SIZE, cfg.img_size)  # the crops and flips come first
        kept = np.argsort(masking_noise(rng, BATCH, cfg)[index])[:cfg.len_keep]  # (K,)
        masks[masking] = grid_rows(np.where(np.isin(np.arange(cfg.num_patches), kept), "#", "."), grid, " ")
    lines = [f"Image {index} of the tour's batch, its noise drawn by masking_noise for ViTConfig(masking=...) "
             "(the crops", f"first, as the_batch draws it): # kept, . removed, {cfg.len_keep} of {cfg.num_patches} "
             "in each.", "",
             "  " + "".join(f"{'--masking ' + m:<{2 * grid + 4}}" for m in masks)]
    lines += ["  " + "".join(rows[r] + "     " for rows in masks.values()) for r in range(grid)]
    return [("strategies", lines)]


def attention_blocks(batch, model, index=0):
    """The cls token's row of encoder block 0's attention for image `index`, per head, from the engine's cache."""
    _, _, _, cache = model.forward(batch.imgs, batch.noise)
    attn = to_numpy(cache.encoder.blocks[0].attn.attn)[index]  # (H, 1+K, 1+K) softmax rows
    ids_keep = to_numpy(masking_indices(batch.noise, model.config.len_keep)[2])[index]  # (K,) each token's patch
    H, T = attn.shape[0], attn.shape[1]
    row = attn[:, 0, :]  # (H, T) the cls token (query 0) over every token
    lines = [
        f"Image {index} of the tour's batch ({batch.source}), encoder block 0 of the default ViT, initial weights",
        f"(--seed {batch.seed}): cache.encoder.blocks[0].attn.attn[{index}, h, 0, :], row 0 of",
        f"softmax(q k^T / sqrt(d)) in head h, how much the cls token reads from each of the T = 1 + K = {T}",
        "tokens. Token t >= 1 holds patch ids_keep[t - 1].",
        "",
        "  token   patch  " + "".join(f"  head {h}" for h in range(H)),
        *(f"  {t:5d}  {'cls' if t == 0 else str(int(ids_keep[t - 1])):>5}  "
          + "".join(f"{row[h, t]:8.3f}" for h in range(H)) for t in range(T)),
        "  sum           " + "".join(f"{row[h].sum():8.3f}" for h in range(H)),
        f"Each head's row sums to 1 (uniform would be 1 / {T} = {1 / T:.3f} each). These are untrained",
        "weights; docs/attention.png draws a trained model's rows on the image.",
    ]
    return [("attention", lines)]


def loss_on_blocks(batch):
    """dpred on visible and removed patches, with the loss on removed patches (MAE) and on all."""
    lines = ["dpred = mse_backward(1.0, cache.loss) of the default ViT on the tour's batch, |dpred| summed over",
             "the patches of each kind:", "",
             "  loss_on    removed patches    visible patches"]
    for loss_on in ("masked", "all"):
        model = MaskedAutoencoderViT(ViTConfig(loss_on=loss_on), seed=batch.seed)
        _, _, mask, cache = model.forward(batch.imgs, batch.noise)
        dpred = np.abs(to_numpy(mse_backward(1.0, cache.loss))).sum(axis=-1)  # (N, L)
        removed = to_numpy(mask).astype(bool)  # (N, L)
        lines.append(f"  {loss_on:<8} {dpred[removed].sum():17.6f} {dpred[~removed].sum():18.6f}")
    lines.append("With --loss-on masked (the paper) no gradient reaches a visible patch's prediction.")
    return [("loss_on", lines)]


# ---- what masking saves, and how fine-tuning treats each layer -------------------------------

def block_multiply_adds(T, D, mlp_ratio=4.0):
    """Multiply-adds of one Transformer block's matrix products on T tokens of width D (per image):
    qkv T D 3D, scores and attn @ v T T D each (all heads together), proj T D D, fc1 and fc2 T D 4D each."""
    return T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * int(D * mlp_ratio)


def cost_blocks(ratios=(0.0, 0.5, 0.75, 0.9)):
    """What removing patches saves: the blocks' multiply-adds per image, by mask ratio, for the default ViT."""
    cfg = ViTConfig()
    L = cfg.num_patches
    decoder = cfg.decoder_depth * block_multiply_adds(1 + L, cfg.decoder_embed_dim, cfg.mlp_ratio)
    lines = ["Multiply-adds per image in the Transformer blocks' matrix products (qkv, q k^T, attn @ v, proj, fc1,",
             f"fc2), default ViT: {cfg.depth} encoder blocks of D = {cfg.embed_dim} on T = 1 + K tokens, "
             f"{cfg.decoder_depth} decoder blocks of",
             f"Dd = {cfg.decoder_embed_dim} on T = 1 + L = {1 + L}. block_multiply_adds() in "
             "examples/walkthrough_values.py.",
             "",
             "  mask_ratio    K    T   encoder    decoder    whole"]
    cost = {}
    for ratio in ratios:
        K = int(L * (1 - ratio))
        encoder = cfg.depth * block_multiply_adds(1 + K, cfg.embed_dim, cfg.mlp_ratio)
        cost[ratio] = (encoder, encoder + decoder)
        lines.append(f"  {ratio:10.2f} {K:4d} {1 + K:4d} {encoder / 1e6:8.1f} M {decoder / 1e6:8.1f} M "
                     f"{(encoder + decoder) / 1e6:6.1f} M")
    full, mae = cost[0.0], cost[cfg.mask_ratio]
    lines.append(f"mask_ratio 0: the encoder processes all {L} patches (as the mask-token encoder of ablations.py "
                 "does).")
    lines.append(f"At the default {cfg.mask_ratio}: the encoder costs {full[0] / mae[0]:.1f}x less, the whole model "
                 f"{full[1] / mae[1]:.1f}x less.")
    return [("cost", lines)]


def lr_decay_blocks(seed=0):
    """Fine-tuning's layer-wise learning-rate decay on the default ViT: each layer's factor, by param_groups_lrd."""
    finetune = FinetuneConfig()
    model = ViTClassifier(MaskedAutoencoderViT(ViTConfig(), seed=seed), seed=seed)
    lr_scale, no_decay = param_groups_lrd(model.params, model.config.depth, finetune.layer_decay)
    groups = {}  # lr factor -> the parameter groups that get it ("blocks.3", "head", ...), in the model's order
    for name, factor in lr_scale.items():
        group = ".".join(name.split(".")[:2]) if name.startswith("blocks.") else name.split(".")[0]
        if group not in groups.setdefault(factor, []):
            groups[factor].append(group)
    lines = [f"lr_scale, no_decay = param_groups_lrd(ViTClassifier(...).params, depth={model.config.depth}, "
             f"layer_decay={finetune.layer_decay}):",
             "each layer learns at layer_decay times the rate of the layer above it.", "",
             f"  layer  parameters                lr factor   lr at the peak of {finetune.lr}"]
    for layer, factor in reversed(list(enumerate(sorted(groups)))):
        lines.append(f"  {layer:5d}  {', '.join(groups[factor]):<25} {factor:9.4f}   {factor * finetune.lr:14.6f}")
    lines.append(f"No weight decay on {len(no_decay)} parameters: every bias and LayerNorm, and cls_token.")
    return [("lr_decay", lines)]


def value_blocks(batch):
    """Every --values block for the tour's batch, in order: a list of (name, lines)."""
    cfg = ViTConfig()
    blocks = masking_example_blocks(masking_example(batch.seed)) + image_blocks(batch, cfg) + strategy_blocks(batch)
    blocks += attention_blocks(batch, MaskedAutoencoderViT(cfg, seed=batch.seed))
    blocks += loss_on_blocks(batch) + cost_blocks() + lr_decay_blocks(batch.seed)
    return [(name, [line.rstrip() for line in lines]) for name, lines in blocks]


def values_text(blocks, markdown=False):
    """The blocks as the terminal shows them, or (markdown) as docs/walkthrough.md quotes them."""
    out = []
    for name, lines in blocks:
        if markdown:
            out += [f"<!-- walkthrough --values: {name} -->", "```text", *lines, "```", ""]
        else:
            out += [f"-- {name} " + "-" * (96 - len(name)), *lines, ""]
    return "\n".join(out)


def main(argv=None):
    p = parser("python examples/walkthrough_values.py", __doc__)
    p.add_argument("--markdown", action="store_true", help="print the blocks as docs/walkthrough.md quotes them")
    args = p.parse_args(argv)
    return cli.run(lambda: print(values_text(value_blocks(the_batch(args.data, args.seed)), args.markdown), end=""))


if __name__ == "__main__":
    sys.exit(main())
