"""AdamW over one flat buffer: model/optim.py's AdamW (same arguments, update and state_dict) with every parameter
and both moments laid out end to end, so that a step is a few long passes instead of a dozen short ones per
parameter. Building it moves the parameters into the buffer: the dict it is given (the model's own) gets views
into it, so the model reads what AdamW writes. On the CPU a step walks the buffer in pieces of CHUNK elements
(each piece's arithmetic stays in cache; cpu.DataParallel spreads them over the cores); with fused=True (a GPU)
the whole buffer is one kernel (cuda.adamw_flat). tests/test_fast.py holds it equal to the reference.
"""
import math

from ..backend import asarray, xp
from . import cuda

CHUNK = 1 << 16  # elements per piece of a CPU update: 256 KB per float32 array


def adamw_update(p, g, m, v, decay, scale, lr, beta1, beta2, eps, step_size):
    """One AdamW update of flat pieces p, m, v in place from gradient g. decay: each element's weight decay (0:
    none); scale: its learning-rate factor; eps and step_size carry the bias corrections (FlatAdamW.pieces)."""
    rate = scale * lr  # (n,)
    p *= 1.0 - rate * decay  # decoupled weight decay
    m *= beta1
    m += (1.0 - beta1) * g  # m = beta1 m + (1 - beta1) g
    v *= beta2
    v += (1.0 - beta2) * (g * g)  # v = beta2 v + (1 - beta2) g^2
    p -= (rate * step_size) * m / (xp.sqrt(v) + eps)


class FlatAdamW:
    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.05, no_decay=(), lr_scale=None,
                 fused=False):
        unknown = (set(no_decay) | set(lr_scale or {})) - set(params)
        if unknown:
            raise ValueError(f"no_decay or lr_scale names that are not parameters: {sorted(unknown)}")
        self.params, self.lr, self.betas, self.eps, self.fused, self.t = params, lr, betas, eps, fused, 0
        dtype = xp.result_type(*params.values())
        self.slices, start = {}, 0  # name -> its slice of the flat arrays
        for name, p in params.items():
            self.slices[name] = slice(start, start + p.size)
            start += p.size
        self.flat, self.m, self.v = xp.empty(start, dtype=dtype), xp.zeros(start, dtype=dtype), xp.zeros(start, dtype)
        decay, scale = [], []
        for name, p in params.items():
            self.flat[self.slices[name]] = p.reshape(-1)
            params[name] = self.flat[self.slices[name]].reshape(p.shape)  # the model now reads the buffer
            decay.append(xp.full(p.size, 0.0 if name in no_decay else weight_decay, dtype=dtype))
            scale.append(xp.full(p.size, (lr_scale or {}).get(name, 1.0), dtype=dtype))
        self.decay, self.scale = xp.concatenate(decay), xp.concatenate(scale)  # (n,) per element

    def _next(self):
        """Count step t+1 -> its (step_size, eps). The update's last line, lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps),
        is written (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)): the same value up to rounding, one pass
        fewer (Kingma & Ba, 2015, Sec. 2)."""
        self.t += 1
        bc1, bc2 = 1.0 - self.betas[0] ** self.t, 1.0 - self.betas[1] ** self.t
        return math.sqrt(bc2) / bc1, self.eps * math.sqrt(bc2)

    def pieces(self, grads):
        """Start the next step and list its work: (p, g, m, v, decay, scale, step_size, eps) for pieces of at most
        CHUNK elements of every parameter, each a view (the gradients stay where backward left them)."""
        step_size, eps = self._next()
        work = []
        for name, where in self.slices.items():
            if grads[name].shape != self.params[name].shape:
                raise ValueError(f"gradient for {name!r} has shape {grads[name].shape}, parameter has "
                                 f"{self.params[name].shape}")
            g = grads[name].reshape(-1)
            for i in range(where.start, where.stop, CHUNK):
                piece = slice(i, min(i + CHUNK, where.stop))
                local = slice(piece.start - where.start, piece.stop - where.start)
                work.append((self.flat[piece], g[local], self.m[piece], self.v[piece], self.decay[piece],
                             self.scale[piece], step_size, eps))
        return work

    def step(self, grads):
        if self.fused:
            step_size, eps = self._next()
            g = xp.concatenate([grads[name].reshape(-1) for name in self.slices])  # (n,) as the buffer
            cuda.adamw_flat(self.flat, g, self.m, self.v, self.decay, self.scale, self.lr, *self.betas, eps, step_size)
            return
        for p, g, m, v, decay, scale, step_size, eps in self.pieces(grads):
            adamw_update(p, g, m, v, decay, scale, self.lr, *self.betas, eps, step_size)

    def state_dict(self):
        """As the reference AdamW's: the step count and each parameter's moments, under its name."""
        state = {"t": self.t}
        for name, where in self.slices.items():
            state["m." + name] = self.m[where].reshape(self.params[name].shape)
            state["v." + name] = self.v[where].reshape(self.params[name].shape)
        return state

    def load_state_dict(self, state):
        self.t = int(state["t"])
        for name, where in self.slices.items():
            for key, flat in (("m." + name, self.m), ("v." + name, self.v)):
                flat[where] = asarray(state[key], dtype=flat.dtype).reshape(-1)
