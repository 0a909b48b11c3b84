// The native training loop, read from its entry point down:
//
//   Net::run            a whole run: chunks of steps, the records grown between chunks, Ctrl-C
//                       polls and progress calls, validation before and after, restore-best
//   -> net_run          one chunk: the register-resident loop (fast_tiny.hpp) for the smallest
//                       models (nothing to do between steps but record), else run_loop over net_step
//   -> run_loop         step, record, divergence check, validate, keep the best weights, the
//                       stopping rules (rules.hpp), poll
//   -> net_step         which step: the fused one-output step (fast_one_output.hpp) for one
//                       Dense layer with one output, the team (fast_team.hpp) for large layers,
//                       else the generic serial_step (step.hpp): forward, loss, backward, update
//                       (kernels.hpp)
//
// The Python loop (fastgrad/_loops.py) calls Net::step once per step and tests the same rules in
// Python, so both loops give the same bits.  No Python here: the bindings check the arrays, take
// their pointers, release the GIL and call.
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "fast_one_output.hpp"
#include "fast_team.hpp"
#include "fast_tiny.hpp"
#include "optimizer.hpp"
#include "rules.hpp"
#include "runtime.hpp"
#include "sampler.hpp"
#include "step.hpp"
#include "team.hpp"

namespace fg {

// One SGD step, by the fastest path that applies; each gives the generic step's bits (the team's
// may differ in the last places: fast_team.hpp).  next_idx: the next step's batch when the caller
// knows it (the native loop), which the phased team step gathers early.
// up: an optimizer other than plain SGD (optimizer.hpp), whose update replaces the fused one.
template <class T>
StepResult net_step(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                    const std::int64_t* idx, std::size_t rows, T lr, const TeamConfig& team,
                    const std::int64_t* next_idx = nullptr, Updater<T>* up = nullptr) {
    if (up) {
        if (one_output_applies(layers, rows)) {  // the fused gradients, then the optimizer's update
            const DenseView<T>& L = layers[0];
            T gb = T(0);
            const double sum = dense1_out1_rows<T, 0>(L.k, L.b, L.act == Activation::relu, T(1) / T(rows), x, L.in, y,
                                                      idx, rows, L.dk, gb);
            if (L.b) L.db[0] = gb;
            s.next_valid = false;
            return serial_update(layers, *up, double(T(sum / double(rows))));
        }
        if (team_applies(layers, rows, team)) {
            if (rows > team.rows_split) return team_step_rows(s, layers, x, y, idx, rows, lr, team.parts, up);
            return team_step(s, layers, x, y, idx, rows, lr, team.parts, next_idx, up);
        }
        return serial_update(layers, *up, batch_value_and_grad(s, layers, x, y, idx, rows));
    }
    if (one_output_applies(layers, rows)) {
        s.next_valid = false;
        switch (layers[0].in) {
            case 1: return dense1_out1_step<T, 1>(layers[0], x, y, idx, rows, lr);
            case 2: return dense1_out1_step<T, 2>(layers[0], x, y, idx, rows, lr);
            case 3: return dense1_out1_step<T, 3>(layers[0], x, y, idx, rows, lr);
            case 4: return dense1_out1_step<T, 4>(layers[0], x, y, idx, rows, lr);
            default: return dense1_out1_step<T, 0>(layers[0], x, y, idx, rows, lr);
        }
    }
    if (team_applies(layers, rows, team)) {
        if (rows > team.rows_split) return team_step_rows(s, layers, x, y, idx, rows, lr, team.parts);
        return team_step(s, layers, x, y, idx, rows, lr, team.parts, next_idx);
    }
    return serial_step(s, layers, x, y, idx, rows, lr);
}

// What a run recorded: per-step losses and gradient norms, the batches used, the weights every
// `every` steps, the validation losses and the steps they followed; grown chunk by chunk in
// RecordMemory.
template <class T>
struct Records {
    Grow<double> loss, norm, val_loss, lr;  // lr: with a schedule only
    Grow<std::int64_t> batches;
    std::vector<std::unique_ptr<Grow<T>>> weights;  // one per parameter
    Grow<long long> weight_steps, val_steps;
    std::size_t steps = 0, recorded = 0, evaluated = 0;
    long long best_step = -1;      // restore-best: the step after which the kept weights were taken
    std::size_t failed_bytes = 0;  // stop -4: the size of the buffer that could not be had (0: unknown)
};

// The MSE of the current weights on n rows of (x, y): the validation loss both loops record.  A
// large set goes to the team, each part a block of rows under BlasOneThread: OpenBLAS's own
// threads would spin on after the product and slow the team's next steps (W6 validated once an
// epoch ran 2.2x slower that way).  The parts' sums are added in part order, so both loops,
// which read the same settings, get the same bits.
template <class T>
double validation_loss(NetScratch<T>& vs, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                       std::size_t n, const TeamConfig& team) {
    const std::size_t in0 = layers.front().in, outl = layers.back().out;
    if (!team_applies(layers, n, team)) {
        const T* p = net_forward(vs, layers, x, n);
        return double(mse_forward(p, y, n * outl));
    }
    const std::size_t parts = std::min(team.parts, kMaxParts);
    double part_sq[kMaxParts] = {};
    BlasOneThread one_thread;
    auto phase = [&](std::size_t, std::size_t p) noexcept {
        const std::size_t r0 = part_begin(n, p, parts), r1 = part_begin(n, p + 1, parts);
        if (r1 == r0) return;
        const T* a = x + r0 * in0;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const auto& L = layers[l];
            layer_forward(vs.acts[l].data() + r0 * L.out, a, L.k, L.b, r1 - r0, L.in, L.out, L.act);
            a = vs.acts[l].data() + r0 * L.out;
        }
        part_sq[p] = mse_sum<T>(nullptr, a, y + r0 * outl, (r1 - r0) * outl, T(0));
    };
    run_phases(parts, 1, phase);
    double sq = 0.0;
    for (std::size_t p = 0; p < parts; ++p) sq += part_sq[p];
    return double(T(sq / double(n * outl)));
}

// The validation set and restore-best, for run_loop: the MSE on (vx, vy) after every `every`-th
// step, and a copy of the weights at the best monitored value (the validation loss when on_val,
// else the step's batch loss; the weights after that step, as Keras keeps an epoch's).
template <class T>
struct RunExtras {
    const T* vx = nullptr;
    const T* vy = nullptr;
    std::size_t vn = 0, every = 0;
    NetScratch<T>* vs = nullptr;
    TeamConfig team;
    Records<T>* rec = nullptr;
    bool keep_best = false, best_on_val = false;
    double best = INFINITY;
    std::vector<std::vector<T>> best_w;

    bool validates() const { return vx != nullptr; }
    // The validation loss at the current weights, recorded as following step `step`.
    double validate(const std::vector<DenseView<T>>& layers, long long step) {
        const double v = validation_loss(*vs, layers, vx, vy, vn, team);
        rec->val_loss.data()[rec->evaluated] = v;
        rec->val_steps.data()[rec->evaluated++] = step;
        return v;
    }
    void offer(const std::vector<DenseView<T>>& layers, double value, long long step) {
        if (!(value < best)) return;  // NaN never is
        best = value;
        rec->best_step = step;
        std::size_t p = 0;
        for (const auto& L : layers) {
            best_w[p++].assign(L.k, L.k + L.in * L.out);
            if (L.b) best_w[p++].assign(L.b, L.b + L.out);
        }
    }
};

// Runs up to `nsteps` steps.  idx: (nsteps, rows) batch indices, or null for the full batch;
// with a sampler, each step first draws its batch into row i of idx (which records it); without
// one, idx holds the batches already.  loss_out, gnorm_out: nsteps each.  With every > 0, the
// parameters after each step t with t % every == 0 are copied to row `recorded` of wrec[p]
// (capacity nsteps / every + 1 rows) and t to wsteps[recorded].  ex: validation and restore-best,
// or null.  poll() is called every poll_every steps; true means stop (Ctrl-C).
// The loop itself, for a step function chosen once per run (so that it inlines).
template <class T, class Step, class Poll>
ChunkResult run_loop(Step&& step, const std::vector<DenseView<T>>& layers, std::int64_t* idx, Sampler* sampler,
                     std::size_t nsteps, std::size_t rows, std::vector<Rule>& rules, LoopState& st,
                     double* loss_out, double* gnorm_out, std::size_t every, T* const* wrec, long long* wsteps,
                     std::size_t poll_every, Poll& poll, bool ahead = false, RunExtras<T>* ex = nullptr,
                     double* lr_out = nullptr) {
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
        if (lr_out) lr_out[i] = r.lr;
        ++st.step;
        out.steps = i + 1;
        if (every && std::size_t(st.step) % every == 0) {
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
        bool validated = false;
        double v = 0.0;
        if (ex) {
            if (ex->validates() && std::size_t(st.step) % ex->every == 0) {
                v = ex->validate(layers, st.step);
                validated = true;
            }
            if (ex->keep_best && (!ex->best_on_val || validated)) ex->offer(layers, ex->best_on_val ? v : r.loss, st.step);
        }
        for (std::size_t j = 0; j < rules.size(); ++j) {
            const bool fires = rules[j].on_val ? validated && val_rule_fires(rules[j], v)
                                               : rule_fires(rules[j], st, r.loss, r.weight_delta);
            if (fires) {
                out.stop = int(j);
                return out;
            }
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

// Whether the tiny loop can run this optimizer: SGD with momentum at a constant rate and nothing
// else (tm is then filled in).
template <class T>
bool tiny_momentum(Updater<T>& up, TinyMomentum<T>& tm) {
    const OptConfig& c = up.config();
    if (c.kind != OptKind::sgd || c.momentum == 0.0 || c.weight_decay >= 0 || c.clipnorm > 0 || c.clipvalue > 0 ||
        c.global_clipnorm > 0 || c.l2 >= 0 || c.schedule.kind != 0)
        return false;
    tm.kind = c.nesterov ? 2 : 1;
    tm.mu = T(c.momentum);
    tm.vk = up.state().slot[0][0];
    tm.vb = up.state().slot[0].size() > 1 ? up.state().slot[0][1] : nullptr;
    return true;
}

// One chunk of up to nsteps steps (run_loop's arguments).  The register-resident loop runs only
// when nothing but records happens between steps (no validation, no restore-best) and it draws
// the batches itself (not explicit ones).
template <class T, class Poll>
ChunkResult net_run(NetScratch<T>& s, const std::vector<DenseView<T>>& layers, const T* x, const T* y,
                    std::int64_t* idx, Sampler* sampler, std::size_t nsteps, std::size_t rows, T lr,
                    const TeamConfig& team, std::vector<Rule>& rules, LoopState& st, double* loss_out,
                    double* gnorm_out, std::size_t every, T* const* wrec, long long* wsteps, std::size_t poll_every,
                    Poll& poll, RunExtras<T>* ex = nullptr, Updater<T>* up = nullptr, double* lr_out = nullptr) {
    const bool explicit_batches = idx && !sampler;
    TinyMomentum<T> tm;
    if (!ex && !explicit_batches && (!up || tiny_momentum(*up, tm)) && one_output_applies(layers, rows)) {
        const DenseView<T>& L = layers[0];
        ChunkResult r;
        switch (L.in) {
#define FG_TINY(IN)                                                                                              \
    case IN:                                                                                                     \
        r = dense1_out1_dispatch<T, IN, Poll>(L, x, y, idx, sampler, nsteps, rows, lr, rules, st, loss_out, gnorm_out, \
                                              every, wrec, wsteps, poll_every, poll, tm);                        \
        if (up) up->skip(static_cast<long long>(r.steps));                                                     \
        return r;
            FG_TINY(1)
            FG_TINY(2)
            FG_TINY(3)
            FG_TINY(4)
#undef FG_TINY
            default: break;
        }
    }
    auto step = [&](const std::int64_t* bi, const std::int64_t* next) {
        return net_step(s, layers, x, y, bi, rows, lr, team, next, up);
    };
    const bool ahead = sampler && idx && team_applies(layers, rows, team) && rows <= team.rows_split;
    const ChunkResult out = run_loop<T>(step, layers, idx, sampler, nsteps, rows, rules, st, loss_out, gnorm_out,
                                        every, wrec, wsteps, poll_every, poll, ahead, ex, lr_out);
    s.next_valid = false;  // a batch gathered ahead is used only by the run that drew it
    return out;
}

// What a run does besides the steps (Net::run's options).
template <class T>
struct RunSpec {
    std::vector<Rule> rules;  // tested in order; a max_steps rule is needed unless batches are given
    std::size_t every = 0;    // record the weights every `every` steps (0: never; at most 2**62)
    const std::int64_t* batches = nullptr;  // explicit batches, (batch_steps, rows), checked, or null
    std::size_t batch_steps = 0;
    const T* vx = nullptr;  // validation data, (vn, inputs) and (vn, outputs), or null
    const T* vy = nullptr;
    std::size_t vn = 0, val_every = 0;
    bool restore_best = false, best_on_val = false;
    std::size_t progress_every = 0;  // steps between progress calls (0: none)
};

// A Dense stack as the loops train it: views of the live parameters (owned by the caller), the
// gradients and the scratch (owned here), for a fixed number of batch rows.
template <class T>
class Net {
  public:
    // layers' k and b point at the caller's parameters; dk and db are set here.  Throws
    // std::bad_alloc when the gradients or the scratch cannot be had (before anything changes).
    Net(std::vector<DenseView<T>> layers, std::size_t rows, bool gather) : layers_(std::move(layers)), rows_(rows),
                                                                           gather_(gather) {
        for (auto& L : layers_) {
            dk_.emplace_back(L.in * L.out);
            L.dk = dk_.back().data();
            db_.emplace_back(L.b ? L.out : 0);
            L.db = L.b ? db_.back().data() : nullptr;
        }
        scratch_.resize(layers_, rows_, gather_);
    }
    Net(const Net&) = delete;
    Net& operator=(const Net&) = delete;

    // Point layer l at new parameter buffers of the same shapes (the caller checked them).
    void rebind(std::size_t l, T* k, T* b) {
        layers_[l].k = k;
        if (layers_[l].b) layers_[l].b = b;
    }
    const std::vector<DenseView<T>>& layers() const { return layers_; }
    std::size_t rows() const { return rows_; }
    bool gather() const { return gather_; }
    std::size_t params() const {
        std::size_t c = 0;
        for (const auto& L : layers_) c += L.b ? 2 : 1;
        return c;
    }
    // elements of parameter p (get_weights order)
    std::size_t param_size(std::size_t p) const {
        for (const auto& L : layers_) {
            if (p == 0) return L.in * L.out;
            if (L.b && p == 1) return L.out;
            p -= L.b ? 2 : 1;
        }
        return 0;
    }

    // The optimizer of the next steps and runs: plain SGD (the fused update) unless set; the
    // slot arrays are the caller's, kept alive by it.
    void set_optimizer(const OptConfig& cfg, OptState<T> state) {
        opt_ = cfg;
        opt_state_ = std::move(state);
    }
    long long iterations() const { return opt_state_.iterations; }
    bool plain() const { return opt_.plain(); }

    // One step (the Python loop's): idx holds rows() indices already checked, or is null.
    StepResult step(const T* x, const T* y, const std::int64_t* idx, T lr) {
        if (opt_.plain()) {
            StepResult r = net_step(scratch_, layers_, x, y, idx, rows_, lr, TeamConfig::current());
            r.lr = double(lr);
            ++opt_state_.iterations;
            return r;
        }
        Updater<T> up(opt_, opt_state_);
        return net_step(scratch_, layers_, x, y, idx, rows_, lr, TeamConfig::current(), nullptr, &up);
    }

    // The MSE of the current weights on n rows of (x, y): the validation loss both loops record.
    // Throws std::bad_alloc if the scratch for n rows cannot be had.
    double validate(const T* x, const T* y, std::size_t n) {
        if (val_scratch_.rows != n) val_scratch_.resize(layers_, n, false);
        return validation_loss(val_scratch_, layers_, x, y, n, TeamConfig::current());
    }

    // A whole run over the data: returns the last chunk's result (stop as ChunkResult's); rec
    // holds everything recorded.  sampler: the batch draws, or null (the full batch, or
    // spec.batches).  progress(steps done) is called between chunks when spec.progress_every is
    // set; false from it stops the run (-6).
    template <class Poll, class Progress>
    ChunkResult run(const T* x, const T* y, Sampler* sampler, T lr, RunSpec<T> spec, Poll& poll, Progress&& progress,
                    Records<T>& rec) {
        rules_ = std::move(spec.rules);
        state_ = LoopState{};
        const RulePlan plan = plan_rules(rules_);
        std::size_t limit = plan.limit_rule >= 0 ? std::size_t(plan.limit) : SIZE_MAX;
        if (spec.batches) limit = std::min(limit, spec.batch_steps);
        const TeamConfig team = TeamConfig::current();  // read once: every step of the run alike
        // poll for Ctrl-C about every millisecond of work
        std::size_t work = 0;
        for (const auto& L : layers_) work += L.in * L.out;
        work *= rows_;
        const std::size_t poll_every = std::max<std::size_t>(1, std::size_t(1e6) / std::max<std::size_t>(work, 1));
        // chunks of at most 65536 steps and 2**20 batch indices: the records grow chunk by chunk;
        // with a progress bar, chunks of about 50 ms of work at most, so the bar moves
        std::size_t chunk = std::max<std::size_t>(1, std::min<std::size_t>(1 << 16, (1 << 20) / rows_));
        if (spec.progress_every) chunk = std::max<std::size_t>(1, std::min(chunk, spec.progress_every));
        const std::size_t np = params();
        rec.weights.clear();
        for (std::size_t p = 0; p < np; ++p) rec.weights.push_back(std::make_unique<Grow<T>>());
        RunExtras<T> ex;
        const bool extras = spec.vx || spec.restore_best;
        if (spec.vx) {
            ex.vx = spec.vx;
            ex.vy = spec.vy;
            ex.vn = spec.vn;
            ex.every = std::max<std::size_t>(1, spec.val_every);
            if (val_scratch_.rows != spec.vn) val_scratch_.resize(layers_, spec.vn, false);
            ex.vs = &val_scratch_;
            ex.team = team;
        }
        ex.rec = &rec;
        std::unique_ptr<Updater<T>> up;
        if (!opt_.plain()) up = std::make_unique<Updater<T>>(opt_, opt_state_);
        const bool record_lr = !opt_.plain() && opt_.schedule.kind != 0;
        ex.keep_best = spec.restore_best;
        ex.best_on_val = spec.restore_best && spec.best_on_val && spec.vx;
        if (ex.keep_best) ex.best_w.resize(np);
        std::vector<T*> wp(np);
        ChunkResult r;
        if (spec.vx) {  // the validation loss before training: step 0
            if (!reserve_val(rec, 2)) return oom();
            ex.validate(layers_, 0);
        }
        while (true) {
            const std::size_t done = rec.steps;
            if (done >= limit) {  // only explicit batches end this way: a MaxSteps rule fires first
                r = ChunkResult{};
                r.stop = -5;
                break;
            }
            const std::size_t nsteps = std::min(chunk, limit - done);
            if (!reserve(rec, done + nsteps, nsteps, spec.every) ||
                (spec.vx && !reserve_val(rec, nsteps / ex.every + 2)) || (record_lr && !rec.lr.reserve(done + nsteps)))
                return oom();
            std::int64_t* idx = gather_ ? rec.batches.data() + done * rows_ : nullptr;
            if (spec.batches) std::memcpy(idx, spec.batches + done * rows_, nsteps * rows_ * sizeof(std::int64_t));
            for (std::size_t p = 0; p < np && spec.every; ++p)
                wp[p] = rec.weights[p]->data() + rec.recorded * param_size(p);
            try {
                r = net_run(scratch_, layers_, x, y, idx, sampler, nsteps, rows_, lr, team, rules_, state_,
                            rec.loss.data() + done, rec.norm.data() + done, spec.every, wp.data(),
                            spec.every ? rec.weight_steps.data() + rec.recorded : nullptr, poll_every, poll,
                            extras ? &ex : nullptr, up.get(), record_lr ? rec.lr.data() + done : nullptr);
            } catch (const std::bad_alloc&) {  // the team's buffers for a step ahead, or the best weights
                rec.failed_bytes = 0;
                return oom();
            }
            rec.steps += r.steps;
            rec.recorded += r.recorded;
            if (opt_.plain()) opt_state_.iterations += static_cast<long long>(r.steps);  // (Updater::end counts the rest)
            if (r.stop != -1) break;
            if (poll()) {
                r.stop = -3;
                break;
            }
            if (spec.progress_every && !progress(rec.steps)) {
                r.stop = -6;
                break;
            }
        }
        if (r.stop == -6) return r;
        // the validation loss after the last step too, and the best weights back
        if (spec.vx && (rec.evaluated == 0 || rec.val_steps.data()[rec.evaluated - 1] != (long long)rec.steps))
            ex.validate(layers_, static_cast<long long>(rec.steps));
        if (ex.keep_best && rec.best_step >= 0) {
            std::size_t p = 0;
            for (const auto& L : layers_) {
                std::copy(ex.best_w[p].begin(), ex.best_w[p].end(), L.k);
                ++p;
                if (L.b) std::copy(ex.best_w[p].begin(), ex.best_w[p].end(), L.b), ++p;
            }
        }
        return r;
    }

  private:
    static ChunkResult oom() {
        ChunkResult r;
        r.stop = -4;
        return r;
    }

    // Room in every record for `total` steps (this chunk's nsteps among them).
    bool reserve(Records<T>& rec, std::size_t total, std::size_t nsteps, std::size_t every) {
        auto need = [&rec](auto& g, std::size_t count, std::size_t size) {
            if (g.reserve(count)) return true;
            rec.failed_bytes = count * size;
            return false;
        };
        if (!need(rec.loss, total, sizeof(double)) || !need(rec.norm, total, sizeof(double))) return false;
        if (gather_ && !need(rec.batches, total * rows_, sizeof(std::int64_t))) return false;
        if (!every) return true;
        const std::size_t cap = rec.recorded + nsteps / every + 1;
        for (std::size_t p = 0; p < rec.weights.size(); ++p)
            if (!need(*rec.weights[p], cap * param_size(p), sizeof(T))) return false;
        return need(rec.weight_steps, cap, sizeof(long long));
    }
    // Room for `more` validation losses (the one after the last step among them).
    bool reserve_val(Records<T>& rec, std::size_t more) {
        const std::size_t cap = rec.evaluated + more + 1;
        if (rec.val_loss.reserve(cap) && rec.val_steps.reserve(cap)) return true;
        rec.failed_bytes = cap * (sizeof(double) + sizeof(long long));
        return false;
    }

    std::vector<DenseView<T>> layers_;
    std::vector<std::vector<T>> dk_, db_;
    NetScratch<T> scratch_, val_scratch_;
    OptConfig opt_;
    OptState<T> opt_state_;
    std::vector<Rule> rules_;
    LoopState state_;
    std::size_t rows_;
    bool gather_;
};

}  // namespace fg
