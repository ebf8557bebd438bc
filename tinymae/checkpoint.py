"""Checkpoints: one .npz file (no pickle) holding the weights, the optimiser state and a JSON header.

    param/<name>    every model parameter
    opt/<key>       the AdamW moments (m.<name>, v.<name>) and step count t
    extra/<name>    other arrays the run needs later (the mean-patch baseline, ...)
    meta            JSON: format, arch, model config, epoch, step, settings, data statistics, RNG state,
                    per-epoch history

Files are written atomically: to a temporary file in the same folder, flushed to disk, then renamed
over the old one. A crash in the middle of a save leaves the previous checkpoint intact.
Loading uses allow_pickle=False and checks every array's shape against the model built from the header.
"""
import json
import os

import numpy  # host-side: files

from .backend import asarray, to_numpy
from .files import write_atomically
from .models import build_model

FORMAT = 1


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


def read_checkpoint(path):
    """-> (header dict, {key: host array}) without building anything; clear errors for bad files."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with numpy.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
        header = json.loads(str(arrays.pop("meta")))
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable tinymae checkpoint ({type(e).__name__}: {e})") from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {header.get('format')}, this tinymae reads {FORMAT}")
    return header, arrays


def load_checkpoint(path):
    """Rebuild the model from the checkpoint alone and load its weights (shapes checked).

    Returns (model, header, arrays); arrays holds the remaining host arrays (opt/..., extra/...).
    """
    header, arrays = read_checkpoint(path)
    model = build_model(header["arch"], header["config"])
    load_params(model, arrays, path)
    return model, header, arrays


def load_params(model, arrays, path="checkpoint"):
    """Copy param/<name> arrays into model.params, checking names and shapes."""
    saved = {key[len("param/"):] for key in arrays if key.startswith("param/")}
    missing, unexpected = sorted(set(model.params) - saved), sorted(saved - set(model.params))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match the {model.arch} model: missing {missing}, unexpected {unexpected}")
    for name, current in model.params.items():
        value = arrays[f"param/{name}"]
        if value.shape != current.shape:
            raise CheckpointError(f"{path}: parameter {name!r} has shape {value.shape}, the model expects "
                                  f"{current.shape}. Was it saved with other model settings?")
        model.params[name] = asarray(value, dtype=current.dtype)


def optimizer_state(arrays):
    """The opt/<key> arrays of a checkpoint as the dict AdamW.load_state_dict takes."""
    state = {key[len("opt/"):]: value for key, value in arrays.items() if key.startswith("opt/")}
    if "t" not in state:
        raise CheckpointError("the checkpoint holds no optimiser state, so training cannot resume from it")
    return state
