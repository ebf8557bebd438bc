"""Pre-train a masked autoencoder on a folder of photos: main_pretrain.py of the official MAE, for tinymae.

    python -m tinymae.pretrain --data data/catsdogs              # the MLP MAE, 50 epochs
    python -m tinymae.pretrain --data ~/my_photos --arch vit     # the paper's ViT MAE, on any folder of photos
    (examples/train_catsdogs.py is the same command; --download fetches the Cats and Dogs photos)

The run is run.py's skeleton; this file says what is pre-training's own. The photos are split 80:20 (within each
class, where the folder has classes) and normalised with the training split's colour statistics. Each step crops,
flips and normalises a batch, draws its masks (masking.masking_noise), and takes forward, backward and AdamW;
after each epoch the validation photos are reconstructed with fixed masks. In --out: checkpoint.npz (every
epoch), loss.png, reconstructions.png, and metrics.json, written last.
"""
import os
import sys

from . import backend
from .backend import host_rng
from .config import MLPConfig, PretrainConfig, ViTConfig, check, model_config
from .data import new_photos, photos_of_run
from .engine import Diverged
from .errors import TinymaeError
from .evaluate import figure_batch, reconstruction_metrics
from .fast import cuda
from .model import build_model
from .model.masking import masking_noise
from .run import Run
from .util import cli
from .util.download import download_catsdogs
from .util.figures import save_loss_curves, save_reconstructions


class Pretraining(Run):
    Config = PretrainConfig
    kind, checkpoint, done = "pretrain", "checkpoint.npz", "metrics.json"
    description = ("Pre-train a masked autoencoder (MAE) on a folder of photos with tinymae's hand-written NumPy/CuPy "
                   "engine. TINYMAE_BACKEND=cupy trains on a GPU.")

    @classmethod
    def parser(cls, prog):
        return cli.parser(prog or "python -m tinymae.pretrain", cls.description, PretrainConfig, MLPConfig, ViTConfig)

    @classmethod
    def start(cls, typed):
        recipe = {k: v for k, v in typed.items() if k in PretrainConfig.__dataclass_fields__}
        cfg = PretrainConfig(**recipe)
        check(cfg)
        run = cls(cfg, typed)
        run.model_cfg = model_config(cfg.arch, {k: v for k, v in typed.items() if k not in recipe})
        return run

    def adopt(self, header):
        super().adopt(header)
        self.model_cfg = model_config(header["arch"], header["config"])

    def owned(self):
        derived = [e.name for e in os.scandir(self.cfg.out) if e.name == "probe.json" or (  # a fine-tuning run's folder
            e.is_dir() and e.name.startswith("finetune")
            and any(os.path.exists(os.path.join(e.path, f)) for f in ("classifier.npz", "result.json")))]
        return [self.checkpoint, self.done, "loss.png", "reconstructions.png", *derived]

    def load_photos(self, header):
        cfg, mcfg = self.cfg, self.model_cfg
        if header is not None:
            photos = photos_of_run(header["data"], cfg.data, mcfg.img_size, cfg.progress)
            if photos is None:
                raise TinymaeError(f"the photos under {cfg.data} are not the {len(header['data']['files'])} photos "
                                   f"{self.path(self.checkpoint)} was trained on (fingerprint "
                                   f"{header['data']['fingerprint']}); point --data at them, or start a new run in "
                                   "another --out")
        else:
            if cfg.download:
                download_catsdogs(cfg.data, cfg.progress)
            load_size = cfg.load_size or mcfg.img_size * 9 // 8
            if load_size < mcfg.img_size:
                raise TinymaeError(f"--load-size {load_size} is smaller than --img-size {mcfg.img_size}")
            photos = new_photos(cfg.data, load_size, mcfg.img_size, cfg.seed, cfg.val_fraction, cfg.per_class,
                                cfg.progress)
        self.mean_patch = photos.mean_patch(mcfg.img_size, mcfg.patch_size)  # (L, P) the mean-patch baseline
        return photos

    def build_model(self):
        return build_model(self.cfg.arch, self.model_cfg.to_dict(), seed=self.cfg.seed)

    def describe(self, model):
        return f"{self.cfg.arch} MAE, {model.num_params():,} parameters"

    def adamw(self):
        return dict(betas=(0.9, self.cfg.beta2), weight_decay=self.cfg.weight_decay, no_decay=self.model.no_decay)

    def rng(self):
        return host_rng(self.cfg.seed + 1)  # each epoch's order, then every step's crops, flips and masks

    def batches(self, perm, batch_size, rng, resident):
        """The epoch's batches as host arrays: (imgs (B, 3, S, S), noise (B, L)); on the device's photos, what
        makes the images there (idx, tops, lefts, flips) in their place. Every random number of a step is drawn
        here, in a fixed order (crops and flips, then the masks)."""
        p, mcfg = self.photos, self.model_cfg
        if resident:
            for draws in cuda.draws(perm, batch_size, p.train_images.shape[1], mcfg.img_size, rng):
                yield (*draws, masking_noise(rng, len(draws[0]), mcfg))
        else:
            from .data import augmented_batches
            for idx, imgs in augmented_batches(p.train_images, p.mean, p.std, perm, batch_size, mcfg.img_size, rng):
                yield imgs, masking_noise(rng, len(idx), mcfg)

    def prepare(self, idx, tops, lefts, flips, noise):
        if not hasattr(self, "device_images"):
            self.device_images = cuda.DeviceImages(self.photos.train_images, self.photos.mean, self.photos.std,
                                                   self.model_cfg.img_size)
        return self.device_images.batch(idx, tops, lefts, flips), noise

    def measure(self, baselines):
        return reconstruction_metrics(self.model, self.photos.val_images, self.photos.mean, self.photos.std,
                                      mask_seed=self.cfg.seed, mean_patch=self.mean_patch if baselines else None,
                                      step=self.step)

    def validate(self, epoch):
        if not hasattr(self, "baseline"):  # the baselines do not depend on the model: measured once
            self.baseline = self.measure(True)["baselines"]["mean_patch"]["masked_mse"]
        val = self.measure(False)
        if not val["loss"] < float("inf"):
            raise Diverged(f"the validation loss became {val['loss']} after epoch {epoch}")
        return {"val_loss": val["loss"], "val_masked_mse": val["masked_mse"], "val_masked_psnr": val["masked_psnr"]}

    def line(self, s):
        ratio = s["val_masked_mse"] / self.baseline if self.baseline > 0 else float("nan")
        return (f"val loss {s['val_loss']:.4f}  val masked MSE {s['val_masked_mse']:.5f} ({ratio:.3f}x mean patch, "
                f"{s['val_masked_psnr']:.2f} dB)  ")

    def extra(self):
        return {"mean_patch": self.mean_patch}

    def results(self):
        """The final validation against the baselines, printed first, then loss.png, reconstructions.png and
        metrics.json, written last: its presence (with this run's id) marks the run finished."""
        cfg, final = self.cfg, self.measure(True)
        base = final["baselines"]
        ratio = "n/a" if final["ratio_to_mean_patch"] is None else f"{final['ratio_to_mean_patch']:.3f}"
        print(f"done in {self.wall_time:.0f} s. Validation masked-patch MSE {final['masked_mse']:.5f} "
              f"({final['masked_psnr']:.2f} dB); baselines: mean patch {base['mean_patch']['masked_mse']:.5f}, visible "
              f"mean {base['visible_mean']['masked_mse']:.5f}, nearest visible "
              f"{base['nearest_visible']['masked_mse']:.5f}; ratio to mean patch {ratio}.", flush=True)
        save_loss_curves(self.path("loss.png"), self.history, base["mean_patch"]["masked_mse"])
        if cfg.figure_images > 0:
            p = self.photos
            save_reconstructions(self.path("reconstructions.png"),
                                 *figure_batch(self.model, p.val_images, p.mean, p.std, cfg.seed, cfg.figure_images),
                                 self.model_cfg.patch_size, f"{cfg.arch} MAE, validation photos, epoch {cfg.epochs}")
        record = {k: v for k, v in self.photos.record.items() if k not in ("files", "labels", "hashes", "val")}
        metrics = {"arch": cfg.arch, "run_id": self.run_id, "backend": backend.name, "config": self.model_cfg.to_dict(),
                   "n_params": self.model.num_params(), "settings": vars(cfg), "data": record,
                   "wall_time_s": self.wall_time, "history": self.history, "final_validation": final}
        self.write_json(self.path(self.done), metrics)
        print(f"Outputs in {cfg.out}/")
        return metrics


def main(argv=None, prog=None):
    return Pretraining.main(argv, prog)


if __name__ == "__main__":
    sys.exit(main())
