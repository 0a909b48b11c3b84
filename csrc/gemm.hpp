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
#include <dlfcn.h>
#include <link.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
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
// NumPy's own OpenBLAS, when the process has one (NumPy's wheels bundle scipy-openblas64, an
// ILP64 build): sharing it keeps one BLAS thread pool in the process instead of two competing
// for the cores.  Otherwise the scipy-openblas32 that _core links against.
template <class T>
using gemm64_t = void (*)(int, int, int, std::int64_t, std::int64_t, std::int64_t, T, const T*, std::int64_t,
                          const T*, std::int64_t, T, T*, std::int64_t);

struct SharedBlas {
    gemm64_t<float> sgemm = nullptr;
    gemm64_t<double> dgemm = nullptr;
    std::string path;
};

inline SharedBlas& shared_blas() {
    static SharedBlas b;
    return b;
}

// Looks for a loaded library whose file name contains "openblas64" and exports the ILP64 CBLAS
// gemm under NumPy's names; returns its path ("" if none).  Call with the GIL held, once.
inline std::string find_shared_blas() {
    struct Found {
        std::string path;
    } found;
    dl_iterate_phdr(
        [](struct dl_phdr_info* info, std::size_t, void* data) {
            auto* f = static_cast<Found*>(data);
            if (info->dlpi_name && std::strstr(info->dlpi_name, "openblas64") && f->path.empty())
                f->path = info->dlpi_name;
            return 0;
        },
        &found);
    if (found.path.empty()) return "";
    void* h = dlopen(found.path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (!h) return "";
    const char* names[][2] = {{"scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"}, {"cblas_sgemm64_", "cblas_dgemm64_"}};
    for (auto& nm : names) {
        void* s = dlsym(h, nm[0]);
        void* d = dlsym(h, nm[1]);
        if (s && d) {
            SharedBlas& b = shared_blas();
            b.sgemm = reinterpret_cast<gemm64_t<float>>(s);
            b.dgemm = reinterpret_cast<gemm64_t<double>>(d);
            b.path = found.path;
            return found.path;
        }
    }
    dlclose(h);
    return "";
}

template <class T>
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const T* a, const T* b, T* c) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm: float or double");
    const int TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    const std::size_t lda = ta ? m : k, ldb = tb ? k : n;
    gemm64_t<T> shared;
    if constexpr (std::is_same_v<T, float>) shared = shared_blas().sgemm;
    else shared = shared_blas().dgemm;
    if (shared) {  // NumPy's ILP64 OpenBLAS
        shared(CblasRowMajor, TA, TB, std::int64_t(m), std::int64_t(n), std::int64_t(k), T(1), a, std::int64_t(lda), b,
               std::int64_t(ldb), T(0), c, std::int64_t(n));
    } else if constexpr (std::is_same_v<T, float>) {  // the linked scipy-openblas32
        scipy_cblas_sgemm(CblasRowMajor, CBLAS_TRANSPOSE(TA), CBLAS_TRANSPOSE(TB), blasint(m), blasint(n), blasint(k), 1.0f,
                          a, blasint(lda), b, blasint(ldb), 0.0f, c, blasint(n));
    } else {
        scipy_cblas_dgemm(CblasRowMajor, CBLAS_TRANSPOSE(TA), CBLAS_TRANSPOSE(TB), blasint(m), blasint(n), blasint(k), 1.0,
                          a, blasint(lda), b, blasint(ldb), 0.0, c, blasint(n));
    }
}
#else
template <class T>
inline void gemm(bool, bool, std::size_t, std::size_t, std::size_t, const T*, const T*, T*) {}
#endif

}  // namespace fg
