"""The strict stand-in for CuPy (tests/strict_numpy.py): the two CuPy failures it used to miss, and each
of its rules, refusals and permissions both, so that none can silently regress.

Tests taking `device_xp` run on the strict backend and on CuPy (where a GPU is present), so the claim
"strict refuses what CuPy refuses" is checked against CuPy itself. CuPy refuses with TypeError or
AttributeError, depending on the function; strict with its own TypeErrors.
"""
import numpy as np
import pytest

from tinymae import backend
from tinymae.backend import to_numpy
from tinymae.model.layers import linear_backward, linear_forward
from tinymae.model.optim import AdamW
from tinymae.util.gradcheck import check_backward, rel_error

from strict_numpy import HostDeviceMixError, NotAnArrayError, StrictArray
from strict_numpy import strict_numpy as strict


@pytest.fixture
def device_xp(xp):
    """The backends that refuse: strict and CuPy (skipped on plain NumPy, which accepts everything)."""
    if xp is np:
        pytest.skip("plain NumPy takes Python values and host arrays everywhere")
    return xp


def refusal(xp, strict_error):
    """The exception a refusal raises: strict's own class; on CuPy, TypeError or AttributeError."""
    return strict_error if xp is strict else (TypeError, AttributeError)


def linear_inputs(rng):
    return {"x": backend.asarray(rng.standard_normal((2, 3))),
            "w": backend.asarray(rng.standard_normal((3, 4))),
            "b": backend.asarray(rng.standard_normal(4))}


# ---- failure 1: cupy.unravel_index refuses a Python int, which gradcheck passed it

def test_unravel_index_of_a_python_int_is_refused_as_on_cupy(device_xp):
    with pytest.raises(refusal(device_xp, NotAnArrayError)):
        device_xp.unravel_index(5, (2, 3))


def test_strict_unravel_index_of_a_device_index_gives_0d_arrays():
    rows, cols = strict.unravel_index(strict.asarray(5), (2, 3))
    assert (type(rows), type(cols)) == (StrictArray, StrictArray)
    assert (rows.shape, int(rows), int(cols)) == ((), 1, 2)


def test_check_backward_reports_the_linear_layer_on_every_backend(xp, rng):
    inputs = linear_inputs(rng)
    reports = check_backward(linear_forward, linear_backward, inputs)
    assert [r.name for r in reports] == ["x", "w", "b"]
    for report, x in zip(reports, inputs.values()):
        assert report.rel_error < 1e-7
        assert all(type(i) is int for i in report.worst_index)
        assert len(report.worst_index) == x.ndim
        assert all(0 <= i < n for i, n in zip(report.worst_index, x.shape))
        assert type(report.rel_error) is float and type(report.analytic) is float


def test_check_backward_points_at_the_element_of_a_wrong_gradient(xp, rng):
    """A backward whose dw is off by 0.5 at one element: the report names that element and its numbers."""
    def wrong_backward(dout, cache):
        dx, dw, db = linear_backward(dout, cache)
        dw[1, 2] += 0.5
        return dx, dw, db

    w_report = check_backward(linear_forward, wrong_backward, linear_inputs(rng))[1]
    assert (w_report.name, w_report.worst_index) == ("w", (1, 2))
    assert w_report.analytic - w_report.numeric == pytest.approx(0.5, abs=1e-6)
    assert w_report.rel_error == pytest.approx(float(rel_error(w_report.analytic, w_report.numeric)))
    assert w_report.max_abs_diff == pytest.approx(0.5, abs=1e-6)


# ---- failure 2: AdamW stepped with host gradients while its parameters are backend arrays

def test_adamw_step_with_host_gradients_is_refused_on_device_backends(device_xp):
    params = {"w": backend.asarray(np.ones((2, 3)))}
    opt = AdamW(params, lr=0.1)
    with pytest.raises(TypeError):  # strict: HostDeviceMixError; CuPy: "Unsupported type <class 'numpy.ndarray'>"
        opt.step({"w": np.full((2, 3), 0.5)})


def test_adamw_step_with_gradients_moved_by_asarray_runs_on_every_backend(xp):
    params = {"w": backend.asarray(np.ones((2, 3)))}
    AdamW(params, lr=0.1, weight_decay=0.0).step({"w": backend.asarray(np.full((2, 3), 0.5))})
    np.testing.assert_allclose(to_numpy(params["w"]), 0.9, rtol=1e-7)


# ---- rule 2: Python numbers, lists and tuples where a function needs an array

def python_value_calls(xp):
    """(name, call) pairs in which a Python value stands where CuPy needs a device array."""
    a = xp.asarray([[3.0, 1.0], [2.0, 4.0]])
    return [
        ("sum of a list", lambda: xp.sum([1.0, 2.0])),
        ("max of a float", lambda: xp.max(2.0)),
        ("argmax of a tuple", lambda: xp.argmax((1.0, 2.0))),
        ("argsort of a list", lambda: xp.argsort([3, 1, 2])),
        ("sort of a list", lambda: xp.sort([3, 1, 2])),
        ("unravel_index of a list", lambda: xp.unravel_index([5], (2, 3))),
        ("take_along_axis with list indices", lambda: xp.take_along_axis(a, [[0], [1]], 1)),
        ("where with a list condition", lambda: xp.where([True, False], 1.0, 0.0)),
        ("broadcast_to of a float", lambda: xp.broadcast_to(1.0, (2, 2))),
        ("zeros_like of a float", lambda: xp.zeros_like(1.0)),
        ("concatenate with a float item", lambda: xp.concatenate([a[0], 5.0])),
        ("concatenate with a list item", lambda: xp.concatenate([a, [[1.0, 2.0]]])),
        ("ufunc with a list operand", lambda: xp.maximum([1.0, -1.0], 0)),
        ("operator with a list operand", lambda: a + [1.0, 2.0]),
    ]


@pytest.mark.parametrize("case", range(len(python_value_calls(strict))),
                         ids=[name for name, _ in python_value_calls(strict)])
def test_python_value_where_an_array_is_needed_is_refused(device_xp, case):
    _, call = python_value_calls(device_xp)[case]
    with pytest.raises(refusal(device_xp, NotAnArrayError)):
        call()


def test_strict_refuses_python_values_through_numpy_functions_too():
    """np.sum(strict) dispatches to strict's rules, as np.sum(cupy_array) dispatches to cupy.sum."""
    with pytest.raises(NotAnArrayError):
        np.concatenate([strict.zeros(2), [1.0]])


def test_strict_takes_python_values_beside_the_array_arguments():
    a = strict.asarray([[3.0, 1.0], [2.0, 4.0]])
    assert float(strict.where(a > 2, a, 0.0).sum()) == 7.0  # x and y of where may be numbers
    assert strict.broadcast_to(a[0], (3, 2)).shape == (3, 2)  # shapes are tuples
    assert int(strict.take_along_axis(a, strict.asarray([[1], [0]]), 1)[1, 0]) == 2
    assert strict.concatenate([a, a], axis=1).shape == (2, 4)
    assert strict.argpartition(-a, 1, axis=1).shape == (2, 2)  # kth is a number


CREATION_CALLS = [
    ("zeros", lambda: strict.zeros((2, 3), dtype="float32")),
    ("ones", lambda: strict.ones(3)),
    ("empty", lambda: strict.empty(4, dtype=strict.float64)),
    ("full", lambda: strict.full((2,), 0.5)),
    ("arange", lambda: strict.arange(5)),
    ("eye", lambda: strict.eye(3)),
    ("linspace", lambda: strict.linspace(0.0, 1.0, 5)),
    ("asarray of a list", lambda: strict.asarray([1.0, 2.0])),
    ("asarray of a host array", lambda: strict.asarray(np.ones(3))),
    ("array of a float", lambda: strict.array(3.0)),
    ("full_like with a number", lambda: strict.full_like(strict.zeros(2), 0.5)),
    ("zeros_like with a dtype", lambda: strict.zeros_like(strict.zeros(2), dtype="float32")),
    ("tile of a float", lambda: strict.tile(1.0, 3)),
]


@pytest.mark.parametrize("call", [call for _, call in CREATION_CALLS], ids=[name for name, _ in CREATION_CALLS])
def test_strict_creation_functions_take_python_values(call):
    assert type(call()) is StrictArray


# ---- rule 3: ufuncs take device arrays and scalars

def test_ufuncs_take_a_number_beside_an_array(device_xp):
    a = device_xp.asarray([-1.0, 2.0])
    np.testing.assert_array_equal(to_numpy(device_xp.maximum(a, 0)), [0.0, 2.0])
    np.testing.assert_array_equal(to_numpy(device_xp.maximum(0, a)), [0.0, 2.0])
    np.testing.assert_array_equal(to_numpy(a * 2.0), [-2.0, 4.0])
    np.testing.assert_array_equal(to_numpy(1.0 - a), [2.0, -1.0])
    np.testing.assert_array_equal(to_numpy(device_xp.divmod(device_xp.arange(5), 2)[1]), [0, 1, 0, 1, 0])


def test_ufuncs_of_numbers_alone_give_0d_device_arrays(device_xp):
    """cupy.exp(0) is array(1.), a device array (cupy/cupy#4122); strict does the same."""
    for result, value in [(device_xp.exp(0.0), 1.0), (device_xp.add(1, 2), 3), (device_xp.maximum(-1.0, 0), 0.0)]:
        assert isinstance(result, device_xp.ndarray) and not isinstance(result, np.generic)
        assert result.shape == () and float(result) == value
    assert type(strict.exp(0.0)) is StrictArray


# ---- rule 1: host arrays never meet backend arrays

def test_host_array_in_a_ufunc_is_refused_as_on_cupy(device_xp):
    a = device_xp.zeros(3)
    host = np.ones(3)
    error = refusal(device_xp, HostDeviceMixError)
    with pytest.raises(error):
        a + host
    with pytest.raises(error):
        host * a
    with pytest.raises(error):
        device_xp.multiply(host, 0.5, out=a)
    with pytest.raises(error):
        device_xp.multiply(a, 0.5, out=np.empty(3))


def test_host_array_in_concatenate_is_refused_as_on_cupy(device_xp):
    with pytest.raises(refusal(device_xp, HostDeviceMixError)):
        device_xp.concatenate([device_xp.zeros(2), np.ones(2)])


def test_strict_refuses_host_arrays_where_cupy_would_copy_them_silently():
    """CuPy copies these to the device (a hidden transfer) or, for cupy.sum, computes on the host."""
    a = strict.zeros((3, 2))
    host_index = np.array([0, 2])
    for call in [lambda: strict.sum(np.ones(3)),            # cupy.sum(host) runs NumPy's .sum, on the host
                 lambda: strict.where(a > 0, a, np.ones((3, 2))),
                 lambda: strict.tile(np.ones(2), 2),
                 lambda: a[host_index],                      # CuPy copies a host index array to the device
                 lambda: a.__setitem__(host_index, 1.0),
                 lambda: a.__setitem__(slice(None), np.ones((3, 2))),  # CuPy: ValueError from fill
                 lambda: a.__setitem__(strict.asarray([0, 2]), np.ones(2))]:
        with pytest.raises(HostDeviceMixError):
            call()


def test_strict_indexing_takes_numbers_slices_lists_and_device_indices():
    a = strict.asarray(np.arange(6.0).reshape(3, 2))
    assert float(a[2, 1]) == 5.0
    np.testing.assert_array_equal(to_numpy(a[[0, 2], 0]), [0.0, 4.0])  # CuPy turns a list index into an array
    np.testing.assert_array_equal(to_numpy(a[strict.asarray([2, 0]), 1]), [5.0, 1.0])
    a[1:, 0] = strict.asarray([7.0, 8.0])
    a[0] = 9.0
    np.testing.assert_array_equal(to_numpy(a), [[9.0, 9.0], [7.0, 3.0], [8.0, 5.0]])


# ---- rules 4 and 5: results are device arrays; .get() is the way to the host

def test_reductions_give_0d_device_arrays_that_int_and_float_read(device_xp):
    a = device_xp.asarray([[3.0, 1.0], [2.0, 4.0]])
    for result in [device_xp.sum(a), a.sum(), device_xp.max(a), a.mean(), device_xp.argmax(a), a.argmin()]:
        assert isinstance(result, device_xp.ndarray) and result.shape == ()
    assert type(device_xp.sum(a)) is not np.float64
    assert float(device_xp.sum(a)) == 10.0 and int(device_xp.argmax(a)) == 3 and a.max().item() == 4.0


def test_index_results_are_device_arrays_that_index_again(device_xp):
    """a.nonzero() and a.argmax(axis) give device arrays, so they can index device arrays."""
    a = device_xp.asarray([[0.0, 1.0], [2.0, 0.0]])
    rows, cols = a.nonzero()
    np.testing.assert_array_equal(to_numpy(a[rows, cols]), [1.0, 2.0])
    best = a.argmax(axis=1)
    np.testing.assert_array_equal(to_numpy(a[device_xp.arange(2), best]), [1.0, 2.0])
    assert type(a.take(1)) is not np.float64


def test_strict_get_and_to_numpy_give_a_host_copy():
    a = strict.asarray([1.0, 2.0])
    host = a.get()
    assert type(host) is np.ndarray and type(to_numpy(a)) is np.ndarray
    host[0] = 5.0
    assert float(a[0]) == 1.0  # a copy, not a view
    np.testing.assert_array_equal(to_numpy(a), [1.0, 2.0])
