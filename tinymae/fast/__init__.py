"""The fast path: the same computations as the plain reference in tinymae/model/, made faster, and the one
place that chooses what runs.

    runner(model, threads)  what the training loop calls for model.forward + model.backward and the
                            optimiser step: on the CPU, cpu.DataParallel (the batch in shards, one worker
                            thread per core); on a GPU, the plain step (the GPU spreads every kernel over
                            its own cores). Building one also puts the backend's fast kernels in place.
    AdamW                   optim.FlatAdamW: AdamW over one flat buffer of every parameter
    use_kernels(kernels)    every model module calls `kernels`' functions instead of the reference ones
                            of the same name; use_kernels(REFERENCE) goes back to the plain formulas
    CPU_KERNELS             layers_cpu.py: in-place arithmetic and BLAS sums (NumPy)
    CUDA_KERNELS            cuda.py: the Transformer block, LayerNorm and the loss in fused kernels, and
                            AdamW in one kernel (CuPy)
    resident_data()         whether the training photos live on the device (data.py: DeviceImages), each
                            batch cut from them there instead of on the host

The GPU's fast path (CUDA_KERNELS, the one-kernel AdamW, resident photos) is on with TINYMAE_FAST_GPU=1
and CuPy: its formulas are tested on NumPy, but it has not yet run on a GPU, so it is off by default.

A model module (mae_vit.py, transformer.py, ...) calls the functions it imported from model/layers.py and
model/attention.py by name; use_kernels rebinds exactly those names, module by module, and nothing else.
Every fast function is tested equal to the reference it stands in for (tests/test_fast.py), on NumPy and
on the strict CuPy stand-in, and on CuPy itself where a GPU exists.
"""
from .. import backend
from ..model import attention, layers, loss, mae, mae_mlp, mae_vit, models_vit, transformer
from . import cuda, layers_cpu
from .cpu import DataParallel, keep_freed_memory
from .optim import FlatAdamW

# The model modules that call layer functions by name: the places use_kernels rebinds.
MODEL_MODULES = (attention, transformer, mae, mae_vit, mae_mlp, models_vit)

REFERENCE = {
    "linear_forward": layers.linear_forward, "linear_backward": layers.linear_backward,
    "layernorm_forward": layers.layernorm_forward, "layernorm_backward": layers.layernorm_backward,
    "gelu_forward": layers.gelu_forward, "gelu_backward": layers.gelu_backward,
    "softmax_forward": attention.softmax_forward, "softmax_backward": attention.softmax_backward,
    "attention_backward": attention.attention_backward,
    "block_forward": transformer.block_forward, "block_backward": transformer.block_backward,
    "mse_forward": loss.mse_forward, "mse_backward": loss.mse_backward,
}
CPU_KERNELS = {
    "linear_forward": layers_cpu.linear_forward, "linear_backward": layers_cpu.linear_backward,
    "layernorm_forward": layers_cpu.layernorm_forward, "layernorm_backward": layers_cpu.layernorm_backward,
    "gelu_forward": layers_cpu.gelu_forward, "gelu_backward": layers_cpu.gelu_backward,
    "softmax_forward": layers_cpu.softmax_forward, "softmax_backward": layers_cpu.softmax_backward,
    "attention_backward": layers_cpu.attention_backward,
}

CUDA_KERNELS = cuda.CUDA_KERNELS
AdamW = FlatAdamW  # the optimiser training runs use


def use_kernels(kernels):
    """Make every model module call `kernels`' functions ({reference name: function}) in place of the
    reference functions of those names (REFERENCE puts the reference back)."""
    for module in MODEL_MODULES:
        for name, function in kernels.items():
            if name in vars(module):  # only names the module imported: nothing new appears in it
                setattr(module, name, function)


def backend_kernels():
    """The kernels a training run on this backend uses."""
    if backend.name == "cupy":
        return CUDA_KERNELS if cuda.ENABLED else REFERENCE
    return CPU_KERNELS


def resident_data():
    """Whether a training run keeps its photos on the device and cuts each batch there (fast/data.py)."""
    return backend.name == "cupy" and cuda.ENABLED


def runner(model, threads=0):
    """The training step's runner for `model` (threads: CPU worker threads, 0 = one per core); the backend's
    fast kernels in place."""
    use_kernels(backend_kernels())
    if backend.name == "numpy":
        keep_freed_memory()  # reuse freed big arrays instead of page-faulting new memory
    return DataParallel(model, threads)  # on CuPy, or with one thread, it runs the plain step
