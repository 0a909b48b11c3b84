// The BLAS dispatch: OpenBLAS's matrix products for the Dense layer (dense.hpp) when built with
// FASTGRAD_BLAS, one is loaded, and the product is large enough to pay for the call; otherwise
// kernels.hpp's plain loops.  Row-major throughout.
//
//   gemm(ta, tb, m, n, k, A, B, C):   C(m,n) = op(A)(m,k) op(B)(k,n)
//   op(A) = A (stored m×k) or A^T (stored k×m); likewise op(B).
//
// No BLAS is linked: fastgrad/_blas.py picks one at import.  NumPy's own OpenBLAS when the process
// has it (find_shared_blas); otherwise the scipy-openblas32 wheel's library, opened only then
// (load_fallback_blas).  Loading it costs import time and starts a thread pool that spins.
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>

#ifdef FASTGRAD_BLAS
#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#endif

namespace fg {

// Products of fewer multiply-adds than this run in the plain loops.  Settable (for tests that
// compare both paths, and for measuring the crossover) only while no run is active
// (runtime.hpp's RunGuard; the bindings check).
inline std::atomic<std::size_t>& blas_min_work() {
    static std::atomic<std::size_t> v{std::size_t(1) << 15};
    return v;
}

inline bool has_blas() {
#ifdef FASTGRAD_BLAS
    return true;
#else
    return false;
#endif
}

#ifdef FASTGRAD_BLAS
// CBLAS's enum values (from cblas.h; no BLAS header is needed to build)
enum : int { kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112 };

// cblas_?gemm with 64-bit integers (ILP64: NumPy's scipy-openblas64) and with 32-bit ones (LP64:
// scipy-openblas32)
template <class T>
using gemm64_t = void (*)(int, int, int, std::int64_t, std::int64_t, std::int64_t, T, const T*, std::int64_t,
                          const T*, std::int64_t, T, T*, std::int64_t);
template <class T>
using gemm32_t = void (*)(int, int, int, int, int, int, T, const T*, int, const T*, int, T, T*, int);

// The BLAS the products call: one pair of pointers is set, or none (plain loops only).  Changed
// only with the GIL held and no run active (at import, and by tests; the bindings check).
struct Blas {
    gemm64_t<float> sgemm64 = nullptr;
    gemm64_t<double> dgemm64 = nullptr;
    gemm32_t<float> sgemm32 = nullptr;
    gemm32_t<double> dgemm32 = nullptr;
    // openblas_get/set_num_threads under the library's names (null if it has none): the team step
    // (team.hpp) runs OpenBLAS on one thread while it splits the products between its own threads
    int (*get_threads)() = nullptr;
    void (*set_threads)(int) = nullptr;
    std::string path;
};

inline Blas& active_blas() {
    static Blas b;
    return b;
}
#endif

inline bool use_blas(std::size_t n, std::size_t in, std::size_t out) {
#ifdef FASTGRAD_BLAS
    if (n * in * out < blas_min_work().load(std::memory_order_relaxed)) return false;
    const Blas& b = active_blas();
    if (b.sgemm64) return true;
    // LP64: every dimension (and leading dimension) must fit an int
    const std::size_t most = INT_MAX;
    return b.sgemm32 && n <= most && in <= most && out <= most;
#else
    (void)n, (void)in, (void)out;
    return false;
#endif
}

#ifdef FASTGRAD_BLAS
// Sets b's get_threads/set_threads from the first of each list of names that `h` exports (both or
// neither).
inline void set_thread_control(Blas& b, void* h, std::initializer_list<const char*> gets,
                               std::initializer_list<const char*> sets) {
    void* g = nullptr;
    void* st = nullptr;
    for (const char* n : gets)
        if (!g) g = dlsym(h, n);
    for (const char* n : sets)
        if (!st) st = dlsym(h, n);
    if (g && st) {
        b.get_threads = reinterpret_cast<int (*)()>(g);
        b.set_threads = reinterpret_cast<void (*)(int)>(st);
    }
}

// Looks for a loaded library whose file name contains "openblas64" and exports the ILP64 CBLAS
// gemm under NumPy's names, and calls it from now on; returns its path ("" if none, and then
// nothing changes).  Call with the GIL held, no run in progress.
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
            Blas b;
            b.sgemm64 = reinterpret_cast<gemm64_t<float>>(s);
            b.dgemm64 = reinterpret_cast<gemm64_t<double>>(d);
            set_thread_control(b, h, {"scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_"},
                               {"scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"});
            b.path = found.path;
            active_blas() = b;
            return found.path;
        }
    }
    dlclose(h);
    return "";
}

// Opens the LP64 OpenBLAS at `path` (scipy-openblas32's library, symbols prefixed scipy_) and
// calls it from now on.  Returns "" on success, else what went wrong (and nothing changes).
// The library stays open.  Call with the GIL held, no run in progress.
inline std::string load_fallback_blas(const std::string& path) {
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char* e = dlerror();
        return e ? e : "dlopen failed";
    }
    void* s = dlsym(h, "scipy_cblas_sgemm");
    void* d = dlsym(h, "scipy_cblas_dgemm");
    if (!s || !d) {
        dlclose(h);
        return path + ": no scipy_cblas_sgemm / scipy_cblas_dgemm in it";
    }
    Blas b;
    b.sgemm32 = reinterpret_cast<gemm32_t<float>>(s);
    b.dgemm32 = reinterpret_cast<gemm32_t<double>>(d);
    set_thread_control(b, h, {"scipy_openblas_get_num_threads"}, {"scipy_openblas_set_num_threads"});
    b.path = path;
    active_blas() = b;
    return "";
}

// Only after use_blas(...) said yes for these dimensions.  lda, ldb, ldc: the row strides of
// the stored A, B and C (a block of a larger matrix); the overload below takes them packed.
template <class T>
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const T* a, std::size_t lda,
                 const T* b, std::size_t ldb, T* c, std::size_t ldc) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm: float or double");
    const int TA = ta ? kCblasTrans : kCblasNoTrans, TB = tb ? kCblasTrans : kCblasNoTrans;
    const Blas& lib = active_blas();
    gemm64_t<T> g64;
    gemm32_t<T> g32;
    if constexpr (std::is_same_v<T, float>) {
        g64 = lib.sgemm64;
        g32 = lib.sgemm32;
    } else {
        g64 = lib.dgemm64;
        g32 = lib.dgemm32;
    }
    if (g64)
        g64(kCblasRowMajor, TA, TB, std::int64_t(m), std::int64_t(n), std::int64_t(k), T(1), a, std::int64_t(lda), b,
            std::int64_t(ldb), T(0), c, std::int64_t(ldc));
    else
        g32(kCblasRowMajor, TA, TB, int(m), int(n), int(k), T(1), a, int(lda), b, int(ldb), T(0), c, int(ldc));
}

template <class T>
inline void gemm(bool ta, bool tb, std::size_t m, std::size_t n, std::size_t k, const T* a, const T* b, T* c) {
    gemm(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, c, n);
}
#else
template <class T>
inline void gemm(bool, bool, std::size_t, std::size_t, std::size_t, const T*, const T*, T*) {}
template <class T>
inline void gemm(bool, bool, std::size_t, std::size_t, std::size_t, const T*, std::size_t, const T*, std::size_t, T*,
                 std::size_t) {}
#endif

// Whether the products can be held to one thread of the BLAS (always, with no BLAS).
inline bool blas_threads_controllable() {
#ifdef FASTGRAD_BLAS
    const Blas& b = active_blas();
    return b.path.empty() || b.set_threads;
#else
    return true;
#endif
}

// While one of these lives (in any thread), the BLAS runs every product on its calling thread:
// the first one saves the BLAS's thread count and sets it to 1, the last one puts it back.  (The
// setting is the process's: NumPy's products in other threads meanwhile run on one thread too.)
class BlasOneThread {
  public:
    BlasOneThread() {
#ifdef FASTGRAD_BLAS
        const Blas& b = active_blas();
        if (!b.set_threads) return;
        set_ = b.set_threads;
        State& s = state();
        std::lock_guard<std::mutex> lock(s.m);
        if (s.users++ == 0) {
            s.saved = b.get_threads();
            set_(1);
        }
#endif
    }
    ~BlasOneThread() {
#ifdef FASTGRAD_BLAS
        if (!set_) return;
        State& s = state();
        std::lock_guard<std::mutex> lock(s.m);
        if (--s.users == 0) set_(s.saved);
#endif
    }
    BlasOneThread(const BlasOneThread&) = delete;
    BlasOneThread& operator=(const BlasOneThread&) = delete;

  private:
#ifdef FASTGRAD_BLAS
    struct State {
        std::mutex m;
        int users = 0;
        int saved = 1;
    };
    static State& state() {
        static State s;
        return s;
    }
    void (*set_)(int) = nullptr;
#endif
};

}  // namespace fg
