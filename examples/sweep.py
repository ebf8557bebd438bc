"""What the experiment scripts share: pre-train a named variant in its own folder, probe it once, fine-tune it,
read it all back.

Each variant is a dict of settings, {name: value} for fields of tinymae.config.PretrainConfig and of the
model's config, exactly as the command line would set them. A variant trains in <out>/<name>; a folder
with a metrics.json is finished and reused, one with only a checkpoint (an interrupted run) is resumed,
and a folder trained with other settings is refused, so that a sweep can be stopped and started again
and never reports a number from the wrong run.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a clone without installing tinymae

from tinymae.checkpoint import read_checkpoint  # noqa: E402
from tinymae.config import FinetuneConfig, PretrainConfig, model_config, split_settings  # noqa: E402
from tinymae.finetune import default_out, finetune  # noqa: E402
from tinymae.pretrain import pretrain  # noqa: E402
from tinymae.probe import run_probe  # noqa: E402

DEFAULT_DATA = os.path.join("..", "shared", "data", "catsdogs")  # where the README's commands find the photos


def recorded_settings(run_dir):
    """Every setting a run was trained with (recipe and model), from metrics.json or its checkpoint; or None."""
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
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
        sys.exit(f"error: {run_dir} was trained with other settings: {', '.join(different)}. Delete that folder "
                 "to train it again, or choose another --out.")


def pretrain_variant(run_dir, data, settings, progress=False):
    """The metrics of the variant `settings` trained in run_dir: read back if finished, else trained now
    (or resumed). -> (metrics dict, whether it was trained now)."""
    check_reusable(run_dir, settings)
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            return json.load(f), False
    recipe, model_settings = split_settings(settings, PretrainConfig)
    resume = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
    cfg = PretrainConfig(**{**recipe, "data": data, "out": run_dir, "progress": progress, "resume": resume})
    cfg.validate()
    model_config(cfg.arch, model_settings).validate()
    metrics = pretrain(cfg, model_settings, {**recipe, **model_settings})
    if metrics is None:  # a resumed run that had finished its epochs before: read what it wrote
        with open(metrics_path) as f:
            metrics = json.load(f)
    return metrics, True


def probe_variant(run_dir, data, seeds=3, baselines=False, per_class=None):
    """The run's linear-probe report, computed once and cached as probe.json in its folder."""
    probe_path = os.path.join(run_dir, "probe.json")
    if os.path.exists(probe_path):
        with open(probe_path) as f:
            report = json.load(f)
        has_baselines = any(r["encoder"] == "raw pixels" for r in report["results"])
        if len(report["seeds"]) == seeds and (has_baselines or not baselines):
            return report  # otherwise probed with other settings: probe again
    report = run_probe(os.path.join(run_dir, "checkpoint.npz"), data, seeds=tuple(range(seeds)), progress=False,
                       baselines=baselines, per_class=per_class)
    with open(probe_path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def probe_row(report, encoder, features):
    """One row of a probe report ({"encoder", "features", "linear_probe_mean", ...}), or None."""
    for row in (report or {}).get("results", []):
        if row["encoder"] == encoder and row["features"] == features:
            return row
    return None


def finetune_variant(checkpoint, data, settings, progress=False):
    """The result of fine-tuning `checkpoint` with `settings` ({name: value} of FinetuneConfig fields): read
    back from its result.json if it finished before, else run now. A run that was interrupted left no
    result (fine-tuning saves at its end) and starts again. -> (result dict, whether it ran now)."""
    cfg = FinetuneConfig(**{**settings, "checkpoint": checkpoint, "data": data, "progress": progress})
    cfg.validate()
    out = cfg.out or default_out(cfg)
    result_path = os.path.join(out, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
        saved = result["settings"]
        different = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in settings.items() if saved.get(k) != v]
        if different:
            sys.exit(f"error: {out} was fine-tuned with other settings: {', '.join(different)}. Delete that folder "
                     "to run it again.")
        return result, False
    cfg.out, cfg.overwrite = out, True  # a folder without result.json holds at most an interrupted run's leftovers
    finetune(cfg)
    with open(result_path) as f:
        return json.load(f), True
