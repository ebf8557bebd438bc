"""AdamW (Loshchilov & Hutter, 2019) with PyTorch's semantics, and MAE's learning-rate schedule.

This is the reference: the formula, one parameter at a time. The training runs use fast/optim.py's
FlatAdamW, the same update over one flat buffer of every parameter, tested equal to this one.
"""
import math

from ..backend import asarray, xp


def one_dimensional(params):
    """Names of the 1-D parameters (biases, LayerNorm weights and biases): the ones MAE's recipes exempt
    from weight decay (timm's param_groups_weight_decay skips every tensor with ndim <= 1)."""
    return tuple(name for name, value in params.items() if value.ndim <= 1)


class AdamW:
    """AdamW over a dict name -> parameter array; `step(grads)` updates the arrays in place.

    Per parameter p with gradient g, at step t (torch.optim.AdamW, single-tensor path):
        p <- p - lr * weight_decay * p                  decoupled weight decay (not for `no_decay`)
        m <- beta1 * m + (1 - beta1) * g                first moment
        v <- beta2 * v + (1 - beta2) * g^2              second moment
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)       m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
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

    def step(self, grads):
        self.t += 1
        beta1, beta2 = self.betas
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, parameter has {p.shape}")
            lr = self.lr * self.lr_scale.get(name, 1.0)
            if name not in self.no_decay:
                p *= 1.0 - lr * self.weight_decay  # in place: updating the parameters is the optimiser's job
            self.m[name] = beta1 * self.m[name] + (1.0 - beta1) * g
            self.v[name] = beta2 * self.v[name] + (1.0 - beta2) * g * g
            m_hat = self.m[name] / (1.0 - beta1 ** self.t)
            v_hat = self.v[name] / (1.0 - beta2 ** self.t)
            p -= lr * m_hat / (xp.sqrt(v_hat) + self.eps)

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
                    raise ValueError(f"optimizer state {key!r} has shape {tuple(state[key].shape)}, "
                                     f"parameter has {p.shape}")
                moments[name] = asarray(state[key], dtype=p.dtype)


def cosine_lr(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """Linear warm-up, then a half-cycle cosine down to min_lr (util/lr_sched.py of the official MAE).

    MAE calls it every iteration with a fractional epoch; counting in steps is the same schedule.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
