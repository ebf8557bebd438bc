"""AdamW (Loshchilov & Hutter, 2019) with PyTorch's semantics, and MAE's learning-rate schedule."""
import math

from .backend import asarray, xp


class AdamW:
    """AdamW over a dict name -> parameter array; `step(grads)` updates the arrays in place.

    Per parameter p with gradient g, at step t (torch.optim.AdamW, single-tensor path):
        p <- p - lr * weight_decay * p                  decoupled weight decay (not for `no_decay`)
        m <- beta1 * m + (1 - beta1) * g                first moment
        v <- beta2 * v + (1 - beta2) * g^2              second moment
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    Defaults are MAE's pre-training ones: betas (0.9, 0.95), weight decay 0.05.
    Set `opt.lr` before each step to follow a schedule.
    """

    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, no_decay=()):
        unknown = set(no_decay) - set(params)
        if unknown:
            raise ValueError(f"no_decay names that are not parameters: {sorted(unknown)}")
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.no_decay = frozenset(no_decay)
        self.t = 0  # steps taken
        self.m = {name: xp.zeros_like(p) for name, p in params.items()}
        self.v = {name: xp.zeros_like(p) for name, p in params.items()}

    def step(self, grads):
        self.t += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1.0 - beta1 ** self.t
        bias_correction2 = 1.0 - beta2 ** self.t
        step_size = self.lr / bias_correction1
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, parameter has {p.shape}")
            m, v = self.m[name], self.v[name]
            if self.weight_decay and name not in self.no_decay:
                p *= 1.0 - self.lr * self.weight_decay
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * (g * g)
            denom = xp.sqrt(v)
            denom /= math.sqrt(bias_correction2)
            denom += self.eps
            p -= step_size * (m / denom)

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
                moments[name] = asarray(state[key], dtype=p.dtype)


def cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """Linear warm-up, then a half-cycle cosine down to min_lr (util/lr_sched.py of the official MAE).

    MAE calls it every iteration with a fractional epoch; counting in steps is the same schedule.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
