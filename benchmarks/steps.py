"""One training step of each framework, set up the same way for every benchmark (bench_step.py, profile_step.py).

    training_batch(arch)                  the batch size the model trains with (config.ARCH_RECIPE)
    make_batch(arch, batch_size)          a tinymae model at its default size, a batch of images, its mask noise
    tinymae_optimizer(model)              fast.AdamW, as a training run builds it
    tinymae_step(runner, optimizer, ...)  one step of engine.train_one_epoch: forward, backward, AdamW
    torch_device()                        where the PyTorch twin runs: 'cpu' on NumPy, 'cuda' on CuPy
    torch_optimizer(twin, model)          torch.optim.AdamW with tinymae's two parameter groups
    torch_inputs(imgs, noise, device)     the same batch and noise as torch tensors
    torch_step(twin, optimizer, ...)      the same step in PyTorch eager
    kernel_sets(choice)                   tinymae's layers to time: the fast ones, the reference ones, or both
    Contestant, time_steps(contestants)   steps of several contestants timed in blocks, taking turns
    time_training_loop(...)               engine.train_one_epoch itself, on random photos

A step ends with the loss read back to the host, as the training loop does; on a GPU that also waits for
the step's kernels to finish. torch is imported only inside the torch functions, when they run:
bench_step.py's tinymae memory worker must not load it (its ~200 MB of libraries would count against tinymae).
"""
import time
from types import SimpleNamespace
from typing import Callable, NamedTuple, Optional

import numpy as np

from tinymae import fast
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import PretrainConfig
from tinymae.engine import prefetched, train_one_epoch
from tinymae.fast import data as fast_data
from tinymae.model import build_model
from tinymae.model.masking import masking_noise
from tinymae.pretrain import device_batches, training_batches

from measure import on_gpu, sync  # benchmarks/measure.py, next to this file

ARCH_SETTINGS = {"mlp": {}, "vit": {}}  # the default sizes of MLPConfig and ViTConfig
LR = 1.5e-4  # a small constant learning rate: many timed steps on one batch must not diverge
WEIGHT_DECAY = 0.05


def training_batch(arch):
    return PretrainConfig(arch=arch).batch_size


def make_batch(arch, batch_size, seed=0):
    """A tinymae model at its default size, a batch of standard-normal images (as normalised photos are),
    and the masks' noise drawn as the training loop draws it."""
    model = build_model(arch, ARCH_SETTINGS[arch], seed=seed)
    rng = host_rng(seed + 1)
    cfg = model.config
    imgs = asarray(rng.standard_normal((batch_size, cfg.in_chans, cfg.img_size, cfg.img_size)), dtype="float32")
    noise = masking_noise(rng, batch_size, cfg.num_patches)  # (N, L)
    return model, imgs, noise


def tinymae_optimizer(model):
    """fast.AdamW (one flat buffer; it moves model.params into it) with the benchmark's constant rate."""
    return fast.AdamW(model.params, lr=LR, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY, no_decay=model.no_decay)


def tinymae_step(runner, optimizer, imgs, noise):
    """One training step as engine.train_one_epoch takes it: forward and backward (runner: fast.runner's,
    the batch in shards on every core on the CPU), AdamW; float(loss) waits for the GPU."""
    loss, grads = runner.loss_and_grads(imgs, noise)
    runner.optimizer_step(optimizer, grads)
    return float(loss)


def torch_device():
    """'cpu' with NumPy; 'cuda' with CuPy, or None when this torch has no CUDA (the comparison is skipped)."""
    import torch
    if not on_gpu():
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def torch_optimizer(twin, model):
    """torch.optim.AdamW with tinymae's two parameter groups. On CUDA fused=True, all parameters updated
    by a few kernels (what one picks on a GPU); on the CPU its default, the for-loop implementation."""
    import torch
    import torch_models  # benchmarks/torch_models.py
    groups = torch_models.no_decay_param_groups(twin, model.no_decay, WEIGHT_DECAY)
    if next(twin.parameters()).is_cuda:
        return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8, fused=True)
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8)


def torch_inputs(imgs, noise, device):
    import torch
    return torch.tensor(to_numpy(imgs), device=device), torch.tensor(to_numpy(noise), device=device)


def torch_step(twin, optimizer, imgs, noise):
    optimizer.zero_grad(set_to_none=True)
    loss, pred, mask = twin(imgs, noise)
    loss.backward()
    optimizer.step()
    return loss.item()  # waits for the GPU, as float(loss) does on tinymae's side


# ----------------------------------------------------------------------------------------------
# Timing, taking turns

def kernel_sets(choice):
    """'fast', 'reference' or 'both' -> {label: kernels}: "fast" the backend's layers a training run uses
    (fast.backend_kernels(): fast.CPU_KERNELS on NumPy), "reference" the plain formulas (fast.REFERENCE)."""
    sets = {"fast": fast.backend_kernels(), "reference": fast.REFERENCE}
    if choice == "both" and sets["fast"] is fast.REFERENCE:  # CuPy without TINYMAE_FAST_GPU=1: no faster set
        return {"fast": sets["fast"]}
    return sets if choice == "both" else {choice: sets[choice]}


class Contestant(NamedTuple):
    step: Callable[[], float]  # one training step; returns the loss
    kernels: Optional[dict]  # tinymae: the layer functions put in place before its steps; torch: None


def run(contestant):
    if contestant.kernels is not None:
        fast.use_kernels(contestant.kernels)  # a few setattrs: tinymae's contestants may share one model
    return contestant.step()


def time_steps(contestants, repeats, block, settle, warmup):
    """{name: Contestant} -> {name: [each block's median ms per step]}.

    First `warmup` untimed steps of each; then `repeats` rounds in which each contestant runs `block`
    consecutive steps, the order flipping every round so that drift and background load hit all alike.
    The first `settle` steps of a block are not counted: each library's thread pool keeps spinning for a
    while after its last operation and would slow the next contestant's first steps."""
    for contestant in contestants.values():
        for _ in range(warmup):
            run(contestant)
    times = {name: [] for name in contestants}
    order = list(contestants)
    for rep in range(repeats):
        for name in (order if rep % 2 == 0 else order[::-1]):
            ms = []
            for _ in range(block):
                sync()
                t0 = time.perf_counter()
                run(contestants[name])  # ends with the loss on the host: the GPU has finished
                ms.append((time.perf_counter() - t0) * 1e3)
            times[name].append(float(np.median(ms[settle:])))
    return times


# ----------------------------------------------------------------------------------------------
# The training loop

def time_training_loop(model, runner, optimizer, batch_size, loop_steps):
    """The training loop itself, engine.train_one_epoch over pretrain.training_batches (prefetched on a
    background thread), on `loop_steps` batches of random uint8 photos -> its stats: images/s, and
    waiting_for_data_s, the time the step waited for its batch (crop, flip, normalisation and mask noise,
    and the copy to the device). On a GPU, host work the step waits for keeps the loop below the step."""
    cfg = model.config
    rng = host_rng(0)
    load = cfg.img_size * 9 // 8  # the training recipe's default load size
    n = loop_steps * batch_size
    data = SimpleNamespace(train_images=rng.integers(0, 256, (n, load, load, 3), dtype=np.uint8),
                           mean=np.full(3, 0.5, dtype=np.float32), std=np.full(3, 0.25, dtype=np.float32))
    source, prepare = training_batches, None
    if fast.resident_data():  # as pretrain.train does: the photos on the device, each batch cut there
        images = fast_data.DeviceImages(data.train_images, data.mean, data.std, cfg.img_size)
        source = device_batches

        def prepare(idx, tops, lefts, flips, noise):
            return images.batch(idx, tops, lefts, flips), noise

    def epoch():
        batches = prefetched(source(data, rng.permutation(n), batch_size, cfg.img_size, cfg.num_patches, rng))
        return train_one_epoch(runner, optimizer, batches, loop_steps, 0, lambda step: LR, "loop", False, prepare)

    epoch()  # warm-up
    return epoch()
