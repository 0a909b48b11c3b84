// Fast path: the generic step (step.hpp) cut into parts for fastgrad's thread team (team.hpp).
//
// What it speeds up: large steps (a layer of at least team_min_work() multiply-adds: W6 and W7 of
// bench/compare.py).  Without it only the matrix products used both cores (OpenBLAS's threads);
// the gather, the bias, ReLU and mask passes and the update ran on one core while OpenBLAS's
// second thread spun.  The team shares all of it and runs OpenBLAS on one thread for each share.
// The figure: W6 1.29x -> 1.09x its roofline, W7 0.83x (`python bench/compare.py --workloads
// W6,W7`; docs/performance.md).
// Tied to the reference: csrc/tests/test_kernels.cpp team_case (the team's threads, the parts in
// turn and the serial step agree bit for bit, or within the rounding of row-block sums for the
// row cut); tests/test_team.py (both loops, Ctrl-C, OPENBLAS_NUM_THREADS=1).
//
// Every value is computed by kernels.hpp's functions on a block; only the products' BLAS calls
// (one thread each, on a block) and the gradient norm's sum of squares (a sum per part, the parts
// added in order) may round otherwise than the serial step.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "blas.hpp"
#include "dense.hpp"
#include "optimizer.hpp"
#include "step.hpp"
#include "team.hpp"

namespace fg {

inline std::size_t part_begin(std::size_t n, std::size_t p, std::size_t parts) { return n * p / parts; }

// How many parameters (kernels and biases) the layers have.
template <class T>
std::size_t q_count(const std::vector<DenseView<T>>& layers) {
    std::size_t q = 0;
    for (const auto& L : layers) q += L.b ? 2 : 1;
    return q;
}

// Whether a step goes to the team: parts to share, a layer large enough to pay for the threads,
// and a BLAS that can be held to one thread.
template <class T>
bool team_applies(const std::vector<DenseView<T>>& layers, std::size_t rows, const TeamConfig& team) {
    if (team.parts < 2 || layers.empty()) return false;
    std::size_t most = 0;
    for (const auto& L : layers) most = std::max(most, rows * L.in * L.out);
    return most >= team.min_work && blas_threads_controllable();
}

// The parts' findings combined in part order.
template <class T>
StepResult team_result(const std::vector<DenseView<T>>& layers, double loss, const UpdateSums* pu, std::size_t parts) {
    UpdateSums all;
    for (std::size_t p = 0; p < parts; ++p) {
        all.sq += pu[p].sq;
        all.finite = all.finite && pu[p].finite;
        all.nan_delta |= pu[p].nan_delta;
        all.delta = pu[p].delta > all.delta ? pu[p].delta : all.delta;
    }
    return all.result(layers, loss);
}

// The optimizers' update on the team (optimizer.hpp), after a step's gradients: each part's block
// of every parameter; the gradients' sums of squares per part, added in part order, then the
// clips and the rate (part 0), then the blocks updated.
template <class T>
StepResult team_update(const std::vector<DenseView<T>>& layers, double loss, Updater<T>& up, std::size_t parts) {
    const auto refs = param_refs(layers);
    const std::size_t np = refs.size();
    std::vector<double> part_sq(parts * np), sq(np);  // (allocated before the phases, which must not throw)
    up.begin(sq);                                     // sizes the updater's vectors; redone below
    UpdateSums pu[kMaxParts];
    auto phase = [&](std::size_t ph, std::size_t p) noexcept {
        if (ph == 0) {
            for (std::size_t q = 0; q < np; ++q) {
                const std::size_t e0 = part_begin(refs[q].count, p, parts), e1 = part_begin(refs[q].count, p + 1, parts);
                add_l2(up.config(), refs[q], e0, e1);
                part_sq[p * np + q] = grad_sum_squares(refs[q].g, e0, e1);
            }
        } else if (ph == 1) {
            if (p != 0) return;
            for (std::size_t q = 0; q < np; ++q) {
                double s = 0.0;
                for (std::size_t k = 0; k < parts; ++k) s += part_sq[k * np + q];
                sq[q] = s;
            }
            up.begin(sq);
        } else {
            for (std::size_t q = 0; q < np; ++q)
                up.apply(q, refs[q].w, refs[q].g, part_begin(refs[q].count, p, parts),
                         part_begin(refs[q].count, p + 1, parts), pu[p]);
        }
    };
    run_phases(parts, 3, phase);
    up.end();
    UpdateSums all;
    for (double v : sq) all.sq += v;
    for (std::size_t p = 0; p < parts; ++p) {
        all.finite = all.finite && pu[p].finite;
        all.nan_delta |= pu[p].nan_delta;
        all.delta = pu[p].delta > all.delta ? pu[p].delta : all.delta;
    }
    StepResult r = all.result(layers, loss);
    r.lr = double(up.lr());
    return r;
}

// Elements [e0, e1) of parameter q, in the phase that made their gradient: plain SGD's fused
// update, or an optimizer's that needs no gradient norms (u: the part's sums).
template <class T>
void block_update(Updater<T>* up, UpdateSums& u, std::size_t q, T* w, T* g, std::size_t e0, std::size_t e1, T lr,
                  bool kernel) noexcept {
    if (!up) return u.update(w + e0, g + e0, lr, e1 - e0);
    if (kernel) add_l2(up->config(), ParamRef<T>{w, g, 0, true}, e0, e1);
    u.sq += grad_sum_squares(g, e0, e1);
    up->apply(q, w, g, e0, e1, u);
}

// The step in phases, for batches of up to team_rows_split() rows.  Phases: gather; forward, one
// per layer (blocks of rows when the batch has more rows than the layer outputs, else of
// columns); the loss (part 0); the last layer's mask and bias gradient (columns); then one per
// layer, last first: dX's columns with the previous layer's mask and bias gradient on them, dK's
// rows, and the update of those rows of K and of the bias entries just summed.  A part updates
// only what no other part still reads.  next_idx: the next step's batch (the native loop draws
// one ahead), gathered in the last phase by whichever thread is done first.
template <class T>
StepResult team_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                     const std::int64_t* idx, std::size_t rows, T lr, std::size_t parts,
                     const std::int64_t* next_idx = nullptr, Updater<T>* up = nullptr) {
    parts = std::min(parts, kMaxParts);
    const std::size_t nl = layers.size();
    const std::size_t in0 = layers.front().in, outl = layers.back().out;
    // this batch's rows, if the step before gathered them
    const bool pre = idx && s.next_valid && s.next_idx.size() == rows &&
                     std::memcmp(s.next_idx.data(), idx, rows * sizeof(std::int64_t)) == 0;
    s.next_valid = false;
    if (pre) {
        std::swap(s.xb, s.xb_next);
        std::swap(s.yb, s.yb_next);
    }
    const bool ahead = idx && next_idx;
    if (ahead) {  // (allocates on the first step only; before the phases, which must not throw)
        if (s.xb_next.size() != rows * in0) s.xb_next.assign(rows * in0, T(0));
        if (s.yb_next.size() != rows * outl) s.yb_next.assign(rows * outl, T(0));
        s.next_idx.assign(next_idx, next_idx + rows);
    }
    std::atomic<std::size_t> next_chunk{0};
    constexpr std::size_t kAheadRows = 8;  // rows per chunk of the next batch's gather
    const T* xb = idx ? s.xb.data() : x;
    const T* yb = idx ? s.yb.data() : y;
    UpdateSums pu[kMaxParts];
    T loss = T(0);
    // an optimizer that needs no gradient norms updates each block in the phase that made it
    const bool fused = up && up->fusable();
    std::vector<std::size_t> qk(nl), qb(nl);  // each layer's kernel and bias: parameter indices
    for (std::size_t l = 0, q = 0; l < nl; ++l) {
        qk[l] = q++;
        qb[l] = layers[l].b ? q++ : 0;
    }
    if (fused) up->begin(up->sums(q_count(layers)));
    auto upd = [&](std::size_t q, T* w, T* g, std::size_t e0, std::size_t e1, std::size_t p, bool kernel) noexcept {
        block_update(up, pu[p], q, w, g, e0, e1, lr, kernel);
    };
    BlasOneThread one_thread;
    auto phase = [&](std::size_t ph, std::size_t p) noexcept {
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
            dense_backward_dz(s.grad_in[nl - 1].data(), s.acts[nl - 1].data(), L.db, rows, L.out, L.act, lo(L.out),
                              hi(L.out));
            if (L.b && (!up || fused)) upd(qb[nl - 1], L.b, L.db, lo(L.out), hi(L.out), p, false);
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
            dense_backward_dz(dx, s.acts[l - 1].data(), P.db, rows, P.out, P.act, i0, i1);
            if (P.b && (!up || fused)) upd(qb[l - 1], P.b, P.db, i0, i1, p, false);
        }
        const T* a = l ? s.acts[l - 1].data() : xb;
        dk_block(L.dk, a, g, rows, L.in, L.out, blas, i0, i1);
        if (!up || fused) upd(qk[l], L.k, L.dk, i0 * L.out, i1 * L.out, p, true);
        if (ahead && l == 0) {
            const std::size_t nchunks = (rows + kAheadRows - 1) / kAheadRows;
            for (std::size_t c; (c = next_chunk.fetch_add(1, std::memory_order_relaxed)) < nchunks;) {
                const std::size_t r0 = c * kAheadRows, n = std::min(kAheadRows, rows - r0);
                gather_rows(s.xb_next.data() + r0 * in0, x, next_idx + r0, n, in0);
                gather_rows(s.yb_next.data() + r0 * outl, y, next_idx + r0, n, outl);
            }
        }
    };
    run_phases(parts, 2 * nl + 3, phase);
    s.next_valid = ahead;
    if (up && !fused) return team_update(layers, double(loss), *up, parts);
    StepResult r = team_result(layers, double(loss), pu, parts);
    if (fused) {
        up->end();
        r.lr = double(up->lr());
    }
    return r;
}

// The step cut by rows, for batches of more than team_rows_split() rows: each part runs the whole
// forward and backward pass on its block of the batch, with gradients of its own (sums over its
// rows); then the parts' gradients are added up in part order and applied, each part a block of
// every parameter.  Two phases; each product of a part is a large one (W7: 4,096 rows).
template <class T>
StepResult team_step_rows(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                          const std::int64_t* idx, std::size_t rows, T lr, std::size_t parts,
                          Updater<T>* up = nullptr) {
    parts = std::min(parts, kMaxParts);
    const std::size_t nl = layers.size();
    const std::size_t in0 = layers.front().in, outl = layers.back().out;
    std::size_t per_part = 0;  // the gradients' elements, every layer's dK then db
    for (const auto& L : layers) per_part += L.in * L.out + (L.b ? L.out : 0);
    if (s.partials.size() != parts * per_part) s.partials.assign(parts * per_part, T(0));  // (before the phases)
    s.next_valid = false;
    const std::size_t count = rows * outl;
    const T scale = T(1) / T(count);
    double part_sq[kMaxParts] = {};  // each part's sum of squared errors
    UpdateSums pu[kMaxParts];
    const bool fused = up && up->fusable();
    if (fused) up->begin(up->sums(q_count(layers)));
    auto upd = [&](std::size_t q, T* w, T* g, std::size_t e0, std::size_t e1, std::size_t p, bool kernel) noexcept {
        block_update(up, pu[p], q, w, g, e0, e1, lr, kernel);
    };
    BlasOneThread one_thread;
    auto phase = [&](std::size_t ph, std::size_t p) noexcept {
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
                layer_forward(s.acts[l].data() + r0 * L.out, a, L.k, L.b, n, L.in, L.out, L.act);
                a = s.acts[l].data() + r0 * L.out;
            }
            part_sq[p] = mse_sum(s.grad_in[nl - 1].data() + r0 * outl, a, yb, n * outl, scale);
            T* g = s.partials.data() + p * per_part;
            std::size_t off = per_part;
            for (std::size_t l = nl; l-- > 0;) {
                const auto& L = layers[l];
                off -= L.in * L.out + (L.b ? L.out : 0);
                T* dk = g + off;
                T* db = L.b ? dk + L.in * L.out : nullptr;
                T* dx = l > 0 ? s.grad_in[l - 1].data() + r0 * L.in : nullptr;
                const T* xin = l > 0 ? s.acts[l - 1].data() + r0 * L.in : xb;
                layer_backward(dx, dk, db, s.grad_in[l].data() + r0 * L.out, xin, L.k, s.acts[l].data() + r0 * L.out,
                               n, L.in, L.out, L.act);
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
        std::size_t off = 0, q = 0;
        for (const auto& L : layers) {
            const std::size_t e0 = part_begin(L.in, p, parts) * L.out, e1 = part_begin(L.in, p + 1, parts) * L.out;
            add(L.dk, off, e0, e1);
            if (!up || fused) upd(q, L.k, L.dk, e0, e1, p, true);
            ++q;
            off += L.in * L.out;
            if (L.b) {
                const std::size_t o0 = part_begin(L.out, p, parts), o1 = part_begin(L.out, p + 1, parts);
                add(L.db, off, o0, o1);
                if (!up || fused) upd(q, L.b, L.db, o0, o1, p, false);
                ++q;
                off += L.out;
            }
        }
    };
    run_phases(parts, 2, phase);
    double sq_err = 0.0;
    for (std::size_t p = 0; p < parts; ++p) sq_err += part_sq[p];
    const double loss = double(T(sq_err / double(count)));
    if (up && !fused) return team_update(layers, loss, *up, parts);
    StepResult r = team_result(layers, loss, pu, parts);
    if (fused) {
        up->end();
        r.lr = double(up->lr());
    }
    return r;
}

}  // namespace fg
