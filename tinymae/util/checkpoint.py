"""Checkpoints: one .npz file, no pickle: every parameter (param/<name>), the optimiser's state (opt/<key>),
arrays a run needs later (extra/<name>) and a JSON header (meta) that says what the run was: its kind, model,
settings, photos (data.RunPhotos.record), epoch, random state and history.

Writing is atomic (util/files.write_atomically): a crash leaves the previous checkpoint. Reading trusts nothing
in the file, which may come from anywhere: only a regular file is opened (a pipe would block), once, and the
header and every array are read from that one open file, so a run writing a new checkpoint meanwhile cannot
mix two of them; the header is checked before anything is built from it; each array's shape and type are read
from its own header and checked before its data is decompressed, then its values must be finite.
Every problem is one line: the file, what is wrong, what to do.
"""
import json
import math
import os
import stat
import zipfile

import numpy

from ..config import FinetuneConfig, PretrainConfig, check, model_config
from ..errors import TinymaeError
from .files import write_atomically

FORMAT = 2
SETTINGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


def save_checkpoint(path, header, params, optimizer_state=None, extra=None):
    """Write the header (a dict) and host copies of the arrays to `path`, atomically."""
    from ..backend import to_numpy
    arrays = {f"param/{name}": to_numpy(v) for name, v in params.items()}
    arrays.update({f"opt/{k}": numpy.asarray(to_numpy(v)) for k, v in (optimizer_state or {}).items()})
    arrays.update({f"extra/{k}": numpy.asarray(v) for k, v in (extra or {}).items()})
    arrays["meta"] = numpy.array(json.dumps({"format": FORMAT, **header}))
    write_atomically(path, lambda f: numpy.savez(f, **arrays))


class Checkpoint:
    """An open checkpoint: `header` (checked), and read(shapes) for its arrays.

        with Checkpoint(path) as ckpt:
            model = build(ckpt.header)
            arrays = ckpt.read({"param/" + name: p.shape for name, p in model.params.items()})
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            mode = os.stat(self.path).st_mode
            if stat.S_ISDIR(mode) or not stat.S_ISREG(mode):
                raise self.error("is a folder or a special file" if stat.S_ISDIR(mode) else "is not a regular file")
            self.file = open(self.path, "rb")
        except FileNotFoundError:
            raise TinymaeError(f"no checkpoint at {self.path}") from None
        except PermissionError:
            raise TinymaeError(f"cannot read the checkpoint {self.path}: permission denied; "
                               "fix its permissions") from None
        try:
            self.zip = zipfile.ZipFile(self.file)
            self.names = {n[:-4] for n in self.zip.namelist() if n.endswith(".npy")}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            self.file.close()
            raise self.error(f"is not an .npz archive ({one_line(e)})") from None
        if "meta" not in self.names:
            raise self.error("holds no 'meta' header")
        meta = self._array("meta", (), "U", max_bytes=2 ** 28)
        try:
            self.header = json.loads(str(meta))
        except (ValueError, RecursionError) as e:
            raise self.error(f"has a header that is not JSON ({one_line(e)})") from None
        check_header(self.header, self.error)

    def error(self, what):
        return TinymaeError(f"{self.path} {what}; it is not a checkpoint this tinymae wrote (or it was edited): use "
                            "the checkpoint a training run wrote")

    def read(self, shapes):
        """{key: host array} for each key of `shapes` ({"param/x": (3, 4), ...}; a shape of None: any shape of at
        most 1 GB), each checked before its data is read, and finite."""
        missing = sorted(k for k in shapes if k not in self.names)
        if missing:
            raise self.error(f"lacks {', '.join(missing[:5])}")
        return {key: self._array(key, shape, "fiub") for key, shape in shapes.items()}

    def _array(self, key, shape, kinds, max_bytes=2 ** 30):
        npy = numpy.lib.format
        try:
            with self.zip.open(key + ".npy") as member:
                read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
                found, _, dtype = read_header[npy.read_magic(member)](member)
                size = math.prod(found) * dtype.itemsize
                if (shape is not None and tuple(found) != tuple(shape)) or dtype.kind not in kinds or size > max_bytes:
                    raise self.error(f"has {key} of {dtype} {tuple(found)}, where the model needs "
                                     f"{'numbers' if shape is None else tuple(shape)}")
            with self.zip.open(key + ".npy") as member:
                value = numpy.lib.format.read_array(member, allow_pickle=False)
        except TinymaeError:
            raise
        except Exception as e:  # a damaged archive fails in many ways: BadZipFile, zlib.error, EOFError, ...
            raise self.error(f"has an array {key} that cannot be read ({one_line(e)})") from None
        if value.dtype.kind == "f" and not numpy.isfinite(value).all():
            raise TinymaeError(f"{self.path}: {key} holds NaN or infinite values (a diverged run, or a damaged "
                               "file); use an earlier checkpoint, or train again")
        return value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()
        self.file.close()


def one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return "it holds Python objects, which a checkpoint never does" if "pickle" in text else text


def check_header(h, error):
    """Raise error(...) unless the header is one this tinymae wrote: every field a command reads, of its type."""
    def need(ok, what):
        if not ok:
            raise error(f"has {what}")

    def numbers(values, n=None):
        return isinstance(values, list) and (n is None or len(values) == n) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)

    need(isinstance(h, dict), "a header that is not a JSON object")
    need(h.get("format") == FORMAT, f"checkpoint format {h.get('format')!r}, and this tinymae reads {FORMAT} (older "
                                    "checkpoints need tinymae 0.1)")
    need(h.get("kind") in SETTINGS and isinstance(h.get("config"), dict) and isinstance(h.get("settings"), dict),
         "no kind, model config or settings")
    try:
        config = model_config(h.get("arch"), h["config"])
        settings = SETTINGS[h["kind"]](**{k: v for k, v in h["settings"].items()
                                          if k in SETTINGS[h["kind"]].__dataclass_fields__})
        check(settings)
    except (TinymaeError, TypeError) as e:
        raise error(f"settings this tinymae cannot use ({one_line(e)})") from None
    d = h.get("data")
    need(isinstance(d, dict) and isinstance(d.get("files"), list) and all(isinstance(f, str) for f in d["files"]),
         "no record of its photos")
    n = len(d["files"])
    need(numbers(d.get("labels"), n) and isinstance(d.get("hashes"), list) and len(d["hashes"]) == n
         and numbers(d.get("val")) and all(0 <= v < n for v in d["val"]) and isinstance(d.get("classes"), list)
         and isinstance(d.get("root"), str) and isinstance(d.get("fingerprint"), str), "a damaged record of its photos")
    need(numbers(d.get("mean"), 3) and numbers(d.get("std"), 3) and min(d["std"]) > 0,
         f"a normalisation of {d.get('mean')!r} / {d.get('std')!r}, not three finite numbers each (std above 0)")
    need(isinstance(d.get("load_size"), int) and d["load_size"] >= config.img_size, "a load_size below img_size")
    for key in ("n_train", "n_val"):
        need(isinstance(d.get(key), int) and d[key] >= 1, f"a data {key} of {d.get(key)!r}")
    need(isinstance(h.get("epoch"), int) and h["epoch"] >= 0 and isinstance(h.get("run_id"), str),
         "no epoch or run id")
    need(isinstance(h.get("history"), list) and all(isinstance(e, dict) and numbers(list(e.values()))
                                                    for e in h["history"]), "a history that is not numbers per epoch")
    need(numbers([h.get("wall_time_s")]), "no wall time")
    try:
        numpy.random.default_rng(0).bit_generator.state = h.get("rng_state")  # NumPy is the judge of a state
    except Exception as e:
        raise error(f"a random generator state NumPy refuses ({type(e).__name__})") from None
    if h["kind"] == "finetune":
        need(isinstance(h.get("classes"), list) and len(h["classes"]) >= 2 and isinstance(h.get("pretraining"), dict),
             "no classes or no record of its pre-training")


def read_checkpoint(path, kind=None, optimizer=False):
    """The model a checkpoint holds -> (header, model with its weights, {opt/..., extra/...} host arrays), all read
    from one open file. kind: the kind of run it must be ("pretrain" or "finetune"); optimizer: read AdamW's state."""
    from ..backend import asarray
    from ..model import build_model
    from ..model.models_vit import ViTClassifier
    with Checkpoint(path) as ckpt:
        h = ckpt.header
        if kind is not None and h["kind"] != kind:
            what = {"pretrain": "a pre-training run's checkpoint (python -m tinymae.pretrain writes checkpoint.npz)",
                    "finetune": "a fine-tuned classifier (python -m tinymae.finetune writes classifier.npz)"}
            raise TinymaeError(f"{path} holds {what[h['kind']]}; this needs {what[kind]}")
        model = build_model(h["arch"], h["config"])
        if h["kind"] == "finetune":
            model = ViTClassifier(model, len(h["classes"]), h["settings"]["label_smoothing"],
                                  trainable_blocks=h["settings"].get("trainable_blocks"))
        shapes = {f"param/{name}": p.shape for name, p in model.params.items()}
        if optimizer:
            shapes["opt/t"] = ()
            shapes.update({f"opt/{m}.{name}": model.params[name].shape
                           for name in getattr(model, "trainable", model.params) for m in "mv"})
        if h["kind"] == "pretrain":
            shapes["extra/mean_patch"] = (model.config.num_patches, model.config.patch_dim)
        arrays = ckpt.read(shapes)
    for name, p in model.params.items():
        p[...] = asarray(arrays.pop(f"param/{name}"), dtype=p.dtype)
    return h, model, arrays
