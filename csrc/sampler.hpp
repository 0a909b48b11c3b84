// Batch indices from a seed, drawn step by step in C++ (both training loops use this sampler, so
// they see the same stream; the run records what it drew in history.batches).
//
//   generator: xoshiro256** (state: 4 words from NumPy's SeedSequence(seed), set by the caller)
//   bounded integer in [0, r): Lemire's multiply-shift with rejection (exactly uniform)
//   "random":  each step k distinct indices of n — Floyd's algorithm for small k (k <= 64),
//              a partial Fisher–Yates on a kept permutation for larger k
//   "shuffle": epochs of a Fisher–Yates permutation, cut into n / k batches (the remainder of
//              fewer than k samples is left out of that epoch)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fg {

__extension__ typedef unsigned __int128 u128;  // GCC/Clang: the 64x64->128 product Lemire needs

// NumPy's SeedSequence(seed).generate_state(4, np.uint64) for a seed below 2**64 (M. E. O'Neill's
// seed_seq mixing as NumPy implements it: a pool of four 32-bit words, no spawn key), without
// NumPy's 20 µs of Python-level set-up.  tests/test_fit.py checks it against NumPy.
inline void seed_sequence_state(std::uint64_t seed, std::uint64_t out[4]) {
    constexpr std::uint32_t kInitA = 0x43b0d7e5u, kMultA = 0x931e8875u, kInitB = 0x8b51f9ddu, kMultB = 0x58f38dedu;
    constexpr std::uint32_t kMixL = 0xca01f9ddu, kMixR = 0x4973f715u;
    constexpr int kShift = 16;
    // the seed as little-endian 32-bit words (one word below 2**32, as NumPy coerces it)
    const std::uint32_t words[2] = {std::uint32_t(seed), std::uint32_t(seed >> 32)};
    const std::size_t nwords = seed >> 32 ? 2 : 1;
    std::uint32_t hash = kInitA;
    auto hashmix = [&hash](std::uint32_t v) {
        v ^= hash;
        hash *= kMultA;
        v *= hash;
        return v ^ (v >> kShift);
    };
    auto mix = [](std::uint32_t x, std::uint32_t y) {
        std::uint32_t r = kMixL * x - kMixR * y;
        return r ^ (r >> kShift);
    };
    std::uint32_t pool[4];
    for (std::size_t i = 0; i < 4; ++i) pool[i] = hashmix(i < nwords ? words[i] : 0u);
    for (std::size_t src = 0; src < 4; ++src)
        for (std::size_t dst = 0; dst < 4; ++dst)
            if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    std::uint32_t hb = kInitB;
    std::uint32_t state[8];
    for (std::size_t i = 0; i < 8; ++i) {
        std::uint32_t v = pool[i % 4] ^ hb;
        hb *= kMultB;
        v *= hb;
        state[i] = v ^ (v >> kShift);
    }
    for (std::size_t j = 0; j < 4; ++j) out[j] = std::uint64_t(state[2 * j]) | (std::uint64_t(state[2 * j + 1]) << 32);
}

// xoshiro256** and Lemire's bounded draw, a value type, so that a hot loop can keep the state in
// registers (Sampler::generator() hands it out, set_generator() takes it back).
struct Xoshiro {
    std::uint64_t s[4];

    static std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

    std::uint64_t next() {
        const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
        const std::uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
    }

    std::uint64_t bounded(std::uint64_t range) {  // uniform in [0, range), range >= 1
        u128 m = u128(next()) * range;
        std::uint64_t low = std::uint64_t(m);
        if (low < range) {
            const std::uint64_t threshold = (0 - range) % range;
            while (low < threshold) {
                m = u128(next()) * range;
                low = std::uint64_t(m);
            }
        }
        return std::uint64_t(m >> 64);
    }
};

class Sampler {
  public:
    Sampler(const std::uint64_t state[4], std::size_t n, std::size_t k, bool shuffle)
        : n_(n), k_(k), shuffle_(shuffle) {
        for (int i = 0; i < 4; ++i) gen_.s[i] = state[i];
        if (shuffle_ || k_ > kFloydMax) {
            perm_.resize(n_);
            for (std::size_t i = 0; i < n_; ++i) perm_[i] = std::int64_t(i);
        }
        pos_ = n_;  // the first shuffle batch starts an epoch
    }

    std::size_t n() const { return n_; }
    std::size_t k() const { return k_; }
    bool shuffle() const { return shuffle_; }
    bool floyd() const { return !shuffle_ && k_ <= kFloydMax; }  // draws need no kept permutation

    // The generator's state, for a loop that draws with draw_with on its own copy.
    Xoshiro generator() const { return gen_; }
    void set_generator(const Xoshiro& g) { gen_ = g; }

    // One batch of k indices into out.
    void draw(std::int64_t* out) { draw_with(gen_, out); }

    // The same draw, from the generator g (the caller's copy of generator()).
    void draw_with(Xoshiro& g, std::int64_t* out) {
        if (shuffle_) {
            if (pos_ + k_ > n_) {
                fisher_yates(g, n_);
                pos_ = 0;
            }
            for (std::size_t j = 0; j < k_; ++j) out[j] = perm_[pos_ + j];
            pos_ += k_;
        } else if (k_ <= kFloydMax) {
            floyd_draw(g, n_, k_, out);
        } else {
            fisher_yates(g, k_);
            for (std::size_t j = 0; j < k_; ++j) out[j] = perm_[j];
        }
    }

    // Floyd: for j = n-k .. n-1, t uniform in [0, j]; take t unless taken, else take j.
    // (k = 1 is one bounded draw.)  Static, so a loop can call it with n and k in registers.
    static void floyd_draw(Xoshiro& g, std::size_t n, std::size_t k, std::int64_t* out) {
        if (k == 1) {
            out[0] = std::int64_t(g.bounded(n));
            return;
        }
        std::size_t c = 0;
        for (std::size_t j = n - k; j < n; ++j, ++c) {
            std::int64_t t = std::int64_t(g.bounded(j + 1));
            for (std::size_t q = 0; q < c; ++q)
                if (out[q] == t) {
                    t = std::int64_t(j);
                    break;
                }
            out[c] = t;
        }
    }

  private:
    static constexpr std::size_t kFloydMax = 64;

    // the first `count` positions of perm_ become a uniform draw without repeats
    void fisher_yates(Xoshiro& g, std::size_t count) {
        for (std::size_t i = 0; i < count && i + 1 < n_; ++i) {
            const std::size_t j = i + std::size_t(g.bounded(n_ - i));
            const std::int64_t tmp = perm_[i];
            perm_[i] = perm_[j];
            perm_[j] = tmp;
        }
    }

    Xoshiro gen_;
    std::size_t n_, k_;
    bool shuffle_;
    std::vector<std::int64_t> perm_;
    std::size_t pos_;
};

}  // namespace fg
