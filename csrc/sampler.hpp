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
