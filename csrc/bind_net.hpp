// The binding of fg::Net (loop.hpp): the live parameter arrays kept alive while the C++ holds
// their pointers, the Python loop's step and the native loop's whole run.  Included by
// bindings.cpp only.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bind_checks.hpp"
#include "loop.hpp"
#include "optimizer.hpp"
#include "runtime.hpp"
#include "sampler.hpp"

namespace [[gnu::visibility("hidden")]] fgpy {

// A schedule from (kind, a, b, c, flag, e, f, g, boundaries, values): fastgrad/schedules.py's
// _native() (optimizer.hpp Schedule says what each holds).
inline fg::Schedule schedule_of(const py::tuple& t) {
    if (t.size() == 2) {  // (0, rate): a constant
        fg::Schedule s;
        s.kind = 0;
        s.a = t[1].cast<double>();
        return s;
    }
    if (t.size() != 10) fail("schedule: expected 2 or 10 values");
    fg::Schedule s;
    s.kind = t[0].cast<int>();
    if (s.kind < 0 || s.kind > 4) fail("schedule: unknown kind " + std::to_string(s.kind));
    s.a = t[1].cast<double>();
    s.b = t[2].cast<double>();
    s.c = t[3].cast<double>();
    s.flag = t[4].cast<bool>();
    s.e = t[5].cast<double>();
    s.f = t[6].cast<double>();
    s.g = t[7].cast<long long>();
    s.boundaries = t[8].cast<std::vector<double>>();
    s.values = t[9].cast<std::vector<double>>();
    if (s.kind == 3 && (s.boundaries.empty() || s.values.size() != s.boundaries.size() + 1))
        fail("schedule: expected values one longer than a non-empty boundaries");
    if ((s.kind == 1 || s.kind == 2 || s.kind == 4) && !(s.b > 0)) fail("schedule: expected decay_steps > 0");
    return s;
}

// The previous handler's pending Ctrl-C, for SigintCatch: Python's, asked with the GIL.
inline bool python_sigint_pending() {
    py::gil_scoped_acquire gil;
    return PyOS_InterruptOccurred() != 0;
}

// A record block handed to NumPy, which gives it back to RecordMemory when the array is freed.
template <class V>
py::array_t<V> to_numpy(fg::Grow<V>& g, std::vector<py::ssize_t> shape, std::size_t count, const char* what) {
    V* p = g.release(count);
    if (!p) out_of_memory(std::string("could not allocate the run's ") + what + " (" + mib(count * sizeof(V)) + ")");
    py::capsule owner(p, [](void* q) { fg::RecordMemory::get().give(q); });
    return py::array_t<V>(shape, p, owner);
}

// The largest `every` a run accepts: recording steps are compared as signed 64-bit step counts
constexpr std::size_t kMaxEvery = std::size_t(1) << 62;

// A Sequential as the loops train it: fg::Net over the live parameter arrays, which this object
// keeps alive while fg::Net holds their pointers.
template <class T>
class PyNet {
  public:
    PyNet(std::vector<Arr<T>> params, const std::vector<bool>& has_bias, const std::vector<int>& acts, std::size_t rows,
          bool gather)
        : params_(std::move(params)) {
        if (has_bias.size() != acts.size() || acts.empty()) fail("activations: expected one entry per layer");
        if (rows == 0) fail("rows: expected at least 1");
        std::vector<fg::DenseView<T>> layers;
        std::size_t p = 0, scratch = 0;
        for (std::size_t l = 0; l < acts.size(); ++l) {
            const std::size_t np = has_bias[l] ? 2 : 1;
            if (p + np > params_.size()) fail("params: fewer arrays than the layers need");
            const Arr<T>& k = check_param(p, 2);
            fg::DenseView<T> v{};
            v.in = std::size_t(k.shape(0));
            v.out = std::size_t(k.shape(1));
            if (l > 0 && v.in != layers.back().out) fail("params: layer widths do not chain");
            v.act = to_act(acts[l]);
            v.k = params_[p].mutable_data();
            if (has_bias[l]) {
                const Arr<T>& b = check_param(p + 1, 1);
                if (std::size_t(b.shape(0)) != v.out) fail("bias: does not match its kernel");
                v.b = params_[p + 1].mutable_data();
            }
            scratch += v.in * v.out + v.out + 2 * rows * v.out;
            layers.push_back(v);
            p += np;
        }
        if (p != params_.size()) fail("params: more arrays than the layers need");
        try {
            net_ = std::make_unique<fg::Net<T>>(std::move(layers), rows, gather);
        } catch (const std::bad_alloc&) {
            out_of_memory("could not allocate the gradients and scratch of a " + std::to_string(rows) + "-row batch (" +
                          mib(double(scratch) * sizeof(T)) + ")");
        }
    }

    // Train the parameter arrays that replaced ours (set_weights makes new ones), of the same
    // shapes: the gradients and the scratch stay.  Everything is checked before anything changes.
    void rebind(std::vector<Arr<T>> params) {
        if (params.size() != params_.size())
            fail("params: expected " + std::to_string(params_.size()) + " arrays, got " + std::to_string(params.size()));
        for (std::size_t p = 0; p < params.size(); ++p) {
            const Arr<T>& a = params[p];
            const Arr<T>& was = params_[p];
            if (a.ndim() != was.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), was.shape()))
                fail("params[" + std::to_string(p) + "]: expected shape " + shape_str(was) + ", got " + shape_str(a));
            if (!a.writeable() || !aligned(a))
                fail("params[" + std::to_string(p) + "]: expected a writeable aligned array");
        }
        params_ = std::move(params);
        std::size_t p = 0;
        for (std::size_t l = 0; l < net_->layers().size(); ++l) {
            T* k = params_[p++].mutable_data();
            T* b = net_->layers()[l].b ? params_[p++].mutable_data() : nullptr;
            net_->rebind(l, k, b);
        }
    }

    std::size_t rows() const { return net_->rows(); }

    // One step of the Python loop: (loss, grad_norm, weight_delta, bad_grad, bad_weight).
    py::tuple step(const py::array& xa, const py::array& ya, py::handle idxh, double lr) {
        const Arr<T> x = exact<T>(xa, "x");
        const Arr<T> y = exact<T>(ya, "y");
        const std::size_t rows = net_->rows();
        const std::int64_t* ip = nullptr;
        if (!idxh.is_none()) {
            if (!net_->gather()) fail("idx: this Net was built for the full batch");
            const auto idx = exact_idx(idxh);
            if (idx.ndim() != 1 || std::size_t(idx.shape(0)) != rows)
                fail("idx: expected shape (" + std::to_string(rows) + ",), got " + shape_str(idx));
            check_xy(x, y, 1);
            // checked and used from our own copy: the caller's array may change once the GIL is released
            idx_.assign(idx.data(), idx.data() + rows);
            const auto n = x.shape(0);
            for (std::int64_t i : idx_)
                if (i < 0 || i >= n) fail("idx: index " + std::to_string(i) + " out of range");
            ip = idx_.data();
        } else {
            if (net_->gather()) fail("idx: this Net draws batches; pass the batch indices");
            check_xy(x, y, rows);
            if (std::size_t(x.shape(0)) != rows) fail("x: expected " + std::to_string(rows) + " rows");
        }
        const T* xp = x.data();
        const T* yp = y.data();
        fg::StepResult r;
        {
            fg::RunGuard guard;
            py::gil_scoped_release nogil;
            r = net_->step(xp, yp, ip, T(lr));
        }
        return py::make_tuple(r.loss, r.grad_norm, r.weight_delta, r.bad_grad, r.bad_weight, r.lr);
    }

    // The optimizer of the next steps and runs (optimizer.hpp): kind 0 SGD, 1 Adam; params
    // (momentum, nesterov, weight_decay, clipnorm, clipvalue, global_clipnorm, beta_1, beta_2,
    // epsilon, amsgrad[, l2]), -1 for an option not set; schedule as schedule_of reads it; slots[k][p]:
    // slot k of parameter p (the optimizer object's arrays, updated in place); iterations so far.
    void set_optimizer(int kind, const py::tuple& params, const py::tuple& schedule, const py::list& slots,
                       long long iterations) {
        if (kind != 0 && kind != 1) fail("kind: expected 0 (SGD) or 1 (Adam), got " + std::to_string(kind));
        if (params.size() != 10 && params.size() != 11) fail("params: expected 10 or 11 values");
        fg::OptConfig cfg;
        cfg.kind = static_cast<fg::OptKind>(kind);
        cfg.momentum = params[0].cast<double>();
        cfg.nesterov = params[1].cast<bool>();
        cfg.weight_decay = params[2].cast<double>();
        cfg.clipnorm = params[3].cast<double>();
        cfg.clipvalue = params[4].cast<double>();
        cfg.global_clipnorm = params[5].cast<double>();
        cfg.beta1 = params[6].cast<double>();
        cfg.beta2 = params[7].cast<double>();
        cfg.epsilon = params[8].cast<double>();
        cfg.amsgrad = params[9].cast<bool>();
        if (params.size() == 11) cfg.l2 = params[10].cast<double>();
        cfg.schedule = schedule_of(schedule);
        if (iterations < 0) fail("iterations: expected >= 0");
        if (py::len(slots) != std::size_t(cfg.slots()))
            fail("slots: expected " + std::to_string(cfg.slots()) + " lists of arrays, got " + std::to_string(py::len(slots)));
        fg::OptState<T> state;
        state.iterations = iterations;
        std::vector<Arr<T>> keep;
        for (std::size_t k = 0; k < py::len(slots); ++k) {
            const auto list = slots[k].cast<py::list>();
            if (list.size() != params_.size()) fail("slots: expected one array per parameter");
            std::vector<T*> ptrs;
            for (std::size_t p = 0; p < list.size(); ++p) {
                Arr<T> a = exact<T>(list[p], "slots");
                const Arr<T>& w = params_[p];
                if (a.ndim() != w.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), w.shape()) || !a.writeable())
                    fail("slots[" + std::to_string(k) + "][" + std::to_string(p) + "]: expected a writeable array of shape " +
                         shape_str(w));
                ptrs.push_back(a.mutable_data());
                keep.push_back(a);
            }
            state.slot.push_back(ptrs);
        }
        slot_arrays_ = std::move(keep);
        net_->set_optimizer(cfg, std::move(state));
    }

    long long iterations() const { return net_->iterations(); }
    bool plain() const { return net_->plain(); }

    // The validation loss at the current weights (what both loops record): the MSE on (x, y).
    double validate(const py::array& xa, const py::array& ya) {
        const Arr<T> x = exact<T>(xa, "x");
        const Arr<T> y = exact<T>(ya, "y");
        check_xy(x, y, 1);
        const std::size_t n = std::size_t(x.shape(0));
        const T* xp = x.data();
        const T* yp = y.data();
        try {
            fg::RunGuard guard;
            py::gil_scoped_release nogil;
            return net_->validate(xp, yp, n);
        } catch (const std::bad_alloc&) {
            out_of_memory("could not allocate the scratch to validate on " + std::to_string(n) + " rows");
        }
    }

    // A whole run of the native loop, the GIL released: the rules (kind, tol, n) in the order they
    // are tested, val_rules[j] true where rule j monitors the validation loss; one MaxSteps rule
    // unless `batches` ((steps, rows) int64 indices) is given.  `draw` is None (the full batch, or
    // the explicit batches), a seed (an int below 2**64: the sampler of that seed) or a Sampler.
    // validation: None or (x_val, y_val), validated before training, after every val_every-th
    // step and after the last; restore_best: end on the weights of the best monitored value (the
    // validation loss when best_on_val, else the batch loss); progress(steps) is called between
    // chunks of about progress_every steps.  Returns (steps, stop, bad_grad, bad_weight, loss
    // (steps,), grad_norm (steps,), batches (steps, rows) or None, [weight rows (recorded, *shape)
    // per parameter] or None, their steps (recorded,) or None, val_loss or None, val_steps or None,
    // best_step (-1: none)); stop as fg::ChunkResult's.  A run that runs out of memory for its
    // records raises MemoryError (the weights have changed: fastgrad.fit puts them back).
    py::tuple fit_run(const py::array& xa, const py::array& ya, py::handle draw, bool shuffle, double lr,
                      const std::vector<std::tuple<int, double, long long>>& rules, std::size_t every,
                      bool catch_sigint, const std::vector<bool>& val_rules, py::handle batches_h,
                      py::handle validation, std::size_t val_every, bool restore_best, bool best_on_val,
                      py::handle progress_fn, std::size_t progress_every) {
        const Arr<T> x = exact<T>(xa, "x");
        const Arr<T> y = exact<T>(ya, "y");
        check_xy(x, y, 1);
        if (every > kMaxEvery) fail("every: expected at most 2**62 steps, got " + std::to_string(every));
        const std::size_t n = std::size_t(x.shape(0)), rows = net_->rows();
        fg::RunSpec<T> spec;
        spec.every = every;
        std::unique_ptr<fg::Sampler> own;
        fg::Sampler* sampler = nullptr;
        if (!batches_h.is_none()) {  // checked and used from our own copy, as step's idx
            if (!net_->gather()) fail("batches: this Net was built for the full batch");
            if (!draw.is_none()) fail("draw: expected None with explicit batches");
            const auto b = exact_idx(batches_h, "batches");
            if (b.ndim() != 2 || std::size_t(b.shape(1)) != rows)
                fail("batches: expected shape (steps, " + std::to_string(rows) + "), got " + shape_str(b));
            batches_.assign(b.data(), b.data() + b.size());
            for (std::int64_t i : batches_)
                if (i < 0 || std::size_t(i) >= n) fail("batches: index " + std::to_string(i) + " out of range");
            spec.batches = batches_.data();
            spec.batch_steps = std::size_t(b.shape(0));
        } else if (!draw.is_none()) {
            if (!net_->gather()) fail("draw: this Net was built for the full batch");
            if (py::isinstance<fg::Sampler>(draw)) {
                sampler = draw.cast<fg::Sampler*>();
                if (sampler->k() != rows || sampler->n() != n) fail("draw: a sampler for other sizes than this run");
            } else {
                if (rows > n) fail("draw: a batch larger than the data");
                std::uint64_t state[4];
                fg::seed_sequence_state(draw.cast<std::uint64_t>(), state);
                own = std::make_unique<fg::Sampler>(state, n, rows, shuffle);
                sampler = own.get();
            }
        } else {
            if (net_->gather()) fail("draw: this Net draws batches; pass a seed, a sampler or the batches");
            if (n != rows) fail("x: expected " + std::to_string(rows) + " rows");
        }
        if (!val_rules.empty() && val_rules.size() != rules.size()) fail("val_rules: expected one entry per rule");
        bool capped = false;
        for (std::size_t j = 0; j < rules.size(); ++j) {
            const auto& [kind, tol, count] = rules[j];
            if (kind < 0 || kind > 4) fail("rules: unknown rule kind " + std::to_string(kind));
            fg::Rule rule{static_cast<fg::RuleKind>(kind), tol, count};
            rule.on_val = !val_rules.empty() && val_rules[j];
            spec.rules.push_back(rule);
            capped |= kind == int(fg::RuleKind::max_steps);
        }
        if (!capped && !spec.batches) fail("rules: expected a MaxSteps rule");
        std::optional<Arr<T>> vx, vy;
        if (!validation.is_none()) {
            const auto pair = validation.cast<py::tuple>();
            if (pair.size() != 2) fail("validation: expected (x_val, y_val)");
            vx = exact<T>(pair[0], "x_val");
            vy = exact<T>(pair[1], "y_val");
            check_xy(*vx, *vy, 1);
            spec.vx = vx->data();
            spec.vy = vy->data();
            spec.vn = std::size_t(vx->shape(0));
            spec.val_every = std::max<std::size_t>(1, val_every);
        }
        spec.restore_best = restore_best;
        spec.best_on_val = best_on_val;
        spec.progress_every = progress_fn.is_none() ? 0 : std::max<std::size_t>(1, progress_every);
        std::optional<py::error_already_set> progress_error;
        auto progress = [&](std::size_t steps) {
            py::gil_scoped_acquire gil;
            try {
                progress_fn(steps);
                return true;
            } catch (py::error_already_set& e) {
                progress_error.emplace(std::move(e));
                return false;
            }
        };
        fg::Records<T> rec;
        fg::ChunkResult r;
        const T* xp = x.data();
        const T* yp = y.data();
        {
            fg::SigintCatch sigint(catch_sigint, python_sigint_pending);
            auto poll = [&sigint]() { return sigint.hit(); };
            fg::RunGuard guard;
            py::gil_scoped_release nogil;
            r = net_->run(xp, yp, sampler, T(lr), std::move(spec), poll, progress, rec);
            if (r.stop == -3) sigint.reported();
        }
        if (progress_error) throw *progress_error;
        if (r.stop == -4)
            out_of_memory("could not allocate " + (rec.failed_bytes ? mib(double(rec.failed_bytes)) : std::string("memory")) +
                          " for the records of a run after step " + std::to_string(rec.steps) +
                          " (record_weights less often, or stop the run sooner)");
        const std::size_t done = rec.steps, recorded = rec.recorded, evaluated = rec.evaluated;
        py::object batches = py::none(), wlist = py::none(), wsteps = py::none(), vloss = py::none(), vsteps = py::none();
        if (net_->gather()) batches = to_numpy(rec.batches, {py::ssize_t(done), py::ssize_t(rows)}, done * rows, "batches");
        if (every) {
            py::list wl;
            for (std::size_t p = 0; p < params_.size(); ++p) {
                std::vector<py::ssize_t> shape{py::ssize_t(recorded)};
                shape.insert(shape.end(), params_[p].shape(), params_[p].shape() + params_[p].ndim());
                wl.append(to_numpy(*rec.weights[p], shape, recorded * net_->param_size(p), "weights"));
            }
            wlist = wl;
            wsteps = to_numpy(rec.weight_steps, {py::ssize_t(recorded)}, recorded, "weight steps");
        }
        if (vx) {
            vloss = to_numpy(rec.val_loss, {py::ssize_t(evaluated)}, evaluated, "validation losses");
            vsteps = to_numpy(rec.val_steps, {py::ssize_t(evaluated)}, evaluated, "validation steps");
        }
        py::object lrs = py::none();
        if (!net_->plain() && rec.lr.data()) lrs = to_numpy(rec.lr, {py::ssize_t(done)}, done, "learning rates");
        return py::make_tuple(done, r.stop, r.bad_grad, r.bad_weight,
                              to_numpy(rec.loss, {py::ssize_t(done)}, done, "losses"),
                              to_numpy(rec.norm, {py::ssize_t(done)}, done, "gradient norms"), batches, wlist, wsteps,
                              vloss, vsteps, rec.best_step, lrs);
    }

  private:
    const Arr<T>& check_param(std::size_t p, py::ssize_t nd) {
        const Arr<T>& a = params_[p];
        need_ndim(a, nd, nd == 2 ? "kernel" : "bias", nd == 2 ? "(input_dim, units)" : "(units,)");
        if (!a.writeable()) fail(std::string(nd == 2 ? "kernel" : "bias") + ": expected a writeable array");
        need_aligned(a, nd == 2 ? "kernel" : "bias");
        return a;
    }

    static py::array_t<std::int64_t> exact_idx(py::handle h, const char* name = "idx") {
        if (!py::isinstance<py::array>(h)) throw py::type_error(std::string(name) + ": expected an int64 array");
        const auto a = py::reinterpret_borrow<py::array>(h);
        if (!py::isinstance<py::array_t<std::int64_t>>(a) || !(a.flags() & py::array::c_style) || !aligned(a))
            throw py::type_error(std::string(name) + ": expected an aligned C-contiguous int64 array");
        return py::reinterpret_borrow<py::array_t<std::int64_t>>(a);
    }

    void check_xy(const Arr<T>& x, const Arr<T>& y, std::size_t min_rows) const {
        need_ndim(x, 2, "x", "(samples, input_dim)");
        need_ndim(y, 2, "y", "(samples, outputs)");
        const auto& L = net_->layers();
        if (std::size_t(x.shape(1)) != L.front().in || std::size_t(y.shape(1)) != L.back().out ||
            x.shape(0) != y.shape(0) || std::size_t(x.shape(0)) < min_rows)
            fail("x, y: shapes " + shape_str(x) + ", " + shape_str(y) + " do not fit this network");
    }

    std::vector<Arr<T>> params_;  // keeps the live arrays alive while net_ holds their pointers
    std::vector<Arr<T>> slot_arrays_;  // likewise the optimizer's slots
    std::unique_ptr<fg::Net<T>> net_;
    std::vector<std::int64_t> idx_, batches_;
};

}  // namespace fgpy
