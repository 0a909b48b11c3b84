// Matrix products for the Dense kernels: OpenBLAS (scipy-openblas32) when built with
// FASTGRAD_BLAS and the product is large enough to pay for the call; otherwise the callers'
// plain loops.  Row-major throughout.
//
//   gemm(ta, tb, m, n, k, A, B, C):   C(m,n) = op(A)(m,k) op(B)(k,n)
//   op(A) = A (stored m×k) or A^T (stored k×m); likewise op(B).
#pragma once

#include <cstddef>

#ifdef FASTGRAD_BLAS
#include <cblas.h>
#endif

namespace fg {

// Products of fewer multiply-adds than this run in the plain loops.  Settable (for tests that
// compare both paths, and for measuring the crossover); not meant to change during a run.
inline std::size_t& blas_min_work() {
    static std::size_t v = 1u << 15;
    return v;
}

inline bool has_blas() {
#ifdef FASTGRAD_BLAS
    return true;
#else
    return false;
#endif
}

inline bool use_blas(std::size_t n, std::size_t in, std::size_t out) {
#ifdef FASTGRAD_BLAS
    return n * in * out >= blas_min_work();
#else
    (void)n, (void)in, (void)out;
    return false;
#endif
}

#ifdef FASTGRAD_BLAS
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const float* a,
                 const float* b, float* c) {
    scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      blasint(m), blasint(n), blasint(k), 1.0f, a, blasint(ta ? m : k), b,
                      blasint(tb ? k : n), 0.0f, c, blasint(n));
}
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const double* a,
                 const double* b, double* c) {
    scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      blasint(m), blasint(n), blasint(k), 1.0, a, blasint(ta ? m : k), b,
                      blasint(tb ? k : n), 0.0, c, blasint(n));
}
#else
template <class T>
inline void gemm(bool, bool, std::size_t, std::size_t, std::size_t, const T*, const T*, T*) {}
#endif

}  // namespace fg
