// W6's two large products (X[128x784] @ K1[784x256], and X^T dZ1 -> dK1[784x256]) with a plain
// AVX2/FMA 6x16 micro-kernel of our own on a two-thread spin team, against OpenBLAS (the
// scipy-openblas32 wheel, its own two threads).  A measuring tool for the "own GEMM" route to
// W6's 1.10x target (see README, Speed): that route fuses the first layer's update into dK1's
// product and hides the batch gather, which OpenBLAS's calls leave no core for.  Not a test.
//
//   g++ -O3 -std=c++17 -DFASTGRAD_BLAS=1 -Icsrc bench/gemm_probe.cpp -o /tmp/gemm_probe -ldl -lpthread
//   SOB=$(python -c "import fastgrad._blas as b; print(b.fallback_library())")
//   /tmp/gemm_probe blas 300 $SOB; /tmp/gemm_probe own 300; /tmp/gemm_probe ownp 300
//
// own: rows split between the threads, B read in place (1 KB stride).  ownp: B packed into
// 16-wide panels; the first product split by columns, each thread packing all of A (in the fused
// step that packing would be the batch gather itself).  One process per side: OpenBLAS's pool
// spins for a while after each call and would take the second core from our team.  Both "own"
// modes check the products against a double-precision loop.
// Measured 2026-11-27, three alternations each, medians of 280 pairs (us, the two products):
//   fast spell:  OpenBLAS 638-650, own 724-741; later OpenBLAS 642-655, ownp 679-683 (first
//                product 365-367 against 326-333, the second 315-316 against 316-322)
//   slow spell:  OpenBLAS 846-861, own 990-1000, ownp 920-945 (first product 497-509 against
//                431-439, the second 423-435 against 416-422)
#include <immintrin.h>
#include <atomic>
#include <thread>
#include <vector>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <algorithm>
#include <functional>
#include <cmath>
#include <string>
#include "gemm.hpp"
using clk = std::chrono::steady_clock;
static double us(clk::time_point a, clk::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }

constexpr int MR = 6, NR = 16;

// C[0:mr, 0:16] (+)= sum_k Ap[k*6+i] * B[k*ldb + j]
__attribute__((target("avx2,fma"))) static void kern(int K, const float* __restrict Ap, const float* __restrict B,
                                                     long ldb, float* __restrict C, long ldc, int mr, bool acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < K; ++k) {
        const __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
        B += ldb;
        __m256 a;
        a = _mm256_broadcast_ss(Ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(Ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(Ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(Ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(Ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(Ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
        Ap += 6;
    }
    __m256 r[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int i = 0; i < mr; ++i) {
        float* ci = C + i * ldc;
        if (acc) {
            r[i][0] = _mm256_add_ps(r[i][0], _mm256_loadu_ps(ci));
            r[i][1] = _mm256_add_ps(r[i][1], _mm256_loadu_ps(ci + 8));
        }
        _mm256_storeu_ps(ci, r[i][0]);
        _mm256_storeu_ps(ci + 8, r[i][1]);
    }
}

// spin team: main + one worker
struct Team {
    std::atomic<int> gen{0}, done{0};
    std::atomic<bool> quit{false};
    std::function<void(int)>* job = nullptr;
    std::thread th;
    Team() {
        th = std::thread([this] {
            int seen = 0;
            while (true) {
                int g;
                while ((g = gen.load(std::memory_order_acquire)) == seen) {
                    if (quit.load()) return;
                    _mm_pause();
                }
                seen = g;
                (*job)(1);
                done.fetch_add(1, std::memory_order_release);
            }
        });
    }
    void run(std::function<void(int)>& f) {
        job = &f;
        const int d = done.load();
        gen.fetch_add(1, std::memory_order_release);
        f(0);
        while (done.load(std::memory_order_acquire) == d) _mm_pause();
    }
    ~Team() { quit = true; th.join(); }
};

int main(int argc, char** argv) {
    if (argc < 3 || (std::string(argv[1]) != "own" && std::string(argv[1]) != "ownp" && (std::string(argv[1]) != "blas" || argc < 4)) ||
        std::atoi(argv[2]) <= 20) {
        std::fprintf(stderr, "usage: gemm_probe own REPS | gemm_probe blas REPS path/to/libscipy_openblas.so  (REPS > 20)\n");
        return 2;
    }
    const std::string mode = argv[1];
    const int reps = atoi(argv[2]);
    const int B_ = 128, I = 784, H = 256;
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> X(B_ * I), K1(I * H), Z(B_ * H), dZ(B_ * H), dK(I * H);
    for (auto& v : X) v = u(rng);
    for (auto& v : K1) v = u(rng);
    for (auto& v : dZ) v = u(rng);
    std::vector<double> t1, t5;
    if (mode == "blas") {
        std::string e = fg::load_fallback_blas(argv[3]);
        if (!e.empty()) { puts(e.c_str()); return 1; }
        for (int r = 0; r < reps; ++r) {
            auto a = clk::now();
            fg::gemm(false, false, B_, H, I, X.data(), K1.data(), Z.data());
            auto b = clk::now();
            fg::gemm(true, false, I, H, B_, X.data(), dZ.data(), dK.data());
            auto c = clk::now();
            t1.push_back(us(a, b)); t5.push_back(us(b, c));
        }
    } else {
        Team team;
        const int mp1 = (B_ + MR - 1) / MR, mp5 = (I + MR - 1) / MR;
        std::vector<float> Ap1(2 * ((mp1 + 1) / 2 + 1) * MR * I), Ap5(mp5 * MR * B_ + 64);
        std::vector<float> Zc(B_ * H), dKc(I * H);
        const int KC = 392;
        // P1: split m-panels between the two threads; each packs its own
        std::function<void(int)> p1 = [&](int t) {
            const int m0 = t == 0 ? 0 : (mp1 + 1) / 2, m1 = t == 0 ? (mp1 + 1) / 2 : mp1;
            float* ap = Ap1.data() + (t == 0 ? 0 : ((mp1 + 1) / 2) * MR * I);
            for (int kc = 0; kc < I; kc += KC) {
                const int kn = std::min(KC, I - kc);
                for (int mp = m0; mp < m1; ++mp) {
                    float* d = ap + (mp - m0) * MR * kn;
                    for (int i = 0; i < MR; ++i) {
                        const int row = mp * MR + i;
                        if (row < B_) { const float* s = X.data() + row * I + kc; for (int k = 0; k < kn; ++k) d[k * MR + i] = s[k]; }
                        else for (int k = 0; k < kn; ++k) d[k * MR + i] = 0;
                    }
                }
                for (int np = 0; np < H / NR; ++np)
                    for (int mp = m0; mp < m1; ++mp)
                        kern(kn, ap + (mp - m0) * MR * kn, K1.data() + kc * H + np * NR, H, Zc.data() + mp * MR * H + np * NR, H,
                             std::min(MR, B_ - mp * MR), kc > 0);
            }
        };
        // A = X^T for dK1, m-panels [m0, m1) of 6 columns of X
        auto pack_a5 = [&](int m0, int m1) {
            for (int mp = m0; mp < m1; ++mp) {
                float* d = Ap5.data() + mp * MR * B_;
                const int c0 = mp * MR, cn = std::min(MR, I - c0);
                for (int k = 0; k < B_; ++k) {
                    const float* s = X.data() + k * I + c0;
                    for (int i = 0; i < MR; ++i) d[k * MR + i] = i < cn ? s[i] : 0.f;
                }
            }
        };
        std::function<void(int)> p5 = [&](int t) {
            const int m0 = t == 0 ? 0 : (mp5 + 1) / 2, m1 = t == 0 ? (mp5 + 1) / 2 : mp5;
            pack_a5(m0, m1);
            for (int np = 0; np < H / NR; ++np)
                for (int mp = m0; mp < m1; ++mp)
                    kern(B_, Ap5.data() + mp * MR * B_, dZ.data() + np * NR, H, dKc.data() + mp * MR * H + np * NR, H,
                         std::min(MR, I - mp * MR), false);
        };
        const int NP = H / NR;
        std::vector<float> Apn[2] = {std::vector<float>(mp1 * MR * KC), std::vector<float>(mp1 * MR * KC)};
        std::vector<float> Bpn(NP * NR * I);
        std::function<void(int)> p1n = [&](int t) {
            const int n0 = t * NP / 2, n1 = (t + 1) * NP / 2;
            float* ap = Apn[t].data();
            for (int kc = 0; kc < I; kc += KC) {
                const int kn = std::min(KC, I - kc);
                for (int mp = 0; mp < mp1; ++mp) {
                    float* d = ap + mp * MR * kn;
                    for (int i = 0; i < MR; ++i) {
                        const int row = mp * MR + i;
                        if (row < B_) { const float* s = X.data() + row * I + kc; for (int k = 0; k < kn; ++k) d[k * MR + i] = s[k]; }
                        else for (int k = 0; k < kn; ++k) d[k * MR + i] = 0;
                    }
                }
                for (int np = n0; np < n1; ++np) {
                    float* bp = Bpn.data() + np * NR * I + kc * NR;
                    for (int k = 0; k < kn; ++k) std::memcpy(bp + k * NR, K1.data() + (kc + k) * H + np * NR, NR * 4);
                }
                for (int np = n0; np < n1; ++np)
                    for (int mp = 0; mp < mp1; ++mp)
                        kern(kn, ap + mp * MR * kn, Bpn.data() + np * NR * I + kc * NR, NR, Zc.data() + mp * MR * H + np * NR, H,
                             std::min(MR, B_ - mp * MR), kc > 0);
            }
        };
        std::vector<float> Bp5[2] = {std::vector<float>(NP * NR * B_), std::vector<float>(NP * NR * B_)};
        std::function<void(int)> p5n = [&](int t) {
            const int m0 = t == 0 ? 0 : (mp5 + 1) / 2, m1 = t == 0 ? (mp5 + 1) / 2 : mp5;
            float* bp = Bp5[t].data();
            for (int np = 0; np < NP; ++np)
                for (int k = 0; k < B_; ++k) std::memcpy(bp + np * NR * B_ + k * NR, dZ.data() + k * H + np * NR, NR * 4);
            pack_a5(m0, m1);
            for (int np = 0; np < NP; ++np)
                for (int mp = m0; mp < m1; ++mp)
                    kern(B_, Ap5.data() + mp * MR * B_, bp + np * NR * B_, NR, dKc.data() + mp * MR * H + np * NR, H,
                         std::min(MR, I - mp * MR), false);
        };
        const bool packed = mode == "ownp";
        for (int r = 0; r < reps; ++r) {
            auto a = clk::now();
            team.run(packed ? p1n : p1);
            auto b = clk::now();
            team.run(packed ? p5n : p5);
            auto c = clk::now();
            t1.push_back(us(a, b)); t5.push_back(us(b, c));
        }
        // check against a plain loop
        double e1 = 0, e5 = 0;
        for (int i = 0; i < B_; ++i) for (int j = 0; j < H; ++j) { double s = 0; for (int k = 0; k < I; ++k) s += double(X[i*I+k]) * K1[k*H+j]; e1 = std::max(e1, std::fabs(s - Zc[i*H+j])); }
        for (int i = 0; i < I; ++i) for (int j = 0; j < H; ++j) { double s = 0; for (int k = 0; k < B_; ++k) s += double(X[k*I+i]) * dZ[k*H+j]; e5 = std::max(e5, std::fabs(s - dKc[i*H+j])); }
        printf("max abs err P1 %.3g P5 %.3g\n", e1, e5);
    }
    auto med = [](std::vector<double> v) { std::sort(v.begin() + 0, v.end()); return v[v.size() / 2]; };
    std::vector<double> s1(t1.begin() + 20, t1.end()), s5(t5.begin() + 20, t5.end());
    printf("%s: P1 median %.1f us, P5 median %.1f us, sum %.1f\n", mode.c_str(), med(s1), med(s5), med(s1) + med(s5));
}
