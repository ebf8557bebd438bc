"""Follow one batch of 8 images through the paper's ViT MAE, print every stage's shape, check the gradient live.

    python examples/walkthrough.py                              # 8 synthetic images: always runs
    python examples/walkthrough.py --data data/catsdogs         # 8 photos of a folder: 4 cats and 4 dogs
    python examples/walkthrough.py --markdown                   # the trace as the tables of the doc
    python examples/walkthrough.py --values [--markdown]        # numbers: masking worked out, attention, ...

The companion of docs/walkthrough.md. It runs the engine's MaskedAutoencoderViT.forward once on the batch of
walkthrough_values.the_batch, and backward once on its cache, then reads every stage off the caches the engine
returned (mae.MAECache, mae_vit.EncoderCache and DecoderCache, transformer.BlockCache, attention.AttentionCache).
A stage no cache field names is computed by the very engine function the model calls for it, never by a copy of it
here. Then the MLP MAE, one AdamW step, and the live gradient check of walkthrough_gradcheck.py.
"""
import sys
import time

import numpy as np

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.config import MLPConfig, PretrainConfig, ViTConfig
from tinymae.model.layers import linear_forward
from tinymae.model.loss import mse_backward
from tinymae.model.mae_mlp import MaskedAutoencoderMLP
from tinymae.model.mae_vit import MaskedAutoencoderViT, embed_patches, prepend_cls_token
from tinymae.model.masking import gather_tokens, masking_indices
from tinymae.model.optim import AdamW, cosine_lr
from tinymae.model.patches import patchify
from tinymae.util import cli

from walkthrough_gradcheck import check
from walkthrough_values import parser, the_batch, value_blocks, values_text

STEPS_PER_EPOCH = 125  # 4,000 training photos in batches of 32, as the runs of docs/recipe.md
MODEL = "tinymae/model"
ATTN, LAYERS, MAE_VIT, MASKING = (f"{MODEL}/{name}.py" for name in ("attention", "layers", "mae_vit", "masking"))
MLP = f"{MODEL}/mae_mlp.py:MaskedAutoencoderMLP"


class Trace(list):
    """The recorded stages, each a tuple (section, stage, where, shape); add() files one under self.section."""
    section = ""

    def add(self, stage, where, array_or_shape):
        shape = array_or_shape if isinstance(array_or_shape, tuple) else array_or_shape.shape
        self.append((self.section, stage, where, tuple(int(n) for n in shape)))


# The layers' caches are plain tuples (model/layers.py): linear_forward's is (x, w), layernorm_forward's
# (xhat, w, rstd), gelu_forward's (x, s), relu_forward's its output. So cache[0] is a Linear's input or a
# LayerNorm's xhat, and cache[1] a Linear's weight.

def trace_block(trace, cache):
    """One Transformer block's stages from its transformer.BlockCache (.attn: an attention.AttentionCache)."""
    attn = cache.attn
    trace.add("norm1: xhat = (x - mean) / std", f"{LAYERS}:layernorm_forward", cache.norm1[0])
    trace.add("attn.qkv: the fused Linear's weight", f"{ATTN}:attention_forward", attn.qkv[1])
    trace.add("attn.q: queries, scaled by d**-0.5", f"{ATTN}:attention_forward", attn.q)
    trace.add("attn.k, attn.v: keys and values", f"{ATTN}:attention_forward", attn.k)
    trace.add("attn.attn = softmax(q k^T)", f"{ATTN}:softmax_forward", attn.attn)
    trace.add("attn.proj's input: attn @ v, heads merged", f"{ATTN}:attention_forward", attn.proj[0])
    trace.add("norm2: xhat of x + attn(norm1(x))", f"{LAYERS}:layernorm_forward", cache.norm2[0])
    trace.add("gelu's input: fc1(norm2(x))", f"{LAYERS}:linear_forward", cache.gelu[0])
    trace.add("fc2's input: gelu(fc1)", f"{LAYERS}:gelu_forward", cache.fc2[0])


def walkthrough(b):
    """Run the tour's batch `b` through the default ViT MAE and read every stage off its caches, then the MLP
    MAE's -> (stages, results): the (section, stage, where, shape) tuples docs/walkthrough.md tabulates; the loss,
    where the images came from, the number of parameters and the largest gradient of block 0's key bias."""
    trace = Trace()
    cfg = ViTConfig()  # the defaults of examples/train_catsdogs.py --arch vit
    model = MaskedAutoencoderViT(cfg, seed=b.seed)
    p = model.params
    loss, pred, mask, cache = model.forward(b.imgs, b.noise)  # the engine's forward, once
    grads = model.backward(1.0, cache)  # and its backward, once
    enc, dec = cache.encoder, cache.decoder  # mae_vit.EncoderCache, mae_vit.DecoderCache

    trace.section = "data"
    trace.add("photos, resized and cached", "tinymae/photos.py:decode", b.photos)
    trace.add("per-channel mean (and std)", "tinymae/data.py:channel_stats", b.mean)
    trace.add("random crop and flip", "tinymae/data.py:random_crop_flip", b.batch)
    trace.add("imgs = (x/255 - mean) / std", "tinymae/data.py:normalize", b.imgs)
    trace.add("noise", f"{MASKING}:masking_noise", b.noise)

    trace.section = "encoder: cache.encoder"
    trace.add("patchify(imgs)", f"{MODEL}/patches.py:patchify", patchify(b.imgs, cfg.patch_size))
    x, _ = embed_patches(b.imgs, p, model.pos_embed, cfg.patch_size)  # (8, 64, 128) forward_encoder's first step
    trace.add("patch_embed, + pos_embed[:, 1:]", f"{MAE_VIT}:embed_patches", x)
    trace.add("pos_embed[:, 1:]", f"{MODEL}/pos_embed.py:get_2d_sincos_pos_embed", model.pos_embed[:, 1:])
    ids_shuffle, ids_restore, ids_keep = masking_indices(b.noise, cfg.len_keep)  # as random_masking makes them
    trace.add("ids_shuffle = argsort(noise)", f"{MASKING}:masking_indices", ids_shuffle)
    trace.add("ids_restore = argsort(ids_shuffle)", f"{MASKING}:masking_indices", ids_restore)
    trace.add("ids_keep = ids_shuffle[:, :K]", f"{MASKING}:masking_indices", ids_keep)
    trace.add("mask (1 = removed)", f"{MASKING}:random_masking", mask)
    x = gather_tokens(x, ids_keep)  # (8, 16, 128) random_masking's gather
    trace.add("x_masked (visible tokens)", f"{MASKING}:gather_tokens", x)
    trace.add("cls_token, a learned vector", f"{MAE_VIT}:MaskedAutoencoderViT.__init__", p["cls_token"])
    x = prepend_cls_token(x, p["cls_token"], model.pos_embed)  # (8, 17, 128)
    trace.add("prepend cls token", f"{MAE_VIT}:prepend_cls_token", x)

    trace.section = "encoder block 0: cache.encoder.blocks[0]"
    trace_block(trace, enc.blocks[0])

    trace.section = "encoder: cache.encoder"
    trace.add(f"norm: xhat of blocks 0..{cfg.depth - 1}'s output", f"{LAYERS}:layernorm_forward", enc.norm[0])
    latent = dec.decoder_embed[0]  # (8, 17, 128) the encoder's output is decoder_embed's input
    trace.add("latent = norm(x)", f"{MAE_VIT}:MaskedAutoencoderViT.forward_encoder", latent)

    trace.section = "decoder: cache.decoder"
    trace.add("decoder_embed: the Linear's weight", f"{LAYERS}:linear_forward", dec.decoder_embed[1])
    x, _ = linear_forward(latent, p["decoder_embed.w"], p["decoder_embed.b"])  # (8, 17, 64) forward_decoder's start
    trace.add("decoder_embed(latent)", f"{LAYERS}:linear_forward", x)
    trace.add("mask_token, a learned vector", f"{MAE_VIT}:MaskedAutoencoderViT.__init__", p["mask_token"])
    x, _ = model.append_mask_tokens(x, ids_restore)  # (8, 65, 64)
    trace.add("append mask tokens, un-shuffle", f"{MAE_VIT}:MaskedAutoencoderViT.append_mask_tokens", x)
    trace.add("decoder_pos_embed", f"{MODEL}/pos_embed.py:get_2d_sincos_pos_embed", model.decoder_pos_embed)

    trace.section = "decoder block 0: cache.decoder.blocks[0]"
    trace_block(trace, dec.blocks[0])

    trace.section = "decoder: cache.decoder"
    trace.add(f"decoder_norm: xhat of decoder_blocks 0..{cfg.decoder_depth - 1}", f"{LAYERS}:layernorm_forward",
              dec.decoder_norm[0])
    trace.add("decoder_pred: the Linear's weight", f"{LAYERS}:linear_forward", dec.decoder_pred[1])
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
    trace.add("dmask_token = sum over removed slots", f"{MASKING}:append_mask_tokens_backward", grads["mask_token"])
    trace.add("ddecoder_embed.w", f"{LAYERS}:linear_backward", grads["decoder_embed.w"])
    trace.add("dnorm.w", f"{LAYERS}:layernorm_backward", grads["norm.w"])

    trace.section = "backward: encoder block 0"
    for name, where in (("mlp.fc2.w", f"{LAYERS}:linear_backward"), ("mlp.fc1.w", f"{LAYERS}:linear_backward"),
                        ("norm2.w", f"{LAYERS}:layernorm_backward"), ("attn.proj.w", f"{ATTN}:attention_backward"),
                        ("attn.qkv.w", f"{ATTN}:attention_backward"), ("attn.qkv.b", f"{ATTN}:attention_backward"),
                        ("norm1.w", f"{LAYERS}:layernorm_backward")):
        trace.add(f"dblocks.0.{name}", where, grads[f"blocks.0.{name}"])

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
    _, mlp_pred, _, mlp_cache = MaskedAutoencoderMLP(MLPConfig(), seed=b.seed).forward(b.imgs, b.noise)
    trace.add("patchify(imgs): patch_embed's input", f"{MLP}.forward_encoder", mlp_cache.encoder.patch_embed[0])
    trace.add("random_masking, raster order", f"{MASKING}:random_masking", mlp_cache.encoder.visible_shape)
    layers = mlp_cache.encoder.layers  # (linear cache, relu cache) per layer; ReLU's cache is its output
    trace.add("flatten the visible tokens", f"{MLP}.forward_encoder", layers[0][0][0])
    for i, (_, relu_out) in enumerate(layers):
        trace.add(f"encoder.{i} Linear + ReLU", f"{MLP}.forward_encoder", relu_out)
    for i, (_, relu_out) in enumerate(mlp_cache.decoder.layers):
        trace.add(f"decoder.{i} Linear + ReLU", f"{MLP}.forward_decoder", relu_out)
    trace.add("decoder_pred: one slot per patch", f"{MLP}.forward_decoder", mlp_cache.decoder.decoder_pred[1])
    trace.add("pred", f"{MLP}.forward_decoder", mlp_pred)

    D = cfg.embed_dim  # qkv's bias is laid out (q | k | v), D each
    key_bias = float(np.abs(to_numpy(grads["blocks.0.attn.qkv.b"])[D:2 * D]).max())
    results = {"loss": float(loss), "source": b.source, "n_params": model.num_params(), "key_bias_grad": key_bias}
    return trace, results


def trace_text(stages, markdown=False):
    """The trace as the terminal shows it, or (markdown) as the doc's tables: one per section, stage | where | shape."""
    widths = [max(len(row[i]) for row in stages) for i in (1, 2)]
    lines, section = [], None
    for sec, stage, where, shape in stages:
        if sec != section:
            lines += (["", f"<!-- {sec} -->", "| stage | where | shape |", "| --- | --- | --- |"] if markdown
                      else ["", f"-- {sec} " + "-" * (96 - len(sec))])
            section = sec
        lines.append(f"| {stage} | `{where}` | `{shape}` |" if markdown  # (64,), (): Python's tuple spelling
                     else f"{stage:<{widths[0]}}  {where:<{widths[1]}}  {shape}")
    return "\n".join(lines)


def tour(args):
    t0 = time.perf_counter()
    batch = the_batch(args.data, args.seed)
    if args.values:
        print(values_text(value_blocks(batch), markdown=args.markdown), end="")
        return 0
    stages, results = walkthrough(batch)
    if args.markdown:
        print(trace_text(stages, markdown=True))
        return 0

    print(f"default ViT MAE ({results['n_params']:,} parameters), backend {backend.name}, {results['source']}: "
          "one forward and one backward of the engine, every stage read off their caches")
    print(trace_text(stages))
    print(f"\nloss {results['loss']:.4f}; encoder block 0's key bias: largest |gradient| "
          f"{results['key_bias_grad']:.1e}, zero but for rounding (softmax ignores a constant added to a row)")

    print("\ngradient check (tinymae/util/gradcheck.py): float64, centered differences, 2 random images;\n"
          "d loss / dt along a random direction in each parameter named, and in every parameter at once")
    status = check(seed=args.seed)
    print(f"the tour took {time.perf_counter() - t0:.1f} s")
    return status


def main(argv=None):
    p = parser("python examples/walkthrough.py", __doc__)
    p.add_argument("--markdown", action="store_true", help="print the trace as the tables of docs/walkthrough.md "
                                                           "(with --values: the value blocks as the doc quotes them)")
    p.add_argument("--values", action="store_true", help="print the numbers of docs/walkthrough.md instead: masking "
                   "worked out on 8 patches, image 0's masks, an attention row, the loss's gradient, the cost by mask "
                   "ratio, fine-tuning's learning rate per layer (examples/walkthrough_values.py)")
    return cli.run(tour, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
