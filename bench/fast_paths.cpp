// What the fast paths for one Dense layer with one output save over the generic step: the same
// run (float32, 100,000 steps, MaxSteps only) through Net::run, which takes the register-resident
// loop (csrc/fast_tiny.hpp); through run_loop over dense1_out1_step (csrc/fast_one_output.hpp);
// and through run_loop over serial_step (csrc/step.hpp), on the same batches.  A measuring tool:
//
//   g++ -O3 -std=c++17 -ffp-contract=off -fno-math-errno -Icsrc bench/fast_paths.cpp -o /tmp/fast_paths -lpthread
//   /tmp/fast_paths
//
// Prints ns a step, the median of 15 alternated runs each, for W1 (1 input, 2 rows, full batch),
// W2 (1 input, batch 1), W3 (3 inputs + bias, batch 1), W4 (batches of 3) and a 10-input layer.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "loop.hpp"

using clk = std::chrono::steady_clock;

struct Case {
    const char* name;
    std::size_t in, n, rows;
    bool bias, full;
};

int main() {
    const Case cases[] = {{"W1", 1, 2, 2, false, true},
                          {"W2", 1, 1999, 1, false, false},
                          {"W3", 3, 100, 1, true, false},
                          {"W4", 3, 100, 3, true, false},
                          {"10 inputs", 10, 100, 1, true, false}};
    const std::size_t steps = 100000;
    std::mt19937_64 rng(0);
    std::normal_distribution<float> nd;
    for (const Case& c : cases) {
        std::vector<float> x(c.n * c.in), y(c.n);
        for (auto& v : x) v = 0.1f * nd(rng);
        for (auto& v : y) v = 0.1f * nd(rng);
        std::vector<double> ns_of[3];
        for (int rep = 0; rep < 15; ++rep) {
            for (int which = 0; which < 3; ++which) {
                std::vector<float> k(c.in, 0.5f), b{0.1f}, dk(c.in), db(1);
                const std::uint64_t state[4] = {1, 2, 3, 4};
                fg::Sampler sampler(state, c.n, c.rows, false);
                fg::Sampler* sp = c.full ? nullptr : &sampler;
                std::vector<fg::Rule> rules{fg::Rule{fg::RuleKind::max_steps, 0.0, static_cast<long long>(steps)}};
                const fg::DenseView<float> view{k.data(), c.bias ? b.data() : nullptr, dk.data(),
                                                c.bias ? db.data() : nullptr, c.in, 1, fg::Activation::linear};
                auto never = [] { return false; };
                const auto t0 = clk::now();
                if (which == 0) {  // Net::run: the tiny loop where it applies (at most 4 inputs)
                    fg::Net<float> net({view}, c.rows, !c.full);
                    fg::Records<float> rec;
                    fg::RunSpec<float> spec;
                    spec.rules = rules;
                    net.run(x.data(), y.data(), sp, 0.01f, spec, never, [](std::size_t) { return true; }, rec);
                } else {  // the fused one-output step, or the generic step, in run_loop
                    std::vector<fg::DenseView<float>> layers{view};
                    fg::NetScratch<float> s;
                    s.resize(layers, c.rows, !c.full);
                    std::vector<double> loss(steps), norm(steps);
                    std::vector<std::int64_t> idx(c.full ? 0 : steps * c.rows);
                    fg::LoopState st;
                    auto step = [&](const std::int64_t* bi, const std::int64_t*) {
                        if (which == 1) return fg::dense1_out1_step<float, 0>(layers[0], x.data(), y.data(), bi, c.rows, 0.01f);
                        return fg::serial_step(s, layers, x.data(), y.data(), bi, c.rows, 0.01f);
                    };
                    fg::run_loop<float>(step, layers, c.full ? nullptr : idx.data(), sp, steps, c.rows, rules, st,
                                        loss.data(), norm.data(), 0, nullptr, nullptr, 0, never);
                }
                const double ns = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / double(steps);
                ns_of[which].push_back(ns);
            }
        }
        for (auto& v : ns_of) std::sort(v.begin(), v.end());
        const double tiny = ns_of[0][7], fused = ns_of[1][7], generic = ns_of[2][7];
        std::printf("%-10s  Net::run %6.1f   fused one-output %6.1f   generic %6.1f   (ns a step; generic / fused %.2fx)\n",
                    c.name, tiny, fused, generic, generic / fused);
    }
    return 0;
}
