"""AdamW over one flat buffer: model/optim.py's AdamW, with every parameter, first and second moment laid out
end to end in three flat arrays, so that a step is a few long passes instead of a dozen short ones per
parameter (tests/test_fast.py holds it equal to the reference).

    params[name]  a view into the flat parameter buffer, so the model reads and AdamW writes the same memory
    m, v          flat moments, one slice per parameter
    decay, scale  per-element constants: 0 where a parameter takes no weight decay, its lr_scale factor

On the CPU a step walks the buffer in pieces of CHUNK elements (each piece's arithmetic stays in the
CPU's cache), and cpu.DataParallel spreads the pieces over the cores; on a GPU with the fused kernels
(cuda.py) the whole buffer is one kernel. Checkpoints are unchanged: state_dict names every moment as
model/optim.py's AdamW does.
"""
import math

from .. import backend
from ..backend import asarray, xp
from . import cuda

# Elements per piece of a CPU update: 256 KB per float32 array, so the update's passes run on numbers that
# stay in the CPU's cache (benchmarks/README.md has the measurements).
CHUNK = 1 << 16


def adamw_update(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    """One AdamW update of flat pieces p, m, v in place, from gradient g.

    decay: the weight decay of each element (0: none); scale: its learning-rate factor. lr * scale is each
    element's rate; eps and step_size carry the bias corrections (pieces())."""
    rate = scale * lr  # (n,)
    p *= 1.0 - rate * decay  # decoupled weight decay
    m *= beta1
    m += (1.0 - beta1) * g  # m = beta1 m + (1 - beta1) g
    v *= beta2
    v += (1.0 - beta2) * (g * g)  # v = beta2 v + (1 - beta2) g^2
    p -= (rate * step_size) * m / (xp.sqrt(v) + eps)  # p -= lr m_hat / (sqrt(v_hat) + eps), see step()


class FlatAdamW:
    """model/optim.py's AdamW (same arguments, same update, same state_dict), over one flat buffer.

    Building it moves the parameters into the buffer: the dict `params` (the model's own) gets views into
    it in place of its arrays, with the same values."""

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
        self.t = 0
        dtype = xp.result_type(*params.values())
        self.slices, start = {}, 0  # name -> its slice of the flat arrays
        for name, p in params.items():
            self.slices[name] = slice(start, start + p.size)
            start += p.size
        self.flat = xp.empty(start, dtype=dtype)  # (n,) every parameter, end to end
        self.m = xp.zeros(start, dtype=dtype)  # (n,)
        self.v = xp.zeros(start, dtype=dtype)  # (n,)
        decay, scale = [], []
        for name, p in params.items():
            self.flat[self.slices[name]] = p.reshape(-1)
            params[name] = self.flat[self.slices[name]].reshape(p.shape)  # the model now reads the buffer
            decay.append(xp.full(p.size, 0.0 if name in self.no_decay else weight_decay, dtype=dtype))
            scale.append(xp.full(p.size, self.lr_scale.get(name, 1.0), dtype=dtype))
        self.decay = xp.concatenate(decay)  # (n,) weight decay of each element (0: none)
        self.scale = xp.concatenate(scale)  # (n,) learning-rate factor of each element

    def pieces(self, grads):
        """Start step t+1 and list its work: (p, g, m, v, decay, scale, step_size, eps) for pieces of at
        most CHUNK elements of every parameter, each a view (the gradients stay where backward left them).

        The update's last line, lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), is rewritten as
        (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)): the same value up to rounding, one pass
        fewer (Kingma & Ba, 2015, Sec. 2: the "more efficient" order of the bias corrections)."""
        self.t += 1
        beta1, beta2 = self.betas
        bias_correction1, bias_correction2 = 1.0 - beta1 ** self.t, 1.0 - beta2 ** self.t
        eps = self.eps * math.sqrt(bias_correction2)
        step_size = math.sqrt(bias_correction2) / bias_correction1
        work = []
        for name, where in self.slices.items():
            g = grads[name]
            if g.shape != self.params[name].shape:
                raise ValueError(f"gradient for {name!r} has shape {g.shape}, parameter has {self.params[name].shape}")
            g = g.reshape(-1)  # (size,) a view where g is contiguous
            for i in range(where.start, where.stop, CHUNK):
                piece = slice(i, min(i + CHUNK, where.stop))
                local = slice(piece.start - where.start, piece.stop - where.start)
                work.append((self.flat[piece], g[local], self.m[piece], self.v[piece], self.decay[piece],
                             self.scale[piece], step_size, eps))
        return work

    def step(self, grads):
        beta1, beta2 = self.betas
        if backend.name == "cupy" and cuda.ENABLED:  # the whole buffer in one kernel (cuda.adamw_flat)
            self.t += 1
            bias_correction1, bias_correction2 = 1.0 - beta1 ** self.t, 1.0 - beta2 ** self.t
            g = xp.concatenate([grads[name].reshape(-1) for name in self.slices])  # (n,) as the buffer
            cuda.adamw_flat(self.flat, g, self.m, self.v, self.decay, self.scale, self.lr, beta1, beta2,
                            self.eps * math.sqrt(bias_correction2), math.sqrt(bias_correction2) / bias_correction1)
            return
        for p, g, m, v, decay, scale, step_size, eps in self.pieces(grads):
            adamw_update(p, g, m, v, decay, scale, self.lr, beta1, beta2, eps, step_size)

    def state_dict(self):
        """As model/optim.py's AdamW: the step count and each parameter's moments, under its name."""
        state = {"t": self.t}
        for name, where in self.slices.items():
            state["m." + name] = self.m[where].reshape(self.params[name].shape)
            state["v." + name] = self.v[where].reshape(self.params[name].shape)
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for name, where in self.slices.items():
            shape = self.params[name].shape
            for key, flat in (("m." + name, self.m), ("v." + name, self.v)):
                if key not in state:
                    raise KeyError(f"optimizer state has no {key!r}; was it saved for another model?")
                if tuple(state[key].shape) != shape:
                    raise ValueError(f"optimizer state {key!r} has shape {tuple(state[key].shape)}, parameter has {shape}")
                flat[where] = asarray(state[key], dtype=flat.dtype).reshape(-1)
