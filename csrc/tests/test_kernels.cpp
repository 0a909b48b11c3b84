// Kernel tests in plain C++ (no Python), run under AddressSanitizer + UBSan by .ci/run.
// Each kernel is compared with a naive double-precision reference on random shapes, for
// float and double, including the null-pointer paths (no dX, no bias) and the gathered step.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <vector>

#include <type_traits>

#include "../kernels.hpp"
#include "../loop.hpp"

namespace {

int failures = 0;
int checks = 0;

void expect(bool ok, const char* what, double err, double tol) {
    ++checks;
    if (!ok) {
        ++failures;
        std::printf("FAIL %s: error %.3e > tolerance %.1e\n", what, err, tol);
    }
}

// max |ref - got| relative to the largest sum of |terms| (the scale rounding errors grow with)
double max_rel(const std::vector<double>& ref, const double* got_as_double, const std::vector<double>& absref) {
    double scale = 0, diff = 0;
    for (std::size_t e = 0; e < ref.size(); ++e) {
        scale = std::fmax(scale, absref[e]);
        diff = std::fmax(diff, std::fabs(ref[e] - got_as_double[e]));
    }
    return scale > 0 ? diff / scale : diff;
}

double max_rel(const std::vector<double>& ref, const double* got_as_double) {
    std::vector<double> absref(ref.size());
    for (std::size_t e = 0; e < ref.size(); ++e) absref[e] = std::fabs(ref[e]);
    return max_rel(ref, got_as_double, absref);
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
    return std::vector<double>(v.begin(), v.end());
}

template <class T>
void dense_case(std::mt19937_64& rng, double tol) {
    std::uniform_int_distribution<int> dim(1, 40);
    std::normal_distribution<double> nd;
    const std::size_t n = dim(rng), in = dim(rng), out = dim(rng);
    const bool relu = rng() & 1, bias = rng() & 1, need_dx = rng() & 1;
    const fg::Activation act = relu ? fg::Activation::relu : fg::Activation::linear;
    std::vector<T> x(n * in), k(in * out), b(out), y(n * out), dy(n * out), dz(n * out);
    for (auto& v : x) v = T(nd(rng));
    for (auto& v : k) v = T(nd(rng));
    for (auto& v : b) v = T(nd(rng));
    for (auto& v : dy) v = T(nd(rng));
    fg::layer_forward(y.data(), x.data(), k.data(), bias ? b.data() : nullptr, n, in, out, act);
    // the same kernel on blocks (as the team calls it): a random cut of the rows and of the columns
    std::vector<T> yb(n * out);
    const std::size_t rc = rng() % (n + 1), cc = rng() % (out + 1);
    for (auto [r0, r1] : {std::pair<std::size_t, std::size_t>{0, rc}, {rc, n}})
        for (auto [c0, c1] : {std::pair<std::size_t, std::size_t>{0, cc}, {cc, out}})
            fg::dense_forward(yb.data(), x.data(), k.data(), bias ? b.data() : nullptr, in, out, act, r0, r1, c0, c1);
    expect(yb == y, "dense_forward on blocks == on the whole, bit for bit", 0, 0);
    std::vector<double> z(n * out), az(n * out), dzr(n * out), rdx(n * in, 0), rdk(in * out, 0), rdb(out, 0);
    std::vector<double> adx(n * in, 0), adk(in * out, 0), adb(out, 0);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t o = 0; o < out; ++o) {
            double s = bias ? double(b[o]) : 0.0, sa = std::fabs(s);
            for (std::size_t i = 0; i < in; ++i) {
                s += double(x[r * in + i]) * double(k[i * out + o]);
                sa += std::fabs(double(x[r * in + i]) * double(k[i * out + o]));
            }
            z[r * out + o] = relu ? std::fmax(s, 0.0) : s;
            az[r * out + o] = sa;
            dzr[r * out + o] = (!relu || y[r * out + o] > 0) ? double(dy[r * out + o]) : 0.0;
        }
    expect(max_rel(z, widen(y).data(), az) <= tol, "dense_forward", max_rel(z, widen(y).data(), az), tol);
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t o = 0; o < out; ++o) {
            rdb[o] += dzr[r * out + o];
            adb[o] += std::fabs(dzr[r * out + o]);
            for (std::size_t i = 0; i < in; ++i) {
                rdk[i * out + o] += double(x[r * in + i]) * dzr[r * out + o];
                rdx[r * in + i] += dzr[r * out + o] * double(k[i * out + o]);
                adk[i * out + o] += std::fabs(double(x[r * in + i]) * dzr[r * out + o]);
                adx[r * in + i] += std::fabs(dzr[r * out + o] * double(k[i * out + o]));
            }
        }
    std::vector<T> dx(n * in, T(-1)), dk(in * out), db(out, T(-1));
    dz = dy;
    fg::layer_backward(need_dx ? dx.data() : nullptr, dk.data(), bias ? db.data() : nullptr, dz.data(), x.data(),
                       k.data(), y.data(), n, in, out, act);
    // dX's columns and dK's rows on blocks (as the team computes them): the same bits
    std::vector<T> dxb(n * in), dkb(in * out);
    const std::size_t ic = rng() % (in + 1);
    for (auto [i0, i1] : {std::pair<std::size_t, std::size_t>{0, ic}, {ic, in}}) {
        fg::dense_backward_dx(dxb.data(), dz.data(), k.data(), n, in, out, i0, i1);
        fg::dense_backward_dk(dkb.data(), x.data(), dz.data(), n, in, out, i0, i1);
    }
    expect(dkb == dk && (!need_dx || dxb == dx), "dense_backward dX, dK on blocks == on the whole, bit for bit", 0, 0);
    expect(max_rel(rdk, widen(dk).data(), adk) <= tol, "dense_backward dK", max_rel(rdk, widen(dk).data(), adk), tol);
    if (need_dx) expect(max_rel(rdx, widen(dx).data(), adx) <= tol, "dense_backward dX", max_rel(rdx, widen(dx).data(), adx), tol);
    else expect(dx[0] == T(-1), "dense_backward leaves dX alone when null", 0, 0);
    if (bias) expect(max_rel(rdb, widen(db).data(), adb) <= tol, "dense_backward db", max_rel(rdb, widen(db).data(), adb), tol);
    else expect(db[0] == T(-1), "dense_backward leaves db alone when null", 0, 0);
}

template <class T>
void mse_and_sgd_case(std::mt19937_64& rng, double tol) {
    std::uniform_int_distribution<int> dim(1, 300);
    std::normal_distribution<double> nd;
    const std::size_t count = dim(rng);
    std::vector<T> p(count), t(count), dp(count), w(count), g(count);
    for (auto& v : p) v = T(nd(rng));
    for (auto& v : t) v = T(nd(rng));
    for (auto& v : w) v = T(nd(rng));
    for (auto& v : g) v = T(nd(rng));
    double ref = 0;
    for (std::size_t e = 0; e < count; ++e) ref += (double(p[e]) - double(t[e])) * (double(p[e]) - double(t[e]));
    ref /= double(count);
    const double got = double(fg::mse_forward(p.data(), t.data(), count));
    expect(std::fabs(got - ref) <= tol * ref, "mse_forward", std::fabs(got - ref) / ref, tol);
    fg::mse_forward_backward(dp.data(), p.data(), t.data(), count);
    std::vector<double> rdp(count);
    for (std::size_t e = 0; e < count; ++e) rdp[e] = 2 * (double(p[e]) - double(t[e])) / double(count);
    expect(max_rel(rdp, widen(dp).data()) <= tol, "mse_backward", max_rel(rdp, widen(dp).data()), tol);
    std::vector<T> w0 = w;
    const double delta = fg::sgd_update(w.data(), g.data(), T(0.1), count);
    double rdelta = 0;
    bool exact = true;
    for (std::size_t e = 0; e < count; ++e) {
        exact &= w[e] == T(w0[e] - T(T(0.1) * g[e]));
        rdelta = std::fmax(rdelta, double(std::fabs(T(w[e] - w0[e]))));
    }
    expect(exact, "sgd_update is w - lr*g rounded as T", 0, 0);
    expect(delta == rdelta, "sgd_update returns max |dw|", std::fabs(delta - rdelta), 0);
}

// The long element-wise passes give the same bits on every path: the run-time-dispatched
// sgd_update / all_finite (AVX2 where the CPU has it) against their baseline bodies, and both
// against the spec written out plainly (element e's square in lane e % 8, lanes summed in order).
template <class T>
void dispatch_case(std::mt19937_64& rng, std::size_t count) {
    std::normal_distribution<double> nd;
    std::uniform_int_distribution<std::size_t> pos(0, count - 1);
    std::vector<T> w(count), g(count);
    for (auto& v : w) v = T(nd(rng));
    for (auto& v : g) v = T(nd(rng));
    const int poison = int(rng() % 4);  // 0: none; 1: NaN gradient; 2: inf gradient; 3: huge lr*g overflow
    if (poison == 1) g[pos(rng)] = T(NAN);
    if (poison == 2) g[pos(rng)] = T(INFINITY);
    if (poison == 3) g[pos(rng)] = std::numeric_limits<T>::max();
    const T lr = poison == 3 ? T(-4) : T(0.03);
    std::vector<T> w1 = w, w2 = w;
    double sq1 = 0.25, sq2 = 0.25, lanes[8] = {};
    bool f1 = true, f2 = true;
    const double d1 = fg::sgd_update(w1.data(), g.data(), lr, count, &sq1, &f1);
    const double d2 = fg::sgd_update_body(w2.data(), g.data(), lr, count, &sq2, &f2);
    bool same_w = true, spec_w = true;
    for (std::size_t e = 0; e < count; ++e) {
        same_w &= std::memcmp(&w1[e], &w2[e], sizeof(T)) == 0;
        const T nw = T(w[e] - T(lr * g[e]));
        spec_w &= std::memcmp(&w1[e], &nw, sizeof(T)) == 0 || (nw != nw && w1[e] != w1[e]);
        lanes[e % 8] += double(g[e]) * double(g[e]);
    }
    double total = 0.0;
    for (double v : lanes) total += v;
    const double spec_sq = 0.25 + total;
    expect(same_w && spec_w, "sgd_update: dispatched and baseline weights, bit for bit", 0, 0);
    expect(std::memcmp(&sq1, &sq2, sizeof sq1) == 0 && (sq1 == spec_sq || (sq1 != sq1 && spec_sq != spec_sq)),
           "sgd_update: the sum of squares, bit for bit, in its lane order", std::fabs(sq1 - spec_sq), 0);
    expect(std::memcmp(&d1, &d2, sizeof d1) == 0 || (d1 != d1 && d2 != d2), "sgd_update: the same max |dw|", 0, 0);
    expect(f1 == f2 && f1 == (poison == 0),
           "sgd_update: finite flags agree (NaN, inf or overflow make them false)", 0, 0);
    // all_finite: a NaN or inf anywhere (also at a block's edges) is found on both paths
    std::vector<T> a(count);
    for (auto& v : a) v = T(nd(rng));
    expect(fg::all_finite(a.data(), count) && fg::all_finite_body(a.data(), count), "all_finite: finite data", 0, 0);
    a[count - 1] = std::numeric_limits<T>::max();
    expect(fg::all_finite(a.data(), count), "all_finite: the largest finite value is finite", 0, 0);
    const std::size_t where[] = {0, count - 1, pos(rng), std::min<std::size_t>(1023, count - 1),
                                 std::min<std::size_t>(1024, count - 1)};
    const T bad[] = {T(NAN), T(INFINITY), -T(INFINITY)};
    for (std::size_t p : where)
        for (T b : bad) {
            const T keep = a[p];
            a[p] = b;
            expect(!fg::all_finite(a.data(), count) && !fg::all_finite_body(a.data(), count),
                   "all_finite: finds a NaN or inf", double(p), 0);
            a[p] = keep;
        }
}

// The ReLU mask with the bias gradient, in place and not, against the plain loops: same bits.
template <class T>
void relu_mask_case(std::mt19937_64& rng) {
    std::uniform_int_distribution<int> dim(1, 70);
    std::normal_distribution<double> nd;
    const std::size_t n = dim(rng), out = dim(rng);
    std::vector<T> dy(n * out), y(n * out);
    for (auto& v : dy) v = T(nd(rng));
    for (auto& v : y) v = rng() % 3 == 0 ? T(0) : T(nd(rng));  // some exact zeros: masked, as TF
    y[0] = T(NAN);                                               // NaN > 0 is false: masked
    std::vector<T> rz(n * out), rdb(out);
    for (std::size_t e = 0; e < n * out; ++e) rz[e] = y[e] > T(0) ? dy[e] : T(0);
    for (std::size_t o = 0; o < out; ++o) rdb[o] = rz[o];
    for (std::size_t r = 1; r < n; ++r)
        for (std::size_t o = 0; o < out; ++o) rdb[o] += rz[r * out + o];
    std::vector<T> z = dy, db(out), zb = dy, dbb(out);
    fg::dense_backward_dz(z.data(), y.data(), db.data(), n, out, fg::Activation::relu, 0, out);
    const std::size_t cut = rng() % (out + 1);  // on two blocks of columns, as the team does
    fg::dense_backward_dz(zb.data(), y.data(), dbb.data(), n, out, fg::Activation::relu, 0, cut);
    fg::dense_backward_dz(zb.data(), y.data(), dbb.data(), n, out, fg::Activation::relu, cut, out);
    expect(z == rz && db == rdb && zb == rz && dbb == rdb, "dense_backward_dz: the ReLU mask and db, bit for bit", 0, 0);
}

// gather_rows copies exactly the indexed rows (repeats included), on both its paths (narrow rows
// one by one; wide rows kGatherStreams at a time, with a remainder of rows and of elements).
template <class T>
void gather_case(std::mt19937_64& rng, std::size_t width) {
    const std::size_t n = 1 + rng() % 40, rows = 1 + rng() % 23;
    std::vector<T> src(n * width);
    for (std::size_t e = 0; e < src.size(); ++e) src[e] = T(e) + T(0.5);
    std::vector<std::int64_t> idx(rows);
    for (auto& v : idx) v = std::int64_t(rng() % n);
    std::vector<T> got(rows * width + 3, T(-1)), want(rows * width + 3, T(-1));  // 3 past the end: untouched
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < width; ++c) want[r * width + c] = src[std::size_t(idx[r]) * width + c];
    fg::gather_rows(got.data(), src.data(), idx.data(), rows, width);
    expect(got == want, "gather_rows: the indexed rows, nothing past them", 0, 0);
}

// A gathered two-layer step equals the step on the gathered rows, and moves the weights by lr*g.
template <class T>
void net_case(std::mt19937_64& rng) {
    std::normal_distribution<double> nd;
    const std::size_t n = 17, in = 5, hid = 7, out = 2, rows = 4;
    std::vector<T> x(n * in), y(n * out), k1(in * hid), b1(hid), k2(hid * out), b2(out);
    for (auto* v : {&x, &y, &k1, &b1, &k2, &b2})
        for (auto& e : *v) e = T(nd(rng));
    std::vector<T> dk1(k1.size()), db1(b1.size()), dk2(k2.size()), db2(b2.size());
    std::vector<fg::DenseView<T>> layers{
        {k1.data(), b1.data(), dk1.data(), db1.data(), in, hid, fg::Activation::relu},
        {k2.data(), b2.data(), dk2.data(), db2.data(), hid, out, fg::Activation::linear}};
    fg::NetScratch<T> s;
    s.resize(layers, rows, true);
    const std::int64_t idx[rows] = {16, 0, 3, 3};
    // reference: the same step on explicitly gathered rows, without gather
    std::vector<T> xg(rows * in), yg(rows * out);
    fg::gather_rows(xg.data(), x.data(), idx, rows, in);
    fg::gather_rows(yg.data(), y.data(), idx, rows, out);
    auto k1c = k1, b1c = b1, k2c = k2, b2c = b2;
    std::vector<T> ek1(k1.size()), eb1(b1.size()), ek2(k2.size()), eb2(b2.size());
    std::vector<fg::DenseView<T>> copy{
        {k1c.data(), b1c.data(), ek1.data(), eb1.data(), in, hid, fg::Activation::relu},
        {k2c.data(), b2c.data(), ek2.data(), eb2.data(), hid, out, fg::Activation::linear}};
    fg::NetScratch<T> s2;
    s2.resize(copy, rows, false);
    const fg::TeamConfig serial{};
    const fg::StepResult a = fg::net_step(s, layers, x.data(), y.data(), idx, rows, T(0.05), serial);
    const fg::StepResult b = fg::net_step(s2, copy, xg.data(), yg.data(), nullptr, rows, T(0.05), serial);
    expect(a.loss == b.loss && a.grad_norm == b.grad_norm && a.weight_delta == b.weight_delta,
           "net_step gathered == net_step on gathered rows", std::fabs(a.loss - b.loss), 0);
    expect(k1 == k1c && b1 == b1c && k2 == k2c && b2 == b2c, "net_step updates identically", 0, 0);
    expect(a.bad_grad == -1 && a.bad_weight == -1, "net_step finite", 0, 0);
    // a NaN in the data is reported as a non-finite gradient, never a crash
    x[16 * in] = T(NAN);
    const fg::StepResult c = fg::net_step(s, layers, x.data(), y.data(), idx, rows, T(0.05), serial);
    expect(std::isnan(c.loss) && c.bad_grad == 0 && c.bad_weight == 0, "net_step reports NaN", 0, 0);
}

// The team step (team.hpp) on `parts` parts: on its threads and with every part on one thread
// (the team busy) it gives the same bits; against the serial step (one part) the same loss,
// gradients and weights (this build has no BLAS: the same loops on blocks), and the gradient norm
// up to the order of its sum.  Random stacks of 1-3 layers, some of fewer rows or outputs than
// parts.
template <class T>
void team_case(std::mt19937_64& rng, std::size_t parts, std::size_t rows_split) {
    std::uniform_int_distribution<int> dim(1, 24), nlay(1, 3);  // narrow (<= 16) and wide layers
    std::normal_distribution<double> nd;
    const std::size_t nl = std::size_t(nlay(rng)), n = 20, rows = std::size_t(dim(rng));
    const bool gather = rng() & 1;
    std::vector<std::size_t> w{std::size_t(dim(rng))};
    for (std::size_t l = 0; l < nl; ++l) w.push_back(std::size_t(dim(rng)));
    const std::size_t nrows = gather ? n : rows;
    std::vector<T> x(nrows * w[0]), y(nrows * w[nl]);
    for (auto* v : {&x, &y})
        for (auto& e : *v) e = T(nd(rng));
    std::vector<std::int64_t> idx(rows);
    for (auto& i : idx) i = std::int64_t(rng() % n);
    // three copies of the parameters: serial, team threads, team with every part here
    struct Net {
        std::vector<std::vector<T>> k, b, dk, db;
        std::vector<fg::DenseView<T>> views;
        fg::NetScratch<T> s;
    } nets[3];
    std::vector<bool> bias(nl), relu(nl);
    for (std::size_t l = 0; l < nl; ++l) {
        bias[l] = rng() % 4 != 0;
        relu[l] = rng() & 1;
    }
    for (int c = 0; c < 3; ++c) {
        std::mt19937_64 init(99);  // the same initial weights in each copy (and a fresh
        std::normal_distribution<double> ni;  // distribution: one keeps a value between calls)
        Net& N = nets[c];
        N.k.resize(nl), N.b.resize(nl), N.dk.resize(nl), N.db.resize(nl);
        for (std::size_t l = 0; l < nl; ++l) {
            N.k[l].resize(w[l] * w[l + 1]);
            N.b[l].resize(w[l + 1]);
            N.dk[l].resize(w[l] * w[l + 1]);
            N.db[l].resize(w[l + 1]);
            for (auto& e : N.k[l]) e = T(0.5 * ni(init));
            for (auto& e : N.b[l]) e = T(0.1 * ni(init));
        }
        for (std::size_t l = 0; l < nl; ++l)
            N.views.push_back({N.k[l].data(), bias[l] ? N.b[l].data() : nullptr, N.dk[l].data(),
                               bias[l] ? N.db[l].data() : nullptr, w[l], w[l + 1],
                               relu[l] ? fg::Activation::relu : fg::Activation::linear});
        N.s.resize(N.views, rows, gather);
    }
    const std::int64_t* ip = gather ? idx.data() : nullptr;
    std::vector<std::int64_t> other(rows);
    for (auto& i : other) i = std::int64_t(rng() % n);
    const fg::TeamConfig serial{1, 0, rows_split}, team{parts, 0, rows_split};
    fg::StepResult r[3];
    // the team copies are also told the next batch (as the native loop tells them), which they
    // gather early: nets[1] always this batch again; nets[2] this one, then another that does not
    // come (the step after must gather its own), then this one.  No bit may change.
    for (int step = 0; step < 3; ++step) {
        const std::int64_t* next2 = gather ? (step == 1 ? other.data() : ip) : nullptr;
        r[0] = fg::net_step(nets[0].s, nets[0].views, x.data(), y.data(), ip, rows, T(0.05), serial);
        r[1] = fg::net_step(nets[1].s, nets[1].views, x.data(), y.data(), ip, rows, T(0.05), team, ip);
        {
            std::lock_guard<std::mutex> busy(fg::team_slot().lock);  // the team is taken: parts in turn
            r[2] = fg::net_step(nets[2].s, nets[2].views, x.data(), y.data(), ip, rows, T(0.05), team, next2);
        }
        bool same_w = true, team_w = true;
        for (std::size_t l = 0; l < nl; ++l) {
            same_w &= nets[0].k[l] == nets[1].k[l] && nets[0].dk[l] == nets[1].dk[l] && nets[0].b[l] == nets[1].b[l] &&
                      nets[0].db[l] == nets[1].db[l];
            team_w &= nets[1].k[l] == nets[2].k[l] && nets[1].dk[l] == nets[2].dk[l] && nets[1].b[l] == nets[2].b[l] &&
                      nets[1].db[l] == nets[2].db[l];
        }
        expect(r[1].loss == r[2].loss && r[1].grad_norm == r[2].grad_norm && r[1].weight_delta == r[2].weight_delta &&
                   team_w,
               "team step: threads == parts in turn, bit for bit", std::fabs(r[1].grad_norm - r[2].grad_norm), 0);
        if (rows <= rows_split) {  // in phases: every value as the serial step's (no BLAS here)
            expect(r[0].loss == r[1].loss && r[0].weight_delta == r[1].weight_delta && same_w,
                   "team step == serial step: loss, gradients, weights", std::fabs(r[0].loss - r[1].loss), 0);
        } else {  // by row blocks: sums over the rows taken block by block, then added
            double werr = 0, wscale = 0;
            for (std::size_t l = 0; l < nl; ++l)
                for (std::size_t e = 0; e < nets[0].k[l].size(); ++e) {
                    werr = std::fmax(werr, std::fabs(double(nets[0].k[l][e]) - double(nets[1].k[l][e])));
                    wscale = std::fmax(wscale, std::fabs(double(nets[0].k[l][e])));
                }
            const double kRowsTol = sizeof(T) == 4 ? 1e-5 : 1e-12;  // rounding of sums in another order
            const double lerr = std::fabs(r[0].loss - r[1].loss) / std::fmax(std::fabs(r[0].loss), 1e-300);
            expect(lerr <= kRowsTol, "team step by rows ~ serial step: loss", lerr, kRowsTol);
            expect(werr <= kRowsTol * std::fmax(wscale, 1.0), "team step by rows ~ serial step: weights", werr,
                   kRowsTol);
        }
        const double kNormTol = rows <= rows_split ? 1e-12 : (sizeof(T) == 4 ? 1e-5 : 1e-12);
        const double nerr = std::fabs(r[0].grad_norm - r[1].grad_norm) / std::fmax(r[0].grad_norm, 1e-300);
        expect(nerr <= kNormTol, "team step ~ serial step: gradient norm", nerr, kNormTol);
    }
    // a NaN in the batch: the same parameter named as not finite.  (A new run: rows gathered
    // ahead are of the data as it was, and only the run that drew them uses them, as net_run does.)
    x[std::size_t(gather ? idx[0] : 0) * w[0]] = T(NAN);
    nets[1].s.next_valid = false;
    r[0] = fg::net_step(nets[0].s, nets[0].views, x.data(), y.data(), ip, rows, T(0.05), serial);
    r[1] = fg::net_step(nets[1].s, nets[1].views, x.data(), y.data(), ip, rows, T(0.05), team);
    expect(r[0].bad_grad == r[1].bad_grad && r[0].bad_weight == r[1].bad_weight && std::isnan(r[1].loss),
           "team step names the same non-finite parameter", 0, 0);
}

// The step on one layer gives the bits of the kernels called one by one.
template <class T>
void single_layer_case(std::mt19937_64& rng) {
    std::uniform_int_distribution<int> dim(1, 9);
    std::normal_distribution<double> nd;
    const std::size_t n = dim(rng), in = dim(rng), out = dim(rng);
    const bool relu = rng() & 1, bias = rng() & 1;
    const fg::Activation act = relu ? fg::Activation::relu : fg::Activation::linear;
    std::vector<T> x(n * in), y(n * out), k(in * out), b(out);
    for (auto* v : {&x, &y, &k, &b})
        for (auto& e : *v) e = T(nd(rng));
    // by hand, kernel by kernel
    std::vector<T> p(n * out), dp(n * out), dz(n * out), rk(in * out), rb(out), k2 = k, b2 = b;
    fg::dense_forward(p.data(), x.data(), k.data(), bias ? b.data() : nullptr, in, out, act, 0, n, 0, out);
    const T loss = fg::mse_forward(p.data(), y.data(), n * out);
    fg::mse_forward_backward(dp.data(), p.data(), y.data(), n * out);
    dz = dp;
    fg::dense_backward_dz(dz.data(), p.data(), bias ? rb.data() : nullptr, n, out, act, 0, out);
    fg::dense_backward_dk(rk.data(), x.data(), dz.data(), n, in, out, 0, in);
    fg::sgd_update(k2.data(), rk.data(), T(0.01), in * out);
    if (bias) fg::sgd_update(b2.data(), rb.data(), T(0.01), out);
    // the training step
    std::vector<T> dk(in * out), db(out);
    std::vector<fg::DenseView<T>> layers{{k.data(), bias ? b.data() : nullptr, dk.data(), bias ? db.data() : nullptr,
                                          in, out, act}};
    fg::NetScratch<T> s;
    s.resize(layers, n, false);
    const fg::StepResult r = fg::net_step(s, layers, x.data(), y.data(), nullptr, n, T(0.01), fg::TeamConfig{});
    expect(r.loss == double(loss), "single layer step: loss", std::fabs(r.loss - double(loss)), 0);
    expect(dk == rk && (!bias || db == rb), "single layer step: gradients", 0, 0);
    expect(k == k2 && (!bias || b == b2), "single layer step: update", 0, 0);
}

// The register-resident loop (fast_tiny.hpp) against the generic step called once per step on
// the same batches: the same losses, gradient norms and weights, bit for bit.
template <class T>
void tiny_case(std::mt19937_64& rng) {
    std::normal_distribution<double> nd;
    const std::size_t in = 1 + rng() % 4, n = 12, steps = 40;
    const bool bias = rng() & 1, relu = rng() & 1;
    const int mode = int(rng() % 3);  // 0: full batch; 1: one random row; 2: three random rows
    const std::size_t rows = mode == 0 ? n : mode == 1 ? 1 : 3;
    const fg::Activation act = relu ? fg::Activation::relu : fg::Activation::linear;
    std::vector<T> x(n * in), y(n), k(in), b{T(0.1)};
    for (auto* v : {&x, &y})
        for (auto& e : *v) e = T(nd(rng));
    for (auto& e : k) e = T(0.5 * nd(rng));
    std::vector<T> k2 = k, b2 = b, dk(in), db(1);
    const std::uint64_t state[4] = {rng(), rng(), rng(), rng()};
    fg::Sampler s1(state, n, rows, false), s2(state, n, rows, false);
    fg::Net<T> net({fg::DenseView<T>{k.data(), bias ? b.data() : nullptr, nullptr, nullptr, in, 1, act}}, rows, mode != 0);
    fg::Records<T> rec;
    auto poll = [] { return false; };
    fg::RunSpec<T> spec;
    spec.rules = {fg::Rule{fg::RuleKind::max_steps, 0.0, static_cast<long long>(steps)}};
    net.run(x.data(), y.data(), mode ? &s1 : nullptr, T(0.05), spec, poll, [](std::size_t) { return true; }, rec);
    std::vector<fg::DenseView<T>> layers{
        {k2.data(), bias ? b2.data() : nullptr, dk.data(), bias ? db.data() : nullptr, in, 1, act}};
    fg::NetScratch<T> sc;
    sc.resize(layers, rows, mode != 0);
    std::vector<std::int64_t> idx(rows);
    bool same = rec.steps == steps;
    for (std::size_t t = 0; t < steps && same; ++t) {
        if (mode) s2.draw(idx.data());
        const fg::StepResult r = fg::serial_step(sc, layers, x.data(), y.data(), mode ? idx.data() : nullptr, rows, T(0.05));
        same &= r.loss == rec.loss.data()[t] && r.grad_norm == rec.norm.data()[t];
    }
    expect(same && k == k2 && (!bias || b == b2), "the tiny loop == the generic step, bit for bit", 0, 0);
}

// The fused one-output step (fast_one_output.hpp) against the generic step: the same bits, for
// widths it unrolls (1-4) and one it does not, with or without bias and ReLU, gathered or not.
template <class T>
void one_output_case(std::mt19937_64& rng) {
    std::normal_distribution<double> nd;
    const std::size_t in = 1 + rng() % 7, n = 9, rows = 1 + rng() % 4;
    const bool bias = rng() & 1, relu = rng() & 1, gather = rng() & 1;
    const fg::Activation act = relu ? fg::Activation::relu : fg::Activation::linear;
    std::vector<T> x(n * in), y(n), k(in), b{T(0.2)}, dk(in), db(1);
    for (auto* v : {&x, &y, &k})
        for (auto& e : *v) e = T(nd(rng));
    std::vector<T> k2 = k, b2 = b, dk2(in), db2(1);
    std::vector<std::int64_t> idx(rows);
    for (auto& i : idx) i = std::int64_t(rng() % n);
    const std::size_t r = gather ? rows : n;
    std::vector<fg::DenseView<T>> a{{k.data(), bias ? b.data() : nullptr, dk.data(), bias ? db.data() : nullptr, in, 1, act}};
    std::vector<fg::DenseView<T>> g{{k2.data(), bias ? b2.data() : nullptr, dk2.data(), bias ? db2.data() : nullptr, in, 1, act}};
    fg::NetScratch<T> sa, sg;
    sa.resize(a, r, gather);
    sg.resize(g, r, gather);
    bool same = true;
    for (int step = 0; step < 5; ++step) {
        const fg::StepResult ra = fg::net_step(sa, a, x.data(), y.data(), gather ? idx.data() : nullptr, r, T(0.05),
                                               fg::TeamConfig{});
        const fg::StepResult rg = fg::serial_step(sg, g, x.data(), y.data(), gather ? idx.data() : nullptr, r, T(0.05));
        same &= ra.loss == rg.loss && ra.grad_norm == rg.grad_norm && ra.weight_delta == rg.weight_delta;
    }
    expect(same && k == k2 && dk == dk2 && (!bias || (b == b2 && db == db2)),
           "the fused one-output step == the generic step, bit for bit", 0, 0);
}

// A team phase must be noexcept (an exception on a worker thread would end the process or leave
// the others waiting at the barrier): run_phases refuses, at compile time, one that may throw.
template <class F, class = void>
struct runs_as_phase : std::false_type {};
template <class F>
struct runs_as_phase<F, std::void_t<decltype(fg::run_phases(std::size_t(1), std::size_t(1), std::declval<F&>()))>>
    : std::true_type {};
[[maybe_unused]] void phases_are_noexcept() {
    auto ok = [](std::size_t, std::size_t) noexcept {};
    auto may_throw = [](std::size_t p, std::size_t) {
        if (p > 99) throw 1;
    };
    static_assert(runs_as_phase<decltype(ok)>::value, "a noexcept phase runs");
    static_assert(!runs_as_phase<decltype(may_throw)>::value, "a phase that may throw is refused");
}

// Sampler: indices in range, distinct within a batch, shuffle epochs are permutations (less the
// remainder), and the same state gives the same stream.
void sampler_case(std::uint64_t seed) {
    const std::uint64_t state[4] = {seed * 0x9E3779B97F4A7C15ULL + 1, seed ^ 0xDEADBEEF, 7, 11};
    for (std::size_t k : {1, 3, 64, 65, 100}) {
        for (bool shuffle : {false, true}) {
            const std::size_t n = 130;
            fg::Sampler a(state, n, k, shuffle), b(state, n, k, shuffle);
            std::vector<std::int64_t> ba(k), bb(k);
            std::vector<int> seen(n, 0);
            bool ok = true, same = true;
            for (int step = 0; step < 50; ++step) {
                a.draw(ba.data());
                b.draw(bb.data());
                same &= ba == bb;
                std::vector<int> in_batch(n, 0);
                for (auto v : ba) {
                    ok &= v >= 0 && v < std::int64_t(n);
                    if (ok) ok &= ++in_batch[std::size_t(v)] == 1;
                }
                if (shuffle && ok) {
                    const std::size_t per_epoch = n / k;
                    for (auto v : ba) seen[std::size_t(v)] += 1;
                    if ((step + 1) % int(per_epoch) == 0) {  // an epoch: every sample at most once
                        for (auto c : seen) ok &= c <= 1;
                        std::fill(seen.begin(), seen.end(), 0);
                    }
                }
            }
            expect(ok, "sampler: in range, no repeats in a batch (or an epoch)", 0, 0);
            expect(same, "sampler: the same state gives the same stream", 0, 0);
        }
    }
}

}  // namespace

int main() {
    std::mt19937_64 rng(12345);
    for (int i = 0; i < 200; ++i) {
        dense_case<double>(rng, 1e-12);
        dense_case<float>(rng, 1e-5);
        mse_and_sgd_case<double>(rng, 1e-12);
        mse_and_sgd_case<float>(rng, 1e-5);
    }
    for (int i = 0; i < 100; ++i) {
        single_layer_case<double>(rng);
        single_layer_case<float>(rng);
        tiny_case<double>(rng);
        tiny_case<float>(rng);
        one_output_case<double>(rng);
        one_output_case<float>(rng);
    }
    for (std::size_t count : {1, 7, 8, 9, 511, 512, 513, 1023, 1024, 1025, 2047, 2048, 2049, 5000, 20001})
        for (int i = 0; i < 4; ++i) {
            dispatch_case<float>(rng, count);
            dispatch_case<double>(rng, count);
        }
    for (int i = 0; i < 100; ++i) {
        relu_mask_case<float>(rng);
        relu_mask_case<double>(rng);
    }
    for (std::size_t width : {1, 3, 31, 32, 33, 63, 64, 65, 100, 784})
        for (int i = 0; i < 10; ++i) {
            gather_case<float>(rng, width);
            gather_case<double>(rng, width);
        }
    for (std::uint64_t seed = 0; seed < 10; ++seed) sampler_case(seed);
    for (int i = 0; i < 20; ++i) {
        net_case<double>(rng);
        net_case<float>(rng);
    }
    for (std::size_t parts : {2, 3, 5})
        for (std::size_t split : {std::size_t(1024), std::size_t(0), std::size_t(6)})  // phases, rows, either
            for (int i = 0; i < 30; ++i) {
                team_case<double>(rng, parts, split);
                team_case<float>(rng, parts, split);
            }
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
