"""How well do the learned features separate cats from dogs? A linear probe and a k-NN classifier.

    python -m tinymae.probe --checkpoint runs/vit/checkpoint.npz --data data/catsdogs

The encoder is frozen. Features are extracted once, without masking where the architecture allows:
  * ViT: every patch is visible (mask ratio 0); features are the mean of the encoded patch tokens after
    the final LayerNorm ("mean"), and the cls token ("cls") when the model has one.
  * MLP: its encoder takes exactly K = 16 visible tokens (its first layer is K * 64 wide), so it cannot
    see a whole image at once. We split the 64 patches into 4 fixed, disjoint sets of 16 (a random
    partition with a fixed seed), encode the image once per set, and average the four latents: every
    patch is seen exactly once, and the feature does not depend on one lucky mask.
Features are standardised with training-split statistics. Beside them, as the paper's baselines:
the same probe on raw pixels and on a randomly initialised encoder of the same shape.

The probe is L2-regularised logistic regression written with the engine's own pieces: linear_forward
and the gradient-checked bce_logits loss, fitted full-batch with Adam (a smooth, convex problem; Adam
converges in a few hundred steps here and needs no line search). The L2 strength is chosen from a grid
by accuracy on a held-out fifth of the training split, then the probe is refitted on the whole
training split and scored on the validation split. Repeating with a few seeds (of that inner split and
the probe's initialisation) gives mean +- std. k-NN: cosine similarity, k = 20 (or every training image
when there are fewer), majority vote.

How small a folder can be: the probe splits it as the pre-training run did (the checkpoint's
--val-fraction and seed), and needs at least MIN_TRAIN_PER_CLASS training images of each class (so that
the held-out fifth that chooses the L2 strength holds one of each) and one validation image of each class
(an accuracy on cats alone says nothing about telling cats from dogs). With the default fraction 0.2 that
is 4 images per class; fewer is refused with a message that says so.
"""
import argparse
import json
import sys

import numpy  # host-side: features are small, and the probe reports host numbers

from . import backend
from .backend import asarray, host_rng, to_numpy, xp
from .data import center_crop, normalize, stratified_split
from .evaluate import at_least_one
from .model.build import build_model
from .model.layers import linear_backward, linear_forward
from .model.loss import bce_logits_backward, bce_logits_forward
from .model.optim import AdamW
from .util.checkpoint import CheckpointError, load_checkpoint
from .util.datasets import DataError, load_dataset
from .util.files import output_file_problem, write_atomically

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
KNN_K = 20  # neighbours that vote; fewer when the training split is smaller
MIN_TRAIN_PER_CLASS = 3  # the inner split puts round(3 * 0.2) = 1 of them in its held-out fifth


# ----------------------------------------------------------------------------------------------
# features

def mlp_partition_noise(n_images, num_patches, len_keep, seed=0):
    """Noise for the MLP's complementary masks: list of (n_images, L) arrays, one per patch set,
    whose len_keep smallest values are exactly that set (the same sets for every image)."""
    order = host_rng(seed).permutation(num_patches)
    noises = []
    for start in range(0, num_patches, len_keep):
        keep = order[start:start + len_keep]
        noise = numpy.ones(num_patches, dtype="float32")
        noise[keep] = numpy.arange(len(keep), dtype="float32") / num_patches  # below 1: kept first
        noises.append(numpy.broadcast_to(noise, (n_images, num_patches)))
    return noises


def extract_features(model, images, mean, std, batch_size=256):
    """Frozen-encoder features of uint8 images (N, S, S, 3): {name: host float32 (N, F)}."""
    cfg = model.config
    out = {}
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        x = asarray(normalize(batch, mean, std))  # (n, 3, S, S)
        n = batch.shape[0]
        if model.arch == "vit":
            noise = asarray(numpy.zeros((n, cfg.num_patches), dtype="float32"))
            latent, _, _, _ = model.forward_encoder(x, noise, mask_ratio=0.0)  # (n, 1+L, D) all visible
            feats = {"mean": latent[:, 1:].mean(axis=1), "cls": latent[:, 0]}  # (n, D) each
        else:
            latents = [model.forward_encoder(x, asarray(noise))[0]
                       for noise in mlp_partition_noise(n, cfg.num_patches, cfg.len_keep)]  # each (n, Z)
            feats = {"latent": sum(latents) / len(latents)}  # (n, Z)
        for name, value in feats.items():
            out.setdefault(name, []).append(to_numpy(value))
    return {name: numpy.concatenate(parts).astype("float32") for name, parts in out.items()}


def standardise(train, val):
    """Zero mean, unit variance per feature, with the training split's statistics."""
    mu = train.mean(axis=0)
    sigma = train.std(axis=0) + 1e-6
    return (train - mu) / sigma, (val - mu) / sigma


# ----------------------------------------------------------------------------------------------
# the classifiers

def fit_logistic(X, y, l2, steps=300, lr=0.05, seed=0):
    """L2-regularised logistic regression, full batch: minimise mean BCE(X w + b, y) + l2/2 |w|^2.

    X: (N, F) host float32, y: (N,) host {0, 1}. Returns (w (F,), b ()) host arrays.
    """
    rng = host_rng(seed)
    X_, y_ = asarray(X), asarray(y, dtype=X.dtype)
    params = {"w": asarray(rng.normal(0, 0.01, size=(X.shape[1], 1)), dtype=X.dtype),
              "b": asarray(numpy.zeros(1), dtype=X.dtype)}
    opt = AdamW(params, lr=lr, weight_decay=0.0, no_decay=("b",))
    for step in range(steps):
        logits, cache = linear_forward(X_, params["w"], params["b"])  # (N, 1)
        _, loss_cache = bce_logits_forward(logits[:, 0], y_)
        dlogits = bce_logits_backward(1.0, loss_cache)[:, None]  # (N, 1)
        _, dw, db = linear_backward(dlogits, cache, need_dx=False)
        opt.lr = lr * 0.5 * (1 + numpy.cos(numpy.pi * step / steps))  # cosine to zero: a settled optimum
        opt.step({"w": dw + l2 * params["w"], "b": db})  # the L2 penalty's gradient is l2 * w
    return to_numpy(params["w"])[:, 0], to_numpy(params["b"])[0]


def logistic_accuracy(w, b, X, y):
    return float(((X @ w + b > 0).astype(int) == y).mean())


def linear_probe(X_train, y_train, X_val, y_val, seed=0, grid=L2_GRID):
    """Choose l2 on a held-out fifth of the training split, refit on all of it, score on validation."""
    inner_train, inner_val = stratified_split(y_train, 0.2, seed=seed)
    scores = {}
    for l2 in grid:
        w, b = fit_logistic(X_train[inner_train], y_train[inner_train], l2, seed=seed)
        scores[l2] = logistic_accuracy(w, b, X_train[inner_val], y_train[inner_val])
    best = max(grid, key=lambda l2: (scores[l2], l2))  # ties: the stronger regularisation
    w, b = fit_logistic(X_train, y_train, best, seed=seed)
    return {"accuracy": logistic_accuracy(w, b, X_val, y_val), "l2": best, "inner_accuracy": scores}


def knn_accuracy(X_train, y_train, X_val, y_val, k=KNN_K, batch_size=512):
    """Cosine-similarity k-NN, majority vote of the k nearest training features (ties: dog).

    With fewer than k training images, all of them vote (k = N_train): see knn_k."""
    if X_train.shape[0] == 0 or X_val.shape[0] == 0:
        raise ValueError(f"k-NN needs training and validation images, got {X_train.shape[0]} and {X_val.shape[0]}")
    k = knn_k(X_train.shape[0], k)

    def unit(a):
        return a / (numpy.linalg.norm(a, axis=1, keepdims=True) + 1e-12)

    train_u = asarray(unit(X_train))  # (N_train, F)
    y_train_ = asarray(y_train.astype("float32"))
    correct = 0
    for start in range(0, X_val.shape[0], batch_size):
        sims = asarray(unit(X_val[start:start + batch_size])) @ train_u.T  # (n, N_train)
        # argpartition's kth is an index: k - 1 puts the k most similar first, and stays valid when k = N_train
        nearest = xp.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n, k) the k most similar, any order
        votes = y_train_[nearest].mean(axis=1)  # (n,) share of dogs among them
        pred = to_numpy(votes >= 0.5).astype(int)
        correct += int((pred == y_val[start:start + batch_size]).sum())
    return correct / X_val.shape[0]


def knn_k(n_train, k=KNN_K):
    """The number of neighbours that vote: k, or every training image when there are fewer."""
    return min(k, n_train)


def evaluate_features(name, X_train, y_train, X_val, y_val, seeds):
    X_train, X_val = standardise(X_train, X_val)
    probes = [linear_probe(X_train, y_train, X_val, y_val, seed=s) for s in seeds]
    accs = numpy.array([p["accuracy"] for p in probes])
    return {"features": name, "dim": int(X_train.shape[1]), "linear_probe_mean": float(accs.mean()),
            "linear_probe_std": float(accs.std()), "linear_probe_runs": accs.tolist(),
            "l2_chosen": [p["l2"] for p in probes],
            # "knn20" keeps its name for the reports that read it; knn_k says how many neighbours voted
            "knn20": knn_accuracy(X_train, y_train, X_val, y_val), "knn_k": knn_k(len(X_train))}


def check_split_sizes(labels, train_idx, val_idx, val_fraction, data):
    """DataError unless each class has MIN_TRAIN_PER_CLASS training images and one validation image."""
    counts = {(part, label): int((labels[idx] == label).sum())
              for part, idx in (("train", train_idx), ("val", val_idx)) for label in (0, 1)}
    if min(counts["train", 0], counts["train", 1]) >= MIN_TRAIN_PER_CLASS and min(counts["val", 0], counts["val", 1]) >= 1:
        return
    # the smallest class size that the same split turns into enough of both (stratified_split's rounding)
    needed = next((n for n in range(1, 10000) if round(n * val_fraction) >= 1
                   and n - round(n * val_fraction) >= MIN_TRAIN_PER_CLASS), None)
    advice = (f"use a folder with at least {needed} readable images of each class" if needed
              else "use a checkpoint trained with a larger --val-fraction")
    raise DataError(f"the probe needs at least {MIN_TRAIN_PER_CLASS} training images and 1 validation image of "
                    f"each class, but the checkpoint's split (--val-fraction {val_fraction}) of {data} gives "
                    f"{counts['train', 0]} cat and {counts['train', 1]} dog training images, {counts['val', 0]} cat "
                    f"and {counts['val', 1]} dog validation images; {advice}")


def checked_features(features, checkpoint, label):
    """The features, unless some are NaN or infinite (an encoder with NaN weights), which no classifier
    can use: then a CheckpointError."""
    for name, F in features.items():
        if not numpy.isfinite(F).all():
            raise CheckpointError(f"the {label} encoder of {checkpoint} gives features that are not finite numbers "
                                  f"({name}): its weights are probably NaN or infinite, as after a diverged run. "
                                  "Probe an earlier checkpoint, or train again with a lower --lr")
    return features


# ----------------------------------------------------------------------------------------------
# the command

def run_probe(checkpoint, data, seeds=(0, 1, 2), per_class=None, progress=True, baselines=True):
    model, header, _ = load_checkpoint(checkpoint)
    settings, stats = header.get("settings"), header.get("data")
    if not isinstance(settings, dict) or not isinstance(stats, dict) or not {"val_fraction", "seed"} <= set(settings):
        raise CheckpointError(f"{checkpoint} was not written by tinymae.pretrain (it has no run settings or data "
                              "statistics), so its training split cannot be rebuilt")
    dataset = load_dataset(data, size=stats["load_size"], per_class=per_class, progress=progress)
    # The same split as pre-training (same seed and fraction): validation images were never trained on.
    train_idx, val_idx = stratified_split(dataset.labels, settings["val_fraction"], seed=settings["seed"])
    check_split_sizes(dataset.labels, train_idx, val_idx, settings["val_fraction"], data)
    images = center_crop(dataset.images, model.config.img_size)  # (N, S, S, 3)
    y = dataset.labels
    rows = []

    def add(label, feats):
        for kind, F in feats.items():
            rows.append({"encoder": label, **evaluate_features(kind, F[train_idx], y[train_idx], F[val_idx],
                                                               y[val_idx], seeds)})

    add("pre-trained", checked_features(extract_features(model, images, stats["mean"], stats["std"]), checkpoint,
                                        "pre-trained"))
    if baselines:
        random_model = build_model(header["arch"], header["config"], seed=12345)
        add("random init", extract_features(random_model, images, stats["mean"], stats["std"]))
        pixels = images.reshape(len(images), -1).astype("float32") / 255.0  # (N, S*S*3)
        add("raw pixels", {"pixels": pixels})
    return {"checkpoint": str(checkpoint), "arch": header["arch"], "backend": backend.name,
            "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "seeds": list(seeds), "results": rows}


def format_table(report):
    k = report["results"][0].get("knn_k", KNN_K) if report["results"] else KNN_K
    lines = [f"{'encoder':<12} {'features':<8} {'dim':>5}  {'linear probe':>16}  {f'k-NN (k={k})':>11}"]
    for r in report["results"]:
        lines.append(f"{r['encoder']:<12} {r['features']:<8} {r['dim']:>5}  "
                     f"{100 * r['linear_probe_mean']:>7.1f} +- {100 * r['linear_probe_std']:4.1f} %  "
                     f"{100 * r['knn20']:>9.1f} %")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinymae.probe",
        description="Cat-vs-dog accuracy of a frozen tinymae encoder: L2 logistic regression (linear probe) and "
                    "cosine k-NN, beside raw pixels and a randomly initialised encoder.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.npz written by examples/train_catsdogs.py")
    parser.add_argument("--data", required=True, help="the image folder the checkpoint was trained on")
    parser.add_argument("--seeds", type=at_least_one, default=3, help="probe repetitions for mean +- std (default: 3)")
    parser.add_argument("--per-class", type=at_least_one, default=None, help="only the first N images of each class")
    parser.add_argument("--json", default=None, help="also write the full report to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel and random-encoder rows")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while decoding")
    args = parser.parse_args(argv)
    if args.json is not None:  # before any work: a typo here must not cost the whole computation
        problem = output_file_problem(args.json, overwrite=args.overwrite)
        if problem:
            parser.error(f"argument --json: {args.json} {problem}")
    try:
        report = run_probe(args.checkpoint, args.data, seeds=tuple(range(args.seeds)), per_class=args.per_class,
                           progress=not args.no_progress, baselines=not args.no_baselines)
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while decoding or fitting: no traceback
        print("\ninterrupted", file=sys.stderr)
        return 130
    # The table first: whatever happens to the file below, the numbers have been shown.
    print(f"{report['arch']} encoder, {report['n_train']} training / {report['n_val']} validation images, "
          f"{len(report['seeds'])} seeds")
    print(format_table(report))
    if args.json:
        try:
            text = json.dumps(report, indent=2, allow_nan=False)  # NaN is not JSON
            write_atomically(args.json, lambda f: f.write(text.encode()))
        except (OSError, ValueError) as e:
            print(f"error: could not write the report to {args.json} ({e}); the table above is complete",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
