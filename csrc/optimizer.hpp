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

    // Elements [e0, e1) of parameter p: w and its gradient g; u takes the largest change and
    // whether every new weight is finite.
    void apply(std::size_t p, T* FG_R w, const T* FG_R g, std::size_t e0, std::size_t e1, UpdateSums& u) const {
        const bool wd = cfg_.weight_decay >= 0, cn = cfg_.clipnorm > 0, gcn = !cn && cfg_.global_clipnorm > 0;
        const bool cv = !cn && !gcn && cfg_.clipvalue > 0;
        const T wdv = T(cfg_.weight_decay), lr = lr_, num = num_[p], den = den_[p], c = T(cfg_.clipvalue);
        T most = T(0);
        bool finite = true;
        for (std::size_t e = e0; e < e1; ++e) {
            T gi = g[e];
            if (cn) gi = (gi * num) / den;
            else if (gcn) gi = gi * num;
            else if (cv) gi = std::min(std::max(gi, -c), c);
            const T old = w[e];
            T wi = old;
            if (wd) wi = wi - wi * wdv * lr;
            if (cfg_.kind == OptKind::sgd) {
                if (cfg_.momentum != 0.0) {
                    const T mu = T(cfg_.momentum);
                    T& m = st_.slot[0][p][e];
                    m = m * mu - gi * lr;
                    wi = cfg_.nesterov ? wi + (m * mu - gi * lr) : wi + m;
                } else {
                    wi = wi - gi * lr;
                }
            } else {
                T& m = st_.slot[0][p][e];
                T& v = st_.slot[1][p][e];
                m = m + (gi - m) * T(1.0 - cfg_.beta1);
                v = v + (gi * gi - v) * T(1.0 - cfg_.beta2);
                T vu = v;
                if (cfg_.amsgrad) {
                    T& vh = st_.slot[2][p][e];
                    vh = std::max(vh, v);
                    vu = vh;
                }
                wi = wi - (m * alpha_) / (std::sqrt(vu) + T(cfg_.epsilon));
            }
            w[e] = wi;
            const T d = std::fabs(wi - old);
            finite = finite && std::isfinite(wi);
            most = d > most ? d : most;  // (a NaN change leaves most; finite says it)
        }
        u.finite = u.finite && finite;
        u.nan_delta |= !finite;
        u.delta = double(most) > u.delta ? double(most) : u.delta;
    }

    void end() { ++st_.iterations; }

  private:
    const OptConfig& cfg_;
    OptState<T>& st_;
    T lr_ = T(0), alpha_ = T(0);
    std::vector<T> num_, den_;
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
    const auto refs = param_refs(layers);
    std::vector<double> sq(refs.size());
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
