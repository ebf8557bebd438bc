"""Train a masked autoencoder on Cats & Dogs photos, from a fresh start or from the last checkpoint.

    python examples/train_catsdogs.py --download                # fetch the photos into data/catsdogs, then train the MLP MAE
    python examples/train_catsdogs.py --arch vit                # the paper's ViT MAE (photos already in data/catsdogs)
    python examples/train_catsdogs.py --data ~/photos/catsdogs  # photos already elsewhere on disk
    python examples/train_catsdogs.py --resume                  # continue after a stop
    TINYMAE_BACKEND=cupy python examples/train_catsdogs.py ...  # on a GPU
    python examples/train_catsdogs.py --help                    # every setting

--download fetches Microsoft's Cats and Dogs archive (about 800 MB; the photos are Microsoft Research's, for
non-commercial research, not to be redistributed, which is why this repository holds none) when the data
folder holds no photos yet, and then trains.

The recipe, as the paper's pre-training (He et al. 2022, Table 8), scaled to small photos: 48 x 48 RGB
images in 6 x 6 patches (64 per image), 75% of them removed at random; the loss on the removed patches
only; AdamW (betas 0.9 / 0.95, weight decay 0.05, none on biases and norms) at lr 0.005 with a linear
warm-up and a half-cycle cosine; 50 epochs; an 80:20 train/validation split within each class; a random
48-pixel crop of the 54-pixel image and a horizontal flip.

It writes to --out (default runs/<arch>): checkpoint.npz after every epoch (atomically), metrics.json,
loss.png and reconstructions.png. Then evaluate the checkpoint on any folder of photos with
`python -m tinymae.evaluate`, probe what its encoder learned with `python -m tinymae.probe`, and
fine-tune the ViT's encoder with `python -m tinymae.finetune`.

The run lives in the package, where the tests and the research scripts use it too: tinymae/pretrain.py
(as main_pretrain.py) and tinymae/engine.py (train_one_epoch, as engine_pretrain.py), with every setting
declared once in tinymae/config.py.
"""
import sys

from tinymae.pretrain import main

if __name__ == "__main__":
    sys.exit(main(prog="examples/train_catsdogs.py"))
