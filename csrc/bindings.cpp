// Thin pybind11 bindings: check the arrays, take their pointers, release the GIL, call.
// Every kernel is bound for float and double; an overload takes arrays of exactly its dtype
// (noconvert), except `x` of dense_forward, which converts (lists, ints, non-contiguous input).
// Arrays reach the kernels only C-contiguous and aligned (a misaligned double* is undefined).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bind_checks.hpp"
#include "bind_net.hpp"
#include "dense.hpp"
#include "kernels.hpp"
#include "runtime.hpp"
#include "sampler.hpp"


namespace {

using namespace fgpy;

template <class T>
Arr<T> dense_forward_t(const Arr<T>& x, const Arr<T>& k, const std::optional<Arr<T>>& b, int act, bool check_finite) {
    const auto [n, in, out] = check_dense<T>(x, k, b);
    const fg::Activation a = to_act(act);
    const T* xp = x.data();
    if (check_finite && !fg::all_finite(xp, n * in)) fail("x: contains NaN or inf");
    Arr<T> y({n, out});
    const T* kp = k.data();
    const T* bp = b ? b->data() : nullptr;
    T* yp = y.mutable_data();
    fg::RunGuard guard;
    py::gil_scoped_release nogil;
    fg::layer_forward(yp, xp, kp, bp, n, in, out, a);
    return y;
}

// One entry for both dtypes: the kernel's dtype decides; x is converted to it when needed.
py::array dense_forward(py::handle x, py::array k, py::object b, int act, bool check_finite) {
    if (is_exact<float>(k)) {
        std::optional<Arr<float>> bb;
        if (!b.is_none()) bb = exact<float>(py::reinterpret_borrow<py::array>(b), "bias");
        return dense_forward_t<float>(as_input<float>(x), exact<float>(k, "kernel"), bb, act, check_finite);
    }
    if (is_exact<double>(k)) {
        std::optional<Arr<double>> bb;
        if (!b.is_none()) bb = exact<double>(py::reinterpret_borrow<py::array>(b), "bias");
        return dense_forward_t<double>(as_input<double>(x), exact<double>(k, "kernel"), bb, act, check_finite);
    }
    throw py::type_error("kernel: expected an aligned C-contiguous float32 or float64 array");
}

template <class T>
py::tuple dense_backward(const Arr<T>& dy, const Arr<T>& x, const Arr<T>& k, const Arr<T>& y, bool has_bias, int act,
                         bool need_dx) {
    need_aligned(dy, "dy");
    need_aligned(x, "x");
    need_aligned(k, "kernel");
    need_aligned(y, "y");
    const auto [n, in, out] = check_dense<T>(x, k, std::nullopt);
    const fg::Activation a = to_act(act);
    need_ndim(dy, 2, "dy", "(batch, units)");
    need_ndim(y, 2, "y", "(batch, units)");
    if (std::size_t(dy.shape(0)) != n || std::size_t(dy.shape(1)) != out)
        fail("dy: expected shape (" + std::to_string(n) + ", " + std::to_string(out) + "), got " + shape_str(dy));
    if (std::size_t(y.shape(0)) != n || std::size_t(y.shape(1)) != out)
        fail("y: expected shape (" + std::to_string(n) + ", " + std::to_string(out) + "), got " + shape_str(y));
    Arr<T> dk({in, out});
    py::object dx = py::none(), db = py::none();
    T* dxp = nullptr;
    T* dbp = nullptr;
    if (need_dx) {
        Arr<T> t({n, in});
        dxp = t.mutable_data();
        dx = t;
    }
    if (has_bias) {
        Arr<T> t(static_cast<py::ssize_t>(out));
        dbp = t.mutable_data();
        db = t;
    }
    Arr<T> dz({n, out});  // the backward pass turns dY into dZ in place
    T* dzp = dz.mutable_data();
    if (n > 0 && out > 0) std::memcpy(dzp, dy.data(), n * out * sizeof(T));
    const T *xp = x.data(), *kp = k.data(), *yp = y.data();
    T* dkp = dk.mutable_data();
    {
        fg::RunGuard guard;
        py::gil_scoped_release nogil;
        fg::layer_backward(dxp, dkp, dbp, dzp, xp, kp, yp, n, in, out, a);
    }
    return py::make_tuple(dx, dk, db);
}

template <class T>
void same_shape(const Arr<T>& p, const Arr<T>& t) {
    need_aligned(p, "pred");
    need_aligned(t, "target");
    if (p.ndim() != t.ndim() || !std::equal(p.shape(), p.shape() + p.ndim(), t.shape()))
        fail("target: expected the shape of pred " + shape_str(p) + ", got " + shape_str(t));
    if (p.size() == 0) fail("pred: expected at least one element, got shape " + shape_str(p));
}

template <class T>
double mse(const Arr<T>& p, const Arr<T>& t) {
    same_shape<T>(p, t);
    return double(fg::mse_forward(p.data(), t.data(), std::size_t(p.size())));
}

template <class T>
Arr<T> mse_grad(const Arr<T>& p, const Arr<T>& t) {
    same_shape<T>(p, t);
    Arr<T> dp(std::vector<py::ssize_t>(p.shape(), p.shape() + p.ndim()));
    fg::mse_forward_backward(dp.mutable_data(), p.data(), t.data(), std::size_t(p.size()));
    return dp;
}

// In place: w must be exactly a writeable C-contiguous array of T (noconvert), never a copy, and
// share no memory with g (the kernel's pointers are __restrict).
template <class T>
double sgd_update(Arr<T> w, const Arr<T>& g, double lr) {
    need_aligned(w, "w");
    need_aligned(g, "g");
    if (!w.writeable()) fail("w: expected a writeable array");
    if (w.ndim() != g.ndim() || !std::equal(w.shape(), w.shape() + w.ndim(), g.shape()))
        fail("g: expected the shape of w " + shape_str(w) + ", got " + shape_str(g));
    T* wp = w.mutable_data();
    const T* gp = g.data();
    const std::size_t count = std::size_t(w.size());
    if (count && wp < gp + count && gp < wp + count) fail("g: expected an array that shares no memory with w");
    return fg::sgd_update(wp, gp, T(lr), count);
}

template <class T>
void bind_dtype(py::module_& m, const char* net_name) {
    m.def("dense_backward", &dense_backward<T>, py::arg("dy").noconvert(), py::arg("x").noconvert(),
          py::arg("kernel").noconvert(), py::arg("y").noconvert(), py::arg("has_bias"), py::arg("activation"),
          py::arg("need_dx"));
    m.def("mse", &mse<T>, py::arg("pred").noconvert(), py::arg("target").noconvert());
    m.def("mse_grad", &mse_grad<T>, py::arg("pred").noconvert(), py::arg("target").noconvert());
    m.def("sgd_update", &sgd_update<T>, py::arg("w").noconvert(), py::arg("g").noconvert(), py::arg("learning_rate"));
    py::class_<PyNet<T>>(m, net_name)
        .def(py::init<std::vector<Arr<T>>, std::vector<bool>, std::vector<int>, std::size_t, bool>(),
             py::arg("params").noconvert(), py::arg("has_bias"), py::arg("activations"), py::arg("rows"),
             py::arg("gather"))
        .def("rebind", &PyNet<T>::rebind, py::arg("params").noconvert())
        .def("step", &PyNet<T>::step, py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("idx"),
             py::arg("learning_rate"))
        .def_property_readonly("rows", &PyNet<T>::rows)
        .def("set_optimizer", &PyNet<T>::set_optimizer, py::arg("kind"), py::arg("params"), py::arg("schedule"),
             py::arg("slots"), py::arg("iterations"))
        .def_property_readonly("iterations", &PyNet<T>::iterations)
        .def_property_readonly("plain", &PyNet<T>::plain)
        .def("validate", &PyNet<T>::validate, py::arg("x").noconvert(), py::arg("y").noconvert())
        .def("fit_run", &PyNet<T>::fit_run, py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("draw"),
             py::arg("shuffle"), py::arg("learning_rate"), py::arg("rules"), py::arg("every"),
             py::arg("catch_sigint") = true, py::arg("val_rules") = std::vector<bool>{},
             py::arg("batches") = py::none(), py::arg("validation") = py::none(), py::arg("val_every") = 0,
             py::arg("restore_best") = false, py::arg("best_on_val") = false, py::arg("progress") = py::none(),
             py::arg("progress_every") = 0);
}

// The team's parts: as many as the BLAS would use threads (what the products had before the team
// took them over), else the CPUs; at most fg::kMaxParts.
std::size_t default_team_parts() {
    long n = 0;
#ifdef FASTGRAD_BLAS
    const fg::Blas& b = fg::active_blas();
    if (b.get_threads) n = b.get_threads();
    else if (!b.path.empty()) n = 1;  // a BLAS we cannot hold to one thread: no team
#endif
    if (n <= 0) n = long(std::thread::hardware_concurrency());
    return std::size_t(std::clamp<long>(n, 1, long(fg::kMaxParts)));
}

// Settings change only while no run or kernel call is in progress (fg::RunGuard): they are read
// without the GIL.  A setter holds the GIL, and a run counts itself in while it holds it.
void settings_change(const char* what) {
    if (fg::runs_active().load() != 0)
        throw std::runtime_error(std::string(what) + ": cannot change while a fit or kernel call is running");
}

template <class F>
void setting(py::module_& m, const char* name, std::atomic<std::size_t>& (*var)(), std::size_t lo, std::size_t hi,
             const char* doc, F&& after) {
    m.def((std::string("get_") + name).c_str(), [var]() { return var().load(); }, doc);
    m.def(
        (std::string("set_") + name).c_str(),
        [var, name, lo, hi, after](std::size_t v) {
            if (v < lo || v > hi)
                fail(std::string(name) + ": expected " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                     std::to_string(v));
            settings_change(name);
            var().store(v);
            after();
        },
        py::arg("value"), "for tests and measurements; refused while a run is active");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastgrad's compiled kernels (private; use fastgrad.ops and fastgrad.fit)";
    m.attr("__version__") = FASTGRAD_VERSION;
    m.attr("has_blas") = fg::has_blas();
    auto blas_changed = [](const char* what) {
        settings_change(what);
        return [] { fg::team_parts() = default_team_parts(); };
    };
#ifdef FASTGRAD_BLAS
    m.def("use_shared_blas", [blas_changed]() {
              auto done = blas_changed("use_shared_blas");
              std::string path = fg::find_shared_blas();
              done();
              return path;
          },
          "call NumPy's OpenBLAS (one thread pool in the process) when the process has it; returns its "
          "path, or '' (and nothing changes)");
    m.def(
        "use_fallback_blas",
        [blas_changed](const std::string& path) {
            auto done = blas_changed("use_fallback_blas");
            const std::string err = fg::load_fallback_blas(path);
            if (!err.empty()) throw py::value_error("cannot use " + path + " as fastgrad's BLAS: " + err);
            done();
        },
        py::arg("path"), "open scipy-openblas32's library at path and call it (raises ValueError if it cannot)");
    m.def("use_no_blas", [blas_changed]() {
              auto done = blas_changed("use_no_blas");
              fg::active_blas() = fg::Blas{};
              done();
          }, "every product on the plain loops (for tests)");
    m.def("blas_in_use", []() {
        const fg::Blas& b = fg::active_blas();
        if (b.path.empty()) return std::string("none (plain loops)");
        return b.sgemm64 ? b.path : b.path + " (scipy-openblas32, the fallback)";
    });
#else
    (void)blas_changed;
    m.def("use_shared_blas", []() { return std::string(); });
    m.def("use_fallback_blas", [](const std::string&) {}, py::arg("path"));
    m.def("use_no_blas", []() {});
    m.def("blas_in_use", []() { return std::string("none (plain loops)"); });
#endif
    fg::team_parts() = default_team_parts();
    setting(m, "team_parts", &fg::team_parts, 1, fg::kMaxParts,
            "how many parts (threads) the team step splits a step into; 1: no team", [] {});
    setting(m, "team_min_work", &fg::team_min_work, 0, SIZE_MAX,
            "steps whose largest layer does fewer multiply-adds (rows * in * out) run without the team", [] {});
    setting(m, "team_rows_split", &fg::team_rows_split, 0, SIZE_MAX,
            "batches of more rows than this are cut by rows on the team (each thread a block of the batch)", [] {});
    setting(m, "blas_min_work", &fg::blas_min_work, 0, SIZE_MAX,
            "products of fewer multiply-adds than this run in the plain loops", [] {});
    m.def("team_steps_run", []() { return fg::team_steps_run().load(); },
          "how many steps have run on the team in this process (for tests)");
    m.def("get_blas_threads", []() {
#ifdef FASTGRAD_BLAS
              const fg::Blas& b = fg::active_blas();
              return b.get_threads ? b.get_threads() : -1;
#else
              return -1;
#endif
          }, "the BLAS's thread count now (-1: unknown); a run on the team sets it to 1 meanwhile");
    m.def("all_finite", &all_finite_of, py::arg("a"), "whether every element is finite");
    m.def("learning_rate", [](const py::tuple& schedule, long long step, bool float64) {
              const fg::Schedule s = schedule_of(schedule);
              return float64 ? fg::learning_rate_at<double>(s, step) : double(fg::learning_rate_at<float>(s, step));
          }, py::arg("schedule"), py::arg("step"), py::arg("float64"),
          "a schedule's rate after `step` updates, as the loops compute it (fastgrad.schedules)");
    m.def("fast_data", &fast_data, py::arg("x"), py::arg("y"), py::arg("float64"), py::arg("outputs"),
          "y as (samples, outputs) when x and y need no conversion and pass every check of "
          "fastgrad._validation's data check, else None (which then converts, or names what is wrong)");
    m.def("seed_state", [](std::uint64_t seed) {
        std::uint64_t st[4];
        fg::seed_sequence_state(seed, st);
        return py::make_tuple(st[0], st[1], st[2], st[3]);
    }, py::arg("seed"), "NumPy's SeedSequence(seed).generate_state(4, np.uint64), for 0 <= seed < 2**64");
    m.def("dense_forward", &dense_forward, py::arg("x"), py::arg("kernel").noconvert(), py::arg("bias").none(true),
          py::arg("activation"), py::arg("check_finite") = false);
    py::class_<fg::Sampler>(m, "Sampler", "batch indices from a seed; see csrc/sampler.hpp")
        .def(py::init([](py::array_t<std::uint64_t, py::array::c_style> state, std::size_t n, std::size_t k, bool shuffle) {
                 if (state.size() != 4) fail("state: expected 4 words");
                 if (n == 0 || k == 0 || k > n) fail("k: expected 1 <= k <= n");
                 return new fg::Sampler(state.data(), n, k, shuffle);
             }),
             py::arg("state"), py::arg("n"), py::arg("k"), py::arg("shuffle"))
        .def_static("from_seed", [](std::uint64_t seed, std::size_t n, std::size_t k, bool shuffle) {
                 if (n == 0 || k == 0 || k > n) fail("k: expected 1 <= k <= n");
                 std::uint64_t state[4];
                 fg::seed_sequence_state(seed, state);
                 return new fg::Sampler(state, n, k, shuffle);
             }, py::arg("seed"), py::arg("n"), py::arg("k"), py::arg("shuffle"),
             "the sampler of Sampler(SeedSequence(seed).generate_state(4, uint64), n, k, shuffle)")
        .def("fill", [](fg::Sampler& s, py::array_t<std::int64_t, py::array::c_style> out) {
                 if (out.ndim() != 2 || std::size_t(out.shape(1)) != s.k() || !out.writeable() || !aligned(out))
                     fail("out: expected a writeable aligned (steps, k) int64 array");
                 std::int64_t* p = out.mutable_data();
                 const std::size_t steps = std::size_t(out.shape(0));
                 py::gil_scoped_release nogil;
                 for (std::size_t i = 0; i < steps; ++i) s.draw(p + i * s.k());
             }, py::arg("out").noconvert(), "draw the next out.shape[0] batches into out");
    bind_dtype<float>(m, "NetF32");
    bind_dtype<double>(m, "NetF64");
}
