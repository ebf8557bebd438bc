"""What the research scripts share: pre-train a named variant in its own folder, probe it once, fine-tune it,
read it all back.

Each variant is a dict of settings, {name: value} for fields of tinymae.config.PretrainConfig and of the
model's config, exactly as the command line would set them. A variant trains in <out>/<name>; a folder
with a metrics.json is finished and reused, one with only a checkpoint (an interrupted run) is resumed,
and a folder trained with other settings is refused, so that a sweep can be stopped and started again
and never reports a number from the wrong run.

The scripts import tinymae as installed (pip install -e .), like any other user of the package.
"""
import json
import os
import statistics
import time

from tinymae.config import FinetuneConfig, PretrainConfig, model_config
from tinymae.finetune import FinetuneError, default_out, finetune
from tinymae.pretrain import TrainingError, pretrain
from tinymae.probe import run_probe
from tinymae.util.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from tinymae.util.cli import split_settings
from tinymae.util.datasets import DataError
from tinymae.util.files import FolderBusy, write_atomically
from tinymae.util.resume import ResumeError

DEFAULT_DATA = os.path.join("data", "catsdogs")  # where the README's main command puts the photos


class SweepError(Exception):
    """A run folder that cannot be reused or a setting that cannot run, with what to do (one line)."""


# Every error a run can end with, which a research script shows as one line.
RUN_ERRORS = (SweepError, DataError, TrainingError, ResumeError, FinetuneError, CheckpointError, FolderBusy)


def read_json(path):
    """The JSON object in `path`, or None when the file is missing or unreadable (a truncated write by an
    older version, a hand edit): such a file is redone, never trusted."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_text(path, text):
    """Write a page atomically (files.write_atomically)."""
    write_atomically(path, lambda f: f.write(text.encode()))


def write_json(path, value):
    """Write atomically (files.write_atomically): a crash leaves the previous file or none, never half of one."""
    text = json.dumps(value, indent=2, allow_nan=False)  # NaN is not JSON: fail here, not in a reader
    write_atomically(path, lambda f: f.write(text.encode()))


def recorded_settings(run_dir):
    """Every setting a run was trained with (recipe and model), from metrics.json or its checkpoint; or None."""
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    if metrics is not None:
        return {**metrics["config"], **metrics["settings"]}
    checkpoint_path = os.path.join(run_dir, "checkpoint.npz")
    if os.path.exists(checkpoint_path):
        header, _ = read_checkpoint(checkpoint_path)
        return {**header["config"], **header["settings"]}
    return None


def check_reusable(run_dir, settings):
    """Refuse a run folder trained with other settings: its numbers would be silently wrong."""
    saved = recorded_settings(run_dir)
    if saved is None:
        return
    different = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in settings.items()
                 if k in saved and saved[k] != (list(v) if isinstance(v, tuple) else v)]
    if different:
        raise SweepError(f"{run_dir} was trained with other settings: {', '.join(different)}. Delete that folder "
                         "to train it again, or choose another --out")


def pretrain_variant(run_dir, data, settings, progress=False):
    """The metrics of the variant `settings` trained in run_dir: read back if finished, else trained now
    (or resumed). -> (metrics dict, whether it was trained now)."""
    check_reusable(run_dir, settings)
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(metrics_path)
    if metrics is not None:
        return metrics, False
    recipe, model_settings = split_settings(settings, PretrainConfig)
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
    cfg = PretrainConfig(**{**recipe, "data": data, "out": run_dir, "progress": progress, "resume": resume})
    try:
        cfg.validate()
        model_config(cfg.arch, model_settings).validate()
    except ValueError as e:
        raise SweepError(f"{run_dir}: {e}") from None
    metrics = pretrain(cfg, {**recipe, **model_settings})
    if metrics is None:  # a resumed run that had finished its epochs before: read what it wrote
        metrics = read_json(metrics_path)
    return metrics, True


def probe_variant(run_dir, data, seeds=3, baselines=False, per_class=None):
    """The run's linear-probe report, computed once and kept as probe.json in its folder (with the seconds
    it took)."""
    probe_path = os.path.join(run_dir, "probe.json")
    report = read_json(probe_path)
    if report is not None:
        has_baselines = any(r["encoder"] == "raw pixels" for r in report["results"])
        if len(report["seeds"]) == seeds and (has_baselines or not baselines):
            return report  # otherwise probed with other settings: probe again
    t0 = time.perf_counter()
    report = run_probe(os.path.join(run_dir, "checkpoint.npz"), data, seeds=tuple(range(seeds)), progress=False,
                       baselines=baselines, per_class=per_class)
    report["seconds"] = time.perf_counter() - t0
    write_json(probe_path, report)
    return report


def probe_row(report, encoder, features):
    """One row of a probe report ({"encoder", "features", "linear_probe_mean", ...}), or None."""
    for row in (report or {}).get("results", []):
        if row["encoder"] == encoder and row["features"] == features:
            return row
    return None


def finetune_out(checkpoint, data, settings):
    """The folder a fine-tuning of `checkpoint` with `settings` writes to (finetune.default_out)."""
    cfg = FinetuneConfig(**{**settings, "checkpoint": checkpoint, "data": data})
    return cfg.out or default_out(cfg)


def finished_finetune(checkpoint, data, settings):
    """The result of that fine-tuning if it finished (its result.json), else None."""
    out = finetune_out(checkpoint, data, settings)
    result = read_json(os.path.join(out, "result.json"))
    if result is None:
        return None
    saved = result["settings"]
    different = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in settings.items() if saved.get(k) != v]
    if different:
        raise SweepError(f"{out} was fine-tuned with other settings: {', '.join(different)}. Delete that folder "
                         "to run it again")
    return result


def finetune_variant(checkpoint, data, settings, progress=False):
    """The result of fine-tuning `checkpoint` with `settings` ({name: value} of FinetuneConfig fields): read
    back from its result.json if it finished before, else run now. A run that was interrupted left no
    result (fine-tuning saves at its end) and starts again. -> (result dict, whether it ran now)."""
    result = finished_finetune(checkpoint, data, settings)
    if result is not None:
        return result, False
    cfg = FinetuneConfig(**{**settings, "checkpoint": checkpoint, "data": data, "progress": progress})
    try:
        cfg.validate()
    except ValueError as e:
        raise SweepError(str(e)) from None
    cfg.out, cfg.overwrite = finetune_out(checkpoint, data, settings), True  # holds at most an interrupted run
    finetune(cfg)
    return read_json(os.path.join(cfg.out, "result.json")), True


TIMING_ROUNDS = 5  # training steps per model, taking turns, for the side-by-side speed measurement


def step_times(out, runs):
    """Seconds per training step of each finished run's model, measured side by side (kept in
    <out>/step_times.json).

    A run's own epoch times depend on whatever else the machine was doing when it trained. Here the
    models take turns, one step each (forward, backward and AdamW on random images of the run's batch size,
    as training runs them), for TIMING_ROUNDS rounds after one warm-up round, so every model meets the same
    load; the median step is reported."""
    cache_path = os.path.join(out, "step_times.json")
    cached = read_json(cache_path)
    if cached is not None and cached.get("runs") == runs and cached.get("rounds") == TIMING_ROUNDS:
        return cached["times"]
    from tinymae import fast
    from tinymae.backend import asarray, host_rng, to_numpy
    from tinymae.model.masking import masking_noise
    models = {}
    for run in runs:
        model, header, _ = load_checkpoint(os.path.join(out, run, "checkpoint.npz"))
        # lr 0: the arithmetic of a real step, without changing the (throw-away) copy of the weights
        optimizer = fast.AdamW(model.params, lr=0.0, no_decay=model.no_decay)
        models[run] = (model, optimizer, fast.runner(model), header["settings"]["batch_size"])
    rng = host_rng(0)
    seconds = {run: [] for run in runs}
    for round_index in range(TIMING_ROUNDS + 1):
        for run, (model, optimizer, runner, batch) in models.items():
            cfg = model.config
            imgs = asarray(rng.standard_normal((batch, 3, cfg.img_size, cfg.img_size)), dtype="float32")
            noise = masking_noise(rng, batch, cfg.num_patches)  # (batch, L)
            t0 = time.perf_counter()
            loss, grads = runner.loss_and_grads(imgs, noise)
            runner.optimizer_step(optimizer, grads)
            to_numpy(loss)  # a copy to the host waits until a GPU has finished the step
            if round_index > 0:  # round 0 warms up: first-call allocations
                seconds[run].append(time.perf_counter() - t0)
    for _, _, runner, _ in models.values():
        runner.close()
    times = {run: {"batch": models[run][3], "step_s": statistics.median(seconds[run])} for run in runs}
    write_json(cache_path, {"runs": runs, "rounds": TIMING_ROUNDS, "times": times})
    return times
