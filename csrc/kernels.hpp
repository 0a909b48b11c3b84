// fastgrad's reference kernels: hand-derived forward/backward pairs as plain loops, the one place
// where each kernel's math is written.  No Python, no validation, no allocation, no BLAS: callers
// pass every buffer and every size.  Argument order (as in llm.c): outputs first, then inputs,
// then sizes; gradients carry a `d`.  Pointers are __restrict: outputs never alias inputs (except
// where a comment says so).
//
// Every Dense kernel computes a block of its output (rows [r0, r1) or columns [c0, c1)): the
// serial step (step.hpp) calls it on the whole matrix, the threaded step (fast_team.hpp) on one
// block per thread, so both run the same arithmetic.  dense.hpp puts OpenBLAS's product in place
// of the loops' X K, dZ K^T and X^T dZ where it pays.
//
// Shapes, Keras layout:  X:(N,I)  K:(I,O)  b:(O)  Z,Y,dY,dZ:(N,O)  dX:(N,I)  dK:(I,O)  db:(O)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define FG_R __restrict

namespace fg {

enum class Activation : int { linear = 0, relu = 1 };

// ---------------------------------------------------------------------------------------------
// Dense, Keras layout.  Z = X K + b   Y = act(Z)
// Backward, given dY = dL/dY:   dZ = dY * act'(Z)   (ReLU: 1 where Z > 0, else 0 — TF's choice at 0;
//                                                   Z > 0 exactly where Y > 0, so Y is what we keep;
//                                                   a product, as TF's ReluGrad: a NaN or infinite
//                                                   dY stays NaN where the mask is 0, not 0)
//   dX = dZ K^T  (N,I)     dK = X^T dZ  (I,O)     db = sum over n of dZ[n,:]  (O)
// Sums over the rows start at row 0's term (no 0 + ..., which would turn a -0 into +0).
// ---------------------------------------------------------------------------------------------

template <class T>
[[gnu::always_inline]] inline void activate(T* FG_R zr, Activation act, std::size_t c0, std::size_t c1) {
    if (act == Activation::relu)
        for (std::size_t o = c0; o < c1; ++o) zr[o] = zr[o] < T(0) ? T(0) : zr[o];  // NaN stays NaN
}

// Y[r0:r1, c0:c1] = act(X[r0:r1, :] K[:, c0:c1] + b[c0:c1]).  b may be null.
template <class T>
void dense_forward(T* FG_R y, const T* FG_R x, const T* FG_R k, const T* FG_R b, std::size_t in, std::size_t out,
                   Activation act, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
    if (r0 >= r1 || c0 >= c1) return;
    for (std::size_t r = r0; r < r1; ++r) {
        T* FG_R yr = y + r * out;
        const T* FG_R xr = x + r * in;
        std::size_t i = 0;
        if (b) {
            for (std::size_t o = c0; o < c1; ++o) yr[o] = b[o];
        } else if (in > 0) {  // without a bias the sum starts at the first product
            for (std::size_t o = c0; o < c1; ++o) yr[o] = xr[0] * k[o];
            i = 1;
        } else {
            for (std::size_t o = c0; o < c1; ++o) yr[o] = T(0);
        }
        for (; i < in; ++i) {
            const T xv = xr[i];
            const T* FG_R ki = k + i * out;
            for (std::size_t o = c0; o < c1; ++o) yr[o] += xv * ki[o];
        }
        activate(yr, act, c0, c1);
    }
}

// The forward pass's tail when X K came from elsewhere (a BLAS product in y): Y = act(Y + b).
template <class T>
void dense_bias_act(T* FG_R y, const T* FG_R b, std::size_t out, Activation act, std::size_t r0, std::size_t r1,
                    std::size_t c0, std::size_t c1) {
    for (std::size_t r = r0; r < r1 && c0 < c1; ++r) {
        T* FG_R yr = y + r * out;
        if (b)
            for (std::size_t o = c0; o < c1; ++o) yr[o] += b[o];
        activate(yr, act, c0, c1);
    }
}

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

// ReLU's derivative at its output y as a factor: 1 where y > 0, else 0 (NaN y: 0).  Made with
// integer operations on the bits of 1 so that the mask loop vectorises without branches (a
// multiply under a condition is not vectorised; docs/performance.md has the figures).
template <class T>
[[gnu::always_inline]] inline T relu_gate(T y) {
    using I = typename same_size_int<T>::type;
    const T one = T(1);
    I one_bits;
    std::memcpy(&one_bits, &one, sizeof(T));
    const I bits = I(-I(y > T(0))) & one_bits;
    T gate;
    std::memcpy(&gate, &bits, sizeof(T));
    return gate;
}

// Columns [c0, c1) of dZ = dY * act'(Y), in place (dz holds dY), and db[c0:c1] = their sums over
// the n rows.  db may be null.
template <class T>
void dense_backward_dz(T* FG_R dz, const T* FG_R y, T* FG_R db, std::size_t n, std::size_t out, Activation act,
                       std::size_t c0, std::size_t c1) {
    if (c0 >= c1) return;
    const bool relu = act == Activation::relu;
    for (std::size_t r = 0; r < n; ++r) {
        T* FG_R zr = dz + r * out;
        const T* FG_R yr = y + r * out;
        if (relu)
            for (std::size_t o = c0; o < c1; ++o) zr[o] = zr[o] * relu_gate(yr[o]);
        if (!db) continue;
        if (r == 0)
            for (std::size_t o = c0; o < c1; ++o) db[o] = zr[o];
        else
            for (std::size_t o = c0; o < c1; ++o) db[o] += zr[o];
    }
    if (db && n == 0)
        for (std::size_t o = c0; o < c1; ++o) db[o] = T(0);
}

// Columns [i0, i1) of dX = dZ K^T (n rows).
template <class T>
void dense_backward_dx(T* FG_R dx, const T* FG_R dz, const T* FG_R k, std::size_t n, std::size_t in, std::size_t out,
                       std::size_t i0, std::size_t i1) {
    for (std::size_t r = 0; r < n && i0 < i1; ++r) {
        const T* FG_R gr = dz + r * out;
        T* FG_R dxr = dx + r * in;
        for (std::size_t i = i0; i < i1; ++i) {
            const T* FG_R ki = k + i * out;
            T s = out ? gr[0] * ki[0] : T(0);
            for (std::size_t o = 1; o < out; ++o) s += gr[o] * ki[o];
            dxr[i] = s;
        }
    }
}

// Rows [i0, i1) of dK = X^T dZ (n rows).
template <class T>
void dense_backward_dk(T* FG_R dk, const T* FG_R x, const T* FG_R dz, std::size_t n, std::size_t in, std::size_t out,
                       std::size_t i0, std::size_t i1) {
    if (i0 >= i1 || out == 0) return;
    for (std::size_t i = i0; i < i1; ++i) {
        const T xv = n ? x[i] : T(0);
        T* FG_R dki = dk + i * out;
        for (std::size_t o = 0; o < out; ++o) dki[o] = n ? xv * dz[o] : T(0);
    }
    for (std::size_t r = 1; r < n; ++r) {
        const T* FG_R xr = x + r * in;
        const T* FG_R gr = dz + r * out;
        for (std::size_t i = i0; i < i1; ++i) {
            const T xv = xr[i];
            T* FG_R dki = dk + i * out;
            for (std::size_t o = 0; o < out; ++o) dki[o] += xv * gr[o];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MSE over all elements, as Keras:  L = sum (P - T)^2 / (N*O);   dP = 2 (P - T) * (1/(N*O))
// (the sum is accumulated in double; dP multiplies by the reciprocal, as TF's gradient does)
// mse_sum returns the sum of squares over `count` elements and, unless dp is null, writes dP with
// `scale` = 1/(N*O) of the whole batch (a block of rows passes the batch's scale).
// ---------------------------------------------------------------------------------------------
template <class T>
double mse_sum(T* FG_R dp, const T* FG_R p, const T* FG_R t, std::size_t count, T scale) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) {
        const double d = double(p[e]) - double(t[e]);
        s += d * d;
        if (dp) dp[e] = (T(2) * (p[e] - t[e])) * scale;
    }
    return s;
}

template <class T>
T mse_forward(const T* FG_R p, const T* FG_R t, std::size_t count) {
    return T(mse_sum<T>(nullptr, p, t, count, T(0)) / double(count));
}

template <class T>
T mse_forward_backward(T* FG_R dp, const T* FG_R p, const T* FG_R t, std::size_t count) {
    return T(mse_sum(dp, p, t, count, T(1) / T(count)) / double(count));
}

// ---------------------------------------------------------------------------------------------
// SGD:  w <- w - lr * g   (lr*g rounded first, then subtracted, as TF's assign_sub(lr * g))
// Returns max |w_new - w_old| over the buffer (each difference taken in T, as NumPy's diff of the
// recorded weights is); 0 for an empty buffer; NaN if any new weight is inf or NaN.
// Optional: *sq += sum of g^2 (accumulated in double, in kLanes fixed lanes, for the gradient
// norm) and *finite &= every new weight is finite.
// ---------------------------------------------------------------------------------------------

// Always inlined into a caller that may be compiled for AVX2: the same operations in the same
// order on every instruction set, so the same bits.  Blocks of kBlock elements: the update, then
// the block's sum of squares while the block is in L1.
template <class T>
[[gnu::always_inline]] inline double sgd_update_body(T* FG_R w, const T* FG_R g, T lr, std::size_t count,
                                                     double* sq, bool* finite) {
    // The largest change as the largest bit pattern: for values >= 0 the IEEE bits order like
    // the values (+inf above every finite one, NaN above +inf), and an integer max vectorises.
    using I = typename same_size_int<T>::type;
    I most = 0;
    // element e goes to lane e % kLanes (one running sum would be a chain of dependent
    // additions); the lanes are combined in a fixed order, so every call gives the same bits
    constexpr std::size_t kLanes = 8, kBlock = 2048;  // kBlock: a multiple of kLanes
    double s[kLanes] = {};
    for (std::size_t b0 = 0; b0 < count; b0 += kBlock) {
        const std::size_t b1 = count - b0 < kBlock ? count : b0 + kBlock;
        for (std::size_t e = b0; e < b1; ++e) {
            const T old = w[e];
            const T nw = old - lr * g[e];
            w[e] = nw;
            const T d = std::fabs(nw - old);
            I bits;
            std::memcpy(&bits, &d, sizeof(T));
            most = bits > most ? bits : most;
        }
        if (sq) {
            std::size_t e = b0;
            for (; e + kLanes <= b1; e += kLanes)
                for (std::size_t j = 0; j < kLanes; ++j) s[j] += double(g[e + j]) * double(g[e + j]);
            for (std::size_t j = 0; e < b1; ++j, ++e) s[j] += double(g[e]) * double(g[e]);
        }
    }
    if (sq) {
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

// Whether every element is finite: blocks of the exponent bits OR-ed together, tested once a
// block (a loop that exits at the first bad element does not vectorise).
template <class T>
[[gnu::always_inline]] inline bool all_finite_body(const T* FG_R a, std::size_t count) {
    using I = typename same_size_int<T>::type;
    constexpr I kExp = sizeof(T) == 4 ? I(0x7f800000) : I(0x7ff0000000000000LL);
    constexpr std::size_t kBlock = 1024;
    for (std::size_t b0 = 0; b0 < count; b0 += kBlock) {
        const std::size_t b1 = count - b0 < kBlock ? count : b0 + kBlock;
        I bad = 0;
        for (std::size_t e = b0; e < b1; ++e) {
            I bits;
            std::memcpy(&bits, &a[e], sizeof(T));
            bad |= I((bits & kExp) == kExp);  // all exponent bits set: inf or NaN
        }
        if (bad) return false;
    }
    return true;
}

// AVX2 copies of the two long element-wise passes, chosen at run time on x86-64 CPUs that have it
// (the wheel targets baseline x86-64).  Small counts stay on the baseline code.
#if defined(__x86_64__) && defined(__GNUC__)
#define FG_AVX2_DISPATCH 1
inline bool cpu_has_avx2() {
    static const bool v = __builtin_cpu_supports("avx2");
    return v;
}
[[gnu::target("avx2")]] inline double sgd_update_avx2(float* w, const float* g, float lr, std::size_t count, double* sq,
                                                      bool* finite) {
    return sgd_update_body(w, g, lr, count, sq, finite);
}
[[gnu::target("avx2")]] inline double sgd_update_avx2(double* w, const double* g, double lr, std::size_t count,
                                                      double* sq, bool* finite) {
    return sgd_update_body(w, g, lr, count, sq, finite);
}
[[gnu::target("avx2")]] inline bool all_finite_avx2(const float* a, std::size_t count) { return all_finite_body(a, count); }
[[gnu::target("avx2")]] inline bool all_finite_avx2(const double* a, std::size_t count) { return all_finite_body(a, count); }
#endif
constexpr std::size_t kDispatchMin = 512;  // elements; below this the baseline code runs

template <class T>
double sgd_update(T* FG_R w, const T* FG_R g, T lr, std::size_t count, double* sq = nullptr,
                  bool* finite = nullptr) {
#ifdef FG_AVX2_DISPATCH
    if (count >= kDispatchMin && cpu_has_avx2()) return sgd_update_avx2(w, g, lr, count, sq, finite);
#endif
    return sgd_update_body(w, g, lr, count, sq, finite);
}

template <class T>
bool all_finite(const T* FG_R a, std::size_t count) {
#ifdef FG_AVX2_DISPATCH
    if (count >= kDispatchMin && cpu_has_avx2()) return all_finite_avx2(a, count);
#endif
    return all_finite_body(a, count);
}

}  // namespace fg
