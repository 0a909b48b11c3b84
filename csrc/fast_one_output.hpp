// Fast path: the step of one Dense layer with one output (linear regression and its ReLU
// variant, the walkthrough's E1-E7 models), fused row by row: forward, loss, backward and update
// without the generic step's passes over scratch buffers.
//
// What it speeds up: the Python loop's step for such models, and the native loop's for those the
// register-resident loop (fast_tiny.hpp, which shares dense1_out1_rows) does not take (more than
// 4 inputs).  The figure, ns a step against the generic step in the same loop: W1 25.3 against
// 88.2, W3 34.0 against 79.8, W4 90.0 against 185.4, 10 inputs 36.8 against 98.7
// (`bench/fast_paths.cpp`, its comment has the command).
// Tied to the reference: csrc/tests/test_kernels.cpp one_output_case (this step against
// serial_step, bit for bit); tests/test_native.py (both loops, "dense-5": 5 inputs).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "blas.hpp"

#include "kernels.hpp"
#include "step.hpp"

namespace fg {

// One Dense layer with one output, its product too small for BLAS.
template <class T>
bool one_output_applies(const std::vector<DenseView<T>>& layers, std::size_t rows) {
    return layers.size() == 1 && layers[0].out == 1 && !use_blas(rows, layers[0].in, 1);
}

// The loss and gradients of one Dense layer with one output, row by row, fused: the operations of
// kernels.hpp's dense_forward + mse_forward_backward + dense_backward_dz/_dk in the same order,
// so the same bits.  Rows are idx[0..rows) (or 0..rows without idx); in is IN, or in_rt when IN
// is 0.  b: the bias, or null.  Writes dk (in values); returns the sum of squared errors (in
// double) and the bias gradient in gb.  Always inlined: the loop passes compile-time flags and
// registers, which the inlining folds.
template <class T, std::size_t IN>
[[gnu::always_inline]] inline double dense1_out1_rows(const T* k, const T* b, bool relu, T scale, const T* FG_R x,
                                                      std::size_t in_rt, const T* FG_R y, const std::int64_t* idx,
                                                      std::size_t rows, T* dk, T& gb) {
    const std::size_t in = IN ? IN : in_rt;
    double s = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t row = idx ? std::size_t(idx[r]) : r;
        const T* FG_R xr = x + row * in;
        const T yr = y[row];
        // without a bias the sum starts at the first product (no 0 + ..., as dense_forward)
        T z = b ? *b + xr[0] * k[0] : xr[0] * k[0];
        for (std::size_t i = 1; i < in; ++i) z += xr[i] * k[i];
        const T p = relu && z < T(0) ? T(0) : z;
        const double d = double(p) - double(yr);
        s = r == 0 ? d * d : s + d * d;  // 0.0 + d*d is d*d (a square is never -0)
        T g = (T(2) * (p - yr)) * scale;  // scale 1 (one row) folds away when inlined
        if (relu) g = g * relu_gate(p);  // as relu_mask_db: a NaN g stays NaN
        if (r == 0) {
            for (std::size_t i = 0; i < in; ++i) dk[i] = xr[i] * g;
            gb = g;
        } else {
            for (std::size_t i = 0; i < in; ++i) dk[i] += xr[i] * g;
            gb += g;
        }
    }
    return s;
}

// The whole step for one Dense layer with one output: scalar code reading the batch rows in
// place.  The same operations in the same order as the generic step (serial_step), so the same
// bits.  IN > 0 fixes the input width at compile time (the loops over it unroll); 0 reads it from L.
template <class T, std::size_t IN>
StepResult dense1_out1_step(const DenseView<T>& L, const T* FG_R x, const T* FG_R y, const std::int64_t* idx,
                            std::size_t rows, T lr) {
    const std::size_t in = IN ? IN : L.in;
    T* FG_R k = L.k;
    T* FG_R dk = L.dk;
    const bool relu = L.act == Activation::relu;
    T db0 = T(0);
    const double s = dense1_out1_rows<T, IN>(k, L.b, relu, T(1) / T(rows), x, in, y, idx, rows, dk, db0);
    StepResult r{};
    r.loss = double(T(s / double(rows)));
    r.bad_grad = -1;
    r.bad_weight = -1;
    // the update as sgd_update does it (the same bits): changes taken in T, the sum of squares
    // in double, element e in lane e (IN <= 8 here, or the lanes' order when IN is runtime)
    double sq = 0.0;
    bool finite = true;
    double delta = sgd_update(k, dk, lr, in, &sq, &finite);
    if (L.b) {
        L.db[0] = db0;
        const double db = sgd_update(L.b, L.db, lr, 1, &sq, &finite);
        delta = db > delta || db != db ? db : delta;
    }
    r.grad_norm = std::sqrt(sq);
    if (!std::isfinite(sq) || !finite) {
        if (!all_finite(dk, in)) r.bad_grad = 0;
        else if (L.b && !std::isfinite(db0)) r.bad_grad = 1;
        if (!all_finite(k, in)) r.bad_weight = 0;
        else if (L.b && !std::isfinite(L.b[0])) r.bad_weight = 1;
    }
    r.weight_delta = finite ? delta : double(NAN);
    return r;
}

}  // namespace fg
