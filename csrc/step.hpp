// One training step of a stack of Dense layers under MSE and SGD, over caller-owned buffers: the
// generic step, in the walkthrough's order.  Both training loops run it (the Python loop one call
// per step, the native loop many in a row), so their trajectories agree bit for bit.
//
//   gather the batch -> forward (layer by layer) -> L = mse(P, T), dP -> backward (last layer
//   first) -> w -= lr * g for every parameter, with the global gradient norm, max |Δw| and the
//   finiteness of the new weights found on the way
//
// The fast paths (fast_tiny.hpp, fast_team.hpp) compute the same values; loop.hpp picks one.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dense.hpp"
#include "kernels.hpp"

namespace fg {

// One layer's parameters and gradients (live buffers owned elsewhere).
template <class T>
struct DenseView {
    T* k;   // (in, out)
    T* b;   // (out) or null
    T* dk;  // (in, out)
    T* db;  // (out) or null
    std::size_t in, out;
    Activation act;
};

struct StepResult {
    double loss;
    double grad_norm;
    double weight_delta;  // max |θ_t − θ_{t−1}| over every parameter
    int bad_grad;         // index (get_weights order) of the first non-finite gradient, or -1
    int bad_weight;       // index of the first non-finite parameter after the update, or -1
    double lr = 0.0;      // the learning rate the update used (set by the optimizers' path)
};

// Scratch for a fixed number of batch rows.  acts[l] is (rows, out_l); grad_in[l] is dL/d(output of
// layer l), (rows, out_l), turned into dZ in place by the backward pass.
template <class T>
struct NetScratch {
    std::vector<std::vector<T>> acts, grad_in;
    std::vector<T> xb, yb;  // the gathered batch
    // the team step's next batch, gathered during the step before (fast_team.hpp)
    std::vector<T> xb_next, yb_next;
    std::vector<std::int64_t> next_idx;
    bool next_valid = false;
    std::vector<T> partials;  // the row-block team step's gradients, one set per part
    std::size_t rows = 0;

    void resize(const std::vector<DenseView<T>>& layers, std::size_t rows_, bool gather) {
        rows = rows_;
        acts.resize(layers.size());
        grad_in.resize(layers.size());
        for (std::size_t l = 0; l < layers.size(); ++l) {
            acts[l].assign(rows * layers[l].out, T(0));
            grad_in[l].assign(rows * layers[l].out, T(0));
        }
        if (gather && !layers.empty()) {
            xb.assign(rows * layers.front().in, T(0));
            yb.assign(rows * layers.back().out, T(0));
        }
    }
};

// Gather rows: out[r,:] = src[idx[r],:]   (idx already checked to lie in range; rows may repeat).
// Wide rows are copied kGatherStreams at a time, a cache line of each in turn: that many
// independent streams from memory at once (W6's batch gather, docs/performance.md).
constexpr std::size_t kGatherStreams = 4;
template <class T, class I>
void gather_rows(T* FG_R out, const T* FG_R src, const I* FG_R idx, std::size_t rows, std::size_t width) {
    constexpr std::size_t line = 64 / sizeof(T);  // elements in a cache line
    std::size_t r = 0;
    if (width >= 4 * line) {
        for (; r + kGatherStreams <= rows; r += kGatherStreams) {
            const T* s[kGatherStreams];
            T* d[kGatherStreams];
            for (std::size_t j = 0; j < kGatherStreams; ++j) {
                s[j] = src + static_cast<std::size_t>(idx[r + j]) * width;
                d[j] = out + (r + j) * width;
            }
            std::size_t c = 0;
            for (; c + line <= width; c += line)
                for (std::size_t j = 0; j < kGatherStreams; ++j) std::memcpy(d[j] + c, s[j] + c, line * sizeof(T));
            for (std::size_t j = 0; j < kGatherStreams; ++j) std::memcpy(d[j] + c, s[j] + c, (width - c) * sizeof(T));
        }
    }
    for (; r < rows; ++r) {
        const T* FG_R s = src + static_cast<std::size_t>(idx[r]) * width;
        T* FG_R d = out + r * width;
        for (std::size_t c = 0; c < width; ++c) d[c] = s[c];
    }
}

// The first parameter (get_weights order) whose gradient, and the first whose new value, is not
// finite, into r.bad_grad and r.bad_weight (after a step whose sums said one is).
template <class T>
void name_bad(const std::vector<DenseView<T>>& layers, StepResult& r) {
    int p = 0;
    for (const auto& L : layers) {
        for (int j = 0; j < (L.b ? 2 : 1); ++j, ++p) {
            const T* g = j ? L.db : L.dk;
            const T* w = j ? L.b : L.k;
            const std::size_t c = j ? L.out : L.in * L.out;
            if (r.bad_grad < 0 && !all_finite(g, c)) r.bad_grad = p;
            if (r.bad_weight < 0 && !all_finite(w, c)) r.bad_weight = p;
        }
    }
}

// What updates found: the sum of squared gradients, the largest change, finiteness.  The team
// step keeps one per part and combines them in part order (fast_team.hpp).
struct alignas(64) UpdateSums {
    double sq = 0.0;
    double delta = 0.0;
    bool finite = true;
    bool nan_delta = false;

    template <class T>
    void update(T* w, const T* g, T lr, std::size_t count) {
        if (count == 0) return;
        const double d = sgd_update(w, g, lr, count, &sq, &finite);
        nan_delta |= d != d;
        delta = d > delta ? d : delta;
    }

    // The step's result from these sums, the non-finite parameters named if there are any.
    template <class T>
    StepResult result(const std::vector<DenseView<T>>& layers, double loss) const {
        StepResult r{};
        r.loss = loss;
        r.bad_grad = -1;
        r.bad_weight = -1;
        r.grad_norm = std::sqrt(sq);
        if (!std::isfinite(sq) || !finite) name_bad(layers, r);
        r.weight_delta = nan_delta ? double(NAN) : delta;
        return r;
    }
};

// Forward over `rows` rows of x into s.acts; returns the prediction (the last activation).
template <class T>
const T* net_forward(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, std::size_t rows) {
    const T* in = x;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& L = layers[l];
        layer_forward(s.acts[l].data(), in, L.k, L.b, rows, L.in, L.out, L.act);
        in = s.acts[l].data();
    }
    return in;
}

// Loss and gradients (into each layer's dk/db) at the current weights, for `rows` rows of x, y.
template <class T>
double net_value_and_grad(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                          std::size_t rows) {
    const T* p = net_forward(s, layers, x, rows);
    const std::size_t last = layers.size() - 1;
    const T loss = mse_forward_backward(s.grad_in[last].data(), p, y, rows * layers[last].out);
    for (std::size_t l = layers.size(); l-- > 0;) {
        const auto& L = layers[l];
        T* dx = l > 0 ? s.grad_in[l - 1].data() : nullptr;
        const T* xin = l > 0 ? s.acts[l - 1].data() : x;
        layer_backward(dx, L.dk, L.db, s.grad_in[l].data(), xin, L.k, s.acts[l].data(), rows, L.in, L.out, L.act);
    }
    return double(loss);
}

// The batch's loss and gradients on one thread.  idx: `rows` sample indices into x/y (gathered),
// or null for the full batch (then rows is the number of samples).  Indices must lie in range.
template <class T>
double batch_value_and_grad(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                            const std::int64_t* idx, std::size_t rows) {
    s.next_valid = false;
    if (idx) {
        gather_rows(s.xb.data(), x, idx, rows, layers.front().in);
        gather_rows(s.yb.data(), y, idx, rows, layers.back().out);
        x = s.xb.data();
        y = s.yb.data();
    }
    return net_value_and_grad(s, layers, x, y, rows);
}

// The generic step on one thread: the gradients, then plain SGD's fused update.
template <class T>
StepResult serial_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                       const std::int64_t* idx, std::size_t rows, T lr) {
    const double loss = batch_value_and_grad(s, layers, x, y, idx, rows);
    UpdateSums u;
    for (const auto& L : layers) {
        u.update(L.k, L.dk, lr, L.in * L.out);
        if (L.b) u.update(L.b, L.db, lr, L.out);
    }
    return u.result(layers, loss);
}

}  // namespace fg
