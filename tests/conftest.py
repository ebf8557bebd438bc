"""Shared test fixtures: the backend under test, and tolerances.

Every test that takes the `xp` fixture runs once per backend, and every other test on the strict one:
  numpy   the default backend
  strict  NumPy whose arrays refuse to mix with host arrays, as CuPy's do (tests/strict_numpy.py)
  cupy    the GPU backend; skipped, with the reason, where CuPy or a GPU is missing

The backend is chosen once at import in tinymae (TINYMAE_BACKEND). To run one test body on several
backends in one process, the fixture points the `xp` name of every tinymae module at the backend
under test, and pytest's monkeypatch puts it back afterwards.
"""
import importlib
import os
import pkgutil
import sys

import numpy as np
import pytest
from PIL import Image

import tinymae
from tinymae import backend

sys.path.insert(0, os.path.dirname(__file__))
from strict_numpy import strict_numpy  # noqa: E402

TINYMAE_MODULES = [importlib.import_module(m.name) for m in pkgutil.walk_packages(tinymae.__path__, "tinymae.")]

BACKEND_PARAMS = ["numpy", "strict", "cupy"]


def use_backend(name, monkeypatch):
    """Point every tinymae module at backend `name` for the duration of one test; return its xp."""
    if name == "strict":
        ns = strict_numpy
    else:
        try:
            ns = backend.load(name)
        except backend.BackendError as e:
            pytest.skip(f"backend {name!r} is not available here: {e}")
    for module in TINYMAE_MODULES:
        if hasattr(module, "xp"):
            monkeypatch.setattr(module, "xp", ns)
    monkeypatch.setattr(backend, "name", name)
    return ns


@pytest.fixture(params=BACKEND_PARAMS)
def xp(request, monkeypatch):
    """The array namespace of the backend under test (numpy, strict, cupy)."""
    return use_backend(request.param, monkeypatch)


@pytest.fixture(autouse=True)
def strict_unless_chosen(request, monkeypatch):
    """Every test that does not choose its backends with the `xp` fixture runs on the strict stand-in, not
    on plain NumPy: so each test that touches engine arrays meets CuPy's rules in CI, the ones that build
    models and run whole trainings included. (NumPy itself is covered by the xp tests' numpy case.)"""
    if "xp" not in request.fixturenames:
        use_backend("strict", monkeypatch)


@pytest.fixture
def rng():
    return backend.host_rng(0)


def make_photos(tmp_path, monkeypatch, per_class=20, classes=("cat", "dog"), name="photos", seed=0):
    """A tiny photo set for end-to-end tests: per_class photos of 60x60 of each class in <name>/<class>/ folders
    (classes=None: a flat folder of per_class photos), smooth colour gradients with a blob, different per class.
    Points TINYMAE_CACHE (inherited by any subprocess) into tmp_path: nothing is written to the user's cache."""
    monkeypatch.setenv("TINYMAE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:60, 0:60] / 60.0
    gradients = (yy, xx, (xx + yy) / 2, 1 - xx, 1 - yy)
    for label, class_name in enumerate(classes or ("",)):
        folder = tmp_path / name / class_name
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = rng.random(3) * 0.6 + 0.2
            img = base[None, None] * (0.6 + 0.4 * gradients[label % 5])[:, :, None]
            cy, cx = rng.integers(15, 45, 2)
            img[(yy * 60 - cy) ** 2 + (xx * 60 - cx) ** 2 < 80] = rng.random(3)
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=95)
    return tmp_path / name


@pytest.fixture
def photos(tmp_path, monkeypatch):
    return make_photos(tmp_path, monkeypatch)


# Tiny models of each architecture, 3 epochs of 4 steps (32 training images in batches of 8).
TINY_RUN = ["--batch-size", "8", "--epochs", "3", "--warmup-epochs", "1", "--no-progress", "--figure-images", "3"]
TINY_MODEL = {"mlp": ["--embed-dim", "8", "--encoder-dims", "32,32,16", "--decoder-dims", "32"],
              "vit": ["--embed-dim", "8", "--depth", "1", "--num-heads", "2", "--decoder-embed-dim", "8",
                      "--decoder-depth", "1", "--decoder-num-heads", "2"]}


def tiny_run_args(out, photos, arch="mlp", *extra):
    return ["--data", str(photos), "--out", str(out), "--arch", arch, *TINY_MODEL[arch], *TINY_RUN, *extra]


def train_tiny(out, photos, arch="mlp", *extra):
    """Pre-train a tiny model in-process (tinymae.pretrain) -> its metrics dict."""
    from tinymae.pretrain import Pretraining
    return Pretraining.from_argv(tiny_run_args(out, photos, arch, *extra)).run()


def pytest_terminal_summary(terminalreporter):
    """Say plainly how many tests were skipped for want of PyTorch or of a GPU, and why."""
    reasons = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        kind = "PyTorch is not installed (the oracle tests)" if "torch" in reason else \
            "no CuPy or no GPU here (the CuPy cases)" if "cupy" in reason.lower() else reason
        reasons[kind] = reasons.get(kind, 0) + 1
    for kind, n in sorted(reasons.items()):
        terminalreporter.write_line(f"skipped {n} tests: {kind}")


def assert_removed_predictions_read_the_visible_patches(model, imgs, noise):
    """Change one visible patch of image 0: every removed patch's prediction of image 0 must move (the
    model reads its context; a per-patch model could only predict the average patch), and no other
    image's may. imgs: (N, 3, H, W) backend array."""
    from tinymae.backend import asarray, to_numpy
    from tinymae.model.patches import patchify, unpatchify

    p = model.config.patch_size
    _, pred, mask, _ = model.forward(imgs, noise)
    mask_h = to_numpy(mask)
    visible = int(np.flatnonzero(mask_h[0] == 0)[0])
    patches = to_numpy(patchify(imgs, p))
    patches[0, visible] += 1.0  # change one visible patch of image 0
    _, pred2, _, _ = model.forward(unpatchify(asarray(patches), p), noise)
    diff = np.abs(to_numpy(pred2) - to_numpy(pred)).mean(axis=-1)  # (N, L)
    assert (diff[0, mask_h[0] == 1] > 1e-4).all()  # every removed patch of image 0 moved
    assert (diff[1:] == 0).all()  # the other images did not


def assert_encoder_ignores_removed_pixels(model, imgs, noise):
    """Overwrite every removed patch with noise of another scale: the encoder's output must not move at
    all (it never sees a removed patch). Returns the latent."""
    from tinymae.backend import asarray, host_rng, to_numpy
    from tinymae.model.patches import patchify, unpatchify

    p = model.config.patch_size
    latent, mask, _, _ = model.forward_encoder(imgs, noise)
    patches = patchify(imgs, p)  # (N, L, P)
    removed = mask[:, :, None]
    other = 100.0 * asarray(host_rng(3).standard_normal(patches.shape), dtype="float32")
    scrambled = unpatchify(patches * (1 - removed) + other * removed, p)
    latent2, mask2, _, _ = model.forward_encoder(scrambled, noise)
    np.testing.assert_array_equal(to_numpy(mask), to_numpy(mask2))
    np.testing.assert_array_equal(to_numpy(latent), to_numpy(latent2))
    return latent


def random_noise(rng, n, num_patches, dtype="float32"):
    """Masking noise (n, L) on the backend, drawn as masking.masking_noise draws it for random masking."""
    from tinymae.backend import asarray
    return asarray(rng.random((n, num_patches), dtype="float32"), dtype=dtype)


def run_main(main, argv, capsys):
    """A command's main as a user runs it -> (exit status, stderr, stdout)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, err, out
