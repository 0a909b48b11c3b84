// Where the time of one W6/W7 training step goes (784 -> 256 (relu) -> 10, MSE, SGD), part by
// part, against the step's five matrix products alone (bench/compare.py's roofline), with the
// kernels fit runs.  A measuring tool, not a test:
//
//   g++ -O3 -std=c++17 -ffp-contract=off -fno-math-errno -DFASTGRAD_BLAS=1 -Icsrc
//       bench/step_parts.cpp -o /tmp/step_parts -ldl -lpthread     (one command)
//   SOB=$(python -c "import fastgrad._blas as b; print(b.fallback_library())")
//   /tmp/step_parts 128 400 $SOB      # batch rows (8192: W7), steps, the BLAS library
//
// It opens scipy-openblas32 (fastgrad's fallback BLAS; fit itself calls NumPy's OpenBLAS, the
// same kernels).  Last, the whole step as fit runs it (net_step: on fastgrad's own two threads,
// the team, for W6's batch).  x is a std::vector (4 KiB pages), where NumPy gives arrays this
// large huge pages: the gather is slower here than in fit.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "loop.hpp"

using clk = std::chrono::steady_clock;
static double us(clk::time_point a, clk::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }

int main(int argc, char** argv) {
    const std::size_t N = 8192, I = 784, H = 256, O = 10;
    const std::size_t B = argc > 1 ? std::size_t(std::atoi(argv[1])) : 0;
    const int steps = argc > 2 ? std::atoi(argv[2]) : 0, skip = 20;
    if (B < 1 || B > N || steps <= skip || argc < 4) {
        std::fprintf(stderr, "usage: step_parts rows(1..8192) steps(> %d) path/to/libscipy_openblas.so\n", skip);
        return 2;
    }
    const std::string err = fg::load_fallback_blas(argv[3]);
    if (!err.empty()) {
        std::fprintf(stderr, "step_parts: %s\n", err.c_str());
        return 2;
    }
    std::mt19937_64 rng(1);
    std::uniform_real_distribution<float> u(0, 1);
    std::normal_distribution<float> nd(0, 0.05f);
    std::vector<float> x(N * I), y(N * O), k1(I * H), b1(H), dk1(I * H), db1(H), k2(H * O), b2(O), dk2(H * O), db2(O);
    for (auto& v : x) v = u(rng);
    for (auto& v : y) v = u(rng);
    for (auto& v : k1) v = nd(rng);
    for (auto& v : k2) v = nd(rng);
    std::vector<fg::DenseView<float>> L = {{k1.data(), b1.data(), dk1.data(), db1.data(), I, H, fg::Activation::relu},
                                            {k2.data(), b2.data(), dk2.data(), db2.data(), H, O, fg::Activation::linear}};
    fg::NetScratch<float> s;
    s.resize(L, B, true);
    std::vector<std::int64_t> idx(B);
    const char* names[] = {"gather the batch rows", "layer 1 forward", "layer 2 forward", "loss", "layer 2 backward",
                           "layer 1 backward", "update (every parameter)", "the five products alone"};
    double t[8] = {};
    std::vector<double> step_us, five_us;
    const bool full = B == N;  // the full batch (W7): fit reads x and y in place, no gather
    const float* xb = full ? x.data() : s.xb.data();
    const float* yb = full ? y.data() : s.yb.data();
    for (int st = 0; st < steps; ++st) {
        for (auto& v : idx) v = std::int64_t(rng() % N);
        const auto t0 = clk::now();
        if (!full) {
            fg::gather_rows(s.xb.data(), x.data(), idx.data(), B, I);
            fg::gather_rows(s.yb.data(), y.data(), idx.data(), B, O);
        }
        const auto t1 = clk::now();
        fg::layer_forward(s.acts[0].data(), xb, k1.data(), b1.data(), B, I, H, fg::Activation::relu);
        const auto t2 = clk::now();
        fg::layer_forward(s.acts[1].data(), s.acts[0].data(), k2.data(), b2.data(), B, H, O, fg::Activation::linear);
        const auto t3 = clk::now();
        fg::mse_forward_backward(s.grad_in[1].data(), s.acts[1].data(), yb, B * O);
        const auto t4 = clk::now();
        fg::layer_backward(s.grad_in[0].data(), dk2.data(), db2.data(), s.grad_in[1].data(), s.acts[0].data(),
                           k2.data(), s.acts[1].data(), B, H, O, fg::Activation::linear);
        const auto t5 = clk::now();
        fg::layer_backward<float>(nullptr, dk1.data(), db1.data(), s.grad_in[0].data(), xb, k1.data(),
                                  s.acts[0].data(), B, I, H, fg::Activation::relu);
        const auto t6 = clk::now();
        double sq = 0;
        bool finite = true;
        for (const auto& l : L) {
            fg::sgd_update(l.k, l.dk, 0.01f, l.in * l.out, &sq, &finite);
            fg::sgd_update(l.b, l.db, 0.01f, l.out, &sq, &finite);
        }
        const auto t7 = clk::now();
        fg::gemm(false, false, B, H, I, xb, k1.data(), s.acts[0].data());                       // X @ K1
        fg::gemm(false, false, B, O, H, s.acts[0].data(), k2.data(), s.acts[1].data());        // H @ K2
        fg::gemm(true, false, H, O, B, s.acts[0].data(), s.grad_in[1].data(), dk2.data());     // H^T dZ2
        fg::gemm(false, true, B, H, O, s.grad_in[1].data(), k2.data(), s.grad_in[0].data());   // dZ2 K2^T
        fg::gemm(true, false, I, H, B, xb, s.grad_in[0].data(), dk1.data());                   // X^T dZ1
        const auto t8 = clk::now();
        if (st < skip) continue;
        const clk::time_point marks[] = {t0, t1, t2, t3, t4, t5, t6, t7, t8};
        for (int j = 0; j < 8; ++j) t[j] += us(marks[j], marks[j + 1]);
        step_us.push_back(us(t0, t7));
        five_us.push_back(us(t7, t8));
    }
    const int n = steps - skip;
    std::printf("batch of %zu rows, mean µs over %d steps:\n", B, n);
    for (int j = 0; j < 8; ++j) std::printf("  %-26s %10.1f\n", names[j], t[j] / n);
    std::sort(step_us.begin(), step_us.end());
    std::sort(five_us.begin(), five_us.end());
    std::printf("median step %.1f µs, median five products %.1f µs: step / products = %.3f\n", step_us[n / 2],
                five_us[n / 2], step_us[n / 2] / five_us[n / 2]);
    // The step fit runs at this size: net_step, on the team (team.hpp) when it takes this batch,
    // after a pause that lets OpenBLAS's threads (which spin after the products above) go idle.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const fg::TeamConfig cfg{2, fg::team_min_work().load(), fg::team_rows_split().load()};
    const bool team = fg::team_applies(L, B, cfg);
    std::vector<double> net_us;
    for (int st = 0; st < steps; ++st) {
        for (auto& v : idx) v = std::int64_t(rng() % N);
        const auto a = clk::now();
        fg::net_step(s, L, x.data(), y.data(), full ? nullptr : idx.data(), B, 0.01f, cfg);
        const auto b = clk::now();
        if (st >= skip) net_us.push_back(us(a, b));
    }
    std::sort(net_us.begin(), net_us.end());
    std::printf("median net_step %s: %.1f µs = %.3f x the five products' median above\n",
                team ? "on the team (two threads)" : "(OpenBLAS's threads; the team does not take this batch)",
                net_us[n / 2], net_us[n / 2] / five_us[n / 2]);
    return 0;
}
