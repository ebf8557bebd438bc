"""A test-only NumPy backend that behaves like CuPy where CuPy is strict: its arrays refuse to combine
with plain host (NumPy) arrays.

CI has no GPU, yet the classic CuPy breakages are host/device mixes: `device_array + numpy_array`,
`xp.concatenate([device_array, numpy_array])`, indexing a device array with a host index array, or
assigning a host array into a device array. CuPy raises TypeError for each. Running the engine on
`strict` (arrays of type StrictArray, a NumPy subclass) catches the same mistakes on a CPU:

  * `strict.asarray` / `strict.array` are the host -> "device" door (as cupy.asarray); every other
    namespace function refuses plain ndarray arguments;
  * arithmetic, ufuncs and NumPy functions refuse a plain ndarray operand;
  * indexing and item assignment refuse plain ndarray indices and values;
  * reductions return 0-d arrays, as CuPy does, not NumPy scalars;
  * `.get()` copies to a plain ndarray (as cupy.ndarray.get), which is what backend.to_numpy calls.

Python and NumPy scalars combine freely, as they do with CuPy. What it cannot catch: NumPy code that
reads a StrictArray as if it were a host array (np.asarray(strict), host_array[strict_index]); CuPy
refuses those too, so keep the engine's reads through backend.to_numpy.
"""
import numpy as np


class HostDeviceMixError(TypeError):
    pass


def _is_plain(a):
    return type(a) is np.ndarray


def _refuse_plain(obj, what):
    """Raise if obj (or anything inside a list/tuple/dict) is a plain host ndarray."""
    if _is_plain(obj):
        raise HostDeviceMixError(
            f"{what}: a plain NumPy (host) array of shape {obj.shape} mixed with backend arrays; "
            "CuPy refuses this. Move it with backend.asarray first.")
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _refuse_plain(item, what)
    elif isinstance(obj, dict):
        for item in obj.values():
            _refuse_plain(item, what)


def _unwrap(obj):
    """StrictArray -> plain ndarray view (recursively), so NumPy internals work on plain arrays."""
    if isinstance(obj, StrictArray):
        return obj.view(np.ndarray)
    if isinstance(obj, list):
        return [_unwrap(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """Plain ndarray or NumPy scalar results -> StrictArray (recursively)."""
    if isinstance(obj, np.ndarray):
        return obj.view(StrictArray)
    if isinstance(obj, np.generic):  # CuPy reductions return 0-d arrays, not scalars
        return np.asarray(obj).view(StrictArray)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class StrictArray(np.ndarray):
    """An ndarray that, like a CuPy array, will not silently meet host arrays."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_plain(inputs, f"np.{ufunc.__name__}")
        if out is not None:
            _refuse_plain(out, f"np.{ufunc.__name__}(out=...)")
            kwargs["out"] = _unwrap(out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if any(t is np.ndarray for t in types):
            raise HostDeviceMixError(f"np.{func.__name__}: a plain NumPy (host) array mixed with backend arrays")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getitem__(self, index):
        _refuse_plain(index, "indexing")
        return _wrap(super().__getitem__(_unwrap(index)))

    def __setitem__(self, index, value):
        _refuse_plain(index, "item assignment index")
        _refuse_plain(value, "item assignment value")
        super().__setitem__(_unwrap(index), _unwrap(value))

    def get(self):
        """Copy to a plain host ndarray, as cupy.ndarray.get()."""
        return np.array(self.view(np.ndarray))


class _StrictNamespace:
    """`xp` for the strict backend: NumPy's functions, refusing host arrays, returning StrictArrays."""

    __name__ = "strict_numpy"
    ndarray = np.ndarray

    @staticmethod
    def asarray(a, dtype=None):
        return np.array(_unwrap(a), dtype=dtype, copy=True).view(StrictArray)

    array = asarray

    def __getattr__(self, name):
        obj = getattr(np, name)
        if not callable(obj) or isinstance(obj, type):
            return obj  # constants, dtypes (np.float32), ...

        def strict_function(*args, **kwargs):
            _refuse_plain(args, f"xp.{name}")
            _refuse_plain(kwargs, f"xp.{name}")
            return _wrap(obj(*_unwrap(args), **_unwrap(kwargs)))

        strict_function.__name__ = name
        return strict_function


strict_numpy = _StrictNamespace()
