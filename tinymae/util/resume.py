"""Where a pre-training run starts: from scratch in an empty folder, over an old run (--overwrite), or from
its own checkpoint (--resume); and what a finished run is.

A run folder holds one run. Its outputs (OUTPUTS) belong together: the checkpoint and metrics.json carry
the run's id, and a run is finished only when its last checkpoint has trained every epoch and all of its
outputs exist with that id. metrics.json is written last, so a run stopped between its last checkpoint and
its results is continued by --resume, which redraws what is missing.
"""
import json
import os
import uuid

from ..config import MODEL_CONFIGS, PretrainConfig, flag_name
from .checkpoint import CheckpointError, read_checkpoint
from .cli import resumable_settings

OUTPUTS = ("checkpoint.npz", "metrics.json", "loss.png", "reconstructions.png")


class ResumeError(Exception):
    """A run that cannot start or continue in its folder, with what to do (one line for the user)."""


def checkpoint_path(cfg):
    return os.path.join(cfg.out, "checkpoint.npz")


def expected_outputs(cfg):
    """The files a finished run of cfg has: no reconstructions.png with --figure-images 0."""
    return [name for name in OUTPUTS if name != "reconstructions.png" or cfg.figure_images > 0]


def new_run_id():
    return uuid.uuid4().hex[:12]


def finished_metrics(cfg, run_id):
    """metrics.json of the run `run_id` in cfg.out if every output of it is there, else None."""
    try:
        with open(os.path.join(cfg.out, "metrics.json")) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("run_id") != run_id:
        return None  # another run's results (or an older tinymae's, which wrote no id): redrawn
    if not all(os.path.exists(os.path.join(cfg.out, name)) for name in expected_outputs(cfg)):
        return None
    return metrics


def remove_old_outputs(cfg):
    """--overwrite: the old run's outputs go before the new run starts, so nothing of it can be mistaken for
    the new run's (a crash before the new run's first checkpoint leaves an empty folder, not the old run)."""
    for name in OUTPUTS:
        path = os.path.join(cfg.out, name)
        if os.path.exists(path):
            os.remove(path)


def start_or_resume(cfg, typed):
    """The run's settings: new ones, or a checkpoint's with the flags a resumed run may change.

    cfg: the command line's PretrainConfig (cfg.out resolved); typed: every flag the user typed ({name:
    value}, model settings included). -> (cfg, model settings, (header, arrays) of the checkpoint or None).
    Raises ResumeError for a folder that holds another run, a checkpoint that is not a pre-training run's,
    or flags that would change the resumed run's model or recipe."""
    path = checkpoint_path(cfg)
    if not cfg.resume:
        existing = [name for name in OUTPUTS if os.path.exists(os.path.join(cfg.out, name))]
        if existing and not cfg.overwrite:
            raise ResumeError(f"{cfg.out} already holds a run ({', '.join(existing)}); training again would "
                              "replace it. Continue it with --resume, choose another --out, or pass --overwrite "
                              "to start over")
        model_typed = {k: v for k, v in typed.items() if k in MODEL_CONFIGS[cfg.arch].__dataclass_fields__}
        return cfg, model_typed, None
    try:
        header, arrays = read_checkpoint(path)
    except CheckpointError as e:
        raise ResumeError(f"cannot resume: {e}. Train without --resume first (same --out)") from None
    saved, saved_model = header.get("settings"), header.get("config")
    if header["arch"] not in MODEL_CONFIGS or not isinstance(saved, dict) or "epoch" not in header:
        what = "a fine-tuned classifier" if header["arch"] not in MODEL_CONFIGS else "no run settings"
        raise ResumeError(f"cannot resume: {path} holds {what}, not a pre-training run of python -m "
                          "tinymae.pretrain; --resume continues the checkpoint.npz a pre-training run wrote")
    # A resumed run is the checkpoint's run: its recipe and model, with only the flags marked
    # on_resume="new" in config.PretrainConfig taken from this command line.
    may_change = resumable_settings(PretrainConfig)
    recorded = {**saved, **saved_model}
    model_fields = {**MODEL_CONFIGS["mlp"].__dataclass_fields__, **MODEL_CONFIGS["vit"].__dataclass_fields__}
    changed = [k for k, v in typed.items() if k not in may_change and k in recorded
               and recorded[k] != (list(v) if isinstance(v, tuple) else v)]  # JSON gives lists for tuples
    other_arch = [k for k in typed if k in model_fields and k not in recorded]
    if changed or other_arch:
        shown = [f"{flag_name(k)} {typed[k]} (the run has {recorded[k]})" for k in sorted(changed)]
        shown += [f"{flag_name(k)} (not a setting of its {header['arch']} model)" for k in sorted(other_arch)]
        raise ResumeError(f"--resume continues {path} with its own settings, and this command changes "
                          f"{', '.join(shown)}. Drop those flags to continue it, or start a new run in another "
                          f"--out. A resumed run may change: {', '.join(flag_name(k) for k in sorted(may_change))}")
    settings = {k: v for k, v in saved.items() if k in PretrainConfig.__dataclass_fields__}
    settings.update({k: v for k, v in typed.items() if k in may_change})
    settings.update(out=cfg.out, resume=True)  # where this command found the checkpoint
    resumed = PretrainConfig(**settings)
    try:
        resumed.validate()
    except ValueError as e:
        raise ResumeError(str(e)) from None
    return resumed, saved_model, (header, arrays)
