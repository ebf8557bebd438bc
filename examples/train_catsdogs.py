"""Pre-train a masked autoencoder on a folder of photos (Cats and Dogs by default), or continue a stopped run.

    python examples/train_catsdogs.py --download                # fetch the photos into data/catsdogs, train the MLP
    python examples/train_catsdogs.py --arch vit                # the paper's ViT MAE (photos already in data/catsdogs)
    python examples/train_catsdogs.py --data ~/photos           # any folder of photos, in class folders or not
    python examples/train_catsdogs.py --resume                  # continue after a stop
    TINYMAE_BACKEND=cupy python examples/train_catsdogs.py ...  # on a GPU
    python examples/train_catsdogs.py --help                    # every setting

This is `python -m tinymae.pretrain` under another name: the same flags, outputs and exit status. --download fetches
Microsoft's Cats and Dogs archive (about 800 MB; the photos are Microsoft Research's, for non-commercial research,
not to be redistributed, which is why this repository holds none) into --data when it holds no photos yet.

The recipe, as the paper's pre-training (He et al. 2022, Table 8), scaled to small photos: 48 x 48 RGB images in
6 x 6 patches (64 per image), 75% of them removed (--masking random; block and grid are the paper's Table 1f);
the loss on the removed patches only; AdamW (betas 0.9 / 0.95, weight decay 0.05, none on biases and norms) at
lr 0.005, a linear warm-up and a half-cycle cosine; 50 epochs; an 80:20 train/validation split within each class;
a random 48-pixel crop of the 54-pixel photo and a horizontal flip. --kernels fast (the default) trains on every
core (tinymae/fast/), --kernels reference with the plain formulas of tinymae/model/.

It writes to --out (default runs/<arch>): checkpoint.npz after every epoch, loss.png, reconstructions.png and, last,
metrics.json. Then evaluate the checkpoint with `python -m tinymae.evaluate`, probe its encoder with
`python -m tinymae.probe`, fine-tune the ViT's with `python -m tinymae.finetune`. The run is tinymae/pretrain.py
(main_pretrain.py of the official MAE) on tinymae/run.py's skeleton, every setting declared in tinymae/config.py.
"""
import sys

from tinymae.pretrain import main

if __name__ == "__main__":
    sys.exit(main(prog="python examples/train_catsdogs.py"))
