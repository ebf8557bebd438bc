"""Fixed 2-D sine-cosine position embeddings, as util/pos_embed.py of the official MAE.

Half of the channels encode the patch's row, half its column; each half is the 1-D "Attention is all
you need" embedding: sin(pos * omega_k) and cos(pos * omega_k) with omega_k = 1 / 10000^(k / (D/4)).
They are constants (no gradient): computed once on the host in float64, then moved to the backend,
so NumPy and CuPy runs use bit-identical tables.
"""
import numpy  # host-side: a constant table built once at model construction

from ..backend import asarray


def get_1d_sincos_pos_embed(embed_dim, pos):
    """embed_dim: even D, pos: (M,) positions -> (M, D): [sin(pos * omega), cos(pos * omega)]."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos position embedding needs an even width, got {embed_dim}")
    omega = numpy.arange(embed_dim // 2, dtype=numpy.float64) / (embed_dim / 2.0)  # (D/2,)
    omega = 1.0 / 10000 ** omega  # (D/2,)
    out = numpy.outer(pos.reshape(-1), omega)  # (M, D/2)
    return numpy.concatenate([numpy.sin(out), numpy.cos(out)], axis=1)  # (M, D)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False, dtype="float32"):
    """-> (1, grid_size**2 (+1 with cls_token), embed_dim) backend array; the cls slot is all zeros."""
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {embed_dim}")
    grid_h, grid_w = numpy.meshgrid(numpy.arange(grid_size, dtype=numpy.float64),
                                    numpy.arange(grid_size, dtype=numpy.float64), indexing="ij")
    # As the reference: the first half of the channels encodes the column (w), the second the row (h).
    emb_w = get_1d_sincos_pos_embed(embed_dim // 2, grid_w)  # (L, D/2)
    emb_h = get_1d_sincos_pos_embed(embed_dim // 2, grid_h)  # (L, D/2)
    pos_embed = numpy.concatenate([emb_w, emb_h], axis=1)  # (L, D)
    if cls_token:
        pos_embed = numpy.concatenate([numpy.zeros((1, embed_dim)), pos_embed], axis=0)  # (1+L, D)
    return asarray(pos_embed[None], dtype=dtype)  # (1, L(+1), D)
