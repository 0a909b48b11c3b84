// The bindings' checks: the arrays a kernel may see (exact dtype, C-contiguous, aligned), shapes,
// and the errors that name what is wrong.  Included by bindings.cpp only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels.hpp"

namespace py = pybind11;

namespace [[gnu::visibility("hidden")]] fgpy {

template <class T>
using Arr = py::array_t<T, py::array::c_style>;
template <class T>
using ArrIn = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        s += std::to_string(a.shape(d));
        if (a.ndim() == 1 || d + 1 < a.ndim()) s += d + 1 < a.ndim() ? ", " : ",";
    }
    return s + ")";
}

[[noreturn]] inline void fail(const std::string& msg) { throw py::value_error(msg); }

[[noreturn]] inline void out_of_memory(const std::string& what) {
    PyErr_SetString(PyExc_MemoryError, what.c_str());
    throw py::error_already_set();
}

inline std::string mib(double bytes) { return std::to_string(static_cast<long long>(bytes / (1 << 20) + 0.5)) + " MiB"; }

inline bool aligned(const py::array& a) { return (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0; }

// Hot paths take py::array and check it here: pybind11's array_t caster goes through
// PyArray_FromAny on every call, these checks only read the header.
template <class T>
inline bool is_exact(const py::array& a) {
    static const int num = py::dtype::of<T>().num();
    return a.dtype().num() == num && (a.flags() & py::array::c_style) && aligned(a) && a.dtype().byteorder() != '>';
}

template <class T>
Arr<T> exact(const py::array& a, const char* name) {
    if (!is_exact<T>(a))
        throw py::type_error(std::string(name) + ": expected an aligned C-contiguous " +
                             (sizeof(T) == 4 ? "float32" : "float64") + " array");
    return py::reinterpret_borrow<Arr<T>>(a);
}

// x for a forward pass: any numeric array-like, converted (a copy) only when it must be
template <class T>
Arr<T> as_input(py::handle x) {
    if (py::isinstance<py::array>(x)) {
        auto a = py::reinterpret_borrow<py::array>(x);
        if (is_exact<T>(a)) return py::reinterpret_borrow<Arr<T>>(a);
    }
    ArrIn<T> conv = ArrIn<T>::ensure(x);  // converts lists, ints, strided views; null if it cannot
    if (!conv) throw py::type_error("x: expected a numeric array");
    if (!aligned(conv)) conv = ArrIn<T>(conv.request());  // a copy: NumPy allocates aligned memory
    return py::reinterpret_borrow<Arr<T>>(conv);
}

// pybind11's noconvert caster checks the dtype and the layout, not the alignment
template <class T>
const Arr<T>& need_aligned(const Arr<T>& a, const char* name) {
    if (!aligned(a)) throw py::type_error(std::string(name) + ": expected an aligned array (its data is at an odd address)");
    return a;
}

// Whether every element of a C-contiguous float32 or float64 array is finite (TypeError otherwise).
inline bool all_finite_of(const py::array& a) {
    if (is_exact<float>(a)) return fg::all_finite(static_cast<const float*>(a.data()), std::size_t(a.size()));
    if (is_exact<double>(a)) return fg::all_finite(static_cast<const double*>(a.data()), std::size_t(a.size()));
    throw py::type_error("a: expected an aligned C-contiguous float32 or float64 array");
}

// The common case of fastgrad._validation's data check in one call, for fit's fixed cost: x and
// y exact arrays of the model's dtype, C-contiguous and aligned, x (n, d) with n, d > 0, y (n,) or
// (n, outputs), both finite.  Returns y as (n, outputs), or None when anything differs (Python
// then converts, or raises the error that names the problem).
inline py::object fast_data(py::handle xh, py::handle yh, bool f64, py::ssize_t outputs) {
    auto& api = py::detail::npy_api::get();
    if (Py_TYPE(xh.ptr()) != api.PyArray_Type_ || Py_TYPE(yh.ptr()) != api.PyArray_Type_) return py::none();
    const auto x = py::reinterpret_borrow<py::array>(xh);
    auto y = py::reinterpret_borrow<py::array>(yh);
    const bool exact = f64 ? is_exact<double>(x) && is_exact<double>(y) : is_exact<float>(x) && is_exact<float>(y);
    if (!exact || x.ndim() != 2 || x.shape(0) == 0 || x.shape(1) == 0) return py::none();
    const py::ssize_t n = x.shape(0);
    if (!(y.ndim() == 1 && outputs == 1 && y.shape(0) == n) && !(y.ndim() == 2 && y.shape(0) == n && y.shape(1) == outputs))
        return py::none();
    if (!all_finite_of(x) || !all_finite_of(y)) return py::none();
    if (y.ndim() == 2) return y;
    return y.reshape({n, py::ssize_t(1)});
}

inline void need_ndim(const py::array& a, py::ssize_t nd, const char* name, const char* layout) {
    if (a.ndim() != nd)
        fail(std::string(name) + ": expected a " + std::to_string(nd) + "-D array " + layout + ", got shape " +
             shape_str(a));
}

inline fg::Activation to_act(int a) {
    if (a != 0 && a != 1) fail("activation: expected 0 (linear) or 1 (relu), got " + std::to_string(a));
    return static_cast<fg::Activation>(a);
}

struct DenseShape {
    std::size_t n, in, out;
};

template <class T>
DenseShape check_dense(const py::array& x, const Arr<T>& k, const std::optional<Arr<T>>& b) {
    need_ndim(x, 2, "x", "(batch, input_dim)");
    need_ndim(k, 2, "kernel", "(input_dim, units)");
    if (x.shape(1) != k.shape(0))
        fail("x: expected " + std::to_string(k.shape(0)) + " columns to match kernel " + shape_str(k) +
             ", got shape " + shape_str(x));
    if (b) {
        need_ndim(*b, 1, "bias", "(units,)");
        if (b->shape(0) != k.shape(1))
            fail("bias: expected shape (" + std::to_string(k.shape(1)) + ",) to match kernel " + shape_str(k) +
                 ", got " + shape_str(*b));
    }
    return {std::size_t(x.shape(0)), std::size_t(k.shape(0)), std::size_t(k.shape(1))};
}

}  // namespace fgpy
