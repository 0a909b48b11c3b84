// The yardstick: a plain hand-written C++ training loop for the small workloads (W1-W5 and W3m of
// bench/compare.py), with no library, no framework and no Python between steps.  It is what
// "as fast as a C++ loop written by hand" means in the comparison.
//
// Shapes, Keras layout:  X:(N,I)  Y:(N,O)  batches:(steps,B) sample indices (or none: full batch)
//   one layer:   K:(I,O)  b:(O)          P = X_B K + b
//   two layers:  K1:(I,H) b1:(H)  K2:(H,O) b2:(O)   Hd = relu(X_B K1 + b1)   P = Hd K2 + b2
// MSE over all elements, as Keras:  L = sum (P - T)^2 / (B*O);   dP = 2 (P - T) / (B*O)
// Backward:  dK2 = Hd^T dP   db2 = sum_n dP   dHd = dP K2^T * (Hd > 0)   dK1 = X_B^T dHd   db1 = sum_n dHd
// SGD:       w -= lr * dw, all parameters after all gradients (gradients at the old weights)
// Momentum mu > 0, in Keras's SGD order:  v = mu * v - lr * dw;  w = w + v   (v starts at zero)
//
// Built by compare.py with `g++ -O2 -std=c++17 -shared -fPIC` and called through ctypes.

#include <cstdint>
#include <vector>

namespace {

// w <- w - lr * g, or with momentum (Keras's order) v <- mu * v - lr * g; w <- w + v.  A template
// flag, so that the plain loop compiles exactly as it would without momentum.
template <bool Momentum, typename T>
inline void sgd_update(T* w, const T* g, T* v, int64_t n, T lr, T mu) {
    if constexpr (Momentum) {
        for (int64_t j = 0; j < n; ++j) {
            v[j] = mu * v[j] - lr * g[j];
            w[j] += v[j];
        }
    } else {
        for (int64_t j = 0; j < n; ++j) w[j] -= lr * g[j];
    }
}

// One Dense layer (linear) trained by SGD; loss of each step's batch before its update -> losses.
template <bool Momentum, typename T>
void train_dense(const T* x, const T* y, int64_t n, int64_t in, int64_t out, const int64_t* batches,
                 int64_t bsz, int64_t steps, T lr, T mu, T* k, T* b, T* losses) {
    std::vector<T> dk(in * out), db(out), p(out), vk(Momentum ? in * out : 0), vb(Momentum ? out : 0);
    const T scale = T(2) / T(bsz * out);
    for (int64_t t = 0; t < steps; ++t) {
        for (auto& v : dk) v = 0;
        for (auto& v : db) v = 0;
        T loss = 0;
        for (int64_t r = 0; r < bsz; ++r) {
            const int64_t s = batches ? batches[t * bsz + r] : r;
            const T* xs = x + s * in;
            const T* ys = y + s * out;
            // forward: p = x_s K + b
            for (int64_t o = 0; o < out; ++o) p[o] = b ? b[o] : T(0);
            for (int64_t i = 0; i < in; ++i)
                for (int64_t o = 0; o < out; ++o) p[o] += xs[i] * k[i * out + o];
            // loss and dP, then dK += x_s^T dP, db += dP
            for (int64_t o = 0; o < out; ++o) {
                const T d = p[o] - ys[o];
                loss += d * d;
                p[o] = scale * d;  // p now holds dP
            }
            for (int64_t i = 0; i < in; ++i)
                for (int64_t o = 0; o < out; ++o) dk[i * out + o] += xs[i] * p[o];
            for (int64_t o = 0; o < out; ++o) db[o] += p[o];
        }
        losses[t] = loss / T(bsz * out);
        sgd_update<Momentum>(k, dk.data(), vk.data(), in * out, lr, mu);
        if (b) sgd_update<Momentum>(b, db.data(), vb.data(), out, lr, mu);
    }
}

// Dense(hidden, relu) -> Dense(out), both with bias, trained by SGD.
template <bool Momentum, typename T>
void train_mlp(const T* x, const T* y, int64_t n, int64_t in, int64_t hid, int64_t out,
               const int64_t* batches, int64_t bsz, int64_t steps, T lr, T mu, T* k1, T* b1, T* k2,
               T* b2, T* losses) {
    std::vector<T> dk1(in * hid), db1(hid), dk2(hid * out), db2(out), h(hid), dh(hid), p(out);
    const int64_t nv = Momentum ? in * hid + hid + hid * out + out : 0;
    std::vector<T> v(nv);  // velocities of k1, b1, k2, b2, one after the other
    T* vk1 = v.data();
    T* vb1 = Momentum ? vk1 + in * hid : nullptr;
    T* vk2 = Momentum ? vb1 + hid : nullptr;
    T* vb2 = Momentum ? vk2 + hid * out : nullptr;
    const T scale = T(2) / T(bsz * out);
    for (int64_t t = 0; t < steps; ++t) {
        for (auto& v : dk1) v = 0;
        for (auto& v : db1) v = 0;
        for (auto& v : dk2) v = 0;
        for (auto& v : db2) v = 0;
        T loss = 0;
        for (int64_t r = 0; r < bsz; ++r) {
            const int64_t s = batches ? batches[t * bsz + r] : r;
            const T* xs = x + s * in;
            const T* ys = y + s * out;
            // forward
            for (int64_t j = 0; j < hid; ++j) h[j] = b1[j];
            for (int64_t i = 0; i < in; ++i)
                for (int64_t j = 0; j < hid; ++j) h[j] += xs[i] * k1[i * hid + j];
            for (int64_t j = 0; j < hid; ++j) h[j] = h[j] > T(0) ? h[j] : T(0);
            for (int64_t o = 0; o < out; ++o) p[o] = b2[o];
            for (int64_t j = 0; j < hid; ++j)
                for (int64_t o = 0; o < out; ++o) p[o] += h[j] * k2[j * out + o];
            // loss, dP
            for (int64_t o = 0; o < out; ++o) {
                const T d = p[o] - ys[o];
                loss += d * d;
                p[o] = scale * d;
            }
            // backward, layer 2
            for (int64_t j = 0; j < hid; ++j) {
                T acc = 0;
                for (int64_t o = 0; o < out; ++o) {
                    dk2[j * out + o] += h[j] * p[o];
                    acc += p[o] * k2[j * out + o];
                }
                dh[j] = h[j] > T(0) ? acc : T(0);
            }
            for (int64_t o = 0; o < out; ++o) db2[o] += p[o];
            // backward, layer 1
            for (int64_t i = 0; i < in; ++i)
                for (int64_t j = 0; j < hid; ++j) dk1[i * hid + j] += xs[i] * dh[j];
            for (int64_t j = 0; j < hid; ++j) db1[j] += dh[j];
        }
        losses[t] = loss / T(bsz * out);
        sgd_update<Momentum>(k1, dk1.data(), vk1, in * hid, lr, mu);
        sgd_update<Momentum>(b1, db1.data(), vb1, hid, lr, mu);
        sgd_update<Momentum>(k2, dk2.data(), vk2, hid * out, lr, mu);
        sgd_update<Momentum>(b2, db2.data(), vb2, out, lr, mu);
    }
}

}  // namespace

extern "C" {

// hidden == 0: one linear Dense layer (k2, b2 unused; b1 may be null for no bias).
// hidden > 0: Dense(hidden, relu) -> Dense(out); every pointer is used.
// batches == null: full batch (bsz must equal n).  momentum == 0: plain SGD; in [0, 1): Keras's
// momentum, the velocities starting at zero.  Weights are updated in place.
// Returns 0, or -1 on arguments that make no sense.
int yardstick_train_f32(const float* x, const float* y, int64_t n, int64_t in, int64_t hidden,
                        int64_t out, const int64_t* batches, int64_t bsz, int64_t steps, float lr,
                        float momentum, float* k1, float* b1, float* k2, float* b2, float* losses) {
    if (n <= 0 || in <= 0 || out <= 0 || bsz <= 0 || steps < 0 || hidden < 0) return -1;
    if (!batches && bsz != n) return -1;
    if (!(momentum >= 0.0f && momentum < 1.0f)) return -1;
    const bool mom = momentum != 0.0f;
    if (hidden == 0 && mom)
        train_dense<true, float>(x, y, n, in, out, batches, bsz, steps, lr, momentum, k1, b1, losses);
    else if (hidden == 0)
        train_dense<false, float>(x, y, n, in, out, batches, bsz, steps, lr, 0.0f, k1, b1, losses);
    else if (mom)
        train_mlp<true, float>(x, y, n, in, hidden, out, batches, bsz, steps, lr, momentum, k1, b1, k2, b2, losses);
    else
        train_mlp<false, float>(x, y, n, in, hidden, out, batches, bsz, steps, lr, 0.0f, k1, b1, k2, b2, losses);
    return 0;
}

}  // extern "C"
