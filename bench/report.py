"""What bench/compare.py prints: the machine and BLAS lines, each workload's table, the roofline,
the summary and the targets of issues 4 and 16."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

import fastgrad as fg
from timing import Timing
from workloads import ISSUE4, ISSUE16, SMALL, Workload

LEGEND = [
    "timing: median µs per step; min-max over full repeated runs (rep) or over 5 segments of one run (seg);",
    "        x fastgrad = contender / fastgrad (above 1: slower than fastgrad); final loss = MSE on all data at",
    "        the final weights (float64); rel.diff = its relative difference from fastgrad's (DIFFERS: beyond 1e-3",
    "        relative and beyond 1e-7 of the initial loss; ~: beyond 1e-3 relative only, both at float32's rounding",
    "        floor); first-100 = max rel. difference of the first 100 step losses from fastgrad's",
]
SHORT = {"fastgrad": "fastgrad", "fastgrad_sgd": "fg SGD", "yardstick": "C++", "numpy": "NumPy", "tf_eager": "TF eager",
         "tf_function": "tf.function", "torch": "PyTorch", "jax_jit": "JAX jit", "jax_scan": "JAX scan"}


def machine_lines() -> List[str]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    return [
        f"machine: {model}, {cores} logical CPUs ({usable} usable by this process), {platform.system()} "
        f"{platform.machine()}; {load} at start",
        f"python {platform.python_version()}, numpy {np.__version__}, fastgrad {fg.__version__}",
    ]


def blas_lines(removed: str) -> List[str]:
    """``removed``: what the re-execution took out of the environment, or why there was none."""
    lines = [f"environment: removed for every contender: {removed}"
             + ("" if removed.startswith("not") else " (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE now unset)")]
    try:
        import threadpoolctl
    except ImportError:
        lines.append("BLAS: threadpoolctl is not installed, cannot tell which kernel numpy runs")
        return lines
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    if not infos:
        lines.append("BLAS: none found by threadpoolctl")
    for info in infos:
        path = Path(info.get("filepath", ""))
        where = path.parent.name if path.parent.name != "lib" else path.parent.parent.name
        owner = "numpy" if where == "numpy.libs" else "fastgrad's fallback" if where == "scipy_openblas32" else where
        lines.append(
            f"BLAS loaded ({owner}): {info.get('internal_api')} {info.get('version')}, kernel "
            f"{info.get('architecture')}, {info.get('num_threads')} threads ({where}/{path.name})"
        )
    lines.append(f"BLAS fastgrad calls: {fg._core.blas_in_use()}")
    return lines


def _fmt_us(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _rel(a: float, b: float) -> float:
    d = abs(a - b)
    m = max(abs(a), abs(b))
    return 0.0 if d == 0 else d / m


def first_steps_diff(losses: np.ndarray, ref: np.ndarray, k: int = 100) -> float:
    """Largest |difference| over the first k step losses, relative to each reference loss but
    never to less than 1e-6 of the largest of them (losses that reach float32's rounding floor
    within k steps would otherwise give meaningless ratios)."""
    k = min(k, len(losses), len(ref))
    if k == 0:
        return 0.0
    a, b = losses[:k], ref[:k]
    floor = max(1e-6 * float(np.max(np.abs(b))), 1e-30)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)))


def agrees(ours: float, ref: float, loss0: float) -> bool:
    """Final losses agree: within 1e-3 relative, or within 1e-7 of the starting loss (losses that
    end at float32's rounding floor, like W2/W3, are equal only to that precision)."""
    return abs(ours - ref) <= 1e-3 * max(abs(ours), abs(ref)) + 1e-7 * abs(loss0)


def error_line(name: str, e: Exception) -> str:
    return f"  {name:<29}ERROR {type(e).__name__}: {e}"


class Table:
    """One workload's table.  fastgrad's row, added first when it ran, is the reference of the others."""

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.ref: Optional[Timing] = None
        self.ref_final = 0.0
        self.rows: Dict[str, dict] = {}  # contender key -> its figures, for --json

    def head(self) -> List[str]:
        return [
            f"{self.w.id}  {self.w.title} — {self.w.steps:,} steps",
            f"  {'contender':<29}{'µs/step':>10}  {'min-max':<19}{'x fastgrad':>11}  {'final loss':>11}  "
            f"{'rel.diff':>9}  {'first-100':>9}",
        ]

    def add(self, key: str, label: str, tm: Timing, final: float, is_ref: bool, compare: bool = True) -> str:
        """Record a contender's figures; returns its row.  ``final``: full_loss at its final weights;
        ``compare``: False for a row that trains otherwise than the reference (no differences)."""
        if is_ref:
            self.ref, self.ref_final = tm, final
        ref = self.ref
        med, lo, hi = tm.median, min(tm.per_step_us), max(tm.per_step_us)
        ratio = med / ref.median if ref is not None else float("nan")
        if tm is ref or ref is None:
            rel, first, rel_s, first_s, ok = None, None, "—", "—", True
        elif not compare:
            rel, first, rel_s, first_s, ok = None, None, "other opt", "—", True
        else:
            rel = _rel(final, self.ref_final)
            ok = agrees(final, self.ref_final, self.w.loss0)
            first = first_steps_diff(tm.losses, ref.losses)
            rel_s = f"{rel:.1e}" + ("" if rel <= 1e-3 else " ~" if ok else " DIFFERS")
            first_s = f"{first:.1e}"
        rng_s = f"{_fmt_us(lo)}–{_fmt_us(hi)} {tm.mode}"
        self.rows[key] = {
            "name": label, "median_us": med, "rel_diff": rel, "first_100_diff": first, "min_us": lo, "max_us": hi, "mode": tm.mode,
            "samples_us": tm.per_step_us, "ratio_to_fastgrad": ratio, "final_loss": final,
            "agrees": ok, "last_step_loss": float(tm.losses[-1]) if len(tm.losses) else None,
        }
        return f"  {label:<29}{_fmt_us(med):>10}  {rng_s:<19}{ratio:>11.3g}  {final:>11.4e}  {rel_s:>9}  {first_s:>9}"

    def roofline(self, roof: List[float], roof_tries: List[float]) -> Tuple[str, dict]:
        """The roofline's line and figures, from each run's mean and every single try."""
        med, lo, hi = statistics.median(roof), min(roof), max(roof)
        fgm = self.rows.get("fastgrad", {}).get("median_us")
        tail = "" if fgm is None else f"; fastgrad = {fgm / med:.2f}x roofline"
        one = statistics.median(roof_tries)
        line = (f"  roofline: NumPy matmul, the step's 5 products, around fastgrad's runs: {_fmt_us(med)} µs/step "
                f"(median of {len(roof)} runs of {self.w.steps}, min-max {_fmt_us(lo)}–{_fmt_us(hi)}; single tries' "
                f"median {_fmt_us(one)}){tail}")
        return line, {"median": med, "min": lo, "max": hi, "single_try_median": one}


def summary_lines(summary: Dict[str, Dict[str, float]], keys: List[str]) -> List[str]:
    """The table of medians, a workload a line; ``summary``: workload -> contender key (or
    "roofline") -> median µs per step."""
    lines = ["", "summary: median µs per step"]
    lines.append("  " + f"{'':<4}" + "".join(f"{SHORT[k]:>12}" for k in keys) + f"{'roofline':>12}")
    for wid, meds in summary.items():
        cells = "".join(f"{_fmt_us(meds[k]) if k in meds else '—':>12}" for k in keys)
        roof = _fmt_us(meds["roofline"]) if "roofline" in meds else "—"
        lines.append(f"  {wid:<4}{cells}{roof:>12}")
    return lines


def target_lines(summary: Dict[str, Dict[str, float]]) -> List[str]:
    """Issues 4 and 16's targets for fastgrad, checked against its medians."""
    lines = []
    if any(w in summary for w in ISSUE4):
        lines += ["", "issue 4 targets (fastgrad's medians):"]
    for wid, meds in summary.items():
        f = meds.get("fastgrad")
        if f is None or wid not in ISSUE4:
            continue
        checks = []
        if wid in SMALL:
            if "jax_scan" in meds:
                checks.append(f"vs JAX scan {meds['jax_scan'] / f:.2f}x ({'ok' if f < meds['jax_scan'] else 'MISSED'}, need > 1)")
            if "yardstick" in meds:
                checks.append(f"vs C++ {f / meds['yardstick']:.2f}x slower ({'ok' if f <= 2 * meds['yardstick'] else 'MISSED'}, need <= 2)")
            if "tf_eager" in meds:
                checks.append(f"vs TF eager {meds['tf_eager'] / f:,.0f}x faster ({'ok' if meds['tf_eager'] >= 1e4 * f else 'MISSED'}, need >= 10,000)")
        elif "roofline" in meds:
            r = f / meds["roofline"]
            checks.append(f"{r:.2f}x roofline ({'ok' if r <= 1.10 else 'MISSED'}, need <= 1.10)")
        lines.append(f"  {wid}: " + "; ".join(checks) if checks else f"  {wid}: no peer to compare with")
    return lines + issue16_lines(summary)


def issue16_lines(summary: Dict[str, Dict[str, float]]) -> List[str]:
    """Issue 16's goals: W3m within 2x of the C++ loop with momentum; W6a (Adam) within 1.15x of
    fastgrad's plain SGD on W6 (the runs timed in turns with W6a's, else W6's own)."""
    if not any(w in summary for w in ISSUE16):
        return []
    lines = ["", "issue 16 targets (fastgrad's medians):"]
    if "W3m" in summary:
        f, c = summary["W3m"].get("fastgrad"), summary["W3m"].get("yardstick")
        if f is None or c is None:
            lines.append("  W3m: not checked, needs fastgrad's and the C++ yardstick's medians")
        else:
            verdict = "ok" if f <= 2 * c else "MISSED"
            lines.append(f"  W3m: vs C++ momentum loop {f / c:.2f}x slower ({verdict}, need <= 2)")
    if "W6a" in summary:
        f = summary["W6a"].get("fastgrad")
        # the plain-SGD runs timed in turns with W6a's are the fairer divisor; W6's own, timed
        # earlier, meet other spells of the machine
        pairs = [(summary["W6a"].get("fastgrad_sgd"), "SGD timed in turns"),
                 (summary.get("W6", {}).get("fastgrad"), "SGD in W6")]
        pairs = [(s, how) for s, how in pairs if s is not None]
        if f is None or not pairs:
            lines.append("  W6a: not checked, needs fastgrad's plain-SGD W6 in the same run: --workloads W6,W6a")
        for i, (s, how) in enumerate(pairs):
            r = f / s
            verdict = ("ok" if r <= 1.15 else "MISSED") if i == 0 else "for reference"
            lines.append(f"  W6a: Adam {_fmt_us(f)} / {how} {_fmt_us(s)} µs/step = {r:.3f}x ({verdict}, need <= 1.15)")
    return lines


def closing_lines(wall: float, errors: List[str]) -> List[str]:
    try:
        load = "; load average %.2f %.2f %.2f at the end" % os.getloadavg()
    except OSError:
        load = ""
    lines = ["", f"wall time {wall:.0f} s{load}" + ("" if not errors else f"; {len(errors)} error(s):")]
    return lines + [f"  ERROR {e}" for e in errors]
