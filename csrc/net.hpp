// One training step of a stack of Dense layers under MSE and SGD, over caller-owned buffers.
// Both training loops run exactly this step (the Python loop one call per step, the native loop
// many in a row), so their trajectories agree bit for bit.  No Python, no allocation in step().
//
//   gather batch -> forward (layer by layer) -> L = mse(P, T) -> dP -> backward (last layer first)
//   -> global grad norm and finiteness -> w -= lr * g for every parameter -> max |Δw|, finiteness
#pragma once

#include <cmath>
#include <cstddef>
#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels.hpp"
#include "sampler.hpp"
#include "team.hpp"

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
    // the team step's next batch, gathered during the step before (the native loop draws one
    // batch ahead): its rows, the indices they are of, and whether they are valid
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

// The loss and gradients of one Dense layer with one output, row by row: the arithmetic that
// every single-output path shares (value_and_grad, the Python loop's step and the native loop),
// so they give the same bits, which are those of dense_forward + mse_forward_backward +
// dense_backward.  Rows are idx[0..rows) (or 0..rows without idx); in is IN, or in_rt when IN
// is 0.  b: the bias, or null.  Writes dk (in values); returns the sum of squared errors (in
// double) and the bias gradient in gb.  Always inlined: the native loop passes compile-time
// flags and registers, which the inlining folds.
template <class T, std::size_t IN>
[[gnu::always_inline]] inline double dense1_out1_rows(const T* k, const T* b, bool relu, T scale, const T* FG_R x,
                                                      std::size_t in_rt, const T* FG_R y, const std::int64_t* idx,
                                                      std::size_t rows, T* dk, T& gb) {
    const std::size_t in = IN ? IN : in_rt;
    double s = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        const std::size_t row = idx ? std::size_t(idx[r]) : r;
        const T* FG_R xr = x + row * in;
        const T yr = y[row];
        // without a bias the sum starts at the first product (no 0 + ..., as dense_forward)
        T z = b ? *b + xr[0] * k[0] : xr[0] * k[0];
        for (std::size_t i = 1; i < in; ++i) z += xr[i] * k[i];
        const T p = relu && z < T(0) ? T(0) : z;
        const double d = double(p) - double(yr);
        s = r == 0 ? d * d : s + d * d;  // 0.0 + d*d is d*d (a square is never -0)
        T g = (T(2) * (p - yr)) * scale;  // scale 1 (one row) folds away when inlined
        if (relu) g = g * relu_gate(p);  // as relu_mask_db: a NaN g stays NaN
        if (r == 0) {
            for (std::size_t i = 0; i < in; ++i) dk[i] = xr[i] * g;
            gb = g;
        } else {
            for (std::size_t i = 0; i < in; ++i) dk[i] += xr[i] * g;
            gb += g;
        }
    }
    return s;
}

// A single small Dense layer, fused row by row: the same operations in the same order as
// dense_forward + mse_forward_backward + dense_backward (so the same bits), without the passes.
template <class T>
double dense1_value_and_grad(const DenseView<T>& L, T* FG_R z, const T* FG_R x, const T* FG_R y,
                             std::size_t rows) {
    const std::size_t in = L.in, out = L.out;
    const T scale = T(1) / T(rows * out);
    const T* FG_R k = L.k;
    const T* FG_R b = L.b;
    T* FG_R dk = L.dk;
    T* FG_R db = L.db;
    const bool relu = L.act == Activation::relu;
    if (out == 1) {  // one output (W1-W4 of the benchmarks): scalar code, no short vector loops
        T db0 = T(0);
        const double s = dense1_out1_rows<T, 0>(k, b, relu, scale, x, in, y, nullptr, rows, dk, db0);
        if (db) db[0] = db0;
        return double(T(s / double(rows)));
    }
    double s = 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        const T* FG_R xr = x + r * in;
        const T* FG_R yr = y + r * out;
        for (std::size_t o = 0; o < out; ++o) z[o] = b ? b[o] + xr[0] * k[o] : xr[0] * k[o];
        for (std::size_t i = 1; i < in; ++i)
            for (std::size_t o = 0; o < out; ++o) z[o] += xr[i] * k[i * out + o];
        for (std::size_t o = 0; o < out; ++o) {
            T p = z[o];
            if (relu) p = p < T(0) ? T(0) : p;
            const double d = double(p) - double(yr[o]);
            s += d * d;
            T g = (T(2) * (p - yr[o])) * scale;
            if (relu) g = g * relu_gate(p);  // as relu_mask_db: a NaN g stays NaN
            z[o] = g;
        }
        if (r == 0) {
            for (std::size_t i = 0; i < in; ++i)
                for (std::size_t o = 0; o < out; ++o) dk[i * out + o] = xr[i] * z[o];
            if (db)
                for (std::size_t o = 0; o < out; ++o) db[o] = z[o];
        } else {
            for (std::size_t i = 0; i < in; ++i)
                for (std::size_t o = 0; o < out; ++o) dk[i * out + o] += xr[i] * z[o];
            if (db)
                for (std::size_t o = 0; o < out; ++o) db[o] += z[o];
        }
    }
    return double(T(s / double(rows * out)));
}

// Loss and gradients (into each layer's dk/db) at the current weights, for `rows` rows of x, y.
template <class T>
double net_value_and_grad(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x,
                          const T* y, std::size_t rows) {
    if (layers.size() == 1 && !use_blas(rows, layers[0].in, layers[0].out))
        return dense1_value_and_grad(layers[0], s.acts[0].data(), x, y, rows);
    const T* p = net_forward(s, layers, x, rows);
    const std::size_t last = layers.size() - 1;
    const std::size_t count = rows * layers[last].out;
    const T loss = mse_forward_backward(s.grad_in[last].data(), p, y, count);
    for (std::size_t l = layers.size(); l-- > 0;) {
        const auto& L = layers[l];
        T* dx = l > 0 ? s.grad_in[l - 1].data() : nullptr;
        const T* xin = l > 0 ? s.acts[l - 1].data() : x;
        T* dy = s.grad_in[l].data();
        dense_backward(dx, L.dk, L.db, dy, dy, xin, L.k, s.acts[l].data(), rows, L.in, L.out, L.act);
    }
    return double(loss);
}

// The whole step for one Dense layer with one output and few inputs (the walkthrough's models):
// scalar code reading the batch rows in place.  The same operations in the same order as the
// general path (dense_forward, mse_forward_backward, dense_backward, sgd_update), so the same bits.
// IN > 0 fixes the input width at compile time (the loops over it unroll); 0 reads it from L.
template <class T, std::size_t IN>
StepResult dense1_out1_step(const DenseView<T>& L, const T* FG_R x, const T* FG_R y, const std::int64_t* idx,
                            std::size_t rows, T lr) {
    const std::size_t in = IN ? IN : L.in;
    T* FG_R k = L.k;
    T* FG_R dk = L.dk;
    const bool relu = L.act == Activation::relu;
    T db0 = T(0);
    const double s = dense1_out1_rows<T, IN>(k, L.b, relu, T(1) / T(rows), x, in, y, idx, rows, dk, db0);
    StepResult r{};
    r.loss = double(T(s / double(rows)));
    r.bad_grad = -1;
    r.bad_weight = -1;
    // the update as sgd_update does it (the same bits): changes taken in T, the sum of squares
    // in double, element e in lane e (IN <= 8 here, or the lanes' order when IN is runtime)
    double sq = 0.0;
    bool finite = true;
    double delta = sgd_update(k, dk, lr, in, &sq, &finite);
    if (L.b) {
        L.db[0] = db0;
        const double db = sgd_update(L.b, L.db, lr, 1, &sq, &finite);
        delta = db > delta || db != db ? db : delta;
    }
    r.grad_norm = std::sqrt(sq);
    if (!std::isfinite(sq) || !finite) {
        if (!all_finite(dk, in)) r.bad_grad = 0;
        else if (L.b && !std::isfinite(db0)) r.bad_grad = 1;
        if (!all_finite(k, in)) r.bad_weight = 0;
        else if (L.b && !std::isfinite(L.b[0])) r.bad_weight = 1;
    }
    r.weight_delta = finite ? delta : double(NAN);
    return r;
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

// ---------------------------------------------------------------------------------------------
// The team steps (team.hpp): net_step cut into team_parts() parts.  team_step (phases, each part
// a block of rows or columns) computes every value by the serial kernels' arithmetic on its
// block; only the products' BLAS calls (one thread each, on a block) and the gradient norm's sum
// of squares (a sum per part, the parts added in order) may round otherwise.  team_step_rows
// (each part a block of the batch) also sums the loss and the gradients over the rows block by
// block.  The block kernels below repeat dense_forward's and dense_backward's loops on a block,
// so that those whole-matrix kernels stay the code the benchmarks measured (routing them through
// the blocks was tried; W5's alternated timings could not tell the two apart from the noise).
// ---------------------------------------------------------------------------------------------
inline std::size_t part_begin(std::size_t n, std::size_t p, std::size_t parts) { return n * p / parts; }

// Z[r0:r1, c0:c1] = act(A[r0:r1, :] K[:, c0:c1] + b[c0:c1]), as dense_forward computes those elements.
template <class T>
void forward_block(T* FG_R z, const T* FG_R a, const T* FG_R k, const T* FG_R b, std::size_t in, std::size_t out,
                   Activation act, bool blas, std::size_t r0, std::size_t r1, std::size_t c0, std::size_t c1) {
    if (r0 >= r1 || c0 >= c1) return;
    if (blas) gemm(false, false, r1 - r0, c1 - c0, in, a + r0 * in, in, k + c0, out, z + r0 * out + c0, out);
    for (std::size_t r = r0; r < r1; ++r) {
        T* FG_R yr = z + r * out;
        if (!blas) {
            const T* FG_R xr = a + r * in;
            std::size_t i = 0;
            if (b) {
                for (std::size_t o = c0; o < c1; ++o) yr[o] = b[o];
            } else if (in > 0) {
                for (std::size_t o = c0; o < c1; ++o) yr[o] = xr[0] * k[o];
                i = 1;
            } else {
                for (std::size_t o = c0; o < c1; ++o) yr[o] = T(0);
            }
            for (; i < in; ++i) {
                const T xv = xr[i];
                const T* FG_R ki = k + i * out;
                for (std::size_t o = c0; o < c1; ++o) yr[o] += xv * ki[o];
            }
        } else if (b) {
            for (std::size_t o = c0; o < c1; ++o) yr[o] += b[o];
        }
        if (act == Activation::relu)
            for (std::size_t o = c0; o < c1; ++o) yr[o] = yr[o] < T(0) ? T(0) : yr[o];  // NaN stays NaN
    }
}

// Columns [c0, c1) of dZ = dY * act'(Y), in place (dz holds dY), and db[c0:c1] = their sums over the
// n rows (row 0 first), as relu_mask_db and dense_backward compute them.  db may be null.
template <class T>
void mask_db_block(T* FG_R dz, const T* FG_R y, T* FG_R db, std::size_t n, std::size_t out, Activation act,
                   std::size_t c0, std::size_t c1) {
    if (c0 >= c1) return;
    const bool relu = act == Activation::relu;
    for (std::size_t r = 0; r < n; ++r) {
        T* FG_R zr = dz + r * out;
        const T* FG_R yr = y + r * out;
        if (relu)
            for (std::size_t o = c0; o < c1; ++o) zr[o] = zr[o] * relu_gate(yr[o]);
        if (!db) continue;
        if (r == 0)
            for (std::size_t o = c0; o < c1; ++o) db[o] = zr[o];
        else
            for (std::size_t o = c0; o < c1; ++o) db[o] += zr[o];
    }
}

// Columns [i0, i1) of dX = dZ K^T (n rows), as dense_backward computes them.
template <class T>
void dx_block(T* FG_R dx, const T* FG_R g, const T* FG_R k, std::size_t n, std::size_t in, std::size_t out, bool blas,
              std::size_t i0, std::size_t i1) {
    if (i0 >= i1 || n == 0) return;
    if (blas) {
        gemm(false, true, n, i1 - i0, out, g, out, k + i0 * out, out, dx + i0, in);
        return;
    }
    for (std::size_t r = 0; r < n; ++r) {
        const T* FG_R gr = g + r * out;
        T* FG_R dxr = dx + r * in;
        for (std::size_t i = i0; i < i1; ++i) {
            const T* FG_R ki = k + i * out;
            T s = out ? gr[0] * ki[0] : T(0);
            for (std::size_t o = 1; o < out; ++o) s += gr[o] * ki[o];
            dxr[i] = s;
        }
    }
}

// Rows [i0, i1) of dK = X^T dZ (n rows), as dense_backward computes them.
template <class T>
void dk_block(T* FG_R dk, const T* FG_R x, const T* FG_R g, std::size_t n, std::size_t in, std::size_t out, bool blas,
              std::size_t i0, std::size_t i1) {
    if (i0 >= i1 || out == 0) return;
    if (blas) {
        gemm(true, false, i1 - i0, out, n, x + i0, in, g, out, dk + i0 * out, out);
        return;
    }
    for (std::size_t i = i0; i < i1; ++i) {
        const T xv = n ? x[i] : T(0);
        T* FG_R dki = dk + i * out;
        for (std::size_t o = 0; o < out; ++o) dki[o] = n ? xv * g[o] : T(0);
    }
    for (std::size_t r = 1; r < n; ++r) {
        const T* FG_R xr = x + r * in;
        const T* FG_R gr = g + r * out;
        for (std::size_t i = i0; i < i1; ++i) {
            const T xv = xr[i];
            T* FG_R dki = dk + i * out;
            for (std::size_t o = 0; o < out; ++o) dki[o] += xv * gr[o];
        }
    }
}

// What one part's updates found: its sum of squared gradients, largest change, finiteness.
struct alignas(64) PartUpdate {
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
};

// Whether net_step runs this step on the team: parts to share, a layer large enough to pay for
// the threads, and a BLAS that can be held to one thread.
template <class T>
bool team_applies(const std::vector<DenseView<T>>& layers, std::size_t rows) {
    if (team_parts() < 2 || layers.empty()) return false;
    std::size_t most = 0;
    for (const auto& L : layers) most = std::max(most, rows * L.in * L.out);
    return most >= team_min_work() && blas_threads_controllable();
}

// A team step's result: the parts' findings combined in part order (the gradient norm's sum of
// squares, the largest change, finiteness), the non-finite parameters named if there are any.
template <class T>
StepResult team_result(const std::vector<DenseView<T>>& layers, double loss, const PartUpdate* pu, std::size_t parts) {
    StepResult r{};
    r.loss = loss;
    r.bad_grad = -1;
    r.bad_weight = -1;
    double sq = 0.0, delta = 0.0;
    bool finite = true, nan_delta = false;
    for (std::size_t p = 0; p < parts; ++p) {
        sq += pu[p].sq;
        finite = finite && pu[p].finite;
        nan_delta |= pu[p].nan_delta;
        delta = pu[p].delta > delta ? pu[p].delta : delta;
    }
    r.grad_norm = std::sqrt(sq);
    if (!std::isfinite(sq) || !finite) name_bad(layers, r);
    r.weight_delta = nan_delta ? double(NAN) : delta;
    return r;
}

// net_step on the team.  Phases: gather; forward, one per layer (blocks of rows when the batch
// has more rows than the layer outputs, else of columns); the loss (part 0); the last layer's
// mask and bias gradient (columns); then one per layer, last first: dX's columns with the
// previous layer's mask and bias gradient on them, dK's rows, and the update of those rows of K
// and of the bias entries just summed.  A part updates only what no other part still reads.
template <class T>
StepResult team_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                     const std::int64_t* idx, std::size_t rows, T lr, const std::int64_t* next_idx = nullptr) {
    const std::size_t parts = std::min(team_parts(), kMaxParts);
    const std::size_t nl = layers.size();
    const std::size_t in0 = layers.front().in, outl = layers.back().out;
    // this batch's rows, if the step before gathered them; and the next batch's, to gather in
    // the last phase by whichever thread is done first (it fills the wait for the slower one)
    const bool pre = idx && s.next_valid && s.next_idx.size() == rows &&
                     std::memcmp(s.next_idx.data(), idx, rows * sizeof(std::int64_t)) == 0;
    s.next_valid = false;
    if (pre) {
        std::swap(s.xb, s.xb_next);
        std::swap(s.yb, s.yb_next);
    }
    const bool ahead = idx && next_idx;
    if (ahead) {
        if (s.xb_next.size() != rows * in0) s.xb_next.assign(rows * in0, T(0));  // (allocates once)
        if (s.yb_next.size() != rows * outl) s.yb_next.assign(rows * outl, T(0));
        s.next_idx.assign(next_idx, next_idx + rows);
    }
    std::atomic<std::size_t> next_chunk{0};
    constexpr std::size_t kAheadRows = 8;  // rows per chunk of the next batch's gather
    const T* xb = idx ? s.xb.data() : x;
    const T* yb = idx ? s.yb.data() : y;
    PartUpdate pu[kMaxParts];
    T loss = T(0);
    BlasOneThread one_thread;
    auto phase = [&](std::size_t ph, std::size_t p) {
        auto lo = [&](std::size_t n) { return part_begin(n, p, parts); };
        auto hi = [&](std::size_t n) { return part_begin(n, p + 1, parts); };
        if (ph == 0) {  // the batch's rows
            if (idx && !pre) {
                gather_rows(s.xb.data() + lo(rows) * in0, x, idx + lo(rows), hi(rows) - lo(rows), in0);
                gather_rows(s.yb.data() + lo(rows) * outl, y, idx + lo(rows), hi(rows) - lo(rows), outl);
            }
            return;
        }
        if (ph <= nl) {  // forward, layer ph - 1
            const std::size_t l = ph - 1;
            const auto& L = layers[l];
            const T* a = l ? s.acts[l - 1].data() : xb;
            const bool blas = use_blas(rows, L.in, L.out);
            if (rows > L.out)
                forward_block(s.acts[l].data(), a, L.k, L.b, L.in, L.out, L.act, blas, lo(rows), hi(rows), 0, L.out);
            else
                forward_block(s.acts[l].data(), a, L.k, L.b, L.in, L.out, L.act, blas, 0, rows, lo(L.out), hi(L.out));
            return;
        }
        if (ph == nl + 1) {  // the loss and dL/dP, on part 0
            if (p == 0) loss = mse_forward_backward(s.grad_in[nl - 1].data(), s.acts[nl - 1].data(), yb, rows * outl);
            return;
        }
        if (ph == nl + 2) {  // the last layer's mask and bias gradient, and its bias update
            const auto& L = layers[nl - 1];
            mask_db_block(s.grad_in[nl - 1].data(), s.acts[nl - 1].data(), L.db, rows, L.out, L.act, lo(L.out),
                          hi(L.out));
            if (L.b) pu[p].update(L.b + lo(L.out), L.db + lo(L.out), lr, hi(L.out) - lo(L.out));
            return;
        }
        const std::size_t l = nl - 1 - (ph - nl - 3);  // backward, layer l (last first)
        const auto& L = layers[l];
        const bool blas = use_blas(rows, L.in, L.out);
        const T* g = s.grad_in[l].data();
        const std::size_t i0 = lo(L.in), i1 = hi(L.in);
        if (l > 0) {  // dX's columns [i0, i1): the previous layer's outputs, masked, summed, bias updated
            const auto& P = layers[l - 1];
            T* dx = s.grad_in[l - 1].data();
            dx_block(dx, g, L.k, rows, L.in, L.out, blas, i0, i1);
            mask_db_block(dx, s.acts[l - 1].data(), P.db, rows, P.out, P.act, i0, i1);
            if (P.b) pu[p].update(P.b + i0, P.db + i0, lr, i1 - i0);
        }
        const T* a = l ? s.acts[l - 1].data() : xb;
        dk_block(L.dk, a, g, rows, L.in, L.out, blas, i0, i1);
        pu[p].update(L.k + i0 * L.out, L.dk + i0 * L.out, lr, (i1 - i0) * L.out);
        if (ahead && l == 0) {
            const std::size_t nchunks = (rows + kAheadRows - 1) / kAheadRows;
            for (std::size_t c; (c = next_chunk.fetch_add(1, std::memory_order_relaxed)) < nchunks;) {
                const std::size_t r0 = c * kAheadRows, n = std::min(kAheadRows, rows - r0);
                gather_rows(s.xb_next.data() + r0 * in0, x, next_idx + r0, n, in0);
                gather_rows(s.yb_next.data() + r0 * outl, y, next_idx + r0, n, outl);
            }
        }
    };
    run_phases(2 * nl + 3, phase);
    s.next_valid = ahead;
    return team_result(layers, double(loss), pu, parts);
}

// net_step on the team for large batches (more than team_rows_split() rows): each part runs
// the whole forward and backward pass on its block of the batch's rows, with gradients of its
// own (sums over its rows); then the parts' gradients are added up in part order and applied,
// each part a block of every parameter.  Two phases, no wait between the layers; each product
// of a part is a large one (W7: 4,096 rows), and no part packs another's rows.
template <class T>
StepResult team_step_rows(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                          const std::int64_t* idx, std::size_t rows, T lr) {
    const std::size_t parts = std::min(team_parts(), kMaxParts);
    const std::size_t nl = layers.size();
    const std::size_t in0 = layers.front().in, outl = layers.back().out;
    std::size_t per_part = 0;  // the gradients' elements, every layer's dK then db
    for (const auto& L : layers) per_part += L.in * L.out + (L.b ? L.out : 0);
    if (s.partials.size() != parts * per_part) s.partials.assign(parts * per_part, T(0));  // (allocates once)
    s.next_valid = false;
    const std::size_t count = rows * outl;
    const T scale = T(1) / T(count);
    double part_sq[kMaxParts] = {};  // each part's sum of squared errors
    PartUpdate pu[kMaxParts];
    BlasOneThread one_thread;
    auto phase = [&](std::size_t ph, std::size_t p) {
        if (ph == 0) {  // forward and backward on rows [r0, r1)
            const std::size_t r0 = part_begin(rows, p, parts), r1 = part_begin(rows, p + 1, parts), n = r1 - r0;
            if (n == 0) return;
            const T* xb = x + r0 * in0;
            const T* yb = y + r0 * outl;
            if (idx) {
                gather_rows(s.xb.data() + r0 * in0, x, idx + r0, n, in0);
                gather_rows(s.yb.data() + r0 * outl, y, idx + r0, n, outl);
                xb = s.xb.data() + r0 * in0;
                yb = s.yb.data() + r0 * outl;
            }
            const T* a = xb;
            for (std::size_t l = 0; l < nl; ++l) {
                const auto& L = layers[l];
                dense_forward(s.acts[l].data() + r0 * L.out, a, L.k, L.b, n, L.in, L.out, L.act);
                a = s.acts[l].data() + r0 * L.out;
            }
            // as mse_forward_backward, over this block (the scale is the whole batch's)
            T* dp = s.grad_in[nl - 1].data() + r0 * outl;
            double sq = 0.0;
            for (std::size_t e = 0; e < n * outl; ++e) {
                const double d = double(a[e]) - double(yb[e]);
                sq += d * d;
                dp[e] = (T(2) * (a[e] - yb[e])) * scale;
            }
            part_sq[p] = sq;
            T* g = s.partials.data() + p * per_part;
            std::size_t off = per_part;
            for (std::size_t l = nl; l-- > 0;) {
                const auto& L = layers[l];
                off -= L.in * L.out + (L.b ? L.out : 0);
                T* dk = g + off;
                T* db = L.b ? dk + L.in * L.out : nullptr;
                T* dx = l > 0 ? s.grad_in[l - 1].data() + r0 * L.in : nullptr;
                const T* xin = l > 0 ? s.acts[l - 1].data() + r0 * L.in : xb;
                T* dy = s.grad_in[l].data() + r0 * L.out;
                dense_backward(dx, dk, db, dy, dy, xin, L.k, s.acts[l].data() + r0 * L.out, n, L.in, L.out, L.act);
            }
            return;
        }
        // the parts' gradients added in part order into each layer's dK and db, and applied: this
        // part's block of rows of every dK, and of every db.  add: dst[e0:e1] = the partials at `at`
        auto add = [&](T* dst, std::size_t at, std::size_t e0, std::size_t e1) {
            const T* g0 = s.partials.data() + at;
            for (std::size_t e = e0; e < e1; ++e) dst[e] = g0[e];
            for (std::size_t q = 1; q < parts; ++q) {
                const T* gq = s.partials.data() + q * per_part + at;
                for (std::size_t e = e0; e < e1; ++e) dst[e] += gq[e];
            }
        };
        std::size_t off = 0;
        for (const auto& L : layers) {
            const std::size_t e0 = part_begin(L.in, p, parts) * L.out, e1 = part_begin(L.in, p + 1, parts) * L.out;
            add(L.dk, off, e0, e1);
            pu[p].update(L.k + e0, L.dk + e0, lr, e1 - e0);
            off += L.in * L.out;
            if (L.b) {
                const std::size_t o0 = part_begin(L.out, p, parts), o1 = part_begin(L.out, p + 1, parts);
                add(L.db, off, o0, o1);
                pu[p].update(L.b + o0, L.db + o0, lr, o1 - o0);
                off += L.out;
            }
        }
    };
    run_phases(2, phase);
    double sq_err = 0.0;
    for (std::size_t p = 0; p < parts; ++p) sq_err += part_sq[p];
    return team_result(layers, double(T(sq_err / double(count))), pu, parts);
}

// One SGD step.  idx: `rows` sample indices into x/y (gathered), or null for the full batch
// (then rows is the number of samples).  Indices must already lie in range.  next_idx: the next
// step's batch, when the caller knows it (the native loop), which a team step gathers early.
template <class T>
StepResult net_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x,
                    const T* y, const std::int64_t* idx, std::size_t rows, T lr,
                    const std::int64_t* next_idx = nullptr) {
    if (layers.size() == 1 && layers[0].out == 1 && !use_blas(rows, layers[0].in, 1)) {
        switch (layers[0].in) {
            case 1: return dense1_out1_step<T, 1>(layers[0], x, y, idx, rows, lr);
            case 2: return dense1_out1_step<T, 2>(layers[0], x, y, idx, rows, lr);
            case 3: return dense1_out1_step<T, 3>(layers[0], x, y, idx, rows, lr);
            case 4: return dense1_out1_step<T, 4>(layers[0], x, y, idx, rows, lr);
            default: return dense1_out1_step<T, 0>(layers[0], x, y, idx, rows, lr);
        }
    }
    if (team_applies(layers, rows)) {
        if (rows > team_rows_split()) return team_step_rows(s, layers, x, y, idx, rows, lr);
        return team_step(s, layers, x, y, idx, rows, lr, next_idx);
    }
    s.next_valid = false;
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
    // one pass per parameter: the update, its gradient's sum of squares, the largest change and
    // the finiteness of the new weights.  A non-finite sum of squares (or new weight) sends us to
    // the exact scans that name the first bad parameter.
    double sq = 0.0, delta = 0.0;
    bool finite = true, nan_delta = false;
    for (const auto& L : layers) {
        const double dk = sgd_update(L.k, L.dk, lr, L.in * L.out, &sq, &finite);
        nan_delta |= dk != dk;
        delta = dk > delta ? dk : delta;
        if (L.b) {
            const double db = sgd_update(L.b, L.db, lr, L.out, &sq, &finite);
            nan_delta |= db != db;
            delta = db > delta ? db : delta;
        }
    }
    r.grad_norm = std::sqrt(sq);
    if (!std::isfinite(sq) || !finite) name_bad(layers, r);
    r.weight_delta = nan_delta ? double(NAN) : delta;
    return r;
}

// ---------------------------------------------------------------------------------------------
// The native loop: many steps in a row with the built-in stopping rules, in the same order and
// with the same arithmetic as the Python loop in training.py (rules compare doubles).
// ---------------------------------------------------------------------------------------------
enum class RuleKind : int { weight_delta = 0, loss_delta = 1, loss_below = 2, plateau = 3, max_steps = 4 };

struct Rule {
    RuleKind kind;
    double tol;
    long long n;  // patience (plateau) or the step count (max_steps)
    double best = INFINITY;
    long long wait = 0;
};

struct LoopState {
    long long step = 0;  // updates made so far, over every chunk
    bool has_prev = false;
    double prev_loss = 0.0;
};

// stop: -1 still running, -2 diverged, -3 interrupted, >= 0 the index of the rule that fired
struct ChunkResult {
    std::size_t steps = 0;
    int stop = -1;
    int bad_grad = -1;
    int bad_weight = -1;
    std::size_t recorded = 0;
};

inline bool rule_fires(Rule& r, const LoopState& st, double loss, double weight_delta) {
    switch (r.kind) {
        case RuleKind::weight_delta: return weight_delta <= r.tol;
        case RuleKind::loss_delta: return st.has_prev && std::fabs(loss - st.prev_loss) <= r.tol;
        case RuleKind::loss_below: return loss <= r.tol;
        case RuleKind::plateau:
            if (loss < r.best - r.tol) {
                r.best = loss;
                r.wait = 0;
                return false;
            }
            return ++r.wait >= r.n;
        case RuleKind::max_steps: return st.step >= r.n;
    }
    return false;
}

// Runs up to `nsteps` steps.  idx: (nsteps, rows) batch indices, or null for the full batch;
// with a sampler, each step first draws its batch into row i of idx (which records it).
// loss_out, gnorm_out: nsteps each.  With every > 0, the parameters after each step t with
// t % every == 0 are copied to row `recorded` of wrec[p] (capacity nsteps / every + 1 rows) and
// t to wsteps[recorded].  poll() is called every poll_every steps; true means stop (Ctrl-C).
// The loop itself, for a step function chosen once per run (so that it inlines).
template <class T, class Step, class Poll>
ChunkResult run_loop(Step&& step, const std::vector<DenseView<T>>& layers, std::int64_t* idx, Sampler* sampler,
                     std::size_t nsteps, std::size_t rows, std::vector<Rule>& rules, LoopState& st,
                     double* loss_out, double* gnorm_out, std::size_t every, T* const* wrec, long long* wsteps,
                     std::size_t poll_every, Poll& poll, bool ahead = false) {
    ChunkResult out;
    std::size_t until_poll = poll_every;
    for (std::size_t i = 0; i < nsteps; ++i) {
        std::int64_t* bi = idx ? idx + i * rows : nullptr;
        // ahead: each step draws the next one's batch too (within the chunk), for the step to
        // gather early; a run that stops has then drawn one batch more than it used, which
        // nothing reads (its sampler ends with it; the batches recorded are the steps')
        std::int64_t* next = nullptr;
        if (sampler) {
            if (!ahead || i == 0) sampler->draw(bi);
            if (ahead && i + 1 < nsteps) sampler->draw(next = bi + rows);
        }
        const StepResult r = step(bi, next);
        loss_out[i] = r.loss;
        gnorm_out[i] = r.grad_norm;
        ++st.step;
        out.steps = i + 1;
        if (every && st.step % static_cast<long long>(every) == 0) {
            int p = 0;
            for (const auto& L : layers) {
                const std::size_t nk = L.in * L.out;
                T* dst = wrec[p++] + out.recorded * nk;
                for (std::size_t e = 0; e < nk; ++e) dst[e] = L.k[e];
                if (L.b) {
                    T* db = wrec[p++] + out.recorded * L.out;
                    for (std::size_t e = 0; e < L.out; ++e) db[e] = L.b[e];
                }
            }
            wsteps[out.recorded++] = st.step;
        }
        if (!std::isfinite(r.loss) || r.bad_grad >= 0 || r.bad_weight >= 0) {
            out.stop = -2;
            out.bad_grad = r.bad_grad;
            out.bad_weight = r.bad_weight;
            return out;
        }
        for (std::size_t j = 0; j < rules.size(); ++j)
            if (rule_fires(rules[j], st, r.loss, r.weight_delta)) {
                out.stop = int(j);
                return out;
            }
        st.prev_loss = r.loss;
        st.has_prev = true;
        if (poll_every && --until_poll == 0) {
            until_poll = poll_every;
            if (poll()) {
                out.stop = -3;
                return out;
            }
        }
    }
    return out;
}

// The rules as a loop needs them: the MaxSteps limit (the smallest n; the first such rule in
// list order is the one that fires) and whether anything else must be tested step by step.
struct RulePlan {
    long long limit = LLONG_MAX;
    int limit_rule = -1;
    bool others = false;      // a rule other than MaxSteps: test every rule, in order, every step
    bool need_delta = false;  // a WeightDelta rule: compute the largest weight change
};

inline RulePlan plan_rules(const std::vector<Rule>& rules) {
    RulePlan p;
    for (std::size_t j = 0; j < rules.size(); ++j) {
        if (rules[j].kind == RuleKind::max_steps) {
            if (rules[j].n < p.limit) {
                p.limit = rules[j].n;
                p.limit_rule = int(j);
            }
        } else {
            p.others = true;
            p.need_delta |= rules[j].kind == RuleKind::weight_delta;
        }
    }
    return p;
}

// The native loop for one Dense layer with one output and IN <= 4 inputs (the walkthrough's
// models).  Each step does what dense1_out1_step does, in the same order, so the same bits as the
// Python loop and as value_and_grad + sgd_update; the largest weight change is computed only when
// a WeightDelta rule reads it.
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
template <class T, std::size_t IN, bool BIAS, bool RELU, Draw DRAW, std::size_t ROWS = 0, bool CHECK = true>
TinyEnd tiny_steps(TinyParams<T, IN>& tp, const T* FG_R x, const T* FG_R y, std::int64_t* idx, Sampler* sampler,
                   Xoshiro& gen_io, std::size_t rows, T lr, std::size_t begin, std::size_t end,
                   double* FG_R loss_out, double* FG_R gnorm_out) {
    T k[IN], dk[IN];
    for (std::size_t e = 0; e < IN; ++e) {
        k[e] = tp.k[e];
        dk[e] = tp.dk[e];
    }
    T b = tp.b, db = tp.db;
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
        // sgd_update's sum of squares: lane e holds element e (IN <= 8), the lanes summed in order
        double sq = double(dk[0]) * double(dk[0]);
        for (std::size_t e = 1; e < IN; ++e) sq += double(dk[e]) * double(dk[e]);
        if (BIAS) {
            db = gb;
            sq += double(db) * double(db);
        }
        T nk[IN];
        for (std::size_t e = 0; e < IN; ++e) nk[e] = k[e] - lr * dk[e];
        const T nb = BIAS ? b - lr * db : T(0);
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
    }
    tp.b = b;
    tp.db = db;
    gen_io = gen;
    return res;
}

template <class T, std::size_t IN, bool BIAS, bool RELU, class Poll>
ChunkResult dense1_out1_run(const DenseView<T>& L, const T* FG_R x, const T* FG_R y, std::int64_t* idx,
                            Sampler* sampler, std::size_t nsteps, std::size_t rows, T lr, std::vector<Rule>& rules,
                            LoopState& st, double* FG_R loss_out, double* FG_R gnorm_out, std::size_t every,
                            T* const* wrec, long long* wsteps, std::size_t poll_every, Poll& poll) {
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
    // steps [from, from + count) with the parameters in registers; CHECK as tiny_steps
    auto stretch_of = [&](auto check, std::size_t from, std::size_t count) {
        constexpr bool C = decltype(check)::value;
        switch (draw) {
            case Draw::none:  // full batch: two rows (W1 of the benchmarks) unrolled
                if (rows == 2)
                    return tiny_steps<T, IN, BIAS, RELU, Draw::none, 2, C>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                           from + count, loss_out, gnorm_out);
                return tiny_steps<T, IN, BIAS, RELU, Draw::none, 0, C>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                       from + count, loss_out, gnorm_out);
            case Draw::one:
                return tiny_steps<T, IN, BIAS, RELU, Draw::one, 0, C>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                      from + count, loss_out, gnorm_out);
            case Draw::floyd:
                return tiny_steps<T, IN, BIAS, RELU, Draw::floyd, 0, C>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                        from + count, loss_out, gnorm_out);
            default:
                return tiny_steps<T, IN, BIAS, RELU, Draw::other, 0, C>(tp, x, y, idx, sampler, gen, rows, lr, from,
                                                                        from + count, loss_out, gnorm_out);
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
        if (te.not_finite) {  // name the first non-finite gradient and weight, as net_step does
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

template <class T, class Poll>
ChunkResult net_run(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                    std::int64_t* idx, Sampler* sampler, std::size_t nsteps, std::size_t rows, T lr,
                    std::vector<Rule>& rules, LoopState& st, double* loss_out, double* gnorm_out,
                    std::size_t every, T* const* wrec, long long* wsteps, std::size_t poll_every,
                    Poll&& poll) {
    if (layers.size() == 1 && layers[0].out == 1 && !use_blas(rows, layers[0].in, 1)) {
        const DenseView<T>& L = layers[0];
        using P = std::remove_reference_t<Poll>;
        switch (L.in) {
#define FG_TINY(IN)                                                                                          \
    case IN:                                                                                                 \
        return dense1_out1_dispatch<T, IN, P>(L, x, y, idx, sampler, nsteps, rows, lr, rules, st, loss_out,     \
                                              gnorm_out, every, wrec, wsteps, poll_every, poll);
            FG_TINY(1)
            FG_TINY(2)
            FG_TINY(3)
            FG_TINY(4)
#undef FG_TINY
            default: break;
        }
    }
    auto step = [&](const std::int64_t* bi, const std::int64_t* next) {
        return net_step(s, layers, x, y, bi, rows, lr, next);
    };
    const bool ahead = sampler && idx && team_applies(layers, rows) && rows <= team_rows_split();
    const ChunkResult out = run_loop<T>(step, layers, idx, sampler, nsteps, rows, rules, st, loss_out, gnorm_out,
                                        every, wrec, wsteps, poll_every, poll, ahead);
    s.next_valid = false;  // a batch gathered ahead is used only by the run that drew it
    return out;
}

}  // namespace fg
