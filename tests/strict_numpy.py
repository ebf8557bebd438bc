"""A test-only NumPy backend that refuses what CuPy refuses, so that CI (which has no GPU) catches the
engine's CuPy breakages on a CPU.

NumPy turns almost anything into an array on the spot: a Python number, a list, a host array. CuPy
does not, because its arrays live on the GPU and every silent conversion would be a hidden copy (and a
wait) between host and device. Running the engine on `strict` (arrays of type StrictArray, a NumPy
subclass) refuses the same things CuPy refuses. The rules, and the CuPy behaviour each one mirrors
(read in CuPy's source and its "Differences between CuPy and NumPy" page, docs.cupy.dev):

1. Host arrays never meet backend arrays (HostDeviceMixError). A plain NumPy array is refused as an
   argument of a namespace function, an operand of a ufunc or operator, an `out=`, an index, an
   assigned value and an item of a list to concatenate. `strict.asarray` / `strict.array` are the one
   host -> device door, as cupy.asarray is.
   CuPy: ufuncs raise `TypeError: Unsupported type <class 'numpy.ndarray'>` (cupy/_core/_kernel.pyx,
   _preprocess_args), also for `out=`; cupy.concatenate raises the same; `device[...] = host` raises
   `ValueError: non-scalar numpy.ndarray cannot be used for fill` (ndarray.fill). Some doors CuPy
   leaves open: a host index array, a value assigned through an index array and cupy.tile's argument
   are copied to the device silently, and cupy.sum(host) runs NumPy's own .sum on the host. Strict
   closes those too, because each is a hidden transfer: the engine moves data through
   backend.asarray and backend.to_numpy only.

2. A Python number (bool, int, float, complex), list or tuple where a function needs an array is
   refused (NotAnArrayError), except in creation functions. CuPy's routines read their array
   argument's attributes (`cupy.sum(a)` is `a.sum(...)`, `cupy.argsort(a)` is `a.argsort(...)`,
   take_along_axis reads `indices.dtype`, where reads `condition.astype`), take a typed Cython
   argument (broadcast_to), or check (`cupy.concatenate`: "Only cupy arrays can be concatenated");
   `cupy.unravel_index(5, shape)` calls `cupy.can_cast(5, int64)`, which NumPy 2 refuses for a
   Python int. So CuPy raises TypeError or AttributeError; strict raises a TypeError.
   Checked: the first positional argument of every namespace function (where: the condition, x and y
   may be numbers; zeros_like & co.: the prototype, whose .dtype CuPy reads), both arrays of
   take_along_axis, and every item of concatenate/stack. NumPy scalars pass, as they do on CuPy.
   Creation functions take Python values, as CuPy's do: shapes, dtypes, fill values, nested lists.

3. Ufuncs (xp.maximum, xp.exp, and the operators + - * / ** ...) take device arrays and scalars only.
   A number next to an array is fine (`xp.maximum(a, 0)`, `a * 2.0`), and so are numbers alone:
   `cupy.exp(0)` returns a 0-d device array (cupy/cupy#4122), and so does strict. Any other operand
   (a list, a tuple) is refused: CuPy's ufuncs raise `TypeError: Unsupported type <class 'list'>` (the
   "Differences" page: "Universal Functions only work with CuPy array or scalar").

4. Reductions (sum, max, argmax, ...), methods (a.argmax(), a.nonzero()) and every other result come
   back as backend arrays, 0-d ones for single numbers, never NumPy scalars or host arrays ("Differences",
   "Zero-dimensional array": CuPy scalars would need a device -> host wait). float(r), int(r) and r.item()
   read them on the host, as on CuPy.

5. `.get()` copies to a plain ndarray, as cupy.ndarray.get does; backend.to_numpy calls it.

What strict cannot catch: NumPy code that reads a StrictArray as a host array (np.asarray(strict),
host_array[strict_index]). A StrictArray is an ndarray, so NumPy takes it without asking, while CuPy
refuses ("Implicit conversion to a NumPy array is not allowed. Please use `.get()`"). Keep such reads
behind backend.to_numpy.
"""
import numpy as np


class HostDeviceMixError(TypeError):
    """A plain NumPy (host) array met backend arrays (rule 1)."""


class NotAnArrayError(TypeError):
    """A Python number, list or tuple stood where CuPy needs a device array (rules 2 and 3)."""


PYTHON_NUMBERS = (bool, int, float, complex)

# Functions that build arrays from Python values (rule 2's exception): CuPy's creation routines, cupy.tile
# (it passes its argument through cupy.array) and result_type (which reads dtypes and scalars, not data).
TAKES_PYTHON_VALUES = frozenset({"asarray", "array", "zeros", "ones", "empty", "full", "arange", "eye",
                                 "identity", "linspace", "tile", "result_type"})
# How many leading positional arguments must be device arrays, where that is more than the first.
LEADING_ARRAYS = {"take_along_axis": 2}
# Functions whose first argument is a sequence of device arrays.
TAKES_A_SEQUENCE_OF_ARRAYS = frozenset({"concatenate", "stack", "vstack", "hstack"})


def _is_plain(a):
    return type(a) is np.ndarray


def _refuse_plain(obj, what):
    """Raise if obj (or anything inside a list/tuple/dict) is a plain host ndarray (rule 1)."""
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


def _refuse_python_value(obj, what):
    """Raise if obj is a Python number, list or tuple, where CuPy needs a device array (rule 2)."""
    if isinstance(obj, PYTHON_NUMBERS + (list, tuple)):
        raise NotAnArrayError(
            f"{what}: got the Python {type(obj).__name__} {repr(obj)[:60]}, where CuPy needs a device array. "
            "Make it one with backend.asarray, or do this part on the host with NumPy.")


def _check_call(name, args, kwargs):
    """Raise where CuPy would refuse xp.<name>(*args, **kwargs), name not a ufunc (rules 1 and 2)."""
    _refuse_plain((args, kwargs), f"xp.{name}")
    if name in TAKES_PYTHON_VALUES or not args:
        return
    if name in TAKES_A_SEQUENCE_OF_ARRAYS and isinstance(args[0], (list, tuple)):
        arrays = args[0]
    else:
        arrays = args[:LEADING_ARRAYS.get(name, 1)]
    for a in arrays:
        _refuse_python_value(a, f"xp.{name}")


def _check_ufunc_operands(operands, name):
    """Raise unless every operand is a backend array or a scalar, as CuPy's ufuncs require (rule 3)."""
    for x in operands:
        _refuse_plain(x, name)
        if not isinstance(x, (StrictArray, np.generic) + PYTHON_NUMBERS):
            raise NotAnArrayError(
                f"{name}: got a {type(x).__name__} operand; CuPy's ufuncs take device arrays and scalars only "
                "(TypeError: Unsupported type). Make it an array with backend.asarray.")


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
    if isinstance(obj, np.generic):  # rule 4: 0-d arrays, not scalars
        return np.asarray(obj).view(StrictArray)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _device_result(method_name):
    """ndarray.<method_name>, returning backend arrays (0-d for single numbers) as CuPy's methods do."""
    method = getattr(np.ndarray, method_name)

    def device_method(self, *args, **kwargs):
        _refuse_plain((args, kwargs), f".{method_name}")
        return _wrap(method(self.view(np.ndarray), *_unwrap(args), **_unwrap(kwargs)))

    device_method.__name__ = method_name
    return device_method


class StrictArray(np.ndarray):
    """An ndarray that, like a CuPy array, will not silently meet host arrays or lists."""

    # Methods NumPy runs without a ufunc or an array function, so that nothing above sees their results:
    # they would hand back NumPy scalars (a.argmax()) or plain host arrays (a.nonzero()).
    argmax, argmin, nonzero, take, dot, trace = map(
        _device_result, ("argmax", "argmin", "nonzero", "take", "dot", "trace"))

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check_ufunc_operands(inputs, f"np.{ufunc.__name__}")
        _refuse_plain(kwargs, f"np.{ufunc.__name__}")
        if out is not None:
            _refuse_plain(out, f"np.{ufunc.__name__}(out=...)")
            kwargs["out"] = _unwrap(out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        # np.sum(strict), np.concatenate([strict, ...]): CuPy dispatches these to its own functions, so
        # the same rules apply as to xp.sum, xp.concatenate.
        _check_call(func.__name__, args, kwargs)
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
    """`xp` for the strict backend: NumPy's functions under the rules above, returning StrictArrays."""

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
            if isinstance(obj, np.ufunc):
                _check_ufunc_operands(args, f"xp.{name}")
                _refuse_plain(kwargs, f"xp.{name}")  # out=, where=
            else:
                _check_call(name, args, kwargs)
            return _wrap(obj(*_unwrap(args), **_unwrap(kwargs)))

        strict_function.__name__ = name
        return strict_function


strict_numpy = _StrictNamespace()
