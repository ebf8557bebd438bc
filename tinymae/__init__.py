"""tinymae: Masked Autoencoders (He et al., CVPR 2022) written by hand in NumPy / CuPy, without autograd.

Where each step of MAE lives:
    backend.py    the array library (NumPy or CuPy, from TINYMAE_BACKEND)
    patches.py    patchify / unpatchify
    masking.py    random_masking, and the decoder's mask tokens + un-shuffle
    layers.py     Linear, ReLU and the initialisers
    loss.py       the MSE on removed patches (forward_loss), norm_pix_loss
    optim.py      AdamW and the warm-up + cosine learning-rate schedule
    gradcheck.py  finite-difference checks for any forward/backward pair
"""
__version__ = "0.1.0"
