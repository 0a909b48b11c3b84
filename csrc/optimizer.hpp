// Optimizers other than plain SGD, as Keras 3 applies them (keras/src/optimizers/base_optimizer.py
// apply -> _clip_gradients -> _apply_weight_decay -> update_step; sgd.py, adam.py), and Keras's
// learning-rate schedules (schedules/learning_rate_schedule.py), in the model's dtype T:
//
//   g  = g + l2 * w               kernels only, with l2 set (coupled L2, as scikit-learn's alpha;
//                                 not a Keras option); before everything below
//   g' = clip(g)                  clipnorm: g * c / max(||g||, c) per tensor; global_clipnorm:
//                                 g * c * min(1/||all||, 1/c); clipvalue: min(max(g, -c), c)
//   w  = w - w * wd * lr          weight decay (before the rule, with the step's rate)
//   SGD:  m = m * mu - g' * lr;   w = w + m   (nesterov: w = w + (m * mu - g' * lr))
//   Adam: t = iterations + 1;  alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
//         m = m + (g' - m) * (1 - b1);  v = v + (g'^2 - v) * (1 - b2);  (amsgrad: v = vhat = max(vhat, v))
//         w = w - (m * alpha) / (sqrt(v) + eps)
//   iterations += 1;  lr = schedule(iterations before the update)
//
// Plain SGD at a constant rate does not come here: the steps' fused sgd_update is its rule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "kernels.hpp"
#include "step.hpp"

namespace fg {

// kind: 0 constant (a = the rate), 1 exponential and 2 inverse-time decay (a = initial rate,
// b = decay_steps, c = decay_rate, flag = staircase), 3 piecewise constant (boundaries, values),
// 4 cosine (a = initial rate, b = decay_steps, e = alpha, flag = warm-up, f = warmup_target,
// g = warmup_steps)
struct Schedule {
    int kind = 0;
    double a = 0.0, b = 1.0, c = 0.0;
    bool flag = false;
    double e = 0.0, f = 0.0;
    long long g = 0;
    std::vector<double> boundaries, values;
};

// The rate after `step` updates, computed in T as Keras computes it in its float type.
template <class T>
T learning_rate_at(const Schedule& s, long long step) {
    const T t = T(step);
    switch (s.kind) {
        case 1:
        case 2: {
            T p = t / T(s.b);
            if (s.flag) p = std::floor(p);
            if (s.kind == 1) return T(s.a) * T(std::pow(T(s.c), p));
            return T(s.a) / (T(1) + T(s.c) * p);
        }
        case 3: {
            const double d = double(step);
            if (d <= s.boundaries.front()) return T(s.values.front());
            if (d > s.boundaries.back()) return T(s.values.back());
            for (std::size_t i = 1; i < s.boundaries.size(); ++i)
                if (d > s.boundaries[i - 1] && d <= s.boundaries[i]) return T(s.values[i]);
            return T(s.values.back());
        }
        case 4: {
            const T decay_steps = T(s.b);
            const T pi = T(3.14159265358979323846);
            auto decay = [&](T st, T from) {
                const T cosine = T(0.5) * (T(1) + std::cos(pi * (st / decay_steps)));
                return from * ((T(1) - T(s.e)) * cosine + T(s.e));
            };
            if (!s.flag) return decay(std::min(t, decay_steps), T(s.a));
            const T warm = T(s.g), target = T(s.f);
            const T st = std::min(t, decay_steps + warm);
            if (st < warm) return (target - T(s.a)) * (st / warm) + T(s.a);
            return decay(st - warm, target);
        }
        default: return T(s.a);
    }
}

enum class OptKind : int { sgd = 0, adam = 1 };

// An optimizer's settings; a clip or a weight decay below 0 is not set.
struct OptConfig {
    OptKind kind = OptKind::sgd;
    double momentum = 0.0;
    bool nesterov = false;
    double weight_decay = -1.0, clipnorm = -1.0, clipvalue = -1.0, global_clipnorm = -1.0;
    double l2 = -1.0;  // coupled L2 on the kernels' gradients
    double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7;
    bool amsgrad = false;
    Schedule schedule;

    bool plain() const {
        return kind == OptKind::sgd && momentum == 0.0 && weight_decay < 0 && clipnorm <= 0 && clipvalue <= 0 &&
               global_clipnorm <= 0 && l2 < 0 && schedule.kind == 0;
    }
    // slot arrays per parameter: SGD's momentum, Adam's m, v (and vhat)
    int slots() const { return kind == OptKind::adam ? (amsgrad ? 3 : 2) : (momentum != 0.0 ? 1 : 0); }
};

// The state the optimizer object keeps between runs: slot k of parameter p at slot[k][p] (the
// caller's arrays), and the updates made so far.
template <class T>
struct OptState {
    std::vector<std::vector<T*>> slot;
    long long iterations = 0;
};

// Every parameter's (weight, gradient, count, whether a kernel), in get_weights() order.
template <class T>
struct ParamRef {
    T* w;
    T* g;
    std::size_t count;
    bool kernel;
};
template <class T>
std::vector<ParamRef<T>> param_refs(const std::vector<DenseView<T>>& layers) {
    std::vector<ParamRef<T>> out;
    for (const auto& L : layers) {
        out.push_back({L.k, L.dk, L.in * L.out, true});
        if (L.b) out.push_back({L.b, L.db, L.out, false});
    }
    return out;
}

// The coupled L2 term on a block of a kernel's gradient: g += l2 * w.
template <class T>
void add_l2(const OptConfig& cfg, const ParamRef<T>& r, std::size_t e0, std::size_t e1) {
    if (cfg.l2 < 0 || !r.kernel) return;
    const T l2 = T(cfg.l2);
    for (std::size_t e = e0; e < e1; ++e) r.g[e] = r.g[e] + l2 * r.w[e];
}

// One update of every parameter, in three stages so that the team can share the last: begin()
// with each gradient's sum of squares (the clips need the norms first), apply() on any block of
// a parameter, end().
template <class T>
class Updater {
  public:
    Updater(const OptConfig& cfg, OptState<T>& st) : cfg_(cfg), st_(st) {}

    // sq[p]: the sum of squares of parameter p's gradient (in double, in a fixed order).
    void begin(const std::vector<double>& sq) {
        lr_ = learning_rate_at<T>(cfg_.schedule, st_.iterations);
        num_.assign(sq.size(), T(1));
        den_.assign(sq.size(), T(1));
        if (cfg_.clipnorm > 0) {
            const T c = T(cfg_.clipnorm);
            for (std::size_t p = 0; p < sq.size(); ++p) {
                const T l2sum = T(sq[p]);
                const T l2norm = l2sum > T(0) ? std::sqrt(l2sum) : l2sum;
                num_[p] = c;
                den_[p] = std::max(l2norm, c);
            }
        } else if (cfg_.global_clipnorm > 0) {
            double total = 0.0;
            for (double v : sq) total += v;
            const T c = T(cfg_.global_clipnorm);
            const T norm = std::sqrt(T(total));
            const T scale = c * std::min(T(1) / norm, T(1) / c) + (norm - norm);  // NaN for a non-finite norm
            std::fill(num_.begin(), num_.end(), scale);
        }
        if (cfg_.kind == OptKind::adam) {
            const T t = T(st_.iterations + 1);
            const T b1p = T(std::pow(T(cfg_.beta1), t)), b2p = T(std::pow(T(cfg_.beta2), t));
            alpha_ = lr_ * std::sqrt(T(1) - b2p) / (T(1) - b1p);
        }
    }

    T lr() const { return lr_; }
    const OptConfig& config() const { return cfg_; }
    // The parameters (kept from the first call: the layers of a run do not change) and a vector
    // of n sums, reused step after step.
    std::vector<ParamRef<T>>& refs(const std::vector<DenseView<T>>& layers) {
        if (refs_.empty() || refs_.front().w != layers.front().k) refs_ = param_refs(layers);
        return refs_;
    }
    std::vector<double>& sums(std::size_t n) {
        sums_.assign(n, 0.0);
        return sums_;
    }

    // Whether the update may run block by block as the gradients come (no norm-based clip, which
    // needs every gradient first): the team then updates each block in the phase that made it.
    bool fusable() const { return !(cfg_.clipnorm > 0) && !(cfg_.global_clipnorm > 0); }

    // Elements [e0, e1) of parameter p: w and its gradient g; u takes the largest change and
    // whether every new weight is finite.  One loop per combination of options, without branches
    // inside, so that it vectorises.
    void apply(std::size_t p, T* w, const T* g, std::size_t e0, std::size_t e1, UpdateSums& u) const {
        const int rule = cfg_.kind == OptKind::adam ? (cfg_.amsgrad ? 4 : 3)
                         : cfg_.momentum != 0.0     ? (cfg_.nesterov ? 2 : 1)
                                                    : 0;
        const int clip = cfg_.clipnorm > 0 ? 1 : cfg_.global_clipnorm > 0 ? 2 : cfg_.clipvalue > 0 ? 3 : 0;
        Coefs c;
        c.lr = lr_;
        c.alpha = alpha_;
        c.wd = T(cfg_.weight_decay);
        c.num = num_[p];
        c.den = den_[p];
        c.cv = T(cfg_.clipvalue);
        c.mu = T(cfg_.momentum);
        c.ob1 = T(1.0 - cfg_.beta1);
        c.ob2 = T(1.0 - cfg_.beta2);
        c.eps = T(cfg_.epsilon);
        T* m = st_.slot.size() > 0 ? st_.slot[0][p] : nullptr;
        T* v = st_.slot.size() > 1 ? st_.slot[1][p] : nullptr;
        T* vh = st_.slot.size() > 2 ? st_.slot[2][p] : nullptr;
        const double d = dispatch(rule, cfg_.weight_decay >= 0, clip, w, g, m, v, vh, e0, e1, c);
        const bool ok = d == d;
        u.finite = u.finite && ok;
        u.nan_delta |= !ok;
        u.delta = ok && d > u.delta ? d : u.delta;
    }

    void end() { ++st_.iterations; }
    // n updates made elsewhere (the tiny loop's momentum)
    void skip(long long n) { st_.iterations += n; }
    OptState<T>& state() { return st_; }

  private:
    struct Coefs {
        T lr, alpha, wd, num, den, cv, mu, ob1, ob2, eps;
    };

    // The update of one element, per rule (0 SGD, 1 momentum, 2 Nesterov, 3 Adam, 4 AMSGrad),
    // weight decay, clip (0 none, 1 per-tensor norm, 2 global scale, 3 value); the largest change
    // as the largest bit pattern (NaN above every finite change: the new weights' finiteness).
    template <int RULE, bool WD, int CLIP>
    [[gnu::always_inline]] static double body(T* FG_R w, const T* FG_R g, T* FG_R m, T* FG_R v, T* FG_R vh,
                                              std::size_t e0, std::size_t e1, const Coefs& c) {
        using I = typename same_size_int<T>::type;
        I most = 0;
        for (std::size_t e = e0; e < e1; ++e) {
            T gi = g[e];
            if (CLIP == 1) gi = (gi * c.num) / c.den;
            if (CLIP == 2) gi = gi * c.num;
            if (CLIP == 3) {  // std::min(std::max(g, -c), c), NaN kept
                const T t = gi < -c.cv ? -c.cv : gi;
                gi = c.cv < t ? c.cv : t;
            }
            const T old = w[e];
            T wi = old;
            if (WD) wi = wi - wi * c.wd * c.lr;
            if (RULE == 0) wi = wi - gi * c.lr;
            if (RULE == 1 || RULE == 2) {
                const T mm = m[e] * c.mu - gi * c.lr;
                m[e] = mm;
                wi = RULE == 2 ? wi + (mm * c.mu - gi * c.lr) : wi + mm;
            }
            if (RULE == 3 || RULE == 4) {
                const T mm = m[e] + (gi - m[e]) * c.ob1;
                const T vv = v[e] + (gi * gi - v[e]) * c.ob2;
                m[e] = mm;
                v[e] = vv;
                T vu = vv;
                if (RULE == 4) {
                    vu = vh[e] < vv ? vv : vh[e];
                    vh[e] = vu;
                }
                wi = wi - (mm * c.alpha) / (std::sqrt(vu) + c.eps);
            }
            w[e] = wi;
            const T d = std::fabs(wi - old);
            I bits;
            std::memcpy(&bits, &d, sizeof(T));
            most = bits > most ? bits : most;
        }
        T delta;
        std::memcpy(&delta, &most, sizeof(T));
        return std::isfinite(delta) ? double(delta) : double(NAN);
    }

    template <int RULE, bool WD, int CLIP>
    static double run_body(T* w, const T* g, T* m, T* v, T* vh, std::size_t e0, std::size_t e1, const Coefs& c) {
#ifdef FG_AVX2_DISPATCH
        if (e1 - e0 >= kDispatchMin && cpu_has_avx2()) return body_avx2<RULE, WD, CLIP>(w, g, m, v, vh, e0, e1, c);
#endif
        return body<RULE, WD, CLIP>(w, g, m, v, vh, e0, e1, c);
    }
#ifdef FG_AVX2_DISPATCH
    template <int RULE, bool WD, int CLIP>
    [[gnu::target("avx2")]] static double body_avx2(T* w, const T* g, T* m, T* v, T* vh, std::size_t e0, std::size_t e1,
                                                    const Coefs& c) {
        return body<RULE, WD, CLIP>(w, g, m, v, vh, e0, e1, c);
    }
#endif

    template <int RULE, bool WD>
    static double by_clip(int clip, T* w, const T* g, T* m, T* v, T* vh, std::size_t e0, std::size_t e1,
                          const Coefs& c) {
        switch (clip) {
            case 1: return run_body<RULE, WD, 1>(w, g, m, v, vh, e0, e1, c);
            case 2: return run_body<RULE, WD, 2>(w, g, m, v, vh, e0, e1, c);
            case 3: return run_body<RULE, WD, 3>(w, g, m, v, vh, e0, e1, c);
            default: return run_body<RULE, WD, 0>(w, g, m, v, vh, e0, e1, c);
        }
    }
    template <int RULE>
    static double by_wd(bool wd, int clip, T* w, const T* g, T* m, T* v, T* vh, std::size_t e0, std::size_t e1,
                        const Coefs& c) {
        return wd ? by_clip<RULE, true>(clip, w, g, m, v, vh, e0, e1, c)
                  : by_clip<RULE, false>(clip, w, g, m, v, vh, e0, e1, c);
    }
    static double dispatch(int rule, bool wd, int clip, T* w, const T* g, T* m, T* v, T* vh, std::size_t e0,
                           std::size_t e1, const Coefs& c) {
        if (e0 >= e1) return 0.0;
        switch (rule) {
            case 1: return by_wd<1>(wd, clip, w, g, m, v, vh, e0, e1, c);
            case 2: return by_wd<2>(wd, clip, w, g, m, v, vh, e0, e1, c);
            case 3: return by_wd<3>(wd, clip, w, g, m, v, vh, e0, e1, c);
            case 4: return by_wd<4>(wd, clip, w, g, m, v, vh, e0, e1, c);
            default: return by_wd<0>(wd, clip, w, g, m, v, vh, e0, e1, c);
        }
    }

    const OptConfig& cfg_;
    OptState<T>& st_;
    std::vector<ParamRef<T>> refs_;
    std::vector<double> sums_;
    T lr_ = T(0), alpha_ = T(0);
    std::vector<T> num_, den_;
};

// The sum of squares of a gradient block, in double, in kernels.hpp's lane order.
template <class T>
double grad_sum_squares(const T* g, std::size_t e0, std::size_t e1) {
    constexpr std::size_t kLanes = 8;
    double s[kLanes] = {};
    std::size_t e = e0;
    for (; e + kLanes <= e1; e += kLanes)
        for (std::size_t j = 0; j < kLanes; ++j) s[j] += double(g[e + j]) * double(g[e + j]);
    for (std::size_t j = 0; e < e1; ++j, ++e) s[j] += double(g[e]) * double(g[e]);
    double total = 0.0;
    for (double v : s) total += v;
    return total;
}

// The update after a serial step's gradients: every parameter whole, on this thread.
template <class T>
StepResult serial_update(const std::vector<DenseView<T>>& layers, Updater<T>& up, double loss) {
    auto& refs = up.refs(layers);
    auto& sq = up.sums(refs.size());
    UpdateSums u;
    for (std::size_t p = 0; p < refs.size(); ++p) {
        add_l2(up.config(), refs[p], 0, refs[p].count);
        sq[p] = grad_sum_squares(refs[p].g, 0, refs[p].count);
        u.sq += sq[p];
    }
    up.begin(sq);
    for (std::size_t p = 0; p < refs.size(); ++p) up.apply(p, refs[p].w, refs[p].g, 0, refs[p].count, u);
    up.end();
    StepResult r = u.result(layers, loss);
    r.lr = double(up.lr());
    return r;
}

}  // namespace fg
