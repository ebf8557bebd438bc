"""The numbers of docs/walkthrough.md: what `python examples/walkthrough.py --values` prints.

Each function below returns named blocks of text, a list of (name, lines). docs/walkthrough.md quotes
every block verbatim after a line `<!-- walkthrough --values: NAME -->`, and tests/test_walkthrough.py
regenerates them and compares. Every number comes from the engine's own functions on seeded inputs; the
only numbers typed in are the worked example's easy inputs (its tokens, mask token and upstream gradient),
chosen so that every row shows where it came from.

    masking, unshuffle, backward   random_masking worked out on one image of 8 patches, the decoder's
                                   append of mask tokens and un-shuffle, and the gradient back through both
    image                          image 0 of the tour's batch: its noise, mask grid and index arrays
    attention                      the cls token's row of attention in encoder block 0
    loss_on                        the gradient with the loss on removed or on all patches
    cost                           the blocks' multiply-adds by mask ratio
    lr_decay                       fine-tuning's layer-wise learning-rate decay, layer by layer

examples/walkthrough.py draws the tour's batch and passes it here: value_blocks(batch) reads only its
imgs (N, 3, 48, 48), noise (N, 64), source (in words) and seed.
"""
import numpy as np

from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import FinetuneConfig, ViTConfig
from tinymae.model.loss import mse_backward
from tinymae.model.mae_vit import MaskedAutoencoderViT
from tinymae.model.masking import (append_mask_tokens, append_mask_tokens_backward, gather_tokens, masking_indices,
                                   masking_noise, random_masking, random_masking_backward)
from tinymae.model.models_vit import ViTClassifier
from tinymae.util.lr_decay import param_groups_lrd

EXAMPLE_L, EXAMPLE_D, EXAMPLE_RATIO = 8, 3, 0.75  # 8 patches, tokens 3 wide: K = int(8 * 0.25) = 2


def check_equal(what, ours, engine):
    """The worked example spells two engine steps out on the host; they must give the engine's numbers."""
    if not np.array_equal(to_numpy(ours), to_numpy(engine)):
        raise RuntimeError(f"the worked example drifted from the engine: {what}. Update "
                           "examples/walkthrough_values.py and docs/walkthrough.md.")


def row_text(values, width=5, decimals=1):
    """(7.0, 7.1, 7.2) -> '(  7.0   7.1   7.2)': one token on one line."""
    return "(" + " ".join(f"{float(v):{width}.{decimals}f}" for v in values) + ")"


def ints_text(values, width=3):
    return " ".join(f"{int(v):{width}d}" for v in values)


# ----------------------------------------------------------------------------------------------
# masking worked out on 8 patches

def masking_example(seed=0):
    """The masking steps of MAE on one image of L = 8 patches, with the engine's functions -> a dict of host
    arrays (N = 1 dropped), forward and backward.

    The tokens are easy numbers, x[l] = (l, l + 0.1, l + 0.2), so that each row tells which patch it is;
    the noise is drawn by masking_noise from host_rng(seed), as in training. The encoder (and the
    decoder_embed Linear) would change the kept tokens' values but never their order, so here the kept
    tokens go straight to the decoder's step, and its gradient straight back to the masking.
    """
    L, D = EXAMPLE_L, EXAMPLE_D
    K = int(L * (1 - EXAMPLE_RATIO))
    noise = masking_noise(host_rng(seed), 1, L)  # (1, L)
    ids_shuffle, ids_restore, ids_keep = masking_indices(noise, K)  # (1, L), (1, L), (1, K)
    x = asarray(np.arange(L)[:, None] + 0.1 * np.arange(D)[None, :], dtype="float32")[None]  # (1, L, D)
    x_masked, mask, _, masking_cache = random_masking(x, EXAMPLE_RATIO, noise)  # (1, K, D)

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
    L, K, D = ex["L"], ex["K"], ex["D"]
    kept = [int(i) for i in ex["ids_keep"]]
    removed = [int(i) for i in ex["ids_shuffle"][K:]]
    cells = "".join(f"{i:6d}" for i in range(L))

    def cells_of(values, fmt):
        return "".join(f"{v:{fmt}}" for v in values)

    masking = [
        f"L = {L} patches, mask_ratio = {EXAMPLE_RATIO}: K = int({L} * (1 - {EXAMPLE_RATIO})) = {K} kept, "
        f"{L - K} removed. One image,",
        f"tokens D = {D} wide with easy values, x[l] = (l, l + 0.1, l + 0.2): the first number is the patch.",
        "",
        f"noise = masking_noise(host_rng({ex['seed']}), 1, {L})",
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
    ]
    for k, l in enumerate(kept):
        masking.append(f"  k = {k}   x[{l}] = {row_text(ex['x_masked'][k])}")

    unshuffle = [
        f"mask_token = {row_text(ex['mask_token'][0])}: in the model one learned vector shared by every removed",
        "patch; -1 here, to be easy to spot",
        "append_mask_tokens(x_masked, mask_token, ids_restore), in two steps:",
        f"1. x_shuffled = x_masked followed by {L - K} copies of mask_token: the slot order of ids_shuffle",
    ]
    for s in range(L):
        what = f"kept token of patch {kept[s]}" if s < K else f"mask token, for patch {removed[s - K]}"
        unshuffle.append(f"  slot {s}   {row_text(ex['x_shuffled'][s])}   {what}")
    unshuffle.append("2. un-shuffle, gather_tokens(x_shuffled, ids_restore): x_full[l] = x_shuffled[ids_restore[l]]")
    for l in range(L):
        s = int(ex["ids_restore"][l])
        unshuffle.append(f"  patch {l} <- slot {s}   {row_text(ex['x_full'][l])}   {'kept' if s < K else 'mask token'}")
    unshuffle.append("Every row is back at its patch: the decoder adds decoder_pos_embed[l] to row l, so each mask")
    unshuffle.append("token learns where it is.")

    def grad_text(row):
        return row_text(row, width=3, decimals=0)

    backward = [
        "An upstream gradient for x_full with easy numbers, row l = (l, 1, 10 l):",
        "  " + "   ".join(f"patch {l} {grad_text(ex['dx_full'][l])}" for l in range(0, L // 2)),
        "  " + "   ".join(f"patch {l} {grad_text(ex['dx_full'][l])}" for l in range(L // 2, L)),
        "",
        "append_mask_tokens_backward(dx_full, cache): undo the un-shuffle by a gather with",
        "ids_shuffle = argsort(ids_restore), dx_shuffled[s] = dx_full[ids_shuffle[s]]",
    ]
    for s in range(L):
        what = f"-> dx_masked[{s}], the kept token's gradient" if s < K else "-> summed into dmask_token"
        backward.append(f"  slot {s} <- patch {int(ex['ids_shuffle'][s])}   {grad_text(ex['dx_shuffled'][s])}   {what}")
    backward += [
        f"dmask_token = sum of slots {K}..{L - 1} (patches {' + '.join(map(str, removed))}) = "
        f"{grad_text(ex['dmask_token'][0])}:",
        f"  the one mask token was used {L - K} times, so its gradient is the sum of the {L - K} uses",
        f"  (middle column: {L - K} ones).",
        "",
        "random_masking_backward(dx_masked, cache): pad the K gradients with L - K zero rows (slot",
        "order), then gather with ids_restore, the same un-shuffle as the decoder's:",
        "  dx_padded   " + "   ".join(f"slot {s} {grad_text(ex['dx_padded'][s])}" for s in range(K))
        + f"   slots {K}..{L - 1} zero",
    ]
    for l in range(L):
        s = int(ex["ids_restore"][l])
        what = "kept: the gradient it sent" if s < K else "removed: zero, the encoder never saw it"
        backward.append(f"  patch {l} <- slot {s}   {grad_text(ex['dx'][l])}   {what}")
    backward.append("(The encoder between is taken as the identity here, so each kept patch gets back exactly")
    backward.append("the gradient the decoder sent it; in the model the encoder's backward changes the values.)")
    return [("masking", masking), ("unshuffle", unshuffle), ("backward", backward)]


# ----------------------------------------------------------------------------------------------
# the tour's batch: one image's mask, one row of attention, the loss's gradient

def grid_text(values_by_patch, grid, fmt):
    """L values in patch order -> grid rows of text (patch l at row l // grid, column l % grid)."""
    return ["".join(format(v, fmt) for v in values_by_patch[r * grid:(r + 1) * grid]) for r in range(grid)]


def image_blocks(batch, cfg, index=0):
    """Image `index` of the tour's batch: its noise, mask grid and index arrays (L = 64, K = 16)."""
    L, K, grid = cfg.num_patches, cfg.len_keep, cfg.img_size // cfg.patch_size
    noise = batch.noise[index:index + 1]  # (1, L)
    ids_shuffle, _, _ = masking_indices(noise, K)  # (1, L)
    # the mask and ids_restore as random_masking returns them (the tokens do not matter, only the noise)
    _, mask, ids_restore, _ = random_masking(asarray(np.zeros((1, L, 1), dtype="float32")), cfg.mask_ratio, noise)
    noise, ids_shuffle = to_numpy(noise)[0], to_numpy(ids_shuffle)[0]  # (L,), (L,)
    mask, ids_restore = to_numpy(mask)[0].astype(int), to_numpy(ids_restore)[0]  # (L,), (L,)
    cells = [f"[{l:2d}]" if not mask[l] else f" {l:2d} " for l in range(L)]
    lines = [
        f"Image {index} of the tour's batch ({batch.source}, --seed {batch.seed}), on the {grid} x {grid} patch "
        "grid: patch l at",
        f"row l // {grid}, column l % {grid}. L = {L}, K = {K} kept. The noise depends on the seed only: --data "
        "gives the",
        "same arrays.",
        "",
    ]
    noise_rows, restore_rows = grid_text(noise, grid, "5.2f"), grid_text(ids_restore, grid, "4d")
    left = 2 + len(noise_rows[0]) + 6  # where the right-hand grid starts
    lines.append(f"{'noise (the K smallest are kept)':<{left}}ids_restore (the slot of each patch)")
    lines += [f"  {n}      {r}" for n, r in zip(noise_rows, restore_rows)]
    mask_rows = [" ".join(cells[r * grid:(r + 1) * grid]) for r in range(grid)]
    left = 2 + len(mask_rows[0]) + 6
    lines += ["", f"{f'mask grid: [l] kept (slot < {K}), l removed':<{left}}mask (1 = removed)"]
    for r in range(grid):
        lines.append(f"  {mask_rows[r]}      {' '.join(str(m) for m in mask[r * grid:(r + 1) * grid])}")
    lines += ["", f"ids_shuffle (slot s -> patch), {grid * 2} slots a line; the first line is ids_keep, what the "
                  "encoder sees:"]
    per_line = 2 * grid
    for start in range(0, L, per_line):
        label = "ids_keep" if start == 0 else "removed "
        lines.append(f"  slots {start:2d}-{start + per_line - 1:2d} {label}  "
                     f"{ints_text(ids_shuffle[start:start + per_line])}")
    return [("image", lines)]


def attention_blocks(batch, model, index=0):
    """The cls token's row of encoder block 0's attention for image `index`, per head, from the engine's cache."""
    cfg = model.config
    _, _, _, cache = model.forward(batch.imgs, batch.noise)
    attn = to_numpy(cache.encoder.blocks[0].attn.attn)[index]  # (H, 1+K, 1+K) softmax rows
    ids_keep = to_numpy(masking_indices(batch.noise, cfg.len_keep)[2])[index]  # (K,) the patch behind each token
    H, T = attn.shape[0], attn.shape[1]
    row = attn[:, 0, :]  # (H, T) the cls token (query 0) over every token
    lines = [
        f"Image {index} of the tour's batch ({batch.source}), encoder block 0 of the default ViT, initial weights",
        f"(--seed {batch.seed}): cache.encoder.blocks[0].attn.attn[{index}, h, 0, :], row 0 of",
        f"softmax(q k^T / sqrt(d)) in head h, how much the cls token reads from each of the T = 1 + K = {T}",
        "tokens. Token t >= 1 holds patch ids_keep[t - 1].",
        "",
        "  token   patch  " + "".join(f"  head {h}" for h in range(H)),
    ]
    for t in range(T):
        patch = "cls" if t == 0 else str(int(ids_keep[t - 1]))
        lines.append(f"  {t:5d}  {patch:>5}  " + "".join(f"{row[h, t]:8.3f}" for h in range(H)))
    lines.append("  sum           " + "".join(f"{row[h].sum():8.3f}" for h in range(H)))
    lines.append(f"Each head's row sums to 1 (uniform would be 1 / {T} = {1 / T:.3f} each). These are untrained")
    lines.append("weights; docs/attention.png draws a trained model's rows on the image.")
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


# ----------------------------------------------------------------------------------------------
# what masking saves, and how fine-tuning treats each layer

def block_multiply_adds(T, D, mlp_ratio=4.0):
    """Multiply-adds of one Transformer block's matrix products on T tokens of width D (per image):
    qkv T D 3D, scores and attn @ v T T D each (all heads together), proj T D D, fc1 and fc2 T D 4D each."""
    hidden = int(D * mlp_ratio)
    return T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * hidden


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
        groups.setdefault(factor, [])
        if group not in groups[factor]:
            groups[factor].append(group)
    lines = [f"lr_scale, no_decay = param_groups_lrd(ViTClassifier(...).params, depth={model.config.depth}, "
             f"layer_decay={finetune.layer_decay}):",
             "each layer learns at layer_decay times the rate of the layer above it.", "",
             f"  layer  parameters                lr factor   lr at the peak of {finetune.lr}"]
    for layer, factor in reversed(list(enumerate(sorted(groups)))):
        lines.append(f"  {layer:5d}  {', '.join(groups[factor]):<25} {factor:9.4f}   {factor * finetune.lr:14.6f}")
    lines.append(f"No weight decay on {len(no_decay)} parameters: every bias and LayerNorm, and cls_token.")
    return [("lr_decay", lines)]


# ----------------------------------------------------------------------------------------------

def value_blocks(batch):
    """Every --values block for the tour's batch, in order: a list of (name, lines)."""
    cfg = ViTConfig()
    blocks = masking_example_blocks(masking_example(batch.seed))
    blocks += image_blocks(batch, cfg)
    blocks += attention_blocks(batch, MaskedAutoencoderViT(cfg, seed=batch.seed))
    blocks += loss_on_blocks(batch)
    blocks += cost_blocks()
    blocks += lr_decay_blocks(batch.seed)
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
