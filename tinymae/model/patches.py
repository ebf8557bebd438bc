"""Cut images into patch vectors and put them back, exactly as `patchify` / `unpatchify` in models_mae.py.

An image (3, H, W) becomes L = (H/p) * (W/p) patches in raster order (left to right, top to bottom),
each a vector of p*p*3 numbers ordered (row, col, channel): p[0,0,R], p[0,0,G], p[0,0,B], p[0,1,R], ...

Both functions only move numbers around (a reshape and a transpose), so each one's backward pass is the
other one: the gradient of a permutation is the inverse permutation applied to the upstream gradient.
"""


def patchify(imgs, p):
    """imgs: (N, 3, H, W) -> x: (N, L, p*p*3) with L = (H/p)*(W/p)."""
    N, C, H, W = imgs.shape
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    h, w = H // p, W // p
    x = imgs.reshape(N, C, h, p, w, p)  # (N, C, h, p, w, p)
    x = x.transpose(0, 2, 4, 3, 5, 1)  # (N, h, w, p, p, C)   models_mae: einsum('nchpwq->nhwpqc')
    x = x.reshape(N, h * w, p * p * C)  # (N, L, p*p*C)
    return x


def unpatchify(x, p, grid=None):
    """x: (N, L, p*p*3) -> imgs: (N, 3, h*p, w*p); the grid (h, w) defaults to square, h = w = sqrt(L)."""
    N, L, D = x.shape
    C = D // (p * p)
    if grid is None:
        h = w = int(round(L ** 0.5))
    else:
        h, w = grid
    if h * w != L or C * p * p != D:
        raise ValueError(f"cannot unpatchify {x.shape} with patch size {p} and grid {(h, w)}")
    imgs = x.reshape(N, h, w, p, p, C)  # (N, h, w, p, p, C)
    imgs = imgs.transpose(0, 5, 1, 3, 2, 4)  # (N, C, h, p, w, p)   models_mae: einsum('nhwpqc->nchpwq')
    imgs = imgs.reshape(N, C, h * p, w * p)  # (N, C, H, W)
    return imgs


def patchify_backward(dx, p, grid=None):
    """dx: (N, L, p*p*3) -> dimgs: (N, 3, H, W). patchify is a permutation, so its backward is unpatchify."""
    return unpatchify(dx, p, grid)


def unpatchify_backward(dimgs, p):
    """dimgs: (N, 3, H, W) -> dx: (N, L, p*p*3). unpatchify is a permutation, so its backward is patchify."""
    return patchify(dimgs, p)
