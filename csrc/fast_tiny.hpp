// Fast path: the native loop for one Dense layer with one output and at most 4 inputs (the
// walkthrough's E1-E7 models), with the parameters and the generator in registers and nothing
// but the finiteness test between steps until a record, a rule or a poll is due.
//
// What it speeds up: W1-W4 of bench/compare.py.  The figure, ns a step against the fused
// one-output step in the same loop: W1 9.7 against 25.3, W2 7.0 against 24.8, W3 10.5 against
// 34.0, W4 25.0 against 90.0 (`bench/fast_paths.cpp`, its comment has the command).
// Tied to the reference: csrc/tests/test_kernels.cpp tiny_case (against the generic step, bit for
// bit); tests/test_native.py runs every such model in both loops and demands the same bits (the
// Python loop calls the one-output step, itself tied to the generic step).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fast_one_output.hpp"
#include "kernels.hpp"
#include "rules.hpp"
#include "sampler.hpp"
#include "step.hpp"

namespace fg {

// Each step does what the generic step does, in the same order, so the same bits as the Python
// loop and as value_and_grad + sgd_update; the largest weight change is computed only when a
// WeightDelta rule reads it.
//
// tiny_steps runs steps [begin, end) with the parameters and the generator in registers and no
// test but finiteness between steps; dense1_out1_run cuts the chunk into such stretches, between
// which it records weights, tests the rules and polls for Ctrl-C.
// full batch; one random index; k distinct random indices (Floyd); the sampler's own draw
enum class Draw : int { none = 0, one = 1, floyd = 2, other = 3 };

template <class T, std::size_t IN>
struct TinyParams {
    T k[IN], dk[IN];
    T b, db;
    T vk[IN], vb;  // SGD's momentum (velocities), when the run has it
};

// SGD with momentum in the tiny loop (Keras's rule, as optimizer.hpp: v = v * mu - g * lr;
// w = w + v, or w + (v * mu - g * lr) with Nesterov): kind 0 none, 1 momentum, 2 Nesterov; the
// velocities are the optimizer's slot arrays of the kernel and the bias.
template <class T>
struct TinyMomentum {
    int kind = 0;
    T mu = T(0);
    T* vk = nullptr;
    T* vb = nullptr;
};

struct TinyEnd {
    std::size_t steps;  // steps done (the last one included, when it was not finite)
    bool not_finite;    // the last step's loss, gradient norm or a new weight is not finite
};

// The sum of the parameters, a test of all of them at once: it is not finite if one of them is not.
template <class T, std::size_t IN, bool BIAS>
[[gnu::always_inline]] inline T tiny_sum(const T* k, T b) {
    T sum = BIAS ? b + k[0] : k[0];
    for (std::size_t e = 1; e < IN; ++e) sum += k[e];
    return sum;
}

// ROWS > 0 fixes the batch's row count at compile time (the row loop unrolls); 0 reads `rows`.
// CHECK: test finiteness after every step and stop at the first step that is not finite.
// Without it the stretch runs to its end and is tested once: the sum of every step's loss and
// squared gradient norm (terms >= 0, so the sum is finite exactly when each term is, barring an
// overflow of the sum) and the final weights (a weight that is not finite stays so: w - lr*g
// with w = +-inf or NaN is never finite).  The caller runs a stretch that fails this test again
// from its start with CHECK, which finds the step.
template <class T, std::size_t IN, bool BIAS, bool RELU, Draw DRAW, std::size_t ROWS = 0, bool CHECK = true,
          int MOM = 0>
TinyEnd tiny_steps(TinyParams<T, IN>& tp, const T* FG_R x, const T* FG_R y, std::int64_t* idx, Sampler* sampler,
                   Xoshiro& gen_io, std::size_t rows, T lr, std::size_t begin, std::size_t end,
                   double* FG_R loss_out, double* FG_R gnorm_out, T mu = T(0)) {
    T k[IN], dk[IN], vk[IN];
    for (std::size_t e = 0; e < IN; ++e) {
        k[e] = tp.k[e];
        dk[e] = tp.dk[e];
        vk[e] = tp.vk[e];
    }
    T b = tp.b, db = tp.db, vb = tp.vb;
    Xoshiro gen = gen_io;
    const std::size_t n = sampler ? sampler->n() : 0;
    const T scale = T(1) / T(rows);
    TinyEnd res{0, false};
    double seen = 0.0;  // without CHECK: the sum of the stretch's losses and squared norms
    std::size_t i = begin;
    for (; i < end; ++i) {
        const std::size_t nrows = DRAW == Draw::one ? 1 : ROWS ? ROWS : rows;
        std::int64_t* bi = DRAW == Draw::none ? nullptr : idx + i * nrows;
        if (DRAW == Draw::one)
            bi[0] = std::int64_t(gen.bounded(n));
        else if (DRAW == Draw::floyd)
            Sampler::floyd_draw(gen, n, rows, bi);
        else if (DRAW == Draw::other)
            sampler->draw_with(gen, bi);
        T gb = T(0);
        // with one row the scale is 1, and x * 1 is x exactly: the constant folds away
        const double s = dense1_out1_rows<T, IN>(k, BIAS ? &b : nullptr, RELU, DRAW == Draw::one ? T(1) : scale, x,
                                                 IN, y, bi, nrows, dk, gb);
        const double loss = double(T(s / double(nrows)));
        // sgd_update's sum of squares: lane e holds element e (IN <= 8), the lanes summed in order,
        // then the bias's (a second sgd_update call in the generic step)
        double sq = double(dk[0]) * double(dk[0]);
        for (std::size_t e = 1; e < IN; ++e) sq += double(dk[e]) * double(dk[e]);
        if (BIAS) {
            db = gb;
            sq += double(db) * double(db);
        }
        T nk[IN];
        T nb = T(0);
        if (MOM == 0) {
            for (std::size_t e = 0; e < IN; ++e) nk[e] = k[e] - lr * dk[e];
            if (BIAS) nb = b - lr * db;
        } else {
            for (std::size_t e = 0; e < IN; ++e) {
                vk[e] = vk[e] * mu - dk[e] * lr;
                nk[e] = MOM == 2 ? k[e] + (vk[e] * mu - dk[e] * lr) : k[e] + vk[e];
            }
            if (BIAS) {
                vb = vb * mu - db * lr;
                nb = MOM == 2 ? b + (vb * mu - db * lr) : b + vb;
            }
        }
        for (std::size_t e = 0; e < IN; ++e) k[e] = nk[e];
        if (BIAS) b = nb;
        loss_out[i] = loss;
        gnorm_out[i] = std::sqrt(sq);
        if (CHECK) {
            // one test for the loss, the gradient norm and every new weight: a sum is not finite
            // if one of its terms is not (a sum of finite terms that overflows only takes the
            // slow path, which tests them one by one)
            if (!std::isfinite(sq + loss + double(tiny_sum<T, IN, BIAS>(k, b)))) {
                res.not_finite = true;
                ++i;
                break;
            }
        } else {
            seen += sq + loss;
        }
    }
    if (!CHECK) res.not_finite = !std::isfinite(seen + double(tiny_sum<T, IN, BIAS>(k, b)));
    res.steps = i - begin;
    for (std::size_t e = 0; e < IN; ++e) {
        tp.k[e] = k[e];
        tp.dk[e] = dk[e];
        tp.vk[e] = vk[e];
    }
    tp.b = b;
    tp.db = db;
    tp.vb = vb;
    gen_io = gen;
    return res;
}

template <class T, std::size_t IN, bool BIAS, bool RELU, class Poll>
ChunkResult dense1_out1_run(const DenseView<T>& L, const T* FG_R x, const T* FG_R y, std::int64_t* idx,
                            Sampler* sampler, std::size_t nsteps, std::size_t rows, T lr, std::vector<Rule>& rules,
                            LoopState& st, double* FG_R loss_out, double* FG_R gnorm_out, std::size_t every,
                            T* const* wrec, long long* wsteps, std::size_t poll_every, Poll& poll,
                            const TinyMomentum<T>& tm = TinyMomentum<T>{}) {
    ChunkResult out;
    const RulePlan plan = plan_rules(rules);
    std::size_t end = nsteps;
    if (!plan.others && plan.limit_rule >= 0 && plan.limit > st.step)
        end = std::min<std::size_t>(nsteps, std::size_t(plan.limit - st.step));
    TinyParams<T, IN> tp;
    for (std::size_t e = 0; e < IN; ++e) {
        tp.k[e] = L.k[e];
        tp.dk[e] = L.dk[e];
    }
    tp.b = BIAS ? L.b[0] : T(0);
    tp.db = BIAS ? L.db[0] : T(0);
    for (std::size_t e = 0; e < IN; ++e) tp.vk[e] = tm.kind ? tm.vk[e] : T(0);
    tp.vb = tm.kind && BIAS ? tm.vb[0] : T(0);
    Xoshiro gen = sampler ? sampler->generator() : Xoshiro{};
    const Draw draw = !sampler          ? Draw::none
                      : !sampler->floyd() ? Draw::other
                      : rows == 1         ? Draw::one
                                          : Draw::floyd;
    std::size_t until_poll = poll_every ? poll_every : SIZE_MAX;
    std::size_t until_rec = every ? every - std::size_t(st.step % static_cast<long long>(every)) : SIZE_MAX;
    // CHECK every stretch: after a false alarm (below); and from the start when the sampler keeps
    // a permutation (shuffle, or batches over 64), whose draws a replay from the stretch's saved
    // generator would not repeat
    bool every_step = draw == Draw::other;
    // steps [from, from + count) with the parameters in registers; CHECK as tiny_steps; M: momentum
    auto stretch_m = [&](auto check, auto mom, std::size_t from, std::size_t count) {
        constexpr bool C = decltype(check)::value;
        constexpr int M = decltype(mom)::value;
        switch (draw) {
            case Draw::none:  // full batch: two rows (W1 of the benchmarks) unrolled
                if (rows == 2)
                    return tiny_steps<T, IN, BIAS, RELU, Draw::none, 2, C, M>(tp, x, y, idx, sampler, gen, rows, lr,
                                                                              from, from + count, loss_out, gnorm_out,
                                                                              tm.mu);
                return tiny_steps<T, IN, BIAS, RELU, Draw::none, 0, C, M>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                          from + count, loss_out, gnorm_out, tm.mu);
            case Draw::one:
                return tiny_steps<T, IN, BIAS, RELU, Draw::one, 0, C, M>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                         from + count, loss_out, gnorm_out, tm.mu);
            case Draw::floyd:
                return tiny_steps<T, IN, BIAS, RELU, Draw::floyd, 0, C, M>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                           from + count, loss_out, gnorm_out, tm.mu);
            default:
                return tiny_steps<T, IN, BIAS, RELU, Draw::other, 0, C, M>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                           from + count, loss_out, gnorm_out, tm.mu);
        }
    };
    auto stretch_of = [&](auto check, std::size_t from, std::size_t count) {
        switch (tm.kind) {
            case 1: return stretch_m(check, std::integral_constant<int, 1>{}, from, count);
            case 2: return stretch_m(check, std::integral_constant<int, 2>{}, from, count);
            default: return stretch_m(check, std::integral_constant<int, 0>{}, from, count);
        }
    };
    std::size_t i = 0;
    while (i < end) {
        // a stretch with nothing to do between its steps: up to the next record, poll or rule test
        std::size_t stretch = std::min({end - i, until_rec, until_poll});
        if (plan.others) stretch = 1;
        const TinyParams<T, IN> before = tp;  // for the largest weight change (WeightDelta)
        const Xoshiro gen_before = gen;
        TinyEnd te = every_step ? stretch_of(std::bool_constant<true>{}, i, stretch)
                                : stretch_of(std::bool_constant<false>{}, i, stretch);
        if (te.not_finite && !every_step) {  // again from the stretch's start, testing every step
            tp = before;
            gen = gen_before;
            te = stretch_of(std::bool_constant<true>{}, i, stretch);
        }
        i += te.steps;
        st.step += static_cast<long long>(te.steps);
        out.steps = i;
        if (every && (until_rec -= te.steps) == 0) {
            until_rec = every;
            T* dst = wrec[0] + out.recorded * IN;
            for (std::size_t e = 0; e < IN; ++e) dst[e] = tp.k[e];
            if (BIAS) wrec[1][out.recorded] = tp.b;
            wsteps[out.recorded++] = st.step;
        }
        const double loss = loss_out[i - 1];
        if (te.not_finite) {  // name the first non-finite gradient and weight, as name_bad does
            int bad_grad = -1, bad_weight = -1;
            for (std::size_t e = 0; e < IN; ++e) bad_grad = bad_grad < 0 && !std::isfinite(tp.dk[e]) ? 0 : bad_grad;
            if (BIAS && bad_grad < 0 && !std::isfinite(tp.db)) bad_grad = 1;
            for (std::size_t e = 0; e < IN; ++e) bad_weight = bad_weight < 0 && !std::isfinite(tp.k[e]) ? 0 : bad_weight;
            if (BIAS && bad_weight < 0 && !std::isfinite(tp.b)) bad_weight = 1;
            if (!std::isfinite(loss) || bad_grad >= 0 || bad_weight >= 0) {
                out.stop = -2;
                out.bad_grad = bad_grad;
                out.bad_weight = bad_weight;
                break;
            }
            // a false alarm: finite values whose sum overflowed.  It may recur every step (huge
            // weights that stay): from here on test every step, so that no stretch runs twice
            every_step = true;
        }
        if (plan.others) {  // stretches of one step: `before` holds the weights before it
            double delta = 0.0;
            if (plan.need_delta) {  // max |new - old|, each difference in T; NaN if one is not finite
                T most = T(0);
                bool ok = true;
                for (std::size_t e = 0; e < IN + (BIAS ? 1 : 0); ++e) {
                    const T c = e < IN ? std::fabs(tp.k[e] - before.k[e]) : std::fabs(tp.b - before.b);
                    ok &= std::isfinite(c);
                    most = c > most ? c : most;
                }
                delta = ok ? double(most) : double(NAN);
            }
            for (std::size_t j = 0; j < rules.size() && out.stop < 0; ++j)
                if (rule_fires(rules[j], st, loss, delta)) out.stop = int(j);
            if (out.stop >= 0) break;
        }
        st.prev_loss = loss;
        st.has_prev = true;
        if (poll_every && (until_poll -= te.steps) == 0) {
            until_poll = poll_every;
            if (poll()) {
                out.stop = -3;
                break;
            }
        }
    }
    if (out.stop == -1 && !plan.others && plan.limit_rule >= 0 && st.step >= plan.limit) out.stop = plan.limit_rule;
    for (std::size_t e = 0; e < IN; ++e) {
        L.k[e] = tp.k[e];
        L.dk[e] = tp.dk[e];
    }
    if (BIAS) {
        L.b[0] = tp.b;
        L.db[0] = tp.db;
    }
    if (tm.kind) {
        for (std::size_t e = 0; e < IN; ++e) tm.vk[e] = tp.vk[e];
        if (BIAS) tm.vb[0] = tp.vb;
    }
    if (sampler) sampler->set_generator(gen);
    return out;
}

template <class T, std::size_t IN, class Poll, class... A>
ChunkResult dense1_out1_dispatch(const DenseView<T>& L, A&&... a) {
    const bool relu = L.act == Activation::relu;
    if (L.b)
        return relu ? dense1_out1_run<T, IN, true, true, Poll>(L, a...) : dense1_out1_run<T, IN, true, false, Poll>(L, a...);
    return relu ? dense1_out1_run<T, IN, false, true, Poll>(L, a...) : dense1_out1_run<T, IN, false, false, Poll>(L, a...);
}

}  // namespace fg
