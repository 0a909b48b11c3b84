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
//                                                   Z > 0 exactly where Y > 0, so Y is what we keep;
//                                                   a product, as TF's ReluGrad: a NaN or infinite
//                                                   dY stays NaN where the mask is 0, not 0)
//   dX = dZ K^T  (N,I)     dK = X^T dZ  (I,O)     db = sum over n of dZ[n,:]  (O)
// ---------------------------------------------------------------------------------------------
template <class T>
void dense_forward(T* FG_R y, const T* FG_R x, const T* FG_R k, const T* FG_R b, std::size_t n,
                   std::size_t in, std::size_t out, Activation act) {
    if (n == 0 || out == 0) return;  // Y is empty (and its rows or columns may be many)
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

// ReLU's derivative at its output y as a factor: 1 where y > 0, else 0 (NaN y: 0).  dY times it
// is TF's ReluGrad (a NaN or infinite dY stays NaN where the factor is 0).  Made with integer
// operations on the bits of 1: a loop of `dy * T(y > 0)` or of `y > 0 ? dy : dy * 0` is not
// vectorised (a multiply under a condition may trap), and ran 3-5 times slower (W7's 8192x256
// mask: 4.0-4.2 ms against 1.3 ms).
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

// The ReLU mask and the bias gradient in one pass:  dZ = dY * (Y > 0);  db = sum over
// the rows of dZ (row 0's term first, then row by row, as the plain loop below sums).  Without
// branches (the mask of real data mispredicts half the time) and vectorised across the outputs.
// IN_PLACE: dZ overwrites dY (read through dz; dy unused).  db may be null.
template <bool IN_PLACE, class T>
void relu_mask_db(T* FG_R dz, const T* FG_R dy, const T* FG_R y, T* FG_R db, std::size_t n, std::size_t out) {
    if (out == 0) return;  // no outputs (the rows may be many)
    const T* src = IN_PLACE ? dz : dy;
    for (std::size_t r = 0; r < n; ++r) {
        T* FG_R zr = dz + r * out;
        const T* FG_R sr = src + r * out;
        const T* FG_R yr = y + r * out;
        if (!db) {
            for (std::size_t o = 0; o < out; ++o) zr[o] = sr[o] * relu_gate(yr[o]);
        } else if (r == 0) {
            for (std::size_t o = 0; o < out; ++o) db[o] = zr[o] = sr[o] * relu_gate(yr[o]);
        } else {
            for (std::size_t o = 0; o < out; ++o) {
                const T g = sr[o] * relu_gate(yr[o]);
                zr[o] = g;
                db[o] += g;
            }
        }
    }
}

// dx and db may be null (first layer; no bias). dz is an (N,O) scratch buffer, used for ReLU only;
// it may be dy itself (the backward pass then overwrites dy).
template <class T>
void dense_backward(T* FG_R dx, T* FG_R dk, T* FG_R db, T* dz, const T* dy, const T* FG_R x,
                    const T* FG_R k, const T* FG_R y, std::size_t n, std::size_t in, std::size_t out,
                    Activation act) {
    const T* g = dy;
    bool db_done = false;
    if (act == Activation::relu) {
        if (dz == dy) relu_mask_db<true, T>(dz, nullptr, y, db, n, out);
        else relu_mask_db<false, T>(dz, dy, y, db, n, out);
        g = dz;
        db_done = db && n > 0;
    }
    const bool blas = use_blas(n, in, out);
    // dK = X^T dZ
    if (blas) {
        gemm(true, false, in, out, n, x, g, dk);
    } else if (in > 0 && out > 0) {  // (else dK is empty, however many rows)
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
    if (db && !db_done && out > 0) {
        for (std::size_t o = 0; o < out; ++o) db[o] = n ? g[o] : T(0);
        for (std::size_t r = 1; r < n; ++r) {
            const T* FG_R gr = g + r * out;
            for (std::size_t o = 0; o < out; ++o) db[o] += gr[o];
        }
    }
    // dX = dZ K^T
    if (dx && blas) {
        gemm(false, true, n, in, out, g, k, dx);
    } else if (dx && in > 0) {
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

// The body of sgd_update, always inlined into a caller that may be compiled for AVX2: the
// same operations in the same order on every instruction set, so the same bits.  Blocks of
// kBlock elements: the update, then the block's sum of squares while the block is in L1.
template <class T>
[[gnu::always_inline]] inline double sgd_update_body(T* FG_R w, const T* FG_R g, T lr, std::size_t count,
                                                     double* sq, bool* finite) {
    // The largest change, as the largest bit pattern: for values >= 0 the IEEE bits order like
    // the values, +inf above every finite one and NaN above +inf; an integer max is a reduction
    // the compiler may vectorise (a floating-point one it may not reorder).
    using I = typename same_size_int<T>::type;
    I most = 0;
    // kLanes independent partial sums of g^2 (one running sum is a chain of dependent
    // additions); element e goes to lane e % kLanes, and the lanes are combined in a fixed
    // order, so the result is the same on every call
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

// Whether every element is finite: a vectorisable pass (blocks of the exponent bits OR-ed
// together, tested once a block) instead of a loop that exits at the first bad element.
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

// AVX2 copies of the long element-wise passes, chosen at run time on x86-64 CPUs that have it
// (the wheel itself targets the baseline x86-64).  Small counts stay on the baseline code.
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

// Sum of squares, accumulated in double (for the global gradient norm).
template <class T>
double sum_squares(const T* FG_R a, std::size_t count) {
    double s = 0.0;
    for (std::size_t e = 0; e < count; ++e) s += double(a[e]) * double(a[e]);
    return s;
}

template <class T>
bool all_finite(const T* FG_R a, std::size_t count) {
#ifdef FG_AVX2_DISPATCH
    if (count >= kDispatchMin && cpu_has_avx2()) return all_finite_avx2(a, count);
#endif
    return all_finite_body(a, count);
}

// Gather rows: out[r,:] = src[idx[r],:]   (idx already checked to lie in range; rows may repeat)
// Wide rows are copied kGatherStreams at a time, a cache line of each in turn: that many
// independent streams from memory at once.  One row after another leaves the memory system
// mostly idle: 128 rows of 784 floats from a 25 MB array took 88-112 µs one by one and 63-66 µs
// four at a time (W6's batch, evicted from cache between gathers, huge pages).
constexpr std::size_t kGatherStreams = 4;
template <class T, class I>
void gather_rows(T* FG_R out, const T* FG_R src, const I* FG_R idx, std::size_t rows, std::size_t width) {
    constexpr std::size_t line = 64 / sizeof(T);  // elements in a cache line
    std::size_t r = 0;
    if (width >= 4 * line) {
        for (; r + kGatherStreams <= rows; r += kGatherStreams) {
            const T* s[kGatherStreams];
            T* d[kGatherStreams];
            for (std::size_t j = 0; j < kGatherStreams; ++j) {
                s[j] = src + static_cast<std::size_t>(idx[r + j]) * width;
                d[j] = out + (r + j) * width;
            }
            std::size_t c = 0;
            for (; c + line <= width; c += line)
                for (std::size_t j = 0; j < kGatherStreams; ++j) std::memcpy(d[j] + c, s[j] + c, line * sizeof(T));
            for (std::size_t j = 0; j < kGatherStreams; ++j) std::memcpy(d[j] + c, s[j] + c, (width - c) * sizeof(T));
        }
    }
    for (; r < rows; ++r) {
        const T* FG_R s = src + static_cast<std::size_t>(idx[r]) * width;
        T* FG_R d = out + r * width;
        for (std::size_t c = 0; c < width; ++c) d[c] = s[c];
    }
}

}  // namespace fg
