// One training step of a stack of Dense layers under MSE and SGD, over caller-owned buffers.
// Both training loops run exactly this step (the Python loop one call per step, the native loop
// many in a row), so their trajectories agree bit for bit.  No Python, no allocation in step().
//
//   gather batch -> forward (layer by layer) -> L = mse(P, T) -> dP -> backward (last layer first)
//   -> global grad norm and finiteness -> w -= lr * g for every parameter -> max |Δw|, finiteness
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels.hpp"

namespace fg {

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
};

// Scratch for a fixed number of batch rows.  acts[l] is (rows, out_l); grad_in[l] is dL/d(output of
// layer l), (rows, out_l), also reused as the ReLU mask buffer.
template <class T>
struct NetScratch {
    std::vector<std::vector<T>> acts, grad_in;
    std::vector<T> xb, yb;
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

template <class T>
inline int param_count(const std::vector<DenseView<T>>& layers) {
    int c = 0;
    for (const auto& L : layers) c += L.b ? 2 : 1;
    return c;
}

// Forward only, into s.acts; returns the prediction (last activation).  rows <= s.rows.
template <class T>
const T* net_forward(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x,
                     std::size_t rows) {
    const T* in = x;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& L = layers[l];
        dense_forward(s.acts[l].data(), in, L.k, L.b, rows, L.in, L.out, L.act);
        in = s.acts[l].data();
    }
    return in;
}

// Loss and gradients (into each layer's dk/db) at the current weights, for `rows` rows of x, y.
template <class T>
double net_value_and_grad(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x,
                          const T* y, std::size_t rows) {
    const T* p = net_forward(s, layers, x, rows);
    const std::size_t last = layers.size() - 1;
    const std::size_t count = rows * layers[last].out;
    const T loss = mse_forward(p, y, count);
    mse_backward(s.grad_in[last].data(), p, y, count);
    for (std::size_t l = layers.size(); l-- > 0;) {
        const auto& L = layers[l];
        T* dx = l > 0 ? s.grad_in[l - 1].data() : nullptr;
        const T* xin = l > 0 ? s.acts[l - 1].data() : x;
        T* dy = s.grad_in[l].data();
        dense_backward(dx, L.dk, L.db, dy, dy, xin, L.k, s.acts[l].data(), rows, L.in, L.out, L.act);
    }
    return double(loss);
}

// One SGD step.  idx: `rows` sample indices into x/y (gathered), or null for the full batch
// (then rows is the number of samples).  Indices must already lie in range.
template <class T>
StepResult net_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x,
                    const T* y, const std::int64_t* idx, std::size_t rows, T lr) {
    const T* xb = x;
    const T* yb = y;
    if (idx) {
        gather_rows(s.xb.data(), x, idx, rows, layers.front().in);
        gather_rows(s.yb.data(), y, idx, rows, layers.back().out);
        xb = s.xb.data();
        yb = s.yb.data();
    }
    StepResult r{};
    r.loss = net_value_and_grad(s, layers, xb, yb, rows);
    r.bad_grad = -1;
    r.bad_weight = -1;
    double sq = 0.0;
    int p = 0;
    for (const auto& L : layers) {
        const std::size_t nk = L.in * L.out;
        sq += sum_squares(L.dk, nk);
        if (r.bad_grad < 0 && !all_finite(L.dk, nk)) r.bad_grad = p;
        ++p;
        if (L.b) {
            sq += sum_squares(L.db, L.out);
            if (r.bad_grad < 0 && !all_finite(L.db, L.out)) r.bad_grad = p;
            ++p;
        }
    }
    r.grad_norm = std::sqrt(sq);
    double delta = 0.0;
    bool nan_delta = false;
    p = 0;
    for (const auto& L : layers) {
        const std::size_t nk = L.in * L.out;
        const double dk = sgd_update(L.k, L.dk, lr, nk);
        nan_delta |= dk != dk;
        delta = dk > delta ? dk : delta;
        if (r.bad_weight < 0 && !all_finite(L.k, nk)) r.bad_weight = p;
        ++p;
        if (L.b) {
            const double db = sgd_update(L.b, L.db, lr, L.out);
            nan_delta |= db != db;
            delta = db > delta ? db : delta;
            if (r.bad_weight < 0 && !all_finite(L.b, L.out)) r.bad_weight = p;
            ++p;
        }
    }
    r.weight_delta = nan_delta ? double(NAN) : delta;
    return r;
}

}  // namespace fg
