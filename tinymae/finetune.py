"""Fine-tune a pre-trained ViT MAE encoder to classify photos: the paper's end-to-end fine-tuning (Sec. 4; A.1,
Table 9), as main_finetune.py, engine_finetune.py and util/lr_decay.py of the official MAE.

    python -m tinymae.finetune --checkpoint runs/vit/checkpoint.npz                # the run's own photos and split
    python -m tinymae.finetune --checkpoint runs/vit/checkpoint.npz --data ~/birds # other photos, in class folders
    python -m tinymae.finetune ... --from-scratch          # the same network and recipe from random weights
    python -m tinymae.finetune ... --labels-per-class 100  # 100 labelled photos per class

The run is run.py's skeleton; this file says what is fine-tuning's own. The photos: the pre-training run's own
split (from its checkpoint), or other photos split anew, never validating on a photo the encoder trained on;
both normalised as the encoder was pre-trained. The network: models_vit.ViTClassifier, the pre-trained encoder
with global pooling, fc_norm and a new head. AdamW with PyTorch's betas (0.9, 0.999), weight decay 0.05 (none on
1-D parameters and the cls token) and layer-wise learning-rate decay. In --out: classifier.npz (every epoch, with
the class names in their order) and result.json, written last.

Scaled down from the ViT-B recipe (Table 9): no cutmix or random erasing, and mixup and drop path only when
asked; the augmentation is pre-training's (crop + flip); the position table stays the fixed sin-cos one.
"""
import json
import os
import sys

import numpy as np

from . import backend
from .backend import asarray, host_rng, to_numpy
from .config import FinetuneConfig
from .data import (augmented_batches, center_crop, encoder_photos, labelled_subset, mix_images, mixup_draw,
                   mixup_targets, normalize, photos_of_run)
from .errors import TinymaeError
from .fast import cuda
from .model import build_model
from .model.models_vit import ViTClassifier, drop_path_keep
from .photos import decode, find_photos
from .run import Run
from .util.checkpoint import read_checkpoint
from .util.files import output_file
from .util.lr_decay import param_groups_lrd

EVAL_BATCH = 256  # photos per forward pass when measuring accuracy
TRAIN_ACCURACY_IMAGES = 1000  # the training accuracy's sample: +-1.6% at most (one standard error)


class Finetuning(Run):
    Config = FinetuneConfig
    kind, checkpoint, done = "finetune", "classifier.npz", "result.json"
    description = ("Fine-tune the encoder of a ViT MAE checkpoint to classify photos, as the paper's end-to-end "
                   "fine-tuning, or train the same network from scratch. Prints the result as one JSON line.")

    @classmethod
    def start(cls, typed):
        run = super().start(typed)
        run.cfg.out = run.cfg.out or default_out(run.cfg)
        return run

    def check_outputs(self):
        cfg = self.cfg
        self.json = output_file("--json", cfg.json, cfg.overwrite, [cfg.checkpoint, self.path(self.checkpoint),
                                                                     self.path(self.done)], ".json", {"json"})
        if cfg.test_data:
            find_photos(cfg.test_data)  # a typo here must not cost the whole run
        if cfg.resume:
            return
        pre, self.mae, _ = read_checkpoint(cfg.checkpoint, "pretrain")  # header and weights from one open file
        if pre["arch"] != "vit":
            raise TinymaeError(f"{cfg.checkpoint} holds an MLP MAE, whose encoder takes exactly its visible patches "
                               "as one vector and cannot see a whole photo; fine-tune a ViT MAE (--arch vit)")
        if (cfg.trainable_blocks or 0) > self.mae.config.depth:
            raise TinymaeError(f"--trainable-blocks {cfg.trainable_blocks}: the encoder has {self.mae.config.depth} "
                               "blocks")
        self.pre = pre

    def load_photos(self, header):
        cfg = self.cfg
        if header is not None:  # --resume: the photos this fine-tuning recorded, and nothing else
            self.pretraining, self.classes = header["pretraining"], header["classes"]
            photos = photos_of_run(header["data"], cfg.data, header["config"]["img_size"], cfg.progress)
            if photos is None:
                raise TinymaeError(f"the photos under {cfg.data or header['data']['root']} are not the ones "
                                   f"{self.path(self.checkpoint)} was fine-tuned on; point --data at them")
        else:
            pre, record = self.pre, self.pre["data"]
            self.pretraining = {"checkpoint": os.path.abspath(cfg.checkpoint), "run_id": pre["run_id"],
                                "epoch": pre["epoch"], "fingerprint": record["fingerprint"],
                                "settings": pre["settings"]}
            photos = encoder_photos(record, pre["settings"]["seed"], cfg.data, self.mae.config.img_size,
                                    cfg.val_fraction, progress=cfg.progress, checkpoint=cfg.checkpoint)
            self.classes = list(photos.classes)
        if len(self.classes) < 2:
            raise TinymaeError(f"fine-tuning needs photos of at least two classes, in class folders "
                               f"(<data>/<class>/...); these have {len(self.classes)}: pass --data with class folders")
        labelled = (np.arange(len(photos.train_labels)) if cfg.labels_per_class is None else
                    labelled_subset(photos.train_labels, cfg.labels_per_class, cfg.seed, self.classes))
        photos.train_images, photos.train_labels = photos.train_images[labelled], photos.train_labels[labelled]
        self.labelled = labelled.tolist()
        return photos

    def build_model(self):
        cfg = self.cfg
        mae = build_model("vit", self.mae.config.to_dict(), seed=cfg.seed) if cfg.from_scratch else self.mae
        return ViTClassifier(mae, len(self.classes), cfg.label_smoothing, seed=[cfg.seed, 3],
                             trainable_blocks=cfg.trainable_blocks)

    def describe(self, model):
        trained = sum(int(model.params[n].size) for n in model.trainable)
        source = "random initialisation" if self.cfg.from_scratch else self.cfg.checkpoint
        return f"ViT classifier of {len(self.classes)} classes from {source}, {trained:,} parameters trained"

    def adamw(self):
        return adamw_settings(self.model, self.cfg)

    def rng(self):
        # Every random draw has a generator of its own: [seed, 0] the labelled subset, [seed, 1] the order, crops
        # and flips, [seed, 2] the training-accuracy sample, [seed, 3] the head.
        return host_rng([self.cfg.seed, 1])

    def batches(self, perm, batch_size, rng, resident):
        """(imgs (B, 3, S, S), labels (B,)), with --mixup the photos mixed and soft targets (B, C) for labels, with
        --drop-path the factors (B, depth, 2) too; on the device's photos, what makes the images there."""
        p, S = self.photos, self.model.config.img_size
        if resident:
            for draws in cuda.draws(perm, batch_size, p.train_images.shape[1], S, rng):
                labels, extra = self.step_draws(rng, p.train_labels[draws[0]])
                yield (*draws, labels, *extra)
            return
        for idx, imgs in augmented_batches(p.train_images, p.mean, p.std, perm, batch_size, S, rng):
            labels, extra = self.step_draws(rng, p.train_labels[idx])
            if self.cfg.mixup > 0:
                imgs, extra = mix_images(imgs, extra[0]), extra[1:]
            yield (imgs, labels, *extra)

    def step_draws(self, rng, labels):
        """The rest of a step's random numbers, after the crops: mixup's, then drop path's -> (labels, or mixup's soft
        targets (B, C); [lam (1,)] with mixup + [the drop-path factors (B, depth, 2)] with drop path)."""
        cfg, extra = self.cfg, []
        if cfg.mixup > 0:
            lam = mixup_draw(rng, cfg.mixup)
            extra.append(np.array([lam]))  # (1,): it travels to the device with the batch
            labels = mixup_targets(labels, lam, cfg.label_smoothing, len(self.classes))  # (B, C)
        if cfg.drop_path > 0:
            extra.append(drop_path_keep(rng, len(labels), self.model.config.depth, cfg.drop_path))  # (B, depth, 2)
        return labels, extra

    def prepare(self, idx, tops, lefts, flips, labels, *extra):
        if not hasattr(self, "device_images"):
            p = self.photos
            self.device_images = cuda.DeviceImages(p.train_images, p.mean, p.std, self.model.config.img_size)
        imgs = self.device_images.batch(idx, tops, lefts, flips)  # (B, 3, S, S) on the device
        if self.cfg.mixup > 0:
            lam, *extra = extra
            imgs = mix_images(imgs, lam)
        return (imgs, labels, *extra)

    def accuracy(self, images, labels):
        """Top-1 accuracy on uint8 photos (N, S, S, 3), already cropped, with host labels (N,)."""
        def correct(start):
            x = asarray(normalize(images[start:start + EVAL_BATCH], self.photos.mean, self.photos.std))
            return int((to_numpy(self.model.predict(x).argmax(axis=1)) == labels[start:start + EVAL_BATCH]).sum())
        return sum(self.step.map(correct, range(0, len(images), EVAL_BATCH))) / len(images)

    def validate(self, epoch):
        cfg, p = self.cfg, self.photos
        if epoch % cfg.eval_every and epoch != cfg.epochs:
            return {}
        # measured like validation (centre crops), on a fixed sample, so that the gap between the two is over-fitting
        sample = np.sort(host_rng([cfg.seed, 2]).permutation(len(p.train_labels))[:TRAIN_ACCURACY_IMAGES])
        return {"train_accuracy": self.accuracy(center_crop(p.train_images[sample], self.model.config.img_size),
                                                p.train_labels[sample]),
                "val_accuracy": self.accuracy(p.val_images, p.val_labels)}

    def line(self, s):
        return (f"train accuracy {100 * s['train_accuracy']:5.1f}%  val accuracy {100 * s['val_accuracy']:5.1f}%  "
                if "val_accuracy" in s else "")

    def header(self):
        return {"classes": self.classes, "pretraining": self.pretraining, "labelled": self.labelled}

    def results(self):
        cfg, last = self.cfg, self.history[-1]
        result = {"run_id": self.run_id, "checkpoint": os.path.abspath(cfg.checkpoint), "classes": self.classes,
                  "from_scratch": cfg.from_scratch, "labels_per_class": cfg.labels_per_class,
                  "trainable_blocks": cfg.trainable_blocks, "mixup": cfg.mixup, "drop_path": cfg.drop_path,
                  "seed": cfg.seed, "epochs": cfg.epochs, "n_train": len(self.photos.train_labels),
                  "n_val": len(self.photos.val_labels), "val_accuracy": last["val_accuracy"],
                  "train_accuracy": last["train_accuracy"], "final_train_loss": last["train_loss"],
                  "data_fingerprint": self.photos.record["fingerprint"],
                  "pretraining_fingerprint": self.pretraining["fingerprint"], "backend": backend.name,
                  "wall_time_s": self.wall_time,
                  "out": os.path.abspath(cfg.out)}
        if cfg.test_data:
            test = decode(find_photos(cfg.test_data), self.photos.record["load_size"], cfg.progress)
            if list(test.classes) != self.classes:
                raise TinymaeError(f"--test-data {cfg.test_data} has the classes {list(test.classes)}, the classifier "
                                   f"{self.classes}")
            test_images = center_crop(test.images, self.model.config.img_size)
            result.update(test_data=os.path.abspath(cfg.test_data), n_test=len(test.labels),
                          test_accuracy=self.accuracy(test_images, test.labels))
        print(json.dumps(result), flush=True)  # before any file: a full disk below cannot cost the numbers
        if self.json:
            self.write_json(self.json, result)
        self.write_json(self.path(self.done), {**result, "settings": vars(cfg), "history": self.history})
        return result


def adamw_settings(model, cfg):
    """main_finetune.py's torch.optim.AdamW(param_groups_lrd(...)) over the trainable parameters: PyTorch's default
    betas (0.9, 0.999), layer-wise learning-rate decay, no weight decay on 1-D parameters and the cls token."""
    trained = {name: model.params[name] for name in model.trainable}
    lr_scale, no_decay = param_groups_lrd(trained, model.config.depth, cfg.layer_decay)
    return dict(betas=(0.9, 0.999), weight_decay=cfg.weight_decay, no_decay=no_decay, lr_scale=lr_scale)


def default_out(cfg):
    """<checkpoint's folder>/finetune[-<data>][-scratch][-N<labels>][-blocks<K>][-mixup<a>][-droppath<p>]-seed<S>."""
    name = "finetune" + (f"-{os.path.basename(os.path.abspath(cfg.data))}" if cfg.data else "")
    name += "-scratch" if cfg.from_scratch else ""
    name += f"-N{cfg.labels_per_class}" if cfg.labels_per_class is not None else ""
    name += f"-blocks{cfg.trainable_blocks}" if cfg.trainable_blocks is not None else ""
    name += (f"-mixup{cfg.mixup:g}" if cfg.mixup > 0 else "") + (f"-droppath{cfg.drop_path:g}" if cfg.drop_path else "")
    return os.path.join(os.path.dirname(os.path.abspath(cfg.checkpoint)), f"{name}-seed{cfg.seed}")


def main(argv=None, prog=None):
    return Finetuning.main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
