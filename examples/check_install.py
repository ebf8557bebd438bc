"""Check that tinymae works on this machine's GPU (or CPU): the engine's tests, a parity check, a short training.

    python examples/check_install.py                         # the GPU: TINYMAE_BACKEND=cupy
    python examples/check_install.py --data data/catsdogs
    python examples/check_install.py --backend numpy         # the same checks on the CPU

Run it from a clone after `pip install -e ".[cuda12,test]"` (or `.[cuda13,test]`: see the README). In order:

  1. the backend loads: CuPy imports and sees a GPU (its version, the device, the CUDA versions);
  2. the test suite runs on that backend (TINYMAE_BACKEND set for every test, so the tests written for
     the default backend run on it too, and the parametrised ones on numpy, the strict stand-in and it);
  3. parity: one training step of the default ViT and MLP MAEs on the same batch and masks, with the
     layers a training run on the backend uses (fast/__init__.py; with TINYMAE_FAST_GPU=1 the fused CUDA
     kernels), gives the same loss and gradients on this backend as on NumPy (float32 tolerances);
  4. a short training run (2 epochs of the ViT on 200 photos per class of --data, or on synthetic photos
     without --data): it must finish, and its loss must be finite and fall.

The last line says PASS or FAIL (with the step that failed); the exit code is 0 only for PASS.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# float32 agreement between backends: the same arithmetic in a different order (cuBLAS vs OpenBLAS)
LOSS_RTOL = 1e-4
GRAD_TOL = 1e-3  # of each gradient array's largest value


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python examples/check_install.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=("cupy", "numpy"), default="cupy", help="the backend to check")
    p.add_argument("--data", default=None, help="a photo folder for the training run (default: synthetic photos)")
    p.add_argument("--pytest-args", default="-q tests",
                   help="what to pass to pytest in step 2 ('-n 8' spreads it over 8 processes with pytest-xdist; "
                        "'none' skips the tests)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the training run (at least 2: the check is that "
                                                         "its loss falls from the first epoch to the last)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error(f"--epochs must be at least 2 (the check compares the first epoch's loss with the last's), "
                f"got {args.epochs}")
    if args.data is not None:  # a typo here should cost a second, not the tests' minute first
        from tinymae.util.datasets import DataError, find_images
        try:
            find_images(args.data)
        except DataError as e:
            p.error(f"--data: {str(e).splitlines()[0]}")
    return args


def run(cmd, env, what):
    """Run a command with the backend's environment; -> (ok, the last lines of its output)."""
    print(f"  $ {' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
    for line in tail:
        print("    " + line)
    return done.returncode == 0, f"{what} exited with {done.returncode}"


def step_backend(env):
    code = ("import json; from tinymae import backend; xp = backend.xp; info = {'backend': backend.name}\n"
            "if backend.name == 'cupy':\n"
            "    props = xp.cuda.runtime.getDeviceProperties(0)\n"
            "    info.update(cupy=xp.__version__, device=props['name'].decode(), runtime=xp.cuda.runtime.runtimeGetVersion(),"
            " driver=xp.cuda.runtime.driverGetVersion())\n"
            "print(json.dumps(info))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return False, (done.stderr.strip().splitlines() or ["the backend did not load"])[-1]
    print("  " + done.stdout.strip())
    return True, ""


def step_parity(env):
    """One step of each default model on the backend and on NumPy, in two processes, compared here."""
    code = ("import json, sys, numpy as np\n"
            "from tinymae import backend, fast\n"
            "fast.use_kernels(fast.backend_kernels())  # what a training run on this backend computes with\n"
            "from tinymae.model import build_model\n"
            "from tinymae.model.masking import masking_noise\n"
            "out = {}\n"
            "for arch in ('mlp', 'vit'):\n"
            "    model = build_model(arch, {}, seed=0)\n"
            "    rng = backend.host_rng(1)\n"
            "    imgs = backend.asarray(rng.standard_normal((32, 3, 48, 48)), dtype='float32')\n"
            "    noise = masking_noise(rng, 32, 64)\n"
            "    loss, _, _, cache = model.forward(imgs, noise)\n"
            "    grads = model.backward(1.0, cache)\n"
            "    out[arch] = {'loss': float(loss), 'grads': {k: backend.to_numpy(v).tolist() for k, v in grads.items()}}\n"
            "json.dump(out, sys.stdout)")
    results = {}
    for name in (env["TINYMAE_BACKEND"], "numpy"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "TINYMAE_BACKEND": name},
                              capture_output=True, text=True)
        if done.returncode != 0:
            return False, f"the parity step failed on {name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        results[name] = json.loads(done.stdout)
    import numpy as np
    ours, ref = results[env["TINYMAE_BACKEND"]], results["numpy"]
    for arch in ("mlp", "vit"):
        loss_diff = abs(ours[arch]["loss"] - ref[arch]["loss"]) / abs(ref[arch]["loss"])
        worst = max((float(np.abs(np.subtract(ours[arch]["grads"][k], v)).max() / (np.abs(v).max() + 1e-30)), k)
                    for k, v in ref[arch]["grads"].items())
        print(f"  {arch}: loss {ours[arch]['loss']:.6f} vs NumPy {ref[arch]['loss']:.6f} (rel diff {loss_diff:.1e}); "
              f"worst gradient {worst[1]} {worst[0]:.1e} of its largest value")
        if loss_diff > LOSS_RTOL or worst[0] > GRAD_TOL:
            return False, f"{arch} differs from NumPy beyond float32 tolerance"
    return True, ""


def photo_folder(tmp):
    """A small synthetic photo set (60 cats, 60 dogs as JPEG), for a check without real data."""
    import numpy as np
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
    cmd = [sys.executable, "-m", "tinymae.pretrain", "--data", data or photo_folder(tmp), "--arch", "vit",
           "--epochs", str(epochs), "--batch-size", "32", "--warmup-epochs", "0.5", "--out", out, "--no-progress",
           "--figure-images", "2"]
    if data:
        cmd += ["--per-class", "200"]
    ok, why = run(cmd, {**env, "TINYMAE_CACHE": os.path.join(tmp, "cache")}, "the training run")
    if not ok:
        return ok, why
    with open(os.path.join(out, "metrics.json")) as f:
        history = json.load(f)["history"]
    losses = [h["train_loss"] for h in history]
    if not all(map(lambda v: v == v and abs(v) < float("inf"), losses)) or losses[-1] >= losses[0]:
        return False, f"the training loss did not fall: {losses}"
    print(f"  train loss per epoch {', '.join(f'{v:.4f}' for v in losses)}; "
          f"{history[-1]['train_images_per_s']:.0f} img/s")
    return True, ""


def main(argv=None):
    args = parse_args(argv)
    env = {**os.environ, "TINYMAE_BACKEND": args.backend}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("backend", lambda: step_backend(env))]
        if args.pytest_args != "none":
            steps.append(("tests", lambda: run([sys.executable, "-m", "pytest", *args.pytest_args.split()], env,
                                               "pytest")))
        steps += [("parity", lambda: step_parity(env)),
                  ("training", lambda: step_training(env, args.data, args.epochs, tmp))]
        for i, (name, step) in enumerate(steps):
            print(f"[{i + 1}/{len(steps)}] {name}", flush=True)
            ok, why = step()
            if not ok:
                print(f"FAIL ({args.backend}): {name}: {why}")
                return 1
    print(f"PASS ({args.backend}): {', '.join(name for name, _ in steps)} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
