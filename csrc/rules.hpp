// The built-in stopping rules as the native loop tests them: in list order after every step, with
// the same comparisons (of doubles) as fastgrad/stop.py's rules in the Python loop.  A rule that
// monitors the validation loss (on_val) is tested only after a step that validated, on that loss.
#pragma once

#include <climits>
#include <cmath>
#include <cstddef>
#include <vector>

namespace fg {

enum class RuleKind : int { weight_delta = 0, loss_delta = 1, loss_below = 2, plateau = 3, max_steps = 4 };

struct Rule {
    RuleKind kind;
    double tol;
    long long n;  // patience (plateau; counted in the monitored value's tests) or the step count
    bool on_val = false;  // monitors the validation loss
    double best = INFINITY;
    long long wait = 0;
    double prev = 0.0;  // the previous validation loss (loss_delta on_val)
    bool has_prev = false;
};

struct LoopState {
    long long step = 0;  // updates made so far, over every chunk
    bool has_prev = false;
    double prev_loss = 0.0;
};

// stop: -1 still running, -2 diverged, -3 interrupted, -4 out of memory for the records,
// -5 the explicit batches ran out, -6 the progress callback failed, >= 0 the rule that fired
struct ChunkResult {
    std::size_t steps = 0;
    int stop = -1;
    int bad_grad = -1;
    int bad_weight = -1;
    std::size_t recorded = 0;
};

// Plateau: no improvement of the best value by more than tol for n tests in a row.
inline bool plateau_fires(Rule& r, double value) {
    if (value < r.best - r.tol) {
        r.best = value;
        r.wait = 0;
        return false;
    }
    return ++r.wait >= r.n;
}

// A rule that monitors the validation loss, after a step that validated (v: that loss).
inline bool val_rule_fires(Rule& r, double v) {
    switch (r.kind) {
        case RuleKind::loss_delta: {
            const bool fires = r.has_prev && std::fabs(v - r.prev) <= r.tol;
            r.prev = v;
            r.has_prev = true;
            return fires;
        }
        case RuleKind::loss_below: return v <= r.tol;
        case RuleKind::plateau: return plateau_fires(r, v);
        default: return false;
    }
}

inline bool rule_fires(Rule& r, const LoopState& st, double loss, double weight_delta) {
    switch (r.kind) {
        case RuleKind::weight_delta: return weight_delta <= r.tol;
        case RuleKind::loss_delta: return st.has_prev && std::fabs(loss - st.prev_loss) <= r.tol;
        case RuleKind::loss_below: return loss <= r.tol;
        case RuleKind::plateau: return plateau_fires(r, loss);
        case RuleKind::max_steps: return st.step >= r.n;
    }
    return false;
}

// The rules as a loop needs them: the MaxSteps limit (the smallest n; the first such rule in
// list order is the one that fires) and whether anything else must be tested step by step.
struct RulePlan {
    long long limit = LLONG_MAX;
    int limit_rule = -1;
    bool others = false;      // a rule other than MaxSteps: test every rule, in order, every step
    bool need_delta = false;  // a WeightDelta rule: compute the largest weight change
};

inline RulePlan plan_rules(const std::vector<Rule>& rules) {
    RulePlan p;
    for (std::size_t j = 0; j < rules.size(); ++j) {
        if (rules[j].kind == RuleKind::max_steps) {
            if (rules[j].n < p.limit) {
                p.limit = rules[j].n;
                p.limit_rule = int(j);
            }
        } else {
            p.others = true;
            p.need_delta |= rules[j].kind == RuleKind::weight_delta;
        }
    }
    return p;
}

}  // namespace fg
