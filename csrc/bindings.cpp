// Thin pybind11 bindings: check shapes, allocate outputs, take pointers, release the GIL, call.
// Every kernel is bound for float and double; an overload takes arrays of exactly its dtype
// (noconvert), except `x` of dense_forward, which converts (lists, ints, non-contiguous input).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <signal.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <tuple>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kernels.hpp"
#include "net.hpp"

namespace py = pybind11;

namespace {

template <class T>
using Arr = py::array_t<T, py::array::c_style>;
template <class T>
using ArrIn = py::array_t<T, py::array::c_style | py::array::forcecast>;
using Idx = py::array_t<std::int64_t, py::array::c_style>;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        s += std::to_string(a.shape(d));
        if (a.ndim() == 1 || d + 1 < a.ndim()) s += d + 1 < a.ndim() ? ", " : ",";
    }
    return s + ")";
}

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

// Ctrl-C during a native run: a C-level SIGINT handler (the first of concurrent runs installs
// it, the last puts Python's back) counts the signals; the loop reads the count between
// stretches of steps, without the GIL.  A Ctrl-C during the run is therefore the run's
// ("interrupted"), and Python never sees it.
//
// The handler goes in at the run's first poll (about a millisecond of work in), not at its
// start: installing and restoring it are two system calls, half of what a short run's call
// costs on a virtual machine.  A Ctrl-C that came before it was taken by Python's own handler,
// so the first poll also asks Python (with the GIL, once) whether one is pending, and takes it.
// A run too short to reach a poll is never interrupted: a Ctrl-C during it reaches Python as
// usual, as a KeyboardInterrupt once the run has returned.  Only a run on Python's main thread
// catches it (Python runs its signal handlers there alone): a run on another thread leaves
// Ctrl-C to the main thread, as the Python loop does.
std::atomic<unsigned> g_sigints{0};
std::mutex g_sigint_mu;
int g_sigint_users = 0;
struct sigaction g_sigint_old;

extern "C" void fg_count_sigint(int) { g_sigints.fetch_add(1, std::memory_order_relaxed); }

class SigintCatch {
  public:
    // active: whether to catch Ctrl-C at all (false: hit() is always false)
    explicit SigintCatch(bool active) : active_(active) {}
    // A Ctrl-C that came after the run's last poll was not acted on: once the previous handler
    // is back, it is raised again for that handler (Python's raises KeyboardInterrupt when the
    // run returns, as for a run too short to poll), instead of being lost.
    ~SigintCatch() {
        if (!installed_) return;
        bool last;
        {
            std::lock_guard<std::mutex> lock(g_sigint_mu);
            last = --g_sigint_users == 0;
            if (last) sigaction(SIGINT, &g_sigint_old, nullptr);
        }
        if (last && !reported_ && (early_ || g_sigints.load(std::memory_order_relaxed) != start_)) raise(SIGINT);
    }
    SigintCatch(const SigintCatch&) = delete;
    SigintCatch& operator=(const SigintCatch&) = delete;
    // Whether a Ctrl-C came during the run.  Called without the GIL, from the thread that
    // released it; the first call installs the handler.
    bool hit() {
        if (!active_) return false;
        if (!installed_) install();
        return early_ || g_sigints.load(std::memory_order_relaxed) != start_;
    }

    // The run stopped as interrupted: the Ctrl-C was acted on.
    void reported() { reported_ = true; }

  private:
    [[gnu::noinline, gnu::cold]] void install() {
        start_ = g_sigints.load(std::memory_order_relaxed);  // before: a signal just after counts
        {
            std::lock_guard<std::mutex> lock(g_sigint_mu);
            if (g_sigint_users++ == 0) {
                struct sigaction sa {};
                sa.sa_handler = fg_count_sigint;
                sigemptyset(&sa.sa_mask);
                sigaction(SIGINT, &sa, &g_sigint_old);
            }
        }
        installed_ = true;
        py::gil_scoped_acquire gil;  // a Ctrl-C before the handler went in: Python's, pending
        early_ = PyOS_InterruptOccurred() != 0;
    }

    unsigned start_ = 0;
    bool active_, installed_ = false, early_ = false, reported_ = false;
};

// Memory for the records a native run hands to NumPy.  A buffer NumPy frees comes back here and
// is kept (up to kKeepBytes in all) for the next run: its pages are already mapped.  A fresh page
// costs a fault on its first write, about 2 µs on this virtual machine: a 100,000-step run of W1
// took 617 faults and ran at 27 ns a step, against 13 ns for runs that take none.  The cache is
// never destroyed (NumPy may free an array after static destructors run); the system takes it at
// exit.  Each block starts with a kHeader-byte header holding its capacity.
class RecordMemory {
  public:
    static RecordMemory& get() {
        static RecordMemory* m = new RecordMemory;
        return *m;
    }
    // At least `bytes` usable bytes: the smallest kept block that fits, else a new one.
    void* take(std::size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            std::size_t best = free_.size();
            for (std::size_t j = 0; j < free_.size(); ++j)
                if (cap_of(free_[j]) >= bytes && (best == free_.size() || cap_of(free_[j]) < cap_of(free_[best])))
                    best = j;
            if (best < free_.size()) {
                char* h = free_[best];
                free_[best] = free_.back();
                free_.pop_back();
                kept_ -= cap_of(h);
                return h + kHeader;
            }
        }
        char* h = static_cast<char*>(std::malloc(kHeader + bytes));
        if (!h) throw std::bad_alloc();
        std::memcpy(h, &bytes, sizeof bytes);
        return h + kHeader;
    }
    static std::size_t capacity(const void* p) { return cap_of(static_cast<const char*>(p) - kHeader); }
    // Blocks under kMinKeep bytes are freed (malloc serves them from memory already mapped), and
    // at most kKeepBlocks are kept, so that take() scans a short list: with no cap, 100,000 kept
    // results dropped at once left as many tiny blocks, and every later run paid a scan of them
    // (a 10-step fit went from 46 µs to 30 ms).
    void give(void* p) {
        if (!p) return;
        char* h = static_cast<char*>(p) - kHeader;
        if (cap_of(h) >= kMinKeep) {
            std::lock_guard<std::mutex> lock(mu_);
            if (free_.size() < kKeepBlocks && kept_ + cap_of(h) <= kKeepBytes) {
                free_.push_back(h);
                kept_ += cap_of(h);
                return;
            }
        }
        std::free(h);
    }

  private:
    static constexpr std::size_t kHeader = 64, kKeepBytes = std::size_t(32) << 20, kKeepBlocks = 64,
                                 kMinKeep = 4096;
    static std::size_t cap_of(const char* h) {
        std::size_t c;
        std::memcpy(&c, h, sizeof c);
        return c;
    }
    std::mutex mu_;
    std::vector<char*> free_;  // headers of kept blocks
    std::size_t kept_ = 0;
};

// A growable buffer of trivially copyable values in RecordMemory, handed to NumPy without a copy
// by as_array.
template <class V>
class Grow {
  public:
    Grow() = default;
    Grow(const Grow&) = delete;
    Grow& operator=(const Grow&) = delete;
    ~Grow() { RecordMemory::get().give(p_); }
    V* data() { return p_; }
    void reserve(std::size_t n) {
        if (n <= cap_) return;
        move_to(std::max(n, cap_ * 2), cap_);
    }
    // the first `count` values as a NumPy array of `shape` (its product is count); the array owns them
    py::array_t<V> as_array(std::vector<py::ssize_t> shape, std::size_t count) {
        if (!p_ || cap_ > 2 * count + 64) move_to(std::max<std::size_t>(count, 1), count);  // a run that stopped early
        V* p = p_;
        p_ = nullptr;
        cap_ = 0;
        py::capsule owner(p, [](void* q) { RecordMemory::get().give(q); });
        return py::array_t<V>(shape, p, owner);
    }

  private:
    // into a block of at least n values, keeping the first `keep`
    void move_to(std::size_t n, std::size_t keep) {
        V* q = static_cast<V*>(RecordMemory::get().take(n * sizeof(V)));
        if (p_ && keep) std::memcpy(q, p_, keep * sizeof(V));
        RecordMemory::get().give(p_);
        p_ = q;
        cap_ = RecordMemory::capacity(q) / sizeof(V);
    }
    V* p_ = nullptr;
    std::size_t cap_ = 0;
};

// Hot paths take py::array and check it here: pybind11's array_t caster goes through
// PyArray_FromAny on every call (about 0.7 µs an argument), these checks read the header.
template <class T>
bool is_exact(const py::array& a) {
    static const int num = py::dtype::of<T>().num();
    return a.dtype().num() == num && (a.flags() & py::array::c_style) && a.dtype().byteorder() != '>';
}

template <class T>
Arr<T> exact(const py::array& a, const char* name, const char* dtype) {
    if (!is_exact<T>(a))
        throw py::type_error(std::string(name) + ": expected a C-contiguous " + dtype + " array");
    return py::reinterpret_borrow<Arr<T>>(a);
}

// x for a forward pass: any numeric array-like, converted (a copy) only when it must be
template <class T>
Arr<T> as_input(py::handle x) {
    if (py::isinstance<py::array>(x)) {
        auto a = py::reinterpret_borrow<py::array>(x);
        if (is_exact<T>(a)) return py::reinterpret_borrow<Arr<T>>(a);
    }
    ArrIn<T> conv = ArrIn<T>::ensure(x);  // converts lists, ints, strided views; null if it cannot
    if (!conv) throw py::type_error("x: expected a numeric array");
    return py::reinterpret_borrow<Arr<T>>(conv);
}

// Whether every element of a C-contiguous float32 or float64 array is finite (TypeError otherwise).
bool all_finite_of(const py::array& a) {
    if (is_exact<float>(a)) return fg::all_finite(static_cast<const float*>(a.data()), std::size_t(a.size()));
    if (is_exact<double>(a)) return fg::all_finite(static_cast<const double*>(a.data()), std::size_t(a.size()));
    throw py::type_error("a: expected a C-contiguous float32 or float64 array");
}

// The common case of fastgrad._validation.data in one call: x and y exact arrays (not subclasses)
// of the model's dtype, C-contiguous, x (n, d) with n, d > 0, y (n,) or (n, outputs), both
// finite.  Returns y as (n, outputs), or None when anything differs (data() then does it in
// Python, converting or raising the error that names the problem).
py::object fast_data(py::handle xh, py::handle yh, bool f64, py::ssize_t outputs) {
    auto& api = py::detail::npy_api::get();
    if (Py_TYPE(xh.ptr()) != api.PyArray_Type_ || Py_TYPE(yh.ptr()) != api.PyArray_Type_) return py::none();
    const auto x = py::reinterpret_borrow<py::array>(xh);
    auto y = py::reinterpret_borrow<py::array>(yh);
    const bool exact = f64 ? is_exact<double>(x) && is_exact<double>(y) : is_exact<float>(x) && is_exact<float>(y);
    if (!exact || x.ndim() != 2 || x.shape(0) == 0 || x.shape(1) == 0) return py::none();
    const py::ssize_t n = x.shape(0);
    if (!(y.ndim() == 1 && outputs == 1 && y.shape(0) == n) && !(y.ndim() == 2 && y.shape(0) == n && y.shape(1) == outputs))
        return py::none();
    if (!all_finite_of(x) || !all_finite_of(y)) return py::none();
    if (y.ndim() == 2) return y;
    return y.reshape({n, py::ssize_t(1)});
}

void need_ndim(const py::array& a, py::ssize_t nd, const char* name, const char* layout) {
    if (a.ndim() != nd)
        fail(std::string(name) + ": expected a " + std::to_string(nd) + "-D array " + layout +
             ", got shape " + shape_str(a));
}

fg::Activation to_act(int a) {
    if (a != 0 && a != 1) fail("activation: expected 0 (linear) or 1 (relu), got " + std::to_string(a));
    return static_cast<fg::Activation>(a);
}

struct DenseShape {
    std::size_t n, in, out;
};

template <class T>
DenseShape check_dense(const py::array& x, const Arr<T>& k, const std::optional<Arr<T>>& b) {
    need_ndim(x, 2, "x", "(batch, input_dim)");
    need_ndim(k, 2, "kernel", "(input_dim, units)");
    if (x.shape(1) != k.shape(0))
        fail("x: expected " + std::to_string(k.shape(0)) + " columns to match kernel " +
             shape_str(k) + ", got shape " + shape_str(x));
    if (b) {
        need_ndim(*b, 1, "bias", "(units,)");
        if (b->shape(0) != k.shape(1))
            fail("bias: expected shape (" + std::to_string(k.shape(1)) + ",) to match kernel " +
                 shape_str(k) + ", got " + shape_str(*b));
    }
    return {std::size_t(x.shape(0)), std::size_t(k.shape(0)), std::size_t(k.shape(1))};
}

template <class T>
Arr<T> dense_forward_t(Arr<T> x, Arr<T> k, std::optional<Arr<T>> b, int act, bool check_finite);

// One entry for both dtypes: the kernel's dtype decides; x is converted to it when needed.
py::array dense_forward(py::handle x, py::array k, py::object b, int act, bool check_finite) {
    if (is_exact<float>(k)) {
        std::optional<Arr<float>> bb;
        if (!b.is_none()) bb = exact<float>(py::reinterpret_borrow<py::array>(b), "bias", "float32");
        return dense_forward_t<float>(as_input<float>(x), exact<float>(k, "kernel", "float32"), bb, act, check_finite);
    }
    if (is_exact<double>(k)) {
        std::optional<Arr<double>> bb;
        if (!b.is_none()) bb = exact<double>(py::reinterpret_borrow<py::array>(b), "bias", "float64");
        return dense_forward_t<double>(as_input<double>(x), exact<double>(k, "kernel", "float64"), bb, act, check_finite);
    }
    throw py::type_error("kernel: expected a C-contiguous float32 or float64 array");
}

template <class T>
Arr<T> dense_forward_t(Arr<T> x, Arr<T> k, std::optional<Arr<T>> b, int act, bool check_finite) {
    const auto [n, in, out] = check_dense<T>(x, k, b);
    const fg::Activation a = to_act(act);
    const T* xp = x.data();
    if (check_finite && !fg::all_finite(xp, n * in)) fail("x: contains NaN or inf");
    Arr<T> y({n, out});
    const T* kp = k.data();
    const T* bp = b ? b->data() : nullptr;
    T* yp = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        fg::dense_forward(yp, xp, kp, bp, n, in, out, a);
    }
    return y;
}

template <class T>
py::tuple dense_backward(Arr<T> dy, Arr<T> x, Arr<T> k, Arr<T> y, bool has_bias, int act, bool need_dx) {
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
    std::vector<T> dz(a == fg::Activation::relu ? n * out : 0);
    const T *dyp = dy.data(), *xp = x.data(), *kp = k.data(), *yp = y.data();
    T* dkp = dk.mutable_data();
    {
        py::gil_scoped_release nogil;
        fg::dense_backward(dxp, dkp, dbp, dz.data(), dyp, xp, kp, yp, n, in, out, a);
    }
    return py::make_tuple(dx, dk, db);
}

template <class T>
void same_shape(const Arr<T>& p, const Arr<T>& t) {
    if (p.ndim() != t.ndim() || !std::equal(p.shape(), p.shape() + p.ndim(), t.shape()))
        fail("target: expected the shape of pred " + shape_str(p) + ", got " + shape_str(t));
    if (p.size() == 0) fail("pred: expected at least one element, got shape " + shape_str(p));
}

template <class T>
double mse(Arr<T> p, Arr<T> t) {
    same_shape<T>(p, t);
    return double(fg::mse_forward(p.data(), t.data(), std::size_t(p.size())));
}

template <class T>
Arr<T> mse_grad(Arr<T> p, Arr<T> t) {
    same_shape<T>(p, t);
    std::vector<py::ssize_t> shape(p.shape(), p.shape() + p.ndim());
    Arr<T> dp(shape);
    fg::mse_backward(dp.mutable_data(), p.data(), t.data(), std::size_t(p.size()));
    return dp;
}

// In place: w must be exactly a writeable C-contiguous array of T (noconvert), never a copy.
template <class T>
double sgd_update(Arr<T> w, Arr<T> g, double lr) {
    if (!w.writeable()) fail("w: expected a writeable array");
    if (w.ndim() != g.ndim() || !std::equal(w.shape(), w.shape() + w.ndim(), g.shape()))
        fail("g: expected the shape of w " + shape_str(w) + ", got " + shape_str(g));
    T* wp = w.mutable_data();
    const T* gp = g.data();
    return fg::sgd_update(wp, gp, T(lr), std::size_t(w.size()));
}

// ---------------------------------------------------------------------------------------------
// Net: the parameters of a Sequential (live NumPy arrays, updated in place), gradient arrays of
// the same shapes, and scratch for a fixed number of batch rows.
// ---------------------------------------------------------------------------------------------
template <class T>
class Net {
  public:
    Net(std::vector<Arr<T>> params, std::vector<bool> has_bias, std::vector<int> acts, std::size_t rows,
        bool gather)
        : params_(std::move(params)), rows_(rows), gather_(gather) {
        if (has_bias.size() != acts.size() || acts.empty()) fail("acts: expected one entry per layer");
        std::size_t p = 0;
        for (std::size_t l = 0; l < acts.size(); ++l) {
            const std::size_t np = has_bias[l] ? 2 : 1;
            if (p + np > params_.size()) fail("params: fewer arrays than the layers need");
            Arr<T>& k = params_[p];
            need_ndim(k, 2, "kernel", "(input_dim, units)");
            if (!k.writeable()) fail("kernel: expected a writeable array");
            fg::DenseView<T> v{};
            v.in = std::size_t(k.shape(0));
            v.out = std::size_t(k.shape(1));
            if (l > 0 && v.in != layers_.back().out) fail("params: layer widths do not chain");
            v.act = to_act(acts[l]);
            v.k = k.mutable_data();
            Arr<T> dk({v.in, v.out});
            v.dk = dk.mutable_data();
            grads_.push_back(dk);
            if (has_bias[l]) {
                Arr<T>& b = params_[p + 1];
                need_ndim(b, 1, "bias", "(units,)");
                if (std::size_t(b.shape(0)) != v.out) fail("bias: does not match its kernel");
                if (!b.writeable()) fail("bias: expected a writeable array");
                v.b = b.mutable_data();
                Arr<T> db(static_cast<py::ssize_t>(v.out));
                v.db = db.mutable_data();
                grads_.push_back(db);
            }
            layers_.push_back(v);
            p += np;
        }
        if (p != params_.size()) fail("params: more arrays than the layers need");
        scratch_.resize(layers_, rows_, gather_);
    }

    // Train the parameter arrays that replaced ours (set_weights makes new ones), of the same
    // shapes: the gradient and scratch buffers stay.  Everything is checked before anything changes.
    void rebind(std::vector<Arr<T>> params) {
        if (params.size() != params_.size())
            fail("params: expected " + std::to_string(params_.size()) + " arrays, got " + std::to_string(params.size()));
        for (std::size_t p = 0; p < params.size(); ++p) {
            const Arr<T>& a = params[p];
            const Arr<T>& was = params_[p];
            if (a.ndim() != was.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), was.shape()))
                fail("params[" + std::to_string(p) + "]: expected shape " + shape_str(was) + ", got " + shape_str(a));
            if (!a.writeable()) fail("params[" + std::to_string(p) + "]: expected a writeable array");
        }
        params_ = std::move(params);
        std::size_t p = 0;
        for (auto& L : layers_) {
            L.k = params_[p++].mutable_data();
            if (L.b) L.b = params_[p++].mutable_data();
        }
    }

    std::size_t in_dim() const { return layers_.front().in; }
    std::size_t rows() const { return rows_; }
    std::size_t out_dim() const { return layers_.back().out; }

    void check_xy(const Arr<T>& x, const Arr<T>& y, std::size_t min_rows) const {
        need_ndim(x, 2, "x", "(samples, input_dim)");
        need_ndim(y, 2, "y", "(samples, outputs)");
        if (std::size_t(x.shape(1)) != in_dim() || std::size_t(y.shape(1)) != out_dim() ||
            x.shape(0) != y.shape(0) || std::size_t(x.shape(0)) < min_rows)
            fail("x, y: shapes " + shape_str(x) + ", " + shape_str(y) + " do not fit this network");
    }

    py::tuple step(const py::array& xa, const py::array& ya, py::handle idxh, double lr) {
        const Arr<T> x = exact<T>(xa, "x", dtype_name());
        const Arr<T> y = exact<T>(ya, "y", dtype_name());
        std::optional<Idx> idx;
        if (!idxh.is_none()) idx = exact<std::int64_t>(py::reinterpret_borrow<py::array>(idxh), "idx", "int64");
        const std::int64_t* ip = nullptr;
        std::size_t rows = rows_;
        if (idx) {
            if (!gather_) fail("idx: this Net was built for the full batch");
            if (idx->ndim() != 1 || std::size_t(idx->shape(0)) != rows_)
                fail("idx: expected shape (" + std::to_string(rows_) + ",), got " + shape_str(*idx));
            check_xy(x, y, 1);
            ip = idx->data();
            const auto n = x.shape(0);
            for (std::size_t r = 0; r < rows; ++r)
                if (ip[r] < 0 || ip[r] >= n) fail("idx: index " + std::to_string(ip[r]) + " out of range");
        } else {
            if (gather_) fail("idx: this Net draws batches; pass the batch indices");
            check_xy(x, y, rows_);
            if (std::size_t(x.shape(0)) != rows_) fail("x: expected " + std::to_string(rows_) + " rows");
        }
        const T* xp = x.data();
        const T* yp = y.data();
        fg::StepResult r;
        {
            py::gil_scoped_release nogil;
            r = fg::net_step(scratch_, layers_, xp, yp, ip, rows, T(lr));
        }
        return py::make_tuple(r.loss, r.grad_norm, r.weight_delta, r.bad_grad, r.bad_weight);
    }

    double value_and_grad(Arr<T> x, Arr<T> y) {
        check_xy(x, y, 1);
        const std::size_t rows = std::size_t(x.shape(0));
        if (rows > rows_) fail("x: more rows than this Net was built for");
        const T* xp = x.data();
        const T* yp = y.data();
        double loss;
        {
            py::gil_scoped_release nogil;
            loss = fg::net_value_and_grad(scratch_, layers_, xp, yp, rows);
        }
        return loss;
    }

    const std::vector<Arr<T>>& grads() const { return grads_; }

    // rules: (kind, tol, n) per rule, in the order they are tested; resets the loop state
    void set_rules(const std::vector<std::tuple<int, double, long long>>& rules) {
        rules_.clear();
        for (const auto& [kind, tol, n] : rules) {
            if (kind < 0 || kind > 4) fail("rules: unknown rule kind " + std::to_string(kind));
            rules_.push_back(fg::Rule{static_cast<fg::RuleKind>(kind), tol, n});
        }
        state_ = fg::LoopState{};
    }

    static const char* dtype_name() { return sizeof(T) == 4 ? "float32" : "float64"; }

    // A whole run of the native loop, the GIL released: the rules (kind, tol, n) in the order they
    // are tested, one of them MaxSteps; `draw` is None (the full batch), a seed (an int below
    // 2**64: the sampler of that seed) or a Sampler.  Returns (steps, stop, bad_grad, bad_weight,
    // loss (steps,), grad_norm (steps,), batches (steps, rows) or None, [weight rows (recorded,
    // *shape) per parameter] or None, their steps (recorded,) or None); stop as fg::ChunkResult's.
    py::tuple fit_run(const py::array& xa, const py::array& ya, py::handle draw, bool shuffle, double lr,
                      const std::vector<std::tuple<int, double, long long>>& rules, std::size_t every,
                      bool catch_sigint) {
        const Arr<T> x = exact<T>(xa, "x", dtype_name());
        const Arr<T> y = exact<T>(ya, "y", dtype_name());
        check_xy(x, y, 1);
        const std::size_t n = std::size_t(x.shape(0));
        std::unique_ptr<fg::Sampler> own;
        fg::Sampler* sampler = nullptr;
        if (!draw.is_none()) {
            if (!gather_) fail("draw: this Net was built for the full batch");
            if (py::isinstance<fg::Sampler>(draw)) {
                sampler = draw.cast<fg::Sampler*>();
                if (sampler->k() != rows_ || sampler->n() != n) fail("draw: a sampler for other sizes than this run");
            } else {
                if (rows_ > n) fail("draw: a batch larger than the data");
                std::uint64_t state[4];
                fg::seed_sequence_state(draw.cast<std::uint64_t>(), state);
                own = std::make_unique<fg::Sampler>(state, n, rows_, shuffle);
                sampler = own.get();
            }
        } else {
            if (gather_) fail("draw: this Net draws batches; pass a seed or a sampler");
            if (n != rows_) fail("x: expected " + std::to_string(rows_) + " rows");
        }
        set_rules(rules);
        const fg::RulePlan plan = fg::plan_rules(rules_);
        if (plan.limit_rule < 0) fail("rules: expected a MaxSteps rule");
        const std::size_t limit = std::size_t(plan.limit);
        // chunks of at most 65536 steps and 2**20 batch indices: the records grow chunk by chunk
        const std::size_t chunk = std::max<std::size_t>(1, std::min<std::size_t>(1 << 16, (1 << 20) / rows_));
        Grow<double> loss, norm;
        Grow<std::int64_t> idx;
        std::vector<std::unique_ptr<Grow<T>>> wrec;
        Grow<long long> wsteps;
        for (std::size_t p = 0; p < grads_.size(); ++p) wrec.push_back(std::make_unique<Grow<T>>());
        std::vector<T*> wp(grads_.size());
        std::size_t done = 0, recorded = 0;
        fg::ChunkResult r;
        const T* xp = x.data();
        const T* yp = y.data();
        {
            SigintCatch sigint(catch_sigint);
            auto poll = [&sigint]() { return sigint.hit(); };
            py::gil_scoped_release nogil;
            while (true) {
                const std::size_t nsteps = std::max<std::size_t>(1, std::min(chunk, limit > done ? limit - done : 1));
                loss.reserve(done + nsteps);
                norm.reserve(done + nsteps);
                if (sampler) idx.reserve((done + nsteps) * rows_);
                if (every) {
                    const std::size_t cap = recorded + nsteps / every + 1;
                    for (std::size_t p = 0; p < grads_.size(); ++p) {
                        wrec[p]->reserve(cap * std::size_t(grads_[p].size()));
                        wp[p] = wrec[p]->data() + recorded * std::size_t(grads_[p].size());
                    }
                    wsteps.reserve(cap);
                }
                r = run_native(xp, yp, sampler ? idx.data() + done * rows_ : nullptr, sampler, nsteps, T(lr),
                               loss.data() + done, norm.data() + done, every, wp.data(),
                               every ? wsteps.data() + recorded : nullptr, poll);
                done += r.steps;
                recorded += r.recorded;
                if (r.stop != -1) break;
                if (sigint.hit()) {
                    r.stop = -3;
                    break;
                }
            }
            if (r.stop == -3) sigint.reported();
        }
        py::object batches = py::none(), wlist = py::none(), wsteps_out = py::none();
        if (sampler) batches = idx.as_array({py::ssize_t(done), py::ssize_t(rows_)}, done * rows_);
        if (every) {
            py::list wl;
            for (std::size_t p = 0; p < grads_.size(); ++p) {
                std::vector<py::ssize_t> shape{py::ssize_t(recorded)};
                shape.insert(shape.end(), grads_[p].shape(), grads_[p].shape() + grads_[p].ndim());
                wl.append(wrec[p]->as_array(shape, recorded * std::size_t(grads_[p].size())));
            }
            wlist = wl;
            wsteps_out = wsteps.as_array({py::ssize_t(recorded)}, recorded);
        }
        return py::make_tuple(done, r.stop, r.bad_grad, r.bad_weight, loss.as_array({py::ssize_t(done)}, done),
                              norm.as_array({py::ssize_t(done)}, done), batches, wlist, wsteps_out);
    }

  private:
    // one chunk of the native loop over checked buffers (the caller released the GIL)
    template <class Poll>
    fg::ChunkResult run_native(const T* xp, const T* yp, std::int64_t* ip, fg::Sampler* sampler, std::size_t nsteps,
                               T lr, double* lp, double* gp, std::size_t every, T* const* wp, long long* sp,
                               Poll& poll) {
        std::size_t work = 0;
        for (const auto& L : layers_) work += L.in * L.out;
        work *= rows_;
        // poll for Ctrl-C about every millisecond of work
        const std::size_t poll_every = std::max<std::size_t>(1, std::size_t(1e6) / std::max<std::size_t>(work, 1));
        return fg::net_run(scratch_, layers_, xp, yp, ip, sampler, nsteps, rows_, lr, rules_, state_, lp, gp, every,
                           wp, sp, poll_every, poll);
    }

    std::vector<Arr<T>> params_;  // keeps the live arrays alive while we hold their pointers
    std::vector<Arr<T>> grads_;
    std::vector<fg::DenseView<T>> layers_;
    fg::NetScratch<T> scratch_;
    std::vector<fg::Rule> rules_;
    fg::LoopState state_;
    std::size_t rows_;
    bool gather_;
};

template <class T>
void bind_dtype(py::module_& m, const char* net_name) {
    m.def("dense_backward", &dense_backward<T>, py::arg("dy").noconvert(), py::arg("x").noconvert(),
          py::arg("kernel").noconvert(), py::arg("y").noconvert(), py::arg("has_bias"), py::arg("activation"),
          py::arg("need_dx"));
    m.def("mse", &mse<T>, py::arg("pred").noconvert(), py::arg("target").noconvert());
    m.def("mse_grad", &mse_grad<T>, py::arg("pred").noconvert(), py::arg("target").noconvert());
    m.def("sgd_update", &sgd_update<T>, py::arg("w").noconvert(), py::arg("g").noconvert(),
          py::arg("learning_rate"));
    py::class_<Net<T>>(m, net_name)
        .def(py::init<std::vector<Arr<T>>, std::vector<bool>, std::vector<int>, std::size_t, bool>(),
             py::arg("params").noconvert(), py::arg("has_bias"), py::arg("activations"), py::arg("rows"),
             py::arg("gather"))
        .def("rebind", &Net<T>::rebind, py::arg("params").noconvert())
        .def("step", &Net<T>::step, py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("idx"),
             py::arg("learning_rate"))
        .def("value_and_grad", &Net<T>::value_and_grad, py::arg("x").noconvert(), py::arg("y").noconvert())
        .def_property_readonly("grads", &Net<T>::grads)
        .def_property_readonly("rows", [](const Net<T>& n) { return n.rows(); })
        .def("fit_run", &Net<T>::fit_run, py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("draw"),
             py::arg("shuffle"), py::arg("learning_rate"), py::arg("rules"), py::arg("every"),
             py::arg("catch_sigint") = true);
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

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fastgrad's compiled kernels (private; use fastgrad.ops and fastgrad.fit)";
    m.attr("__version__") = FASTGRAD_VERSION;
    m.attr("has_blas") = fg::has_blas();
#ifdef FASTGRAD_BLAS
    m.def("use_shared_blas", []() {
              std::string path = fg::find_shared_blas();
              fg::team_parts() = default_team_parts();
              return path;
          },
          "call NumPy's OpenBLAS (one thread pool in the process) when the process has it; returns its "
          "path, or '' (and nothing changes)");
    m.def(
        "use_fallback_blas",
        [](const std::string& path) {
            const std::string err = fg::load_fallback_blas(path);
            if (!err.empty()) throw py::value_error("cannot use " + path + " as fastgrad's BLAS: " + err);
            fg::team_parts() = default_team_parts();
        },
        py::arg("path"), "open scipy-openblas32's library at path and call it (raises ValueError if it cannot)");
    m.def("use_no_blas", []() {
              fg::active_blas() = fg::Blas{};
              fg::team_parts() = default_team_parts();
          }, "every product on the plain loops (for tests)");
    m.def("blas_in_use", []() {
        const fg::Blas& b = fg::active_blas();
        if (b.path.empty()) return std::string("none (plain loops)");
        return b.sgemm64 ? b.path : b.path + " (scipy-openblas32, the fallback)";
    });
#else
    m.def("use_shared_blas", []() { return std::string(); });
    m.def("use_fallback_blas", [](const std::string&) {}, py::arg("path"));
    m.def("use_no_blas", []() {});
    m.def("blas_in_use", []() { return std::string("none (plain loops)"); });
#endif
    fg::team_parts() = default_team_parts();
    m.def("get_team_parts", []() { return fg::team_parts(); },
          "how many parts (threads) the team step splits a step into; 1: no team");
    m.def("set_team_parts", [](std::size_t v) {
              if (v < 1 || v > fg::kMaxParts)
                  fail("parts: expected 1 to " + std::to_string(fg::kMaxParts) + ", got " + std::to_string(v));
              fg::team_parts() = v;
          }, py::arg("parts"), "for tests and measurements; not while a fit runs");
    m.def("get_team_min_work", []() { return fg::team_min_work(); },
          "steps whose largest layer does fewer multiply-adds (rows * in * out) run without the team");
    m.def("set_team_min_work", [](std::size_t v) { fg::team_min_work() = v; }, py::arg("work"));
    m.def("team_steps_run", []() { return fg::team_steps_run().load(); },
          "how many steps have run on the team in this process (for tests)");
    m.def("get_team_rows_split", []() { return fg::team_rows_split(); },
          "batches of more rows than this are cut by rows on the team (each thread a block of the batch)");
    m.def("set_team_rows_split", [](std::size_t v) { fg::team_rows_split() = v; }, py::arg("rows"));
    m.def("get_blas_threads", []() {
#ifdef FASTGRAD_BLAS
              const fg::Blas& b = fg::active_blas();
              return b.get_threads ? b.get_threads() : -1;
#else
              return -1;
#endif
          }, "the BLAS's thread count now (-1: unknown); a run on the team sets it to 1 meanwhile");
    m.def("get_blas_min_work", []() { return fg::blas_min_work(); },
          "products of fewer multiply-adds than this run in the plain loops");
    m.def("set_blas_min_work", [](std::size_t v) { fg::blas_min_work() = v; }, py::arg("work"));
    m.def("all_finite", &all_finite_of, py::arg("a"), "whether every element is finite");
    m.def("fast_data", &fast_data, py::arg("x"), py::arg("y"), py::arg("float64"), py::arg("outputs"),
          "y as (samples, outputs) when x and y need no conversion and pass every check of "
          "fastgrad._validation.data, else None (which then converts, or names what is wrong)");
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
                 if (out.ndim() != 2 || std::size_t(out.shape(1)) != s.k() || !out.writeable())
                     fail("out: expected a writeable (steps, k) int64 array");
                 std::int64_t* p = out.mutable_data();
                 const std::size_t steps = std::size_t(out.shape(0));
                 py::gil_scoped_release nogil;
                 for (std::size_t i = 0; i < steps; ++i) s.draw(p + i * s.k());
             }, py::arg("out").noconvert(), "draw the next out.shape[0] batches into out");
    bind_dtype<float>(m, "NetF32");
    bind_dtype<double>(m, "NetF64");
}
