"""AdamW (Loshchilov & Hutter, 2019) with PyTorch's semantics, and MAE's learning-rate schedule."""
import math

from . import backend
from .backend import asarray, xp

# Elements per piece of a CPU update: 256 KB per float32 array, so the update's passes run on numbers
# that stay in the CPU's cache (see AdamW.pieces; benchmarks/README.md has the measurements).
CHUNK = 1 << 16


def one_dimensional(params):
    """Names of the 1-D parameters (biases, LayerNorm weights and biases): the ones MAE's recipes exempt
    from weight decay (timm's param_groups_weight_decay skips every tensor with ndim <= 1)."""
    return tuple(name for name, value in params.items() if value.ndim <= 1)


def adamw_update(p, g, m, v, work, decay, beta1, beta2, eps, step_size):
    """One AdamW update of flat arrays p, m, v in place, from gradient g; `work` is scratch of their size.

    decay = 1 - lr * weight_decay (1.0: none); eps and step_size carry the bias corrections (AdamW.step).
    Every line writes into an existing array: nothing is allocated.
    """
    if decay != 1.0:
        p *= decay
    m *= beta1
    xp.multiply(g, 1.0 - beta1, out=work)
    m += work  # m = beta1 m + (1 - beta1) g
    v *= beta2
    xp.multiply(g, g, out=work)
    work *= 1.0 - beta2
    v += work  # v = beta2 v + (1 - beta2) g^2
    xp.sqrt(v, out=work)
    work += eps
    xp.divide(m, work, out=work)
    work *= step_size
    p -= work  # p -= step_size * m / (sqrt(v) + eps)


class AdamW:
    """AdamW over a dict name -> parameter array; `step(grads)` updates the arrays in place.

    Per parameter p with gradient g, at step t (torch.optim.AdamW, single-tensor path):
        p <- p - lr * weight_decay * p                  decoupled weight decay (not for `no_decay`)
        m <- beta1 * m + (1 - beta1) * g                first moment
        v <- beta2 * v + (1 - beta2) * g^2              second moment
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    Defaults are MAE's pre-training ones: betas (0.9, 0.95), weight decay 0.05.
    Set `opt.lr` before each step to follow a schedule. lr_scale {name: factor} multiplies the learning
    rate (and with it the decay) of single parameters: the layer-wise decay of fine-tuning, as the
    official param_groups_lrd's "lr_scale".
    """

    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, no_decay=(), lr_scale=None):
        unknown = (set(no_decay) | set(lr_scale or {})) - set(params)
        if unknown:
            raise ValueError(f"no_decay or lr_scale names that are not parameters: {sorted(unknown)}")
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.no_decay = frozenset(no_decay)
        self.lr_scale = dict(lr_scale or {})
        self.t = 0  # steps taken
        self.m = {name: xp.zeros_like(p) for name, p in params.items()}
        self.v = {name: xp.zeros_like(p) for name, p in params.items()}
        # One work array that every update writes its intermediate results into, so that a step
        # allocates nothing (the MLP's largest weight alone is 14 MB).
        self.work = xp.empty(min(CHUNK, max(p.size for p in params.values())) if backend.name != "cupy"
                             else max(p.size for p in params.values()), dtype=xp.result_type(*params.values()))

    def step(self, grads):
        beta1, beta2 = self.betas
        for p, g, m, v, decay, eps, step_size in self.pieces(grads):
            adamw_update(p, g, m, v, self.work[:p.size], decay, beta1, beta2, eps, step_size)

    def pieces(self, grads):
        """Start step t+1 and list its work: (p, g, m, v, decay, eps, step_size) for pieces of every parameter.

        The update's last line, lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), is rewritten as
        (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)): the same value up to rounding, one pass
        fewer (Kingma & Ba, 2015, Sec. 2: the "more efficient" order of the bias corrections). On the CPU
        each parameter is cut into pieces of CHUNK elements, so the 13 passes of adamw_update run on
        numbers in the CPU's cache instead of streaming five arrays through memory 13 times; on a GPU
        each parameter is one piece. Pieces are independent: parallel.py updates them on several threads.
        """
        self.t += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1.0 - beta1 ** self.t
        bias_correction2 = 1.0 - beta2 ** self.t
        eps = self.eps * math.sqrt(bias_correction2)
        work = []
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, parameter has {p.shape}")
            if not p.flags.c_contiguous:
                raise ValueError(f"parameter {name!r} is not a contiguous array; AdamW updates it in place "
                                 "through a flat view. Store it with backend.asarray(...) or .copy()")
            lr = self.lr * self.lr_scale.get(name, 1.0)
            decay = 1.0 - lr * self.weight_decay if name not in self.no_decay else 1.0
            step_size = lr * math.sqrt(bias_correction2) / bias_correction1
            flat = [a.reshape(-1) for a in (p, g, self.m[name], self.v[name])]  # views (g's may be a copy)
            chunk = p.size if backend.name == "cupy" else CHUNK
            for i in range(0, p.size, chunk):
                work.append((*(a[i:i + chunk] for a in flat), decay, eps, step_size))
        return work

    def state_dict(self):
        """Everything needed to continue exactly: the step count and both moments (backend arrays)."""
        state = {"t": self.t}
        for name in self.params:
            state["m." + name] = self.m[name]
            state["v." + name] = self.v[name]
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for name, p in self.params.items():
            for key, moments in (("m." + name, self.m), ("v." + name, self.v)):
                if key not in state:
                    raise KeyError(f"optimizer state has no {key!r}; was it saved for another model?")
                if tuple(state[key].shape) != p.shape:
                    raise ValueError(f"optimizer state {key!r} has shape {tuple(state[key].shape)}, parameter has {p.shape}")
                moments[name] = xp.ascontiguousarray(asarray(state[key], dtype=p.dtype))  # step() needs flat views


def cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """Linear warm-up, then a half-cycle cosine down to min_lr (util/lr_sched.py of the official MAE).

    MAE calls it every iteration with a fractional epoch; counting in steps is the same schedule.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
