"""Side by side: fastgrad's ``fit`` against every peer installed, on the same training runs.

    python bench/compare.py [--steps N] [--workloads W1,W3] [--quick] [--json out.json]
                            [--repeats R] [--only numpy,jax_scan,...]

Workloads (issue 4), all float32, SGD, MSE, the same data, initial weights and batch indices for
every contender; every contender records the loss of every step:

    W1  one weight, x = y = [1, 2], w0 = 2, no bias, full batch, lr 0.1
    W2  one weight, x = y = minmax(1..1999), w0 = 2, no bias, batch 1, lr 0.1
    W3  Dense 3->1 on 100 samples, y = 3x1 + 2x2 - 7x3 + 5, batch 1, lr 0.1
    W4  W3 with batches of 3
    W5  Dense(10, relu) -> Dense(1) on make_regression(10 x 10), batch 1, lr 1e-4
        (W1-W5: 10,000 steps each; --steps changes that)
    W6  784 -> 256 (relu) -> 10 on 8192 random samples (one-hot targets), batch 128, lr 0.01, 200 steps
    W7  W6 with the full batch of 8192, 20 steps
        (W6, W7: their own step counts; --quick shortens every workload)

Workloads of issue 16 (other optimizers; each peer uses its own library's optimizer):

    W3m W3 with SGD momentum 0.9, lr 0.01: fastgrad, the C++ yardstick with momentum,
        torch.optim.SGD(momentum=0.9), JAX with optax.sgd(momentum=0.9), Keras's SGD in tf.function
    W6a W6 with Adam, lr 1e-3: fastgrad, torch.optim.Adam, Keras's Adam in tf.function
        (issue 16's goal is fastgrad's W6a over its plain-SGD W6: fastgrad's W6 runs timed in turns
        with W6a's give it, and W6's own, when run too, are quoted beside it)

Contenders (``--only`` picks them by key; fastgrad always runs): fastgrad (``fit`` as users call
it, the whole call timed; on W3m and W6a also its plain-SGD run of W3 or W6, fastgrad_sgd), a plain
C++ loop (yardstick, W1-W5, W3m), a NumPy loop (numpy), TensorFlow eager as the walkthrough writes
it (tf_eager) and with ``tf.function`` (tf_function), PyTorch (torch), a JAX ``jit`` step (jax_jit)
and the whole run in ``lax.scan`` (jax_scan, compile time not counted).  A peer that is not
installed is skipped with a line saying so; one that has no such optimizer, with a line under the
workload.

Each figure is the median µs per step over full runs (``rep``) or, for a run of several seconds,
over five segments of one run (``seg``); contenders take their runs in turns.  For W6 and W7 the
roofline is NumPy's matmul on the step's five matrix products.  The script checks that ``fit``
used exactly the batches drawn by ``fastgrad._batches.BatchStream(n, batch, "random", seed)``.
docs/performance.md describes the method.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, where set, slow OpenBLAS down: the script re-executes
itself once without them, so that no contender runs with them.

Exit status: 0 unless something failed (a contender raised, the yardstick did not compile, fit
used other batches than the ones drawn).  A final loss that differs is reported, not an error.
"""

from __future__ import annotations

import os
import sys

_MARKER = "FASTGRAD_BENCH_REEXEC"
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _reexec_without_blas_overrides() -> None:
    """Run this script again with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (once: a marker guards it).

    It must happen before NumPy (and its OpenBLAS) is loaded, since OpenBLAS reads them at load.
    """
    if _MARKER in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    removed = [f"{k}={os.environ[k]}" for k in _BLAS_VARS if k in os.environ]
    env[_MARKER] = ";".join(removed) if removed else "none set"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    argv[0] = sys.executable
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


if __name__ == "__main__":
    _reexec_without_blas_overrides()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, List  # noqa: E402

from contenders import CONTENDERS, Contender, FastgradRunner  # noqa: E402
from report import LEGEND, Table, blas_lines, closing_lines, error_line, machine_lines  # noqa: E402
from report import summary_lines, target_lines  # noqa: E402
from timing import Policy, measure_workload  # noqa: E402
from workloads import ALL_WORKLOADS, canonical_id, full_loss, make_workload  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python bench/compare.py",
        description="fastgrad's fit side by side with a C++ loop, NumPy, TensorFlow, PyTorch and JAX (issues 4, 16).",
    )
    ap.add_argument("--steps", type=int, default=None, help="steps for W1-W5 (default 10000; 1000 with --quick)")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS), help="comma-separated, e.g. W1,W3 (default all)")
    ap.add_argument("--quick", action="store_true", help="short runs and few repeats, to check that it works")
    ap.add_argument("--repeats", type=int, default=None, help="exactly this many full runs per contender (no segments)")
    ap.add_argument("--only", default=None,
                    help="comma-separated contender keys to run besides fastgrad "
                         "(yardstick,numpy,tf_eager,tf_function,torch,jax_jit,jax_scan)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    ids = []
    for i in (s.strip() for s in args.workloads.split(",") if s.strip()):
        wid = canonical_id(i)
        if wid is None:
            ap.error(f"--workloads: unknown workload {i!r}; expected some of {', '.join(ALL_WORKLOADS)}")
        ids.append(wid)
    args.ids = ids
    if args.steps is not None and args.steps < 1:
        ap.error("--steps: expected a positive number")
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats: expected a positive number")
    args.small_steps = args.steps if args.steps is not None else (1000 if args.quick else 10_000)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    out = print
    removed = os.environ.get(_MARKER, "not re-executed (imported as a module?)")
    for line in machine_lines() + blas_lines(removed):
        out(line)

    policy = Policy(fixed_repeats=args.repeats)
    if args.quick:
        policy = Policy(min_repeats=2, max_repeats=5, budget_s=1.0, segment_above_s=2.0, fixed_repeats=args.repeats)

    errors: List[str] = []
    contenders: List[Contender] = []
    only = None if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    for make in CONTENDERS:
        c = make()
        if only is not None and not c.key.startswith("fastgrad") and c.key not in only:
            continue
        try:
            ok, info = c.available()
        except Exception as e:  # the yardstick that does not compile is an error, not a skip
            errors.append(f"{c.name}: {e}")
            out(f"contender {c.name}: ERROR {e}")
            continue
        if ok:
            out(f"contender {c.name}: {info}")
            contenders.append(c)
        else:
            out(f"contender {c.name}: skipped, {info}")
    for line in LEGEND:
        out(line)

    report: Dict[str, dict] = {"machine": machine_lines(), "blas": blas_lines(removed), "workloads": {}}
    summary: Dict[str, Dict[str, float]] = {}
    for wid in args.ids:
        w = make_workload(wid, args.small_steps, args.quick)
        table = Table(w)
        out("")
        for line in table.head():
            out(line)
        absent = [c.name for c in contenders if not c.supports(w)]
        if absent and not w.opt.plain:
            out(f"  not run on this optimizer: {', '.join(absent)}")

        def fail(c: Contender, e: Exception) -> None:
            """Called inside the ``except`` that caught ``e``, so that the traceback is printed."""
            errors.append(f"{w.id} {c.name}: {type(e).__name__}: {e}")
            out(error_line(c.name, e))
            traceback.print_exc(file=sys.stderr)

        measured = measure_workload(w, contenders, policy, fail)
        for c, m in measured.contenders:
            runner = m.runner
            is_fastgrad = isinstance(runner, FastgradRunner)  # fastgrad's row, or its plain-SGD reference
            try:
                tm = m.result()
                if is_fastgrad:
                    problem = runner.verify(w.steps)
                    if problem:
                        raise RuntimeError(problem)
            except Exception as e:
                fail(c, e)
                continue
            if len(tm.losses) != w.steps:
                errors.append(f"{w.id} {c.name}: recorded {len(tm.losses)} losses for {w.steps} steps")
            final = full_loss(w.layers, tm.weights, w.x, w.y)
            label = runner.row_label() if is_fastgrad else runner.label or c.name
            out(table.add(c.key, label, tm, final, is_ref=c.key == "fastgrad", compare=runner.compare))
            sys.stdout.flush()
            summary.setdefault(w.id, {})[c.key] = table.rows[c.key]["median_us"]
        entry = {"title": w.title, "steps": w.steps, "initial_loss": w.loss0, "contenders": table.rows}
        if measured.roof:
            line, entry["roofline_us"] = table.roofline(measured.roof, measured.roof_tries)
            out(line)
            summary.setdefault(w.id, {})["roofline"] = entry["roofline_us"]["median"]
        report["workloads"][w.id] = entry

    for line in summary_lines(summary, [c.key for c in contenders]) + target_lines(summary):
        out(line)
    wall = time.perf_counter() - wall0
    for line in closing_lines(wall, errors):
        out(line)
    report["errors"] = errors
    report["wall_s"] = wall
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
        out(f"wrote {args.json_out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
