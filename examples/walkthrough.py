"""Follow one batch of 8 images through the paper's ViT MAE, print every stage's shape, check the gradient live.

    python examples/walkthrough.py                              # 8 synthetic images: always runs
    python examples/walkthrough.py --data data/catsdogs         # 4 cats and 4 dogs from a photo folder
    python examples/walkthrough.py --markdown                   # the trace as the tables of the doc
    python examples/walkthrough.py --values                     # numbers: masking worked out, attention, ...
    python examples/walkthrough.py --values --markdown          # the value blocks as the doc quotes them

This is the companion of docs/walkthrough.md. It builds the default ViT MAE (ViTConfig(), the training
script's --arch vit), runs the engine's own MaskedAutoencoderViT.forward once on one batch of 8 images and
MaskedAutoencoderViT.backward once on its cache, and then reads every stage off the caches the engine
returned: the named fields of mae.MAECache, mae_vit.EncoderCache and DecoderCache, transformer.BlockCache and
attention.AttentionCache. Each stage is recorded as (section, stage, file:function, shape). A stage that no
cache field names (the patches, the kept tokens, the decoder's input) is computed by the very engine
function the model calls for it, never by a copy of it here. The MLP MAE is read off its own caches the same way.
Then one AdamW step, and a live gradient check by tinymae/util/gradcheck.py.

Three files, one concept each: this one (the batch, the trace, the command line), walkthrough_values.py (the
--values blocks) and walkthrough_gradcheck.py (the gradient check). tests/test_walkthrough.py checks that
the doc's tables list exactly the stages and shapes printed here, and that every file:function named exists.
"""
import argparse
import sys
import time
from typing import NamedTuple

import numpy as np

from tinymae import backend
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import MLPConfig, PretrainConfig, ViTConfig
from tinymae.data import channel_stats, normalize, random_crop_flip
from tinymae.model.layers import linear_forward
from tinymae.model.loss import mse_backward
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT, embed_patches, prepend_cls_token
from tinymae.model.masking import gather_tokens, masking_indices, masking_noise
from tinymae.model.optim import AdamW, cosine_lr
from tinymae.model.patches import patchify
from tinymae.util.datasets import DataError, load_dataset

from walkthrough_gradcheck import gradient_check, report_lines
from walkthrough_values import value_blocks, values_text

BATCH = 8  # the batch the doc follows
LOAD_SIZE = 54  # the training script's default --load-size: img_size * 9/8
STEPS_PER_EPOCH = 125  # 4,000 training photos in batches of 32, as the runs of docs/recipe.md
MODEL, DATA = "tinymae/model", "tinymae/data.py"
ATTN, LAYERS, MAE_VIT = f"{MODEL}/attention.py", f"{MODEL}/layers.py", f"{MODEL}/mae_vit.py"
MLP = f"{MODEL}/mae_mlp.py:MaskedAutoencoderMLP"


# The layers' caches are plain tuples (model/layers.py): linear_forward's is (x, w), layernorm_forward's
# (xhat, w, rstd), gelu_forward's (x, s), relu_forward's its output.
def linear_input(cache):
    return cache[0]


def linear_weight(cache):
    return cache[1]


def layernorm_xhat(cache):
    return cache[0]


class Trace:
    """The list of recorded stages, each a tuple (section, stage, where, shape)."""

    def __init__(self):
        self.stages = []
        self.section = ""

    def add(self, stage, where, array_or_shape):
        shape = array_or_shape if isinstance(array_or_shape, tuple) else tuple(array_or_shape.shape)
        self.stages.append((self.section, stage, where, tuple(int(n) for n in shape)))


def format_shape(shape):
    """(8, 64, 108) -> '(8, 64, 108)'; () -> '()'; (64,) -> '(64,)': Python's own tuple spelling."""
    return str(tuple(shape))


# ----------------------------------------------------------------------------------------------
# one batch of images

def load_photos(data, n=BATCH, seed=0):
    """uint8 (n, 54, 54, 3): n/2 cats and n/2 dogs from the folder `data`, or random pixels when it is None.
    Raises DataError, with what to do, for a folder that cannot give them."""
    if data is None:
        pixels = host_rng(seed).integers(0, 256, size=(n, LOAD_SIZE, LOAD_SIZE, 3), dtype=np.uint8)
        return pixels, f"{n} synthetic images"
    dataset = load_dataset(data, size=LOAD_SIZE, per_class=n, progress=False)
    per_class = [np.flatnonzero(dataset.labels == label)[:n // 2] for label in (0, 1)]
    if min(len(picks) for picks in per_class) < n // 2:
        raise DataError(f"{data} has {len(per_class[0])} readable cat and {len(per_class[1])} readable dog images; "
                        f"the walkthrough needs {n // 2} of each")
    return dataset.images[np.concatenate(per_class)], f"{n} photos from {data}"


class Batch(NamedTuple):
    photos: object  # (8, 54, 54, 3) uint8, host
    mean: object  # (3,) per-channel mean in [0, 1] units, host
    batch: object  # (8, 48, 48, 3) uint8 after the random crop and flip, host
    imgs: object  # (8, 3, 48, 48) normalised float32, backend
    noise: object  # (8, 64) masking noise, backend
    source: str  # where the photos came from, in words
    seed: int


def the_batch(data=None, seed=0):
    """The one batch the tour follows (the shape trace and --values alike), drawn as the training script
    draws it: the crops and flips, then the masking noise, from one seeded host generator."""
    cfg = ViTConfig()
    rng = host_rng(seed + 1)
    photos, source = load_photos(data, seed=seed)  # (8, 54, 54, 3) uint8
    mean, std = channel_stats(photos)  # (3,), (3,): training uses the whole training split's
    batch = random_crop_flip(photos, cfg.img_size, rng)  # (8, 48, 48, 3)
    imgs = asarray(normalize(batch, mean, std))  # (8, 3, 48, 48)
    # The crops draw the same count of numbers whatever the pixels, so the noise, and with it every mask
    # and index array of the tour, depends on the seed only: the same for synthetic images and photos.
    noise = masking_noise(rng, BATCH, cfg.num_patches)  # (8, 64)
    return Batch(photos, mean, batch, imgs, noise, source, seed)


# ----------------------------------------------------------------------------------------------
# the trace, read off the engine's caches

def trace_block(trace, cache):
    """One Transformer block's stages from its transformer.BlockCache (.attn: an attention.AttentionCache)."""
    attn = cache.attn
    trace.add("norm1: xhat = (x - mean) / std", f"{LAYERS}:layernorm_forward", layernorm_xhat(cache.norm1))
    trace.add("attn.qkv: the fused Linear's weight", f"{ATTN}:attention_forward", linear_weight(attn.qkv))
    trace.add("attn.q: queries, scaled by d**-0.5", f"{ATTN}:attention_forward", attn.q)
    trace.add("attn.k, attn.v: keys and values", f"{ATTN}:attention_forward", attn.k)
    trace.add("attn.attn = softmax(q k^T)", f"{ATTN}:softmax_forward", attn.attn)
    trace.add("attn.proj's input: attn @ v, heads merged", f"{ATTN}:attention_forward", linear_input(attn.proj))
    trace.add("norm2: xhat of x + attn(norm1(x))", f"{LAYERS}:layernorm_forward", layernorm_xhat(cache.norm2))
    trace.add("gelu's input: fc1(norm2(x))", f"{LAYERS}:linear_forward", linear_input(cache.gelu))
    trace.add("fc2's input: gelu(fc1)", f"{LAYERS}:gelu_forward", linear_input(cache.fc2))


def walkthrough(b):
    """Run the tour's batch `b` (the_batch) through the default ViT MAE and read every stage off its caches,
    then the MLP MAE's.

    Returns (stages, results): stages is the list of (section, stage, where, shape) tuples that
    docs/walkthrough.md tabulates; results: the loss, where the images came from, the number of parameters
    and the largest gradient of encoder block 0's key bias.
    """
    trace = Trace()
    cfg = ViTConfig()  # the defaults of examples/train_catsdogs.py --arch vit
    model = MaskedAutoencoderViT(cfg, seed=b.seed)
    p = model.params
    loss, pred, mask, cache = model.forward(b.imgs, b.noise)  # the engine's forward, once
    grads = model.backward(1.0, cache)  # and its backward, once
    enc, dec = cache.encoder, cache.decoder  # mae_vit.EncoderCache, mae_vit.DecoderCache

    trace.section = "data"
    trace.add("photos, resized and cached", "tinymae/util/datasets.py:load_dataset", b.photos)
    trace.add("per-channel mean (and std)", f"{DATA}:channel_stats", b.mean)
    trace.add("random crop and flip", f"{DATA}:random_crop_flip", b.batch)
    trace.add("imgs = (x/255 - mean) / std", f"{DATA}:normalize", b.imgs)
    trace.add("noise", f"{MODEL}/masking.py:masking_noise", b.noise)

    trace.section = "encoder: cache.encoder"
    trace.add("patchify(imgs)", f"{MODEL}/patches.py:patchify", patchify(b.imgs, cfg.patch_size))
    x, _ = embed_patches(b.imgs, p, model.pos_embed, cfg.patch_size)  # (8, 64, 128) as forward_encoder's first step
    trace.add("patch_embed, + pos_embed[:, 1:]", f"{MAE_VIT}:embed_patches", x)
    trace.add("pos_embed[:, 1:]", f"{MODEL}/pos_embed.py:get_2d_sincos_pos_embed", model.pos_embed[:, 1:])
    ids_shuffle, ids_restore, ids_keep = masking_indices(b.noise, cfg.len_keep)  # as random_masking makes them
    trace.add("ids_shuffle = argsort(noise)", f"{MODEL}/masking.py:masking_indices", ids_shuffle)
    trace.add("ids_restore = argsort(ids_shuffle)", f"{MODEL}/masking.py:masking_indices", ids_restore)
    trace.add("ids_keep = ids_shuffle[:, :K]", f"{MODEL}/masking.py:masking_indices", ids_keep)
    trace.add("mask (1 = removed)", f"{MODEL}/masking.py:random_masking", mask)
    x = gather_tokens(x, ids_keep)  # (8, 16, 128) random_masking's gather
    trace.add("x_masked (visible tokens)", f"{MODEL}/masking.py:gather_tokens", x)
    trace.add("cls_token, a learned vector", f"{MAE_VIT}:MaskedAutoencoderViT.__init__", p["cls_token"])
    trace.add("prepend cls token", f"{MAE_VIT}:prepend_cls_token", prepend_cls_token(x, p["cls_token"], model.pos_embed))

    trace.section = "encoder block 0: cache.encoder.blocks[0]"
    trace_block(trace, enc.blocks[0])

    trace.section = "encoder: cache.encoder"
    trace.add(f"norm: xhat of blocks 0..{cfg.depth - 1}'s output", f"{LAYERS}:layernorm_forward", layernorm_xhat(enc.norm))
    latent = linear_input(dec.decoder_embed)  # (8, 17, 128) the encoder's output is decoder_embed's input
    trace.add("latent = norm(x)", f"{MAE_VIT}:MaskedAutoencoderViT.forward_encoder", latent)

    trace.section = "decoder: cache.decoder"
    trace.add("decoder_embed: the Linear's weight", f"{LAYERS}:linear_forward", linear_weight(dec.decoder_embed))
    x, _ = linear_forward(latent, p["decoder_embed.w"], p["decoder_embed.b"])  # (8, 17, 64) forward_decoder's first step
    trace.add("decoder_embed(latent)", f"{LAYERS}:linear_forward", x)
    trace.add("mask_token, a learned vector", f"{MAE_VIT}:MaskedAutoencoderViT.__init__", p["mask_token"])
    x, _ = model.append_mask_tokens(x, ids_restore)  # (8, 65, 64)
    trace.add("append mask tokens, un-shuffle", f"{MAE_VIT}:MaskedAutoencoderViT.append_mask_tokens", x)
    trace.add("decoder_pos_embed", f"{MODEL}/pos_embed.py:get_2d_sincos_pos_embed", model.decoder_pos_embed)

    trace.section = "decoder block 0: cache.decoder.blocks[0]"
    trace_block(trace, dec.blocks[0])

    trace.section = "decoder: cache.decoder"
    trace.add(f"decoder_norm: xhat of decoder_blocks 0..{cfg.decoder_depth - 1}", f"{LAYERS}:layernorm_forward",
              layernorm_xhat(dec.decoder_norm))
    trace.add("decoder_pred: the Linear's weight", f"{LAYERS}:linear_forward", linear_weight(dec.decoder_pred))
    trace.add("pred (cls token dropped)", f"{MAE_VIT}:MaskedAutoencoderViT.forward_decoder", pred)

    trace.section = "loss: cache.loss"
    diff, weight = cache.loss  # mse_forward's cache
    trace.add("diff = pred - patchify(imgs)", f"{MODEL}/loss.py:mse_forward", diff)
    trace.add("weight = mask / sum(mask)", f"{MODEL}/loss.py:mse_forward", weight)
    trace.add("loss", f"{MODEL}/loss.py:mse_forward", loss)

    # ---- backward: the gradients model.backward returned, in the order it makes them ---------------
    trace.section = "backward: loss, decoder, the encoder's norm"
    trace.add("dpred (zero on visible patches)", f"{MODEL}/loss.py:mse_backward", mse_backward(1.0, cache.loss))
    trace.add("ddecoder_pred.w = x^T dout", f"{LAYERS}:linear_backward", grads["decoder_pred.w"])
    trace.add("ddecoder_norm.w", f"{LAYERS}:layernorm_backward", grads["decoder_norm.w"])
    trace.add("dmask_token = sum over removed slots", f"{MODEL}/masking.py:append_mask_tokens_backward",
              grads["mask_token"])
    trace.add("ddecoder_embed.w", f"{LAYERS}:linear_backward", grads["decoder_embed.w"])
    trace.add("dnorm.w", f"{LAYERS}:layernorm_backward", grads["norm.w"])

    trace.section = "backward: encoder block 0"
    for name, where in (("mlp.fc2.w", "linear_backward"), ("mlp.fc1.w", "linear_backward"),
                        ("norm2.w", "layernorm_backward")):
        trace.add(f"dblocks.0.{name}", f"{LAYERS}:{where}", grads[f"blocks.0.{name}"])
    for name in ("attn.proj.w", "attn.qkv.w", "attn.qkv.b"):
        trace.add(f"dblocks.0.{name}", f"{ATTN}:attention_backward", grads[f"blocks.0.{name}"])
    trace.add("dblocks.0.norm1.w", f"{LAYERS}:layernorm_backward", grads["blocks.0.norm1.w"])

    trace.section = "backward: embedding"
    trace.add("dcls_token = sum over images", f"{MAE_VIT}:prepend_cls_token_backward", grads["cls_token"])
    trace.add("dpatch_embed.w = patches^T dx", f"{MAE_VIT}:embed_patches_backward", grads["patch_embed.w"])

    trace.section = "update"
    recipe = PretrainConfig(arch="vit")
    optimizer = AdamW(model.params, lr=cosine_lr(step=1, total_steps=recipe.epochs * STEPS_PER_EPOCH,
                                                 warmup_steps=recipe.warmup_epochs * STEPS_PER_EPOCH,
                                                 base_lr=recipe.lr), no_decay=model.no_decay)
    trace.add("lr (warm-up, then cosine)", f"{MODEL}/optim.py:cosine_lr", ())
    optimizer.step(grads)
    trace.add("AdamW moments m, v of patch_embed.w", f"{MODEL}/optim.py:AdamW.step", optimizer.m["patch_embed.w"])

    # ---- the MLP MAE, read off its own caches (mae_mlp.EncoderCache, DecoderCache) -------------------
    trace.section = "mlp"
    mlp = MaskedAutoencoderMLP(MLPConfig(), seed=b.seed)
    _, mlp_pred, _, mlp_cache = mlp.forward(b.imgs, b.noise)
    trace.add("patchify(imgs): patch_embed's input", f"{MLP}.forward_encoder", linear_input(mlp_cache.encoder.patch_embed))
    trace.add("random_masking, raster order", f"{MODEL}/masking.py:random_masking", mlp_cache.encoder.visible_shape)
    layers = mlp_cache.encoder.layers  # (linear cache, relu cache) per layer; ReLU's cache is its output
    trace.add("flatten the visible tokens", f"{MLP}.forward_encoder", linear_input(layers[0][0]))
    for i, (_, relu_out) in enumerate(layers):
        trace.add(f"encoder.{i} Linear + ReLU", f"{MLP}.forward_encoder", relu_out)
    for i, (_, relu_out) in enumerate(mlp_cache.decoder.layers):
        trace.add(f"decoder.{i} Linear + ReLU", f"{MLP}.forward_decoder", relu_out)
    trace.add("decoder_pred: one slot per patch", f"{MLP}.forward_decoder", linear_weight(mlp_cache.decoder.decoder_pred))
    trace.add("pred", f"{MLP}.forward_decoder", mlp_pred)

    D = cfg.embed_dim  # qkv's bias is laid out (q | k | v), D each
    key_bias = float(np.abs(to_numpy(grads["blocks.0.attn.qkv.b"])[D:2 * D]).max())
    results = {"loss": float(loss), "source": b.source, "n_params": model.num_params(), "key_bias_grad": key_bias}
    return trace.stages, results


# ----------------------------------------------------------------------------------------------
# output

def markdown_tables(stages):
    """The trace as the doc's tables: one per section, columns stage | where | shape."""
    lines, section = [], None
    for sec, stage, where, shape in stages:
        if sec != section:
            lines += ["", f"<!-- {sec} -->", "| stage | where | shape |", "| --- | --- | --- |"]
            section = sec
        lines.append(f"| {stage} | `{where}` | `{format_shape(shape)}` |")
    return "\n".join(lines)


def seed_number(text):
    """argparse type of --seed: a whole number, 0 or more (NumPy's generators take no negative seed)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more; got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {seed}")
    return seed


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="examples/walkthrough.py",
        description="Follow one batch of 8 images through the default ViT MAE: every stage's file, function and "
                    "shape, read off the engine's own caches, forward and backward; then a live check of the "
                    "gradient against finite differences.")
    parser.add_argument("--data", default=None,
                        help="photo folder (any layout train_catsdogs.py reads), e.g. data/catsdogs: 4 cats and 4 "
                             "dogs from it; default: 8 synthetic images")
    parser.add_argument("--seed", type=seed_number, default=0, help="seeds the weights, the crops and the masks")
    parser.add_argument("--markdown", action="store_true",
                        help="print the trace as the tables of docs/walkthrough.md (with --values: the value blocks "
                             "as the doc quotes them)")
    parser.add_argument("--values", action="store_true",
                        help="print numbers instead of shapes: masking worked out on 8 patches (forward and backward), "
                             "image 0's mask grid and index arrays, the cls token's attention row in encoder block 0, "
                             "the gradient with the loss on removed or all patches, the blocks' cost by mask ratio, "
                             "fine-tuning's learning rate per layer")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    try:
        batch = the_batch(args.data, args.seed)
    except DataError as e:  # its message says what to do; one line, no traceback
        sys.exit("error: " + " ".join(str(e).split()))
    except OSError as e:
        sys.exit(f"error: cannot read {e.filename or args.data}: {e.strerror or e}")
    if args.values:
        print(values_text(value_blocks(batch), markdown=args.markdown), end="")
        return 0

    stages, results = walkthrough(batch)
    if args.markdown:
        print(markdown_tables(stages))
        return 0

    print(f"default ViT MAE ({results['n_params']:,} parameters), backend {backend.name}, {results['source']}: "
          "one forward and one backward of the engine, every stage read off their caches")
    widths = [max(len(row[i]) for row in stages) for i in (1, 2)]
    section = None
    for sec, stage, where, shape in stages:
        if sec != section:
            print(f"\n-- {sec} " + "-" * (96 - len(sec)))
            section = sec
        print(f"{stage:<{widths[0]}}  {where:<{widths[1]}}  {format_shape(shape)}")
    print(f"\nloss {results['loss']:.4f}; encoder block 0's key bias: largest |gradient| {results['key_bias_grad']:.1e}, "
          "zero but for rounding (softmax ignores a constant added to a row)")

    print("\ngradient check (tinymae/util/gradcheck.py): float64, centered differences, 2 random images;\n"
          "d loss / dt along a random direction in each parameter named, and in every parameter at once")
    lines, ok = report_lines(gradient_check(seed=args.seed))
    print("\n".join(lines) + f"; {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
