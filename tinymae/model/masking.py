"""Random masking, as `random_masking` in models_mae.py, and the decoder's step that fills the gaps.

MAE removes a random 75% of the patches of each image *before* the encoder, by shuffling:

    noise        (N, L)  uniform in [0, 1), one number per patch
    ids_shuffle  (N, L)  argsort(noise): patch indices, the ones to keep first
    ids_restore  (N, L)  argsort(ids_shuffle): where each patch went, so the shuffle can be undone
    ids_keep     (N, K)  ids_shuffle[:, :K], K = int(L * (1 - mask_ratio))
    mask         (N, L)  1 = removed, 0 = kept, in the original patch order

The encoder sees only x[n, ids_keep[n]]. The decoder appends one shared, learned mask token for each
removed patch and undoes the shuffle with ids_restore, so every patch is back at its place.

The noise is an explicit argument: `masking_noise` draws it (random, block-wise or grid masking, the paper's
Table 1f) from a seeded host generator, and every caller uses it, so NumPy and CuPy runs see the same masks.
"""
import math

import numpy  # host-side: the masks are drawn there

from ..backend import host_rng, xp


def gather_tokens(x, ids):
    """x: (N, L, D), ids: (N, K) -> (N, K, D) with out[n, k] = x[n, ids[n, k]].

    models_mae.py writes torch.gather(x, 1, ids.unsqueeze(-1).repeat(1, 1, D)). Here, fancy indexing
    with a column of row numbers, which NumPy runs much faster than take_along_axis with an (N, K, 1)
    index: one row copy per token instead of one element per number.
    """
    rows = xp.arange(x.shape[0])[:, None]  # (N, 1)
    return x[rows, ids]  # (N, K, D)


def masking_noise(rng, n_images, config):
    """The one place masks are drawn: noise (n_images, L), host float32, whose K smallest values in each row are the
    patches that image keeps (masking_indices turns it into the index arrays). config.masking says which:

        random   uniform noise: K patches kept at random (MAE; the paper's Table 1f, "random")
        block    BEiT's block-wise masking: rectangles of patches removed until L - K are (Table 1f, "block")
        grid     one patch of every 2 x 2 kept, the same for every image (Table 1f, "grid"; mask ratio 0.75)

    Drawn on the host from a seeded generator, so NumPy and CuPy runs see the same masks."""
    L, side, n_removed = config.num_patches, config.img_size // config.patch_size, config.num_patches - config.len_keep
    noise = rng.random((n_images, L), dtype="float32")  # (n, L) uniform: random masking, and the tie-breaks below
    if config.masking == "grid":
        rows, cols = divmod(numpy.arange(L), side)  # (L,), (L,)
        removed = ((rows % 2) | (cols % 2)).astype("float32")  # (L,) 0 at the top left of each 2 x 2
        noise = removed + 0.5 * noise  # (n, L) kept patches below 0.5, removed ones at 1 or above
    elif config.masking == "block":
        # each image's rectangles from a generator seeded by its own noise row: image i's mask depends on (seed, i)
        # alone, however many images are drawn at once (evaluate's fixed masks need that)
        removed = numpy.stack([block_mask(numpy.random.default_rng(row.view(numpy.uint32)), side, n_removed)
                               .reshape(-1) for row in noise])  # (n, L)
        noise = removed + noise  # (n, L) a block's patches sort after every other one
    return noise


def block_mask(rng, side, n_removed, min_patches=4, max_aspect=1 / 0.3):
    """BEiT's MaskingGenerator on a side x side grid: rectangles of at least min_patches patches, aspect ratio between
    0.3 and 1 / 0.3, added until n_removed patches are covered (a rectangle never overshoots; when none fits after
    10 tries, random patches make up the rest, through the noise). -> (side, side) float32, 1 = removed."""
    removed = numpy.zeros((side, side), dtype="float32")
    while removed.sum() < n_removed:
        left = n_removed - removed.sum()
        for _ in range(10):
            area = rng.uniform(min(min_patches, left), left)
            aspect = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < h < side and 0 < w < side:
                top, lft = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
                new = h * w - removed[top:top + h, lft:lft + w].sum()
                if 0 < new <= left:
                    removed[top:top + h, lft:lft + w] = 1.0
                    break
        else:
            break
    return removed


def partition_noise(n_images, config, seed=0):
    """Noise for masks that together show every patch once: L / K fixed, disjoint sets of K patches (a seeded
    partition, the same for every image), one (n_images, L) noise per set. For encoders that take exactly K patches
    (the MLP's), to see a whole image in a few views."""
    order, K = host_rng(seed).permutation(config.num_patches), config.len_keep
    noises = []
    for start in range(0, config.num_patches, K):
        noise = numpy.ones(config.num_patches, dtype="float32")
        noise[order[start:start + K]] = numpy.arange(len(order[start:start + K]), dtype="float32") / config.num_patches
        noises.append(numpy.broadcast_to(noise, (n_images, config.num_patches)))
    return noises


def masking_indices(noise, len_keep, keep_order=False):
    """noise: (N, L) -> ids_shuffle (N, L), ids_restore (N, L), ids_keep (N, K): random_masking's index arrays.

    keep_order: list the kept patches in raster order instead of the random shuffle order. A ViT does not
    care (attention is permutation-equivariant); the MLP, which flattens the visible tokens into one
    vector, learns far better when slot k always holds the k-th visible patch. The set of kept patches is
    the same either way.
    """
    ids_shuffle = xp.argsort(noise, axis=1)  # (N, L) ascend: small noise is keep, large is remove
    if keep_order:
        ids_shuffle = xp.concatenate([xp.sort(ids_shuffle[:, :len_keep], axis=1), ids_shuffle[:, len_keep:]], axis=1)
    ids_restore = xp.argsort(ids_shuffle, axis=1)  # (N, L)
    ids_keep = ids_shuffle[:, :len_keep]  # (N, K)
    return ids_shuffle, ids_restore, ids_keep


def random_masking(x, mask_ratio, noise, keep_order=False):
    """x: (N, L, D), noise: (N, L) -> x_masked (N, K, D), mask (N, L), ids_restore (N, L), cache.

    As models_mae.random_masking (which returns the first three); the index arrays behind them come from
    masking_indices, and keep_order is explained there.
    """
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))

    ids_shuffle, ids_restore, ids_keep = masking_indices(noise, len_keep, keep_order)  # (N, L), (N, L), (N, K)
    x_masked = gather_tokens(x, ids_keep)  # (N, K, D)

    # The binary mask, 0 is keep, 1 is remove. models_mae builds it as ones, zeros in the first K
    # shuffled slots, then un-shuffles with ids_restore; patch l sits at slot ids_restore[l], so that
    # is the same as asking whether that slot is past the kept ones.
    mask = (ids_restore >= len_keep).astype(x.dtype)  # (N, L)

    cache = (ids_restore, len_keep)
    return x_masked, mask, ids_restore, cache


def random_masking_backward(dx_masked, cache):
    """dx_masked: (N, K, D) -> dx: (N, L, D): kept tokens' gradients back at their places, zeros elsewhere."""
    ids_restore, len_keep = cache
    N, K, D = dx_masked.shape
    L = ids_restore.shape[1]
    # Forward gathered slots 0..K-1 of the shuffled order; backward puts them back into the shuffled
    # order (removed slots get zero) and un-shuffles, which is the same gather as the decoder's.
    dx_shuffled = xp.concatenate([dx_masked, xp.zeros((N, L - K, D), dtype=dx_masked.dtype)], axis=1)  # (N, L, D)
    dx = gather_tokens(dx_shuffled, ids_restore)  # (N, L, D)
    return dx


def append_mask_tokens(x, mask_token, ids_restore):
    """The decoder's first step in models_mae.forward_decoder, without the cls token.

    x: (N, K, D) visible tokens in shuffled order, mask_token: (1, 1, D), ids_restore: (N, L)
    -> x_full: (N, L, D) with every patch at its place (mask tokens where patches were removed), cache.
    """
    N, K, D = x.shape
    L = ids_restore.shape[1]
    mask_tokens = xp.broadcast_to(mask_token, (N, L - K, D))  # (N, L-K, D), one shared token
    x_shuffled = xp.concatenate([x, mask_tokens], axis=1)  # (N, L, D) shuffled order
    x_full = gather_tokens(x_shuffled, ids_restore)  # (N, L, D) unshuffle
    cache = (ids_restore, K)
    return x_full, cache


def append_mask_tokens_backward(dx_full, cache):
    """dx_full: (N, L, D) -> dx (N, K, D) for the visible tokens, dmask_token (1, 1, D)."""
    ids_restore, K = cache
    D = dx_full.shape[-1]
    # Undo the un-shuffle: shuffled slot s held patch ids_shuffle[s], and ids_shuffle = argsort(ids_restore).
    ids_shuffle = xp.argsort(ids_restore, axis=1)  # (N, L)  recomputed rather than cached
    dx_shuffled = gather_tokens(dx_full, ids_shuffle)  # (N, L, D)
    dx = dx_shuffled[:, :K]  # (N, K, D)
    # The one mask token fanned out to every removed slot of every image: its gradient is the sum.
    dmask_token = dx_shuffled[:, K:].sum(axis=(0, 1)).reshape(1, 1, D)  # (1, 1, D)
    return dx, dmask_token
