// fastgrad kernels: hand-derived forward/backward pairs, plain templated C++.
// No Python, no validation, no allocation: callers pass every buffer and every size.
// Argument order (as in llm.c): outputs first, then inputs, then sizes; gradients carry a `d`.
//
// Shapes, Keras layout:  X:(N,I)  K:(I,O)  b:(O)  Z,Y,dY,dZ:(N,O)  dX:(N,I)  dK:(I,O)  db:(O)
#pragma once

#include <cmath>
#include <cstddef>

#include "gemm.hpp"

namespace fg {

enum class Activation : int { linear = 0, relu = 1 };

// ---------------------------------------------------------------------------------------------
// Dense, Keras layout.  Z = X K + b   Y = act(Z)
// Backward, given dY = dL/dY:   dZ = dY * act'(Z)   (ReLU: 1 where Z > 0, else 0 — TF's choice at 0;
//                                                   Z > 0 exactly where Y > 0, so Y is what we keep)
//   dX = dZ K^T  (N,I)     dK = X^T dZ  (I,O)     db = sum over n of dZ[n,:]  (O)
// ---------------------------------------------------------------------------------------------
template <class T>
void dense_forward(T* y, const T* x, const T* k, const T* b, std::size_t n, std::size_t in,
                   std::size_t out, Activation act) {
    if (use_blas(n, in, out)) {
        gemm(false, false, n, out, in, x, k, y);  // Y = X K
        for (std::size_t r = 0; r < n; ++r) {
            T* yr = y + r * out;
            if (b)
                for (std::size_t o = 0; o < out; ++o) yr[o] += b[o];
            if (act == Activation::relu)
                for (std::size_t o = 0; o < out; ++o) yr[o] = yr[o] < T(0) ? T(0) : yr[o];
        }
        return;
    }
    // the reference loops (small shapes, where a library call costs more than the work)
    for (std::size_t r = 0; r < n; ++r) {
        T* yr = y + r * out;
        const T* xr = x + r * in;
        for (std::size_t o = 0; o < out; ++o) yr[o] = b ? b[o] : T(0);
        for (std::size_t i = 0; i < in; ++i) {
            const T xv = xr[i];
            const T* ki = k + i * out;
            for (std::size_t o = 0; o < out; ++o) yr[o] += xv * ki[o];
        }
        if (act == Activation::relu)
            for (std::size_t o = 0; o < out; ++o) yr[o] = yr[o] < T(0) ? T(0) : yr[o];  // NaN stays NaN
    }
}

// dx and db may be null (first layer; no bias). dz is an (N,O) scratch buffer, used for ReLU only;
// it may alias dy (the backward pass then overwrites dy).
template <class T>
void dense_backward(T* dx, T* dk, T* db, T* dz, const T* dy, const T* x, const T* k, const T* y,
                    std::size_t n, std::size_t in, std::size_t out, Activation act) {
    const T* g = dy;
    if (act == Activation::relu) {
        for (std::size_t e = 0; e < n * out; ++e) dz[e] = y[e] > T(0) ? dy[e] : T(0);
        g = dz;
    }
    const bool blas = use_blas(n, in, out);
    // dK = X^T dZ
    if (blas) {
        gemm(true, false, in, out, n, x, g, dk);
    } else {
        for (std::size_t e = 0; e < in * out; ++e) dk[e] = T(0);
        for (std::size_t r = 0; r < n; ++r) {
            const T* xr = x + r * in;
            const T* gr = g + r * out;
            for (std::size_t i = 0; i < in; ++i) {
                const T xv = xr[i];
                T* dki = dk + i * out;
                for (std::size_t o = 0; o < out; ++o) dki[o] += xv * gr[o];
            }
        }
    }
    // db = sum_n dZ[n,:]
    if (db) {
        for (std::size_t o = 0; o < out; ++o) db[o] = T(0);
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t o = 0; o < out; ++o) db[o] += g[r * out + o];
    }
    // dX = dZ K^T
    if (dx && blas) {
        gemm(false, true, n, in, out, g, k, dx);
    } else if (dx) {
        for (std::size_t r = 0; r < n; ++r) {
            const T* gr = g + r * out;
            T* dxr = dx + r * in;
            for (std::size_t i = 0; i < in; ++i) {
                const T* ki = k + i * out;
                T s = T(0);
                for (std::size_t o = 0; o < out; ++o) s += gr[o] * ki[o];
                dxr[i] = s;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MSE over all elements, as Keras:  L = sum (P - T)^2 / (N*O);   dP = 2 (P - T) * (1/(N*O))
// (the sum is accumulated in double; dP multiplies by the reciprocal, as TF's gradient does)
// ---------------------------------------------------------------------------------------------
template <class T>
T mse_forward(const T* p, const T* t, std::size_t count) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) {
        const double d = double(p[e]) - double(t[e]);
        s += d * d;
    }
    return T(s / double(count));
}

template <class T>
void mse_backward(T* dp, const T* p, const T* t, std::size_t count) {
    const T scale = T(1) / T(count);
    for (std::size_t e = 0; e < count; ++e) dp[e] = (T(2) * (p[e] - t[e])) * scale;
}

// ---------------------------------------------------------------------------------------------
// SGD:  w <- w - lr * g   (lr*g rounded first, then subtracted, as TF's assign_sub(lr * g))
// Returns max |w_new - w_old| over the buffer, taken in double (exact for float); 0 for an empty
// buffer; NaN if any change is NaN.  `finite` (optional) is set to whether every w_new is finite.
// ---------------------------------------------------------------------------------------------
template <class T>
double sgd_update(T* w, const T* g, T lr, std::size_t count, bool* finite = nullptr) {
    double delta = 0.0;
    T poison = T(0);  // becomes NaN once any new weight is inf or NaN (inf*0 = NaN)
    bool nan = false;
    for (std::size_t e = 0; e < count; ++e) {
        const T old = w[e];
        const T step = lr * g[e];
        const T nw = old - step;
        w[e] = nw;
        poison += nw * T(0);
        const double d = std::fabs(double(nw) - double(old));
        delta = d > delta ? d : delta;
        nan |= d != d;
    }
    if (finite) *finite = poison == T(0);
    return nan ? double(NAN) : delta;
}

// Sum of squares, accumulated in double (for the global gradient norm).
template <class T>
double sum_squares(const T* a, std::size_t count) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) s += double(a[e]) * double(a[e]);
    return s;
}

template <class T>
bool all_finite(const T* a, std::size_t count) {
    for (std::size_t e = 0; e < count; ++e)
        if (!std::isfinite(a[e])) return false;
    return true;
}

// Gather rows: out[r,:] = src[idx[r],:]   (idx already checked to lie in range)
template <class T, class I>
void gather_rows(T* out, const T* src, const I* idx, std::size_t rows, std::size_t width) {
    for (std::size_t r = 0; r < rows; ++r) {
        const T* s = src + static_cast<std::size_t>(idx[r]) * width;
        T* d = out + r * width;
        for (std::size_t c = 0; c < width; ++c) d[c] = s[c];
    }
}

}  // namespace fg
