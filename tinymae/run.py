"""One training run in one folder: the skeleton pre-training and fine-tuning share, as main_pretrain.py and
main_finetune.py of the official MAE share theirs.

    Run.main(argv)  the flags (config.py), checked before any work; every error a user can cause is one line
    run()           inputs and output files checked (each as the exact file it will be) -> the folder locked (one
                    writer) -> a new run, an --overwrite (the old run and everything derived from it go first) or
                    a --resume (the checkpoint's own settings: only flags marked on_resume="new" may change)
                    -> the photos, the model, the step (fast/ chooses it) and AdamW, restored on --resume
                    -> every epoch: train_one_epoch, validate, the checkpoint (atomic, only with finite losses,
                       weights and AdamW moments)
                    -> the results: printed, then the figures, then the done-file, written last (a run is finished
                       when it is there with the checkpoint's run id)

A subclass (pretrain.Pretraining, finetune.Finetuning) says what is its own: the config, the files, the photos,
the model, the batches, the validation, the results. A resumed run ends bit-identical to an uninterrupted one:
the checkpoint holds the weights, AdamW's moments, the epoch and the random generator's state.
"""
import json
import os
import shutil
import sys
import time
import uuid
import warnings

from . import __version__, backend, fast
from .config import check, flag_name
from .engine import Diverged, prefetched, train_one_epoch
from .errors import Interrupted, TinymaeError
from .model.optim import cosine_lr
from .util import cli
from .util.checkpoint import read_checkpoint, save_checkpoint
from .util.files import RunLock, check_free_space, check_writable, remove_stale_temporaries, write_atomically


class Run:
    Config = None  # the settings' dataclass (config.py)
    kind, checkpoint, done, description = None, None, None, ""  # the kind, the two files every run writes

    def __init__(self, cfg, typed):
        self.cfg, self.typed = cfg, typed  # the settings, and the flags the user typed

    @classmethod
    def main(cls, argv=None, prog=None):
        """The command line -> its exit status (util/cli.run's rule)."""
        typed = cli.typed(cls.parser(prog), argv)
        return cli.run(lambda: cls.start(typed).run() and 0)

    @classmethod
    def from_argv(cls, argv):
        """The run a command line describes (checked), to .run() in-process."""
        return cls.start(cli.typed(cls.parser(None), argv))

    @classmethod
    def parser(cls, prog):
        return cli.parser(prog or f"python -m tinymae.{cls.kind}", cls.description, cls.Config)

    @classmethod
    def start(cls, typed):
        cfg = cls.Config(**typed)
        check(cfg)
        return cls(cfg, typed)

    def path(self, name):
        return os.path.join(self.cfg.out, name)

    def owned(self):
        """What the folder holds of this run (files or folders), the checkpoint first: --overwrite removes it."""
        return [self.checkpoint, self.done]

    def check_outputs(self):
        """Inputs and the output files of flags, checked before any work (and before --out is made)."""

    # ------------------------------------------------------------------------------------------
    def run(self):
        """The whole run -> its result (None when a resumed run had nothing left to do)."""
        self.check_outputs()
        check_writable(self.cfg.out)
        with RunLock(self.cfg.out):
            remove_stale_temporaries(self.cfg.out)
            try:
                header, resumed = self.begin()
                self.photos = self.load_photos(header)
                self.model = resumed[0] if resumed else self.build_model()
                path = fast.training_step(self.model, self.cfg.kernels, self.cfg.threads)
                self.step = path.step
                try:
                    with warnings.catch_warnings():  # every thread's: the filters are the process's
                        # Values that overflow end as a divergence, which train() reports in one line with what to
                        # do; NumPy's warnings of the same would only print before it.
                        warnings.filterwarnings("ignore", "(overflow|invalid value|divide by zero) encountered",
                                                RuntimeWarning)
                        return self.train(path, header, resumed)
                finally:
                    self.step.close()
            except KeyboardInterrupt:
                kept = self.path(self.checkpoint)
                raise Interrupted(f"\ninterrupted. Every finished epoch is in {kept}: continue with the same command "
                                  "plus --resume" if os.path.exists(kept) else "\ninterrupted. Nothing was saved.")

    def begin(self):
        """A --resume's checkpoint -> (header, (model, arrays)), or a new run's clean folder -> (None, None)."""
        if self.cfg.resume:
            header, model, arrays = read_checkpoint(self.path(self.checkpoint), self.kind, optimizer=True)
            self.adopt(header)
            return header, (model, arrays)
        existing = [name for name in self.owned() if os.path.exists(self.path(name))]
        if existing and not self.cfg.overwrite:
            raise TinymaeError(f"{self.cfg.out} already holds a run ({', '.join(existing)}); continue it with "
                               "--resume, choose another --out, or pass --overwrite to start over")
        self.remove(existing)  # the old run goes before the new one starts: nothing of it can be mistaken
        return None, None

    def remove(self, names):
        """Delete these entries of the run folder (a fine-tuning derived from it, a folder, whole)."""
        for name in names:
            shutil.rmtree(self.path(name)) if os.path.isdir(self.path(name)) else os.remove(self.path(name))

    def adopt(self, header):
        """A resumed run is the checkpoint's run: its settings, with only the flags marked on_resume="new" taken
        from this command line; any other typed flag that differs is refused, naming what may change."""
        fields = self.Config.__dataclass_fields__
        may = {name for name, f in fields.items() if f.metadata.get("on_resume") == "new"}
        recorded = {**header["settings"], **header["config"]}
        changed = [f"{flag_name(k)} {v} (the run has {recorded.get(k)})" for k, v in self.typed.items()
                   if k not in may and recorded.get(k) != (list(v) if isinstance(v, tuple) else v)]
        if changed:
            raise TinymaeError(f"--resume continues {self.path(self.checkpoint)} with its own settings, and this "
                               f"command changes {', '.join(changed)}. Drop those flags, or start a new run in "
                               f"another --out. A resumed run may change: {', '.join(map(flag_name, sorted(may)))}")
        settings = {k: v for k, v in header["settings"].items() if k in fields}
        self.cfg = self.Config(**{**settings, **{k: v for k, v in self.typed.items() if k in may}, "out": self.cfg.out})
        check(self.cfg)

    def train(self, path, header, resumed):
        cfg, model, step = self.cfg, self.model, self.step
        params = {name: model.params[name] for name in getattr(model, "trainable", model.params)}
        optimizer = path.AdamW(params, lr=cfg.lr, **self.adamw())
        model.params.update(params)  # the fast AdamW moved them into its flat buffer: the model reads them there
        rng, done = self.rng(), header["epoch"] if header else 0
        self.history, self.wall_time, self.run_id = [], 0.0, uuid.uuid4().hex[:12]
        if header:
            optimizer.load_state_dict({key[4:]: v for key, v in resumed[1].items() if key.startswith("opt/")})
            rng.bit_generator.state = header["rng_state"]
            self.history, self.wall_time, self.run_id = header["history"], header["wall_time_s"], header["run_id"]
            if done > cfg.epochs:
                raise TinymaeError(f"--epochs {cfg.epochs} is fewer than the {done} epochs "
                                   f"{self.path(self.checkpoint)} has trained; pass --epochs {done} or more")
            if done == cfg.epochs and self.finished():
                print(f"{self.path(self.checkpoint)} has trained its {done} epochs and its results are complete: "
                      "nothing to do. Pass a larger --epochs to train longer.")
                return None
            # the run trains on or redraws what it owns: its old results, and what was derived from them, go
            old = [name for name in self.owned()[1:] if os.path.exists(self.path(name))]
            for name in old:
                if os.path.isdir(self.path(name)):
                    print(f"removing {self.path(name)}: derived from the encoder before this resume", flush=True)
            self.remove(old)
            print(f"resuming {self.path(self.checkpoint)} after epoch {done} (--lr {cfg.lr:g}, --epochs {cfg.epochs})")
        n_train = len(self.photos.train_labels)
        batch_size = min(cfg.batch_size, n_train)  # fewer photos than a batch: all of them (the setting is kept)
        steps = n_train // batch_size
        total, warmup = cfg.epochs * steps, int(cfg.warmup_epochs * steps)
        check_free_space(cfg.out, 12 * sum(int(p.size) for p in model.params.values()) + 2 ** 16
                         + len(json.dumps(self.photos.record)), "a checkpoint (weights, AdamW's moments, header)")
        print(f"{self.describe(model)}, backend {backend.name}, kernels {cfg.kernels} ({step.describe()}); {n_train} "
              f"training / {len(self.photos.val_labels)} validation photos; {steps} steps of {batch_size} per epoch",
              flush=True)
        if steps < 4:  # few photos for the batch: the warm-up and the cosine get a handful of steps in all
            print(f"note: {n_train} training photos make {steps} step{'s' * (steps > 1)} of {batch_size} an epoch; "
                  "a smaller --batch-size gives the schedule more steps to work with", file=sys.stderr, flush=True)
        try:
            for epoch in range(done, cfg.epochs):
                t0 = time.perf_counter()
                batches = prefetched(self.batches(rng.permutation(n_train), batch_size, rng, path.resident))
                stats = train_one_epoch(step, optimizer, batches, steps, epoch * steps,
                                        lambda i: cosine_lr(i, total, warmup, cfg.lr, cfg.min_lr),
                                        f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress,
                                        self.prepare if path.resident else None)
                stats.update(self.validate(epoch + 1))
                self.wall_time += time.perf_counter() - t0
                self.history.append({"epoch": epoch + 1, **stats, "epoch_time_s": time.perf_counter() - t0})
                self.save(epoch + 1, optimizer, rng)
                print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {stats['train_loss']:.4f}  {self.line(stats)}"
                      f"{stats['train_time_s']:.1f} s, {stats['train_images_per_s']:.0f} img/s", flush=True)
        except Diverged as e:
            raise TinymaeError(f"training diverged: {e}. " + (
                f"The last good checkpoint (finite losses) is {self.path(self.checkpoint)}: continue it with --resume "
                "and a lower --lr" if os.path.exists(self.path(self.checkpoint)) else
                "No checkpoint was written: start again with a lower --lr or more --warmup-epochs")) from None
        return self.results()

    def save(self, epoch, optimizer, rng):
        state = optimizer.state_dict()
        for name, value in {**self.model.params, **state}.items():  # finite losses can hide infinite moments
            if name != "t" and not bool(backend.xp.isfinite(value).all()):
                raise Diverged(f"{'AdamW state ' * (name in state)}{name} became infinite or NaN in epoch {epoch}")
        header = {"kind": self.kind, "arch": "vit" if self.kind == "finetune" else self.model.arch,
                  "config": self.model.config.to_dict(), "settings": vars(self.cfg), "data": self.photos.record,
                  "epoch": epoch, "run_id": self.run_id, "rng_state": rng.bit_generator.state, "history": self.history,
                  "wall_time_s": self.wall_time, "backend": backend.name, "tinymae": __version__, **self.header()}
        save_checkpoint(self.path(self.checkpoint), header, self.model.params, state, self.extra())

    def finished(self):
        """Whether the done-file is there, of this run (its run id)."""
        try:
            with open(self.path(self.done)) as f:
                return json.load(f).get("run_id") == self.run_id
        except (OSError, ValueError, AttributeError):
            return False

    def write_json(self, path, value):
        text = json.dumps(value, indent=2, allow_nan=False)  # NaN is not JSON: fail here, not in a reader
        write_atomically(path, lambda f: f.write(text.encode()))

    # the subclass's part, where it has nothing of its own ----------------------------------------
    def header(self):
        return {}

    def extra(self):
        return {}

    def line(self, stats):
        return ""
