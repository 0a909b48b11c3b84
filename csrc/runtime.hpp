// What a native run needs around the loop, without Python: Ctrl-C as a flag, memory for the
// records, and the count of runs in progress (settings may change only when it is zero).
#pragma once

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include <signal.h>

namespace fg {

// Runs (and kernel calls) in progress without the GIL.  A binding counts itself in while it holds
// the GIL, so a setter that holds the GIL and sees zero knows none is running or can start.
inline std::atomic<int>& runs_active() {
    static std::atomic<int> v{0};
    return v;
}
struct RunGuard {
    RunGuard() { runs_active().fetch_add(1, std::memory_order_relaxed); }
    ~RunGuard() { runs_active().fetch_sub(1, std::memory_order_relaxed); }
    RunGuard(const RunGuard&) = delete;
    RunGuard& operator=(const RunGuard&) = delete;
};

// Ctrl-C during a native run: a C-level SIGINT handler (the first of concurrent runs installs
// it, the last puts the previous one back) counts the signals; the loop reads the count between
// stretches of steps.  A Ctrl-C during the run is the run's ("interrupted").
//
// The handler goes in at the run's first poll (about a millisecond of work in), not at its start:
// installing and restoring it are two system calls, a large share of a short run's cost.  A
// Ctrl-C that came before it went to the previous handler (Python's), so the first poll also asks
// `pending()` whether one is waiting there, and takes it.  A run too short to reach a poll is
// never interrupted: its Ctrl-C reaches Python as usual once the run has returned.
inline std::atomic<unsigned> g_sigints{0};  // a namespace-scope atomic: safe to touch in a handler
extern "C" inline void fg_count_sigint(int) { g_sigints.fetch_add(1, std::memory_order_relaxed); }

class SigintCatch {
  public:
    // active: whether to catch Ctrl-C at all (false: hit() is always false).  pending: asks the
    // previous handler's owner whether a Ctrl-C is waiting (the bindings ask Python, with the GIL).
    SigintCatch(bool active, bool (*pending)()) : active_(active), pending_(pending) {}
    // A Ctrl-C that came after the run's last poll was not acted on: once the previous handler is
    // back it is raised again for that handler, instead of being lost.
    ~SigintCatch() {
        if (!installed_) return;
        bool last;
        {
            std::lock_guard<std::mutex> lock(state().mu);
            last = --state().users == 0;
            if (last) sigaction(SIGINT, &state().old, nullptr);
        }
        if (last && !reported_ && (early_ || g_sigints.load(std::memory_order_relaxed) != start_)) raise(SIGINT);
    }
    SigintCatch(const SigintCatch&) = delete;
    SigintCatch& operator=(const SigintCatch&) = delete;

    // Whether a Ctrl-C came during the run; the first call installs the handler.
    bool hit() {
        if (!active_) return false;
        if (!installed_) install();
        return early_ || g_sigints.load(std::memory_order_relaxed) != start_;
    }
    // The run stopped as interrupted: the Ctrl-C was acted on.
    void reported() { reported_ = true; }

  private:
    struct State {
        std::mutex mu;
        int users = 0;
        struct sigaction old {};
    };
    static State& state() {
        static State* s = new State;  // never destroyed: a handler may outlive static destructors
        return *s;
    }
    [[gnu::noinline, gnu::cold]] void install() {
        start_ = g_sigints.load(std::memory_order_relaxed);  // before: a signal just after counts
        {
            std::lock_guard<std::mutex> lock(state().mu);
            if (state().users++ == 0) {
                struct sigaction sa {};
                sa.sa_handler = fg_count_sigint;
                sigemptyset(&sa.sa_mask);
                sigaction(SIGINT, &sa, &state().old);
            }
        }
        installed_ = true;
        early_ = pending_ && pending_();
    }

    unsigned start_ = 0;
    bool active_;
    bool (*pending_)();
    bool installed_ = false, early_ = false, reported_ = false;
};

// Memory for the records a native run hands to NumPy.  A block NumPy frees comes back here and is
// kept (up to kKeepBytes in all) for the next run: its pages are already mapped, and a fresh page
// costs a fault on its first write, which a short run feels (docs/performance.md).  Never
// destroyed (NumPy may free an array after static destructors run).  Each block starts with a
// kHeader-byte header holding its capacity.
class RecordMemory {
  public:
    static RecordMemory& get() {
        static RecordMemory* m = new RecordMemory;
        return *m;
    }
    // At least `bytes` usable bytes: the smallest kept block that fits, else a new one; null if
    // the system has none to give.
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
        if (bytes > SIZE_MAX - kHeader) return nullptr;
        char* h = static_cast<char*>(std::malloc(kHeader + bytes));
        if (!h) return nullptr;
        std::memcpy(h, &bytes, sizeof bytes);
        return h + kHeader;
    }
    static std::size_t capacity(const void* p) { return cap_of(static_cast<const char*>(p) - kHeader); }
    // Small blocks are freed (malloc serves them from mapped memory), and at most kKeepBlocks are
    // kept, so that take() scans a short list.
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

// A growable buffer of trivially copyable values in RecordMemory; release() hands the block to
// its new owner (the bindings wrap it in a NumPy array, which gives it back when freed).
template <class V>
class Grow {
  public:
    Grow() = default;
    Grow(const Grow&) = delete;
    Grow& operator=(const Grow&) = delete;
    ~Grow() { RecordMemory::get().give(p_); }
    V* data() { return p_; }
    // Room for n values; false (nothing changed) if the memory cannot be had.
    bool reserve(std::size_t n) {
        if (n <= cap_) return true;
        return move_to(std::max(n, cap_ * 2), cap_) || move_to(n, cap_);
    }
    // The block, holding the first `count` values (moved to a smaller block when a run that
    // stopped early left most of it unused); the caller owns it from here on.  Null if no memory.
    V* release(std::size_t count) {
        if (!p_ || cap_ > 2 * count + 64) move_to(std::max<std::size_t>(count, 1), count);
        V* p = p_;
        p_ = nullptr;
        cap_ = 0;
        return p;
    }

  private:
    // into a block of at least n values, keeping the first `keep`
    bool move_to(std::size_t n, std::size_t keep) {
        if (n > SIZE_MAX / sizeof(V)) return false;
        V* q = static_cast<V*>(RecordMemory::get().take(n * sizeof(V)));
        if (!q) return false;
        if (p_ && keep) std::memcpy(q, p_, keep * sizeof(V));
        RecordMemory::get().give(p_);
        p_ = q;
        cap_ = RecordMemory::capacity(q) / sizeof(V);
        return true;
    }
    V* p_ = nullptr;
    std::size_t cap_ = 0;
};

}  // namespace fg
