"""What the frozen encoder learned: a linear probe and a k-NN classifier on its features.

    python -m tinymae.probe --checkpoint runs/vit/checkpoint.npz                  # the run's own photos and split
    python -m tinymae.probe --checkpoint runs/vit/checkpoint.npz --data ~/birds   # other photos: split anew

The photos are the run's own, with its split and normalisation (from the checkpoint), or those of another folder
(class folders), split anew with the run's normalisation, no photo the encoder trained on in the validation part.
Features come from the model itself (forward_features: the ViT sees every patch, the MLP every patch once over a
few views), standardised with the training split's statistics. Beside them, the paper's baselines: raw pixels
and a randomly initialised encoder of the same shape.

The probe is L2-regularised softmax regression written with the engine's own pieces (linear_forward and the
gradient-checked softmax cross-entropy), fitted full-batch with Adam: the L2 strength is chosen from a grid on a
held-out fifth of the training split, then the probe is refitted on all of it and scored on validation; a few
seeds of that inner split and of the start give mean +- std. k-NN: cosine similarity, k = 20 (or every training
photo, when there are fewer), majority vote.
"""
import json
import sys
import time

import numpy
from tqdm import tqdm

from . import backend
from .backend import asarray, to_numpy, xp
from .config import ProbeConfig, check
from .data import center_crop, encoder_photos, normalize, stratified_split
from .errors import TinymaeError
from .model import build_model
from .model.layers import linear_backward, linear_forward
from .model.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .model.optim import AdamW
from .util import cli
from .util.checkpoint import read_checkpoint
from .util.files import output_file, write_atomically

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
KNN_K = 20


def extract_features(model, images, mean, std, batch_size=256, progress=False, desc="features"):
    """Frozen-encoder features of uint8 photos (N, S, S, 3): {name: host float32 (N, F)}."""
    out = {}
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = asarray(normalize(images[start:start + batch_size], mean, std))
        for name, value in model.forward_features(batch).items():
            out.setdefault(name, []).append(to_numpy(value))
    return {name: numpy.concatenate(parts).astype("float32") for name, parts in out.items()}


def fit_softmax(X, y, num_classes, l2, steps=300, lr=0.05, seed=0):
    """Minimise the mean cross-entropy of X w + b plus l2/2 |w|^2, full batch: X (N, F), y (N,) host -> w, b host."""
    rng = backend.host_rng(seed)
    params = {"w": asarray(rng.normal(0, 0.01, size=(X.shape[1], num_classes)), dtype=X.dtype),
              "b": asarray(numpy.zeros(num_classes), dtype=X.dtype)}
    X_, y_ = asarray(X), asarray(y)
    opt = AdamW(params, lr=lr, weight_decay=0.0, no_decay=("b",))
    for step in range(steps):
        logits, cache = linear_forward(X_, params["w"], params["b"])  # (N, C)
        _, loss_cache = softmax_cross_entropy_forward(logits, y_)
        _, dw, db = linear_backward(softmax_cross_entropy_backward(1.0, loss_cache), cache, need_dx=False)
        opt.lr = lr * 0.5 * (1 + numpy.cos(numpy.pi * step / steps))  # cosine to zero: a settled optimum
        opt.step({"w": dw + l2 * params["w"], "b": db})  # the L2 penalty's gradient is l2 * w
    return to_numpy(params["w"]), to_numpy(params["b"])


def accuracy(w, b, X, y):
    return float(((X @ w + b).argmax(axis=1) == y).mean())


def linear_probe(X_train, y_train, X_val, y_val, num_classes, seed=0):
    """Choose l2 on a held-out fifth of the training split, refit on all of it, score on validation."""
    inner_train, inner_val = stratified_split(y_train, 0.2, seed=seed)
    scores = {l2: accuracy(*fit_softmax(X_train[inner_train], y_train[inner_train], num_classes, l2, seed=seed),
                           X_train[inner_val], y_train[inner_val]) for l2 in L2_GRID}
    best = max(L2_GRID, key=lambda l2: (scores[l2], l2))  # ties: the stronger regularisation
    return accuracy(*fit_softmax(X_train, y_train, num_classes, best, seed=seed), X_val, y_val), best


def knn_accuracy(X_train, y_train, X_val, y_val, num_classes, k=KNN_K, batch_size=512):
    """Cosine-similarity k-NN, a majority vote of the k nearest training features (ties: the lower class)."""
    k = min(k, len(X_train))
    unit = lambda a: a / (numpy.linalg.norm(a, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    train_u, onehot = asarray(unit(X_train)), asarray(numpy.eye(num_classes, dtype="float32")[y_train])
    correct = 0
    for start in range(0, len(X_val), batch_size):
        sims = asarray(unit(X_val[start:start + batch_size])) @ train_u.T  # (n, N_train)
        nearest = xp.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n, k) the k most similar, any order
        votes = onehot[nearest].sum(axis=1)  # (n, C)
        correct += int((to_numpy(votes.argmax(axis=1)) == y_val[start:start + batch_size]).sum())
    return correct / len(X_val)


def probe_features(name, X_train, y_train, X_val, y_val, num_classes, seeds, progress=False):
    mu, sigma = X_train.mean(axis=0), X_train.std(axis=0) + 1e-6  # standardised with the training split's
    X_train, X_val = (X_train - mu) / sigma, (X_val - mu) / sigma
    runs = [linear_probe(X_train, y_train, X_val, y_val, num_classes, seed=s)
            for s in tqdm(seeds, desc=f"probing {name}", unit="seed", disable=not progress, leave=False)]
    accs = numpy.array([a for a, _ in runs])
    return {"features": name, "dim": int(X_train.shape[1]), "linear_probe_mean": float(accs.mean()),
            "linear_probe_std": float(accs.std()), "linear_probe_runs": accs.tolist(),
            "l2_chosen": [b for _, b in runs],
            "knn": knn_accuracy(X_train, y_train, X_val, y_val, num_classes), "knn_k": min(KNN_K, len(X_train))}


def run_probe(cfg):
    """-> the report: {checkpoint, photos, classes, n_train, n_val, seeds, results: [per encoder and features]}."""
    t0 = time.perf_counter()
    header, model, _ = read_checkpoint(cfg.checkpoint, "pretrain")
    record, mcfg = header["data"], model.config
    photos = encoder_photos(record, header["settings"]["seed"], cfg.data, mcfg.img_size, cfg.val_fraction,
                            cfg.per_class, cfg.progress, cfg.checkpoint)
    classes = photos.classes
    if len(classes) < 2 or len(set(photos.val_labels.tolist())) < 2:
        raise TinymaeError(f"the probe needs photos of at least two classes in both parts, in class folders "
                           f"(<data>/<class>/...); {cfg.data or record['root']} gives {len(classes)} classes")
    train, y_train, y_val = center_crop(photos.train_images, mcfg.img_size), photos.train_labels, photos.val_labels
    encoders = {"pre-trained": model}
    if cfg.baselines:
        encoders["random init"] = build_model(header["arch"], header["config"], seed=12345)
    rows = []
    for label, encoder in encoders.items():
        feats = {s: extract_features(encoder, x, photos.mean, photos.std, progress=cfg.progress, desc=f"{label}, {s}")
                 for s, x in (("train", train), ("val", photos.val_images))}
        for name in feats["train"]:
            if not (numpy.isfinite(feats["train"][name]).all() and numpy.isfinite(feats["val"][name]).all()):
                raise TinymaeError(f"the {label} encoder of {cfg.checkpoint} gives features that are not finite: its "
                                   "weights are probably broken, as after a diverged run")
            rows.append({"encoder": label, **probe_features(name, feats["train"][name], y_train, feats["val"][name],
                                                            y_val, len(classes), range(cfg.seeds), cfg.progress)})
    if cfg.baselines:
        pixels = lambda imgs: imgs.reshape(len(imgs), -1).astype("float32") / 255.0  # noqa: E731
        rows.append({"encoder": "raw pixels", **probe_features("pixels", pixels(train), y_train,
                                                               pixels(photos.val_images), y_val, len(classes),
                                                               range(cfg.seeds), cfg.progress)})
    return {"checkpoint": cfg.checkpoint, "arch": header["arch"], "backend": backend.name, "classes": list(classes),
            "data": {k: photos.record[k] for k in ("root", "fingerprint", "n_train", "n_val")},
            "pretraining_fingerprint": record["fingerprint"], "seeds": cfg.seeds, "results": rows,
            "seconds": time.perf_counter() - t0}


def format_table(report):
    k = report["results"][0]["knn_k"]
    lines = [f"{'encoder':<12} {'features':<8} {'dim':>5}  {'linear probe':>16}  {f'k-NN (k={k})':>11}"]
    for r in report["results"]:
        lines.append(f"{r['encoder']:<12} {r['features']:<8} {r['dim']:>5}  {100 * r['linear_probe_mean']:>7.1f} +- "
                     f"{100 * r['linear_probe_std']:4.1f} %  {100 * r['knn']:>9.1f} %")
    return "\n".join(lines)


def main(argv=None):
    typed = cli.typed(cli.parser("python -m tinymae.probe", __doc__.split("\n\n")[0], ProbeConfig), argv)

    def body():
        cfg = ProbeConfig(**typed)
        check(cfg)
        out = output_file("--json", cfg.json, cfg.overwrite, [cfg.checkpoint], ".json", {"json"})
        report = run_probe(cfg)
        print(f"{report['arch']} encoder, {report['data']['n_train']} training / {report['data']['n_val']} validation "
              f"photos of {len(report['classes'])} classes, {cfg.seeds} seeds\n{format_table(report)}", flush=True)
        if out:  # the table first: whatever happens to the file, the numbers have been shown
            text = json.dumps(report, indent=2, allow_nan=False)
            write_atomically(out, lambda f: f.write(text.encode()))
    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
