"""Use a trained model: tinymae.load in your own code, and the prediction command.

    python -m tinymae.predict --checkpoint runs/vit/finetune-seed0/classifier.npz cat.jpg dog.png [--json]

    import tinymae
    classifier = tinymae.load("runs/vit/finetune-seed0/classifier.npz")   # or a pre-training checkpoint.npz
    x = classifier.preprocess(["cat.jpg"])     # paths, PIL images or uint8 arrays (H, W, 3), made as in training
    classifier.predict_proba(x)                # (N, C), the columns in the order of classifier.classes
    classifier.features(x)                     # (N, F), what the encoder says of each photo

A photo is made into the model's input as training made its validation photos: RGB, resized to the run's load
size, centre-cropped, normalised with the pre-training run's statistics (all from the checkpoint).
"""
import json
import sys

import numpy as np
from PIL import Image

from .backend import asarray, host_rng, to_numpy
from .config import PredictConfig, check
from .data import center_crop, denormalize, normalize
from .errors import TinymaeError
from .model.masking import masking_noise
from .photos import load_image, prepare_image
from .util import cli
from .util.checkpoint import read_checkpoint
from .util.figures import reconstruction_panels
from .util.metrics import pred_to_pixels


def load(path):
    """The model a checkpoint holds (pre-training's checkpoint.npz or fine-tuning's classifier.npz), ready to use."""
    return Trained(*read_checkpoint(path)[:2])


class Trained:
    """A trained model and what its checkpoint says of its photos: the sizes, the normalisation, the classes."""

    def __init__(self, header, model):
        self.header, self.model, self.kind = header, model, header["kind"]
        self.classes = tuple(header.get("classes") or header["data"]["classes"])
        self.load_size, self.mean, self.std = header["data"]["load_size"], header["data"]["mean"], header["data"]["std"]

    def preprocess(self, photos):
        """Photos (paths, PIL images or uint8 arrays (H, W, 3)) -> the model's input (N, 3, S, S)."""
        images = []
        for photo in photos:
            is_path = isinstance(photo, (str, bytes)) or hasattr(photo, "__fspath__")
            image = (load_image(photo, self.load_size) if is_path
                     else prepare_image(photo if isinstance(photo, Image.Image) else Image.fromarray(photo),
                                        self.load_size))
            if image is None:
                raise TinymaeError(f"{photo} is not a photo Pillow can read (or it is smaller than 16 pixels)")
            images.append(image)
        return asarray(normalize(center_crop(np.stack(images), self.model.config.img_size), self.mean, self.std))

    def features(self, x):
        """(N, F) host: a classifier's pooled, normalised features; an MAE's mean patch token (ViT) or latent (MLP)."""
        if self.kind == "finetune":
            return to_numpy(self.model.forward_features(x)[0])
        return to_numpy(next(iter(self.model.forward_features(x).values())))

    def predict_proba(self, x):
        """(N, C) host: the class probabilities of a fine-tuned classifier, in the order of self.classes."""
        if self.kind != "finetune":
            raise TinymaeError("a pre-training checkpoint has no classifier: fine-tune it (python -m tinymae.finetune)")
        logits = to_numpy(self.model.predict(x)).astype(np.float64)  # (N, C)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def reconstruct(self, x, seed=0):
        """An MAE's reconstruction with seeded masks -> four host arrays (N, H, W, 3) in [0, 1], the columns of the
        official demo: the photo, the photo masked, the reconstruction, the reconstruction with the visible patches
        pasted back (for plt.imshow)."""
        cfg = self.model.config
        noise = asarray(masking_noise(host_rng(seed), x.shape[0], cfg))  # (N, L)
        _, pred, mask, _ = self.model.forward(x, noise)
        from .model.patches import patchify
        pred = pred_to_pixels(pred, patchify(x, cfg.patch_size), asarray(self.mean), asarray(self.std),
                              cfg.norm_pix_loss)
        return reconstruction_panels(denormalize(to_numpy(x), self.mean, self.std), to_numpy(mask), to_numpy(pred),
                                     cfg.patch_size)


def main(argv=None):
    typed = cli.typed(cli.parser("python -m tinymae.predict", "Classify photos with a fine-tuned classifier: each "
                                 "photo's class and probability.", PredictConfig), argv)

    def body():
        cfg = PredictConfig(**typed)
        check(cfg)
        model = load(cfg.checkpoint)
        x = model.preprocess(cfg.photos)  # every photo checked before anything is printed
        for path, p in zip(cfg.photos, model.predict_proba(x)):
            best = int(p.argmax())
            print(json.dumps({"photo": path, "class": model.classes[best], "probability": float(p[best]),
                              "probabilities": dict(zip(model.classes, map(float, p)))}) if cfg.json else
                  f"{path}: {model.classes[best]} ({100 * p[best]:.1f}%)")
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
