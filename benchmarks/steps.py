"""One training step of each framework, set up the same way for every benchmark (bench_step.py, profile_step.py).

    training_batch(arch)                  the batch size the model trains with (config.ARCH_RECIPE)
    make_batch(arch, batch_size)          a tinymae model at its default size, a batch of images, its mask noise
    tinymae_optimizer(model)              fast.AdamW, as a training run builds it
    tinymae_step(runner, optimizer, ...)  one step of engine.train_one_epoch: forward, backward, AdamW
    torch_device()                        where the PyTorch twin runs: 'cpu' on NumPy, 'cuda' on CuPy
    torch_optimizer(twin, model)          torch.optim.AdamW with tinymae's two parameter groups
    torch_inputs(imgs, noise, device)     the same batch and noise as torch tensors
    torch_step(twin, optimizer, ...)      the same step in PyTorch eager

A step ends with the loss read back to the host, as the training loop does; on a GPU that also waits for
the step's kernels to finish. torch is imported only inside the torch functions, when they run:
bench_step.py's tinymae memory worker must not load it (its ~200 MB of libraries would count against tinymae).
"""
from tinymae import fast
from tinymae.backend import asarray, host_rng, to_numpy
from tinymae.config import PretrainConfig
from tinymae.model.build import build_model
from tinymae.model.masking import masking_noise

from measure import on_gpu  # benchmarks/measure.py, next to this file

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
