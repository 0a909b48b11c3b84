// A Dense layer on a whole batch or on a block of it: OpenBLAS's product where use_blas says it
// pays (blas.hpp), else kernels.hpp's loops.  The product is the only part BLAS takes over; the
// bias, the activation, the mask and the bias gradient are always kernels.hpp's.
#pragma once

#include <cstddef>

#include "blas.hpp"
#include "kernels.hpp"

namespace fg {

// Y[r0:r1, c0:c1] = act(X[r0:r1, :] K[:, c0:c1] + b[c0:c1])
template <class T>
void forward_block(T* y, const T* x, const T* k, const T* b, std::size_t in, std::size_t out, Activation act,
                   bool blas, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
    if (r0 >= r1 || c0 >= c1) return;
    if (!blas) return dense_forward(y, x, k, b, in, out, act, r0, r1, c0, c1);
    gemm(false, false, r1 - r0, c1 - c0, in, x + r0 * in, in, k + c0, out, y + r0 * out + c0, out);
    dense_bias_act(y, b, out, act, r0, r1, c0, c1);
}

// Columns [i0, i1) of dX = dZ K^T
template <class T>
void dx_block(T* dx, const T* dz, const T* k, std::size_t n, std::size_t in, std::size_t out, bool blas,
              std::size_t i0, std::size_t i1) {
    if (i0 >= i1 || n == 0) return;
    if (!blas) return dense_backward_dx(dx, dz, k, n, in, out, i0, i1);
    gemm(false, true, n, i1 - i0, out, dz, out, k + i0 * out, out, dx + i0, in);
}

// Rows [i0, i1) of dK = X^T dZ
template <class T>
void dk_block(T* dk, const T* x, const T* dz, std::size_t n, std::size_t in, std::size_t out, bool blas,
              std::size_t i0, std::size_t i1) {
    if (i0 >= i1 || out == 0) return;
    if (!blas) return dense_backward_dk(dk, x, dz, n, in, out, i0, i1);
    gemm(true, false, i1 - i0, out, n, x + i0, in, dz, out, dk + i0 * out, out);
}

// The whole layer forward: Y = act(X K + b), n rows.
template <class T>
void layer_forward(T* y, const T* x, const T* k, const T* b, std::size_t n, std::size_t in, std::size_t out,
                   Activation act) {
    forward_block(y, x, k, b, in, out, act, use_blas(n, in, out), 0, n, 0, out);
}

// The whole layer backward.  dz holds dY on entry and dZ after; dx and db may be null.
template <class T>
void layer_backward(T* dx, T* dk, T* db, T* dz, const T* x, const T* k, const T* y, std::size_t n, std::size_t in,
                    std::size_t out, Activation act) {
    const bool blas = use_blas(n, in, out);
    dense_backward_dz(dz, y, db, n, out, act, 0, out);
    dk_block(dk, x, dz, n, in, out, blas, 0, in);
    if (dx) dx_block(dx, dz, k, n, in, out, blas, 0, in);
}

}  // namespace fg
