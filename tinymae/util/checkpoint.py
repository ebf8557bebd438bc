"""Checkpoints: one .npz file (no pickle) holding the weights, the optimiser state and a JSON header.

    param/<name>    every model parameter
    opt/<key>       the AdamW moments (m.<name>, v.<name>) and step count t
    extra/<name>    other arrays the run needs later (the mean-patch baseline, ...)
    meta            JSON: format, arch, model config, epoch, step, settings, data statistics, RNG state,
                    per-epoch history

Files are written atomically: to a temporary file in the same folder, flushed to disk, then renamed
over the old one. A crash in the middle of a save leaves the previous checkpoint intact.

Loading trusts nothing in the file, since a checkpoint may come from anywhere:
  * only a regular file is opened (a named pipe would block the reader forever);
  * no pickle (allow_pickle=False), so loading never runs code from the file;
  * the header is checked before anything is built from it: the format, a known architecture, a model
    config that passes the config's own validate(), and (in a training run's checkpoint) the data
    statistics, the run settings and the random state that evaluate, probe and --resume read;
  * arrays are read lazily, one member when it is asked for, and a parameter's shape is checked from
    its .npy header before its data is decompressed: a small file cannot make us unpack gigabytes of
    members nobody uses.
Every problem is a CheckpointError whose message is one line: the file, what is wrong, what to do.
"""
import json
import math
import os
import stat
import zipfile
from collections.abc import Mapping

import numpy  # host-side: files

from ..backend import asarray, to_numpy, xp
from ..config import MODEL_CONFIGS, PretrainConfig, model_config
from ..model.build import build_model
from ..model.mae_vit import MaskedAutoencoderViT
from ..model.models_vit import ViTClassifier
from .files import write_atomically

FORMAT = 1

# The model config each architecture's header carries: the two MAEs, and the classifier that finetune.py
# builds on a ViT MAE's encoder (models_vit.ViTClassifier), which keeps that ViT's config.
CONFIG_OF_ARCH = {"mlp": "mlp", "vit": "vit", "vit_classifier": "vit"}

# The JSON header grows by one short record per epoch; thousands of epochs stay far below this. A bigger
# 'meta' member is not ours, and reading it could exhaust the memory.
MAX_HEADER_BYTES = 64 * 2 ** 20


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with what is wrong and what to do."""


def save_checkpoint(path, model, optimizer=None, meta=None, extra=None):
    """Write model (+ optimiser state, meta dict, extra host arrays) to `path` atomically."""
    arrays = {f"param/{name}": to_numpy(value) for name, value in model.params.items()}
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            arrays[f"opt/{key}"] = numpy.asarray(to_numpy(value))
    for name, value in (extra or {}).items():
        arrays[f"extra/{name}"] = numpy.asarray(value)
    header = {"format": FORMAT, "arch": model.arch, "config": model.config.to_dict(), **(meta or {})}
    arrays["meta"] = numpy.array(json.dumps(header))
    write_atomically(path, lambda f: numpy.savez(f, **arrays))


# ----------------------------------------------------------------------------------------------
# reading: the file, one member, the header

def _open_archive(path):
    """The checkpoint file as an open zip archive (an .npz is a zip of .npy files)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read the checkpoint {path} ({e.strerror or e}); check the path and its "
                              "permissions") from None
    # Checked before opening: open() on a named pipe waits for a writer that may never come.
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"{path} is a folder, not a checkpoint; pass the checkpoint.npz file inside it")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is not a regular file (a pipe, a socket or a device); pass the "
                              "checkpoint.npz file a training run wrote")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable tinymae checkpoint: it is not an .npz archive of arrays "
                              f"({_one_line(e)}); pass the checkpoint.npz file a training run wrote") from None


def _one_line(error):
    """An exception's message on one line (some span several), without NumPy's advice to allow pickle."""
    text = " ".join(str(error).split()) or type(error).__name__
    if "pickle" in text:
        return "it holds Python objects, which a tinymae checkpoint never does"
    return text


def _read_member(path, key, header_only=False):
    """One array of the checkpoint, as a host NumPy array; header_only: just its (shape, dtype), read from
    the .npy header without decompressing the data."""
    with _open_archive(path) as archive:
        try:
            with archive.open(key + ".npy") as member:
                if not header_only:
                    return numpy.lib.format.read_array(member, allow_pickle=False)
                version = numpy.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = numpy.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = numpy.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f".npy format version {version}, which tinymae does not write")
                return shape, dtype
        except Exception as e:  # a damaged archive fails in many ways: BadZipFile, zlib.error, EOFError, ...
            raise CheckpointError(f"{path}: its array {key!r} cannot be read ({_one_line(e)}); the file is "
                                  "damaged or was not written by tinymae") from None


class CheckpointArrays(Mapping):
    """The arrays of a checkpoint, {"param/<name>" | "opt/<key>" | "extra/<name>": host array}, each read
    from the file only when it is asked for (and again each time: keep what you need)."""

    def __init__(self, path, keys):
        self.path = path
        self._keys = list(keys)

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return _read_member(self.path, key)

    def __contains__(self, key):
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def shape(self, key):
        """The shape of an array, read from its header alone (its data is not decompressed)."""
        return _read_member(self.path, key, header_only=True)[0]


def read_checkpoint(path):
    """-> (header dict, CheckpointArrays) without building anything; CheckpointError for a bad file.

    The header is validated here (check_header); the arrays are read later, when they are used."""
    path = os.fspath(path)
    with _open_archive(path) as archive:
        names = archive.namelist()
    keys = [name[:-len(".npy")] for name in names if name.endswith(".npy")]
    if "meta" not in keys:
        raise CheckpointError(f"{path} is not a tinymae checkpoint: it holds no 'meta' header (an .npz of other "
                              "arrays?); pass the checkpoint.npz file a training run wrote")
    shape, dtype = _read_member(path, "meta", header_only=True)
    if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path} is not a tinymae checkpoint: its 'meta' member is {dtype} {shape}, not a "
                              "JSON text")
    try:
        header = json.loads(str(_read_member(path, "meta")))
    except (ValueError, RecursionError) as e:  # RecursionError: arrays nested thousands deep
        raise CheckpointError(f"{path} is not a tinymae checkpoint: its header is not valid JSON ({_one_line(e)})"
                              ) from None
    check_header(header, path)
    return header, CheckpointArrays(path, [key for key in keys if key != "meta"])


def check_header(header, path="checkpoint"):
    """Raise CheckpointError unless `header` is one tinymae can build and run from.

    Always: format, a known arch, a valid model config. In a pre-training run's checkpoint (an MAE with
    "settings"), also the parts that evaluate, probe and --resume read: the run settings, the data
    statistics, the epoch, the history, the wall time and the random generator's state. (finetune.py
    checks the rest of its classifier's header itself.)"""
    def bad(what):
        return CheckpointError(f"{path} has {what}; the file was not written by this tinymae or was edited. "
                               "Use the checkpoint.npz a training run wrote")

    if not isinstance(header, dict):
        raise bad(f"a header that is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {header.get('format')!r}, this tinymae reads {FORMAT}")
    arch = header.get("arch")
    if not isinstance(arch, str) or arch not in CONFIG_OF_ARCH:
        raise bad(f"the unknown architecture {arch!r} (tinymae builds {', '.join(CONFIG_OF_ARCH)})")
    config = header.get("config")
    if not isinstance(config, dict):
        raise bad("no model config" if config is None else f"a model config that is a JSON {type(config).__name__}")
    try:
        model_cfg = model_config(CONFIG_OF_ARCH[arch], config)
        model_cfg.validate()
    except (ValueError, TypeError) as e:  # TypeError: a value of the wrong type, e.g. "6" for a patch size
        raise bad(f"a model config tinymae cannot build ({_one_line(e)})") from None
    if arch not in MODEL_CONFIGS:
        return
    if "data" in header or "settings" in header:
        _check_data(header.get("data"), model_cfg.img_size, bad)
    if "settings" in header:
        _check_training_state(header, arch, bad)


def _check_data(data, img_size, bad):
    """The training data's statistics, which evaluate and probe normalise with."""
    if not isinstance(data, dict):
        raise bad("no data statistics (the header's 'data' is missing or not an object)")
    load_size = data.get("load_size")
    if not isinstance(load_size, int) or isinstance(load_size, bool) or load_size < img_size:
        raise bad(f"a load_size of {load_size!r}, not a whole number of at least img_size {img_size}")
    for name in ("mean", "std"):
        values = data.get(name)
        if (not isinstance(values, list) or len(values) != 3
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            raise bad(f"a data {name} of {values!r}, not three finite numbers (one per colour channel)")
    if not all(v > 0 for v in data["std"]):
        raise bad(f"a data std of {data['std']!r}; every channel's std must be above 0 (images are divided by it)")


def _check_training_state(header, arch, bad):
    """What a resumed run (pretrain.py) and the probe read from a pre-training run's checkpoint."""
    settings = header["settings"]
    if not isinstance(settings, dict):
        raise bad("run settings that are not a JSON object")
    if settings.get("arch", arch) != arch:
        raise bad(f"run settings for the {settings.get('arch')!r} model in a checkpoint of the {arch!r} model")
    known = {k: v for k, v in settings.items() if k in PretrainConfig.__dataclass_fields__}
    try:
        PretrainConfig(**known).validate()
    except (ValueError, TypeError) as e:
        raise bad(f"run settings tinymae cannot use ({_one_line(e)})") from None
    epoch = header.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad(f"an epoch of {epoch!r}, not a whole number of 0 or more")
    if not isinstance(header.get("history"), list):
        raise bad("no per-epoch history (a list)")
    wall_time = header.get("wall_time_s")
    if not isinstance(wall_time, (int, float)) or isinstance(wall_time, bool) or not math.isfinite(wall_time):
        raise bad(f"a wall_time_s of {wall_time!r}, not a number")
    try:
        # The one authority on what a valid state is: the generator itself (pretrain uses host_rng's).
        numpy.random.default_rng(0).bit_generator.state = header.get("rng_state")
    except Exception as e:  # TypeError, ValueError, KeyError, OverflowError: all mean "not a state"
        raise bad(f"a random generator state that NumPy refuses ({type(e).__name__}: {_one_line(e)})") from None


# ----------------------------------------------------------------------------------------------
# building from a checkpoint

def load_checkpoint(path):
    """Rebuild the model from the checkpoint alone and load its weights (shapes checked).

    Returns (model, header, arrays); arrays (CheckpointArrays) reads the other members (opt/..., extra/...)
    when they are asked for.
    """
    header, arrays = read_checkpoint(path)
    if header["arch"] not in MODEL_CONFIGS:
        raise CheckpointError(f"{path} holds a {header['arch']} model, not a masked autoencoder; pass the "
                              "checkpoint.npz of a pre-training run (python -m tinymae.pretrain)")
    model = build_model(header["arch"], header["config"])
    load_params(model, arrays, path)
    return model, header, arrays


def load_params(model, arrays, path="checkpoint"):
    """Copy param/<name> arrays into model.params, checking names and shapes.

    arrays: CheckpointArrays (each shape is checked from its header, before its data is read) or a plain
    dict of host arrays."""
    saved = {key[len("param/"):] for key in arrays if key.startswith("param/")}
    missing, unexpected = sorted(set(model.params) - saved), sorted(saved - set(model.params))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the {model.arch} model: missing {missing}, unexpected {unexpected}")
    for name, current in model.params.items():
        key = f"param/{name}"
        shape = arrays.shape(key) if isinstance(arrays, CheckpointArrays) else arrays[key].shape
        if tuple(shape) != tuple(current.shape):
            raise CheckpointError(f"{path}: parameter {name!r} has shape {tuple(shape)}, the model expects "
                                  f"{tuple(current.shape)}. Was it saved with other model settings?")
        value = arrays[key]
        if value.dtype.kind not in "fiu":
            raise CheckpointError(f"{path}: parameter {name!r} holds {value.dtype} values, not numbers")
        value = asarray(value, dtype=current.dtype)
        if not bool(xp.isfinite(value).all()):
            raise CheckpointError(f"{path}: parameter {name!r} holds NaN or infinite values (weights of a diverged "
                                  "run, or a damaged file); use an earlier checkpoint, or train again")
        current[...] = value  # in place: the array may be a view into an optimiser's flat buffer (fast/optim.py)


def optimizer_state(arrays):
    """The opt/<key> arrays of a checkpoint as the dict AdamW.load_state_dict takes (only those are read)."""
    state = {key[len("opt/"):]: arrays[key] for key in arrays if key.startswith("opt/")}
    if "t" not in state:
        raise CheckpointError("the checkpoint holds no optimiser state, so training cannot resume from it")
    if state["t"].shape != () or state["t"].dtype.kind not in "iu" or int(state["t"]) < 0:
        raise CheckpointError(f"the checkpoint's optimiser step count is {state['t'].dtype} {state['t'].shape}, "
                              "not a whole number of 0 or more, so training cannot resume from it")
    return state


def load_classifier(path):
    """A fine-tuned classifier saved by `finetune` (<out>/classifier.npz) -> (ViTClassifier, header).

    header["data"] holds the normalisation (mean, std) its images need."""
    header, arrays = read_checkpoint(path)
    if header.get("arch") != ViTClassifier.arch:
        raise CheckpointError(f"{path} holds a {header.get('arch')} model, not a fine-tuned ViT classifier "
                              "(python -m tinymae.finetune writes <out>/classifier.npz)")
    try:
        config = model_config("vit", header["config"])
        model = ViTClassifier(MaskedAutoencoderViT(config), num_classes=header["num_classes"],
                              smoothing=header["label_smoothing"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an unusable header ({type(e).__name__}: {e})") from None
    load_params(model, arrays, path)
    return model, header
