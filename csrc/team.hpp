// A team of threads for one training step: the step is cut into phases, and each phase into a fixed
// number of parts (passed in by the caller: the same in every step of a run); a phase's parts touch
// disjoint memory, and each phase starts when every part of the one before has ended.
//
// Why: with OpenBLAS's own threads, only the matrix products used both cores; the batch gather,
// the bias and ReLU passes and the update ran on one core while OpenBLAS's second thread spun.  The
// team splits those as well, and calls OpenBLAS on one thread for its share of each product.
//
// Bits: a part computes the same values whichever thread runs it, so the team's threads and one
// thread running every part in turn (when the team is busy with another step, say) give the same
// bits.  They may differ from those of one product on OpenBLAS's threads (its blocking depends on
// how many threads it uses), which is why every step of a run takes the same path.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

namespace fg {

// The team's settings, read once per step by the native loop and passed down (a step never reads
// one twice).  Set at import; settable for tests only while no run is active (runtime.hpp's
// RunGuard; the bindings check).
constexpr std::size_t kMaxParts = 16;
// Parts per phase (1: no team): the BLAS's thread count at import.
inline std::atomic<std::size_t>& team_parts() {
    static std::atomic<std::size_t> v{1};
    return v;
}
// Steps whose largest layer does fewer multiply-adds (rows * in * out) run without the team: below
// it the threads' hand-offs cost more than they save (docs/performance.md, "The team").
inline std::atomic<std::size_t>& team_min_work() {
    static std::atomic<std::size_t> v{std::size_t(1) << 20};
    return v;
}
// Batches of more rows than this are cut by rows (team_step_rows), smaller ones by phases
// (team_step): the crossover measured in docs/performance.md.
inline std::atomic<std::size_t>& team_rows_split() {
    static std::atomic<std::size_t> v{1024};
    return v;
}

// The three settings as one run reads them, once.
struct TeamConfig {
    std::size_t parts = 1, min_work = 0, rows_split = 0;
    static TeamConfig current() {
        return {team_parts().load(std::memory_order_relaxed), team_min_work().load(std::memory_order_relaxed),
                team_rows_split().load(std::memory_order_relaxed)};
    }
};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// Waits while `still()` holds: spins, then yields the core (two vCPUs shared with other work).
template <class F>
inline void spin_while(F&& still) {
    for (unsigned n = 0; still(); ++n) {
        if (n < 4096) cpu_relax();
        else sched_yield();
    }
}

class Team {
  public:
    // parts - 1 worker threads, with every signal blocked (a Ctrl-C goes to a Python thread,
    // never to one of these).  Throws std::system_error if a thread cannot start.
    explicit Team(std::size_t parts) : parts_(parts), pid_(getpid()) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);  // the threads inherit the mask
        try {
            for (std::size_t p = 1; p < parts; ++p) workers_.emplace_back([this, p] { work(p); });
        } catch (...) {
            pthread_sigmask(SIG_SETMASK, &old, nullptr);
            stop();
            throw;
        }
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    ~Team() { stop(); }
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;

    std::size_t parts() const { return parts_; }
    pid_t pid() const { return pid_; }

    // f(phase, part) for every phase in order and every part; the caller runs part 0.  f must be
    // noexcept: an exception on a worker would end the process, or leave the others at the barrier.
    template <class F, std::enable_if_t<std::is_nothrow_invocable_v<F&, std::size_t, std::size_t>, int> = 0>
    void run(std::size_t phases, F& f) {
        job_ = [](void* ctx, std::size_t phase, std::size_t part) noexcept { (*static_cast<F*>(ctx))(phase, part); };
        ctx_ = &f;
        phases_ = phases;
        done_.store(0, std::memory_order_relaxed);
        gen_.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst) > 0) {
            std::lock_guard<std::mutex> lock(m_);
            cv_.notify_all();
        }
        phases_of(0);
        spin_while([&] { return done_.load(std::memory_order_acquire) < parts_ - 1; });
    }

  private:
    void phases_of(std::size_t part) {
        for (std::size_t ph = 0; ph < phases_; ++ph) {
            job_(ctx_, ph, part);
            if (ph + 1 < phases_) barrier();
        }
    }

    void barrier() {
        const unsigned g = bar_gen_.load(std::memory_order_acquire);
        if (bar_count_.fetch_add(1, std::memory_order_acq_rel) == parts_ - 1) {
            bar_count_.store(0, std::memory_order_relaxed);
            bar_gen_.fetch_add(1, std::memory_order_release);
        } else {
            spin_while([&] { return bar_gen_.load(std::memory_order_acquire) == g; });
        }
    }

    void work(std::size_t part) {
        unsigned seen = 0;
        using clk = std::chrono::steady_clock;
        while (true) {
            // spin for a while (the next step comes within microseconds), then sleep
            const auto t0 = clk::now();
            unsigned n = 0;
            while (gen_.load(std::memory_order_acquire) == seen && !quit_.load(std::memory_order_relaxed)) {
                cpu_relax();
                if (++n % 256 == 0 && clk::now() - t0 > std::chrono::microseconds(500)) {
                    std::unique_lock<std::mutex> lock(m_);
                    sleeping_.fetch_add(1, std::memory_order_seq_cst);
                    while (gen_.load(std::memory_order_seq_cst) == seen && !quit_.load()) cv_.wait(lock);
                    sleeping_.fetch_sub(1, std::memory_order_seq_cst);
                }
            }
            if (quit_.load()) return;
            seen = gen_.load(std::memory_order_acquire);
            phases_of(part);
            done_.fetch_add(1, std::memory_order_release);
        }
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lock(m_);
            quit_.store(true);
            cv_.notify_all();
        }
        for (auto& w : workers_) w.join();
        workers_.clear();
    }

    const std::size_t parts_;
    const pid_t pid_;
    std::vector<std::thread> workers_;
    void (*job_)(void*, std::size_t, std::size_t) noexcept = nullptr;
    void* ctx_ = nullptr;
    std::size_t phases_ = 0;
    alignas(64) std::atomic<unsigned> gen_{0};
    alignas(64) std::atomic<std::size_t> done_{0};
    alignas(64) std::atomic<std::size_t> bar_count_{0};
    alignas(64) std::atomic<unsigned> bar_gen_{0};
    alignas(64) std::atomic<int> sleeping_{0};
    std::atomic<bool> quit_{false};
    std::mutex m_;
    std::condition_variable cv_;
};

// The process's team, one step at a time: the lock is held for a step.
struct TeamSlot {
    std::mutex lock;
    Team* team = nullptr;  // never destroyed while a process other than its creator holds it
};
inline TeamSlot& team_slot() {
    static TeamSlot* s = new TeamSlot;  // never destroyed: no thread joins at exit
    return *s;
}

// How many steps have run on the team (threads or parts in turn) in this process: for tests.
inline std::atomic<unsigned long long>& team_steps_run() {
    static std::atomic<unsigned long long> v{0};
    return v;
}

// Runs f(phase, part) for every phase in order and each of `parts` parts: on the team's threads
// when it is free, else every part on the calling thread in turn (the same bits).  f is noexcept
// by construction (the overload exists only for such f): a phase has nothing that can fail.
template <class F, std::enable_if_t<std::is_nothrow_invocable_v<F&, std::size_t, std::size_t>, int> = 0>
void run_phases(std::size_t parts, std::size_t phases, F& f) {
    team_steps_run().fetch_add(1, std::memory_order_relaxed);
    TeamSlot& slot = team_slot();
    std::unique_lock<std::mutex> lock(slot.lock, std::try_to_lock);
    Team* team = nullptr;
    if (lock.owns_lock() && parts > 1) {
        if (slot.team && slot.team->pid() != getpid()) slot.team = nullptr;  // a fork's child: the threads are gone
        if (slot.team && slot.team->parts() != parts) {
            delete slot.team;
            slot.team = nullptr;
        }
        if (!slot.team) {
            try {
                slot.team = new Team(parts);
            } catch (const std::system_error&) {
                slot.team = nullptr;  // no threads to be had: run the parts here
            }
        }
        team = slot.team;
    }
    if (team) {
        team->run(phases, f);
        return;
    }
    for (std::size_t ph = 0; ph < phases; ++ph)
        for (std::size_t p = 0; p < parts; ++p) f(ph, p);
}

}  // namespace fg
