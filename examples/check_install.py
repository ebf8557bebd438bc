"""Check that tinymae works on this machine's GPU (or CPU): the engine's tests, a parity check, a short training.

    python examples/check_install.py                         # the GPU: TINYMAE_BACKEND=cupy
    python examples/check_install.py --data data/catsdogs
    python examples/check_install.py --backend numpy         # the same checks on the CPU

Run it from a clone after `pip install -e ".[cuda12,test]"` (or `.[cuda13,test]`: see the README). In order:

  1. the backend loads: CuPy imports and sees a GPU (its version, the device, the CUDA versions);
  2. the test suite runs on that backend (TINYMAE_BACKEND set for every test);
  3. parity: one training step of the default MLP and ViT MAEs on the same batch and masks, taken as a training run
     takes it (fast.training_step(model, "fast"); with TINYMAE_FAST_GPU=1 the fused CUDA block), gives the same
     loss and gradients on this backend as on NumPy (float32 tolerances);
  4. a short training run (2 epochs of the ViT on 200 photos per class of --data, or on synthetic photos): it must
     finish, and its loss must be finite and fall.

The last line says PASS or FAIL (with the step that failed); the exit code is 0 only for PASS.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from tinymae.errors import TinymaeError
from tinymae.photos import find_photos  # neither loads the backend: this process never touches the GPU
from tinymae.util import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_RTOL, GRAD_TOL = 1e-4, 1e-3  # float32 across backends (cuBLAS vs OpenBLAS); arrays: of their largest value

BACKEND = """import json; from tinymae import backend; xp = backend.xp; info = {'backend': backend.name}
if backend.name == 'cupy':
    props, rt = xp.cuda.runtime.getDeviceProperties(0), xp.cuda.runtime
    info.update(cupy=xp.__version__, device=props['name'].decode(), runtime=rt.runtimeGetVersion(),
                driver=rt.driverGetVersion())
print(json.dumps(info))
"""
PARITY = """import sys, numpy as np
from tinymae import backend, fast
from tinymae.model import build_model
from tinymae.model.masking import masking_noise
out = {}
for arch in ("mlp", "vit"):
    model = build_model(arch, {}, seed=0)
    step = fast.training_step(model, "fast").step  # what a training run on this backend computes with
    rng, cfg = backend.host_rng(1), model.config
    imgs = backend.asarray(rng.standard_normal((32, 3, cfg.img_size, cfg.img_size)), dtype="float32")
    loss, grads = step.loss_and_grads(imgs, backend.asarray(masking_noise(rng, 32, cfg)))
    out.update({f"{arch}/loss": float(loss), **{f"{arch}/{k}": backend.to_numpy(g) for k, g in grads.items()}})
    step.close()
np.savez(sys.argv[1], **out)
"""


def run(cmd, env, show=None):
    """Run a command with the backend's environment, print the last lines of its output -> (ok, its last line)."""
    print(f"  $ {show or ' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines() or [f"exit status {done.returncode}"]
    print("\n".join("    " + line for line in lines[-12:]))
    return done.returncode == 0, lines[-1]


def step_parity(env, tmp):
    """One step of each default model on the backend and on NumPy, in two processes, compared here."""
    results = {}
    for name in (env["TINYMAE_BACKEND"], "numpy"):
        path = os.path.join(tmp, f"parity-{name}.npz")
        ok, why = run([sys.executable, "-c", PARITY, path], {**env, "TINYMAE_BACKEND": name}, f"(one step on {name})")
        if not ok:
            return False, f"the parity step failed on {name}: {why}"
        results[name] = dict(np.load(path))
    ours, ref = results[env["TINYMAE_BACKEND"]], results["numpy"]
    for arch in ("mlp", "vit"):
        loss, ref_loss = float(ours[f"{arch}/loss"]), float(ref[f"{arch}/loss"])
        worst = max((float(np.abs(ours[k] - v).max() / (np.abs(v).max() + 1e-30)), k[len(arch) + 1:])
                    for k, v in ref.items() if k.startswith(arch + "/") and k != f"{arch}/loss")
        rel = abs(loss - ref_loss) / abs(ref_loss)
        print(f"  {arch}: loss {loss:.6f} vs NumPy {ref_loss:.6f} (rel diff {rel:.1e}); worst gradient {worst[1]} "
              f"{worst[0]:.1e} of its largest value")
        if rel > LOSS_RTOL or worst[0] > GRAD_TOL:
            return False, f"{arch} differs from NumPy beyond float32 tolerance"
    return True, ""


def photo_folder(tmp):
    """A small synthetic photo set (60 cats, 60 dogs as JPEG), for a check without real data."""
    from PIL import Image
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for label, name in enumerate(("cat", "dog")):
        os.makedirs(os.path.join(tmp, "photos", name))
        for i in range(60):
            img = (rng.random(3) * 0.6 + 0.2)[None, None] * (0.6 + 0.4 * (xx if label else yy))[:, :, None]
            img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(os.path.join(tmp, "photos", name, f"{i}.jpg"))
    return os.path.join(tmp, "photos")


def step_training(env, data, epochs, tmp):
    out = os.path.join(tmp, "run")
    cmd = [sys.executable, "-m", "tinymae.pretrain", "--data", data or photo_folder(tmp), "--arch", "vit", "--epochs",
           str(epochs), "--batch-size", "32", "--warmup-epochs", "0.5", "--out", out, "--no-progress",
           "--figure-images", "2", *(["--per-class", "200"] if data else [])]
    ok, why = run(cmd, {**env, "TINYMAE_CACHE": os.path.join(tmp, "cache")})
    if not ok:
        return ok, why
    with open(os.path.join(out, "metrics.json")) as f:
        history = json.load(f)["history"]
    losses = [h["train_loss"] for h in history]
    if not all(np.isfinite(losses)) or losses[-1] >= losses[0]:
        return False, f"the training loss did not fall: {losses}"
    print(f"  train loss per epoch {', '.join(f'{v:.4f}' for v in losses)}; "
          f"{history[-1]['train_images_per_s']:.0f} img/s")
    return True, ""


def check(args):
    env, t0 = {**os.environ, "TINYMAE_BACKEND": args.backend}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("backend", lambda: run([sys.executable, "-c", BACKEND], env, "(load the backend)"))]
        if args.pytest_args != "none":
            steps.append(("tests", lambda: run([sys.executable, "-m", "pytest", *args.pytest_args.split()], env)))
        steps += [("parity", lambda: step_parity(env, tmp)),
                  ("training", lambda: step_training(env, args.data, args.epochs, tmp))]
        for i, (name, step) in enumerate(steps):
            print(f"[{i + 1}/{len(steps)}] {name}", flush=True)
            ok, why = step()
            if not ok:
                print(f"FAIL ({args.backend}): {name}: {why}")
                return 1
    print(f"PASS ({args.backend}): {', '.join(name for name, _ in steps)} in {time.perf_counter() - t0:.0f} s")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python examples/check_install.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    p.add_argument("--backend", choices=("cupy", "numpy"), default="cupy", help="the backend to check")
    p.add_argument("--data", default=None, help="a photo folder for the training run (default: synthetic photos)")
    p.add_argument("--pytest-args", default="-q tests",
                   help="pytest's arguments in step 2 ('-n 8': 8 processes, with pytest-xdist; 'none': no tests)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the training run (at least 2)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error(f"--epochs must be at least 2 (the loss must fall from the first epoch), got {args.epochs}")
    if args.data is not None:  # a typo here should cost a second, not the tests' minute first
        try:
            find_photos(args.data)
        except TinymaeError as e:
            p.error(f"--data: {e}")
    return cli.run(check, args)


if __name__ == "__main__":
    sys.exit(main())
