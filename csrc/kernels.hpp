// fastgrad kernels: hand-derived forward/backward pairs, plain templated C++.
// No Python, no validation, no allocation: callers pass every buffer and every size.
// Argument order (as in llm.c): outputs first, then inputs, then sizes; gradients carry a `d`.
// Pointers are __restrict: outputs never alias inputs (except where a comment says so).
//
// Shapes, Keras layout:  X:(N,I)  K:(I,O)  b:(O)  Z,Y,dY,dZ:(N,O)  dX:(N,I)  dK:(I,O)  db:(O)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gemm.hpp"

#define FG_R __restrict

namespace fg {

enum class Activation : int { linear = 0, relu = 1 };

// ---------------------------------------------------------------------------------------------
// Dense, Keras layout.  Z = X K + b   Y = act(Z)
// Backward, given dY = dL/dY:   dZ = dY * act'(Z)   (ReLU: 1 where Z > 0, else 0 — TF's choice at 0;
//                                                   Z > 0 exactly where Y > 0, so Y is what we keep)
//   dX = dZ K^T  (N,I)     dK = X^T dZ  (I,O)     db = sum over n of dZ[n,:]  (O)
// ---------------------------------------------------------------------------------------------
template <class T>
void dense_forward(T* FG_R y, const T* FG_R x, const T* FG_R k, const T* FG_R b, std::size_t n,
                   std::size_t in, std::size_t out, Activation act) {
    const bool blas = use_blas(n, in, out);
    if (blas) gemm(false, false, n, out, in, x, k, y);  // Y = X K
    for (std::size_t r = 0; r < n; ++r) {
        T* FG_R yr = y + r * out;
        if (!blas) {  // the reference loops (small shapes: a library call costs more than the work)
            // without a bias the sum starts at the first product (no 0 + ..., which would turn a
            // -0 into +0 and cost an addition on the training step's critical path)
            const T* FG_R xr = x + r * in;
            std::size_t i = 0;
            if (b) {
                for (std::size_t o = 0; o < out; ++o) yr[o] = b[o];
            } else if (in > 0) {
                for (std::size_t o = 0; o < out; ++o) yr[o] = xr[0] * k[o];
                i = 1;
            } else {
                for (std::size_t o = 0; o < out; ++o) yr[o] = T(0);
            }
            for (; i < in; ++i) {
                const T xv = xr[i];
                const T* FG_R ki = k + i * out;
                for (std::size_t o = 0; o < out; ++o) yr[o] += xv * ki[o];
            }
        } else if (b) {
            for (std::size_t o = 0; o < out; ++o) yr[o] += b[o];
        }
        if (act == Activation::relu)
            for (std::size_t o = 0; o < out; ++o) yr[o] = yr[o] < T(0) ? T(0) : yr[o];  // NaN stays NaN
    }
}

// dx and db may be null (first layer; no bias). dz is an (N,O) scratch buffer, used for ReLU only;
// it may be dy itself (the backward pass then overwrites dy).
template <class T>
void dense_backward(T* FG_R dx, T* FG_R dk, T* FG_R db, T* dz, const T* dy, const T* FG_R x,
                    const T* FG_R k, const T* FG_R y, std::size_t n, std::size_t in, std::size_t out,
                    Activation act) {
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
        // sums over the rows start at row 0's term (as the forward pass's do)
        for (std::size_t i = 0; i < in; ++i) {
            const T xv = n ? x[i] : T(0);
            T* FG_R dki = dk + i * out;
            for (std::size_t o = 0; o < out; ++o) dki[o] = n ? xv * g[o] : T(0);
        }
        for (std::size_t r = 1; r < n; ++r) {
            const T* FG_R xr = x + r * in;
            const T* FG_R gr = g + r * out;
            for (std::size_t i = 0; i < in; ++i) {
                const T xv = xr[i];
                T* FG_R dki = dk + i * out;
                for (std::size_t o = 0; o < out; ++o) dki[o] += xv * gr[o];
            }
        }
    }
    // db = sum_n dZ[n,:]
    if (db) {
        for (std::size_t o = 0; o < out; ++o) db[o] = n ? g[o] : T(0);
        for (std::size_t r = 1; r < n; ++r) {
            const T* FG_R gr = g + r * out;
            for (std::size_t o = 0; o < out; ++o) db[o] += gr[o];
        }
    }
    // dX = dZ K^T
    if (dx && blas) {
        gemm(false, true, n, in, out, g, k, dx);
    } else if (dx) {
        for (std::size_t r = 0; r < n; ++r) {
            const T* FG_R gr = g + r * out;
            T* FG_R dxr = dx + r * in;
            for (std::size_t i = 0; i < in; ++i) {
                const T* FG_R ki = k + i * out;
                T s = out ? gr[0] * ki[0] : T(0);
                for (std::size_t o = 1; o < out; ++o) s += gr[o] * ki[o];
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
T mse_forward(const T* FG_R p, const T* FG_R t, std::size_t count) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) {
        const double d = double(p[e]) - double(t[e]);
        s += d * d;
    }
    return T(s / double(count));
}

template <class T>
void mse_backward(T* FG_R dp, const T* FG_R p, const T* FG_R t, std::size_t count) {
    const T scale = T(1) / T(count);
    for (std::size_t e = 0; e < count; ++e) dp[e] = (T(2) * (p[e] - t[e])) * scale;
}

// Both at once, with the same arithmetic as the pair above (one pass; used by the training step).
template <class T>
T mse_forward_backward(T* FG_R dp, const T* FG_R p, const T* FG_R t, std::size_t count) {
    const T scale = T(1) / T(count);
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) {
        const double d = double(p[e]) - double(t[e]);
        s += d * d;
        dp[e] = (T(2) * (p[e] - t[e])) * scale;
    }
    return T(s / double(count));
}

// ---------------------------------------------------------------------------------------------
// SGD:  w <- w - lr * g   (lr*g rounded first, then subtracted, as TF's assign_sub(lr * g))
// Returns max |w_new - w_old| over the buffer (each difference taken in T, as NumPy's diff of the
// recorded weights is); 0 for an empty buffer; NaN if any new weight is inf or NaN.
// Optional: *sq += sum of g^2 (accumulated in double, in kLanes fixed lanes, for the gradient
// norm) and *finite &= every new weight is finite.
// ---------------------------------------------------------------------------------------------
template <class T>
struct same_size_int;
template <>
struct same_size_int<float> {
    using type = std::int32_t;
};
template <>
struct same_size_int<double> {
    using type = std::int64_t;
};

template <class T>
double sgd_update(T* FG_R w, const T* FG_R g, T lr, std::size_t count, double* sq = nullptr,
                  bool* finite = nullptr) {
    // The largest change, as the largest bit pattern: for values >= 0 the IEEE bits order like
    // the values, +inf above every finite one and NaN above +inf; an integer max is a reduction
    // the compiler may vectorise (a floating-point one it may not reorder).
    using I = typename same_size_int<T>::type;
    I most = 0;
    for (std::size_t e = 0; e < count; ++e) {
        const T old = w[e];
        const T nw = old - lr * g[e];
        w[e] = nw;
        const T d = std::fabs(nw - old);
        I bits;
        std::memcpy(&bits, &d, sizeof(T));
        most = bits > most ? bits : most;
    }
    if (sq) {
        // kLanes independent partial sums (one running sum is a chain of dependent additions);
        // combined in a fixed order, so the result is the same on every call
        constexpr std::size_t kLanes = 8;
        double s[kLanes] = {};
        std::size_t e = 0;
        for (; e + kLanes <= count; e += kLanes)
            for (std::size_t j = 0; j < kLanes; ++j) s[j] += double(g[e + j]) * double(g[e + j]);
        for (std::size_t j = 0; j < kLanes && e < count; ++j, ++e) s[j] += double(g[e]) * double(g[e]);
        double total = 0.0;
        for (std::size_t j = 0; j < kLanes; ++j) total += s[j];
        *sq += total;
    }
    T delta;
    std::memcpy(&delta, &most, sizeof(T));
    const bool ok = std::isfinite(delta);
    if (finite) *finite = *finite && ok;
    return ok ? double(delta) : double(NAN);
}

// Sum of squares, accumulated in double (for the global gradient norm).
template <class T>
double sum_squares(const T* FG_R a, std::size_t count) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) s += double(a[e]) * double(a[e]);
    return s;
}

template <class T>
bool all_finite(const T* FG_R a, std::size_t count) {
    for (std::size_t e = 0; e < count; ++e)
        if (!std::isfinite(a[e])) return false;
    return true;
}

// Gather rows: out[r,:] = src[idx[r],:]   (idx already checked to lie in range)
template <class T, class I>
void gather_rows(T* FG_R out, const T* FG_R src, const I* FG_R idx, std::size_t rows, std::size_t width) {
    for (std::size_t r = 0; r < rows; ++r) {
        const T* FG_R s = src + static_cast<std::size_t>(idx[r]) * width;
        T* FG_R d = out + r * width;
        for (std::size_t c = 0; c < width; ++c) d[c] = s[c];
    }
}

}  // namespace fg
