"""``fastgrad check``: every gradient of a random model against TensorFlow and against central
finite differences, one line per tensor, with :mod:`fastgrad.checks` (what the tests use)."""

from __future__ import annotations

import argparse
from typing import List

import numpy as np

import fastgrad as fg

from .. import checks
from .common import EXIT_FAILED, EXIT_OK, TF_INSTALL, check_model_size, describe_layers, g, out

__all__ = ["cmd_check", "DRAWS"]

#: how many random batches are drawn, at most, to find one whose ReLU inputs are all at least
#: checks.RELU_MARGIN from 0
DRAWS = 100


def _rows(comparisons: List[checks.Comparison], width: int) -> int:
    """Print one line per comparison; returns how many are outside their tolerance."""
    for c in comparisons:
        out(f"  {c.tensor:<{width}}{str(c.shape):<10}{g(c.abs_err, 2):>13}{g(c.rel_err, 2):>11}{c.tol:>9.0e}  "
            f"{'ok' if c.ok else 'FAIL'}")
    return sum(not c.ok for c in comparisons)


def cmd_check(args: argparse.Namespace) -> int:
    """``fastgrad check``: gradients against TensorFlow and finite differences, one line per tensor."""
    spec = args.layers
    check_model_size(spec, args.features, args.batch, None, args.dtype, "--layers, --features, --batch")
    rng = np.random.default_rng(args.seed)
    model = fg.Sequential([fg.Dense(u, a, dtype=args.dtype) for u, a in spec], seed=args.seed)
    model.build(args.features)
    # inputs whose ReLU pre-activations are all at least RELU_MARGIN away from the kink at 0
    for _attempt in range(DRAWS):
        x = rng.standard_normal((args.batch, args.features)).astype(args.dtype)
        if checks.relu_margin(model, x) >= checks.RELU_MARGIN:
            break
    y = rng.standard_normal((args.batch, spec[-1][0])).astype(args.dtype)
    kinked = checks.relu_margin(model, x) < checks.RELU_MARGIN

    names = checks.tensor_names(model)
    n_params = sum(w.size for w in model.get_weights())
    out(f"fastgrad check: {describe_layers(spec)} on {args.features} inputs, batch {args.batch}, "
        f"{args.dtype}, seed {args.seed} ({n_params} parameters)")
    if kinked:
        out(f"note: some ReLU inputs are within {checks.RELU_MARGIN:g} of 0; finite differences may cross the kink")

    loss, ours = fg.value_and_grad(model, x, y)
    width = max(len(n) for n in names + ["loss"]) + 2
    head = f"  {'tensor':<{width}}{'shape':<10}{'max abs err':>13}{'rel err':>11}{'tol':>9}"
    failures = total = 0

    tf_ok = False
    if args.no_tf:
        out("TensorFlow comparison: skipped (--no-tf)")
    else:
        from .. import oracle

        if oracle.available():
            tf_ok = True
            import tensorflow as tf

            tol = checks.TF_RTOL[args.dtype]
            rows = checks.against_tensorflow(model, x, y, loss, ours, tol)
            out(f"against TensorFlow {tf.__version__} ({args.dtype}, the same weights and batch; "
                f"relative error <= {tol:g}):")
            out(head)
            failures += _rows(rows, width)
            total += len(rows)
        else:
            out(f"TensorFlow comparison: skipped, TensorFlow is not installed: {TF_INSTALL}")

    model64 = fg.Sequential([fg.Dense(u, a, dtype="float64") for u, a in spec])
    model64.set_weights([w.astype(np.float64) for w in model.get_weights()])
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    _, ours64 = fg.value_and_grad(model64, x64, y64)
    out(f"against central finite differences (fastgrad on a float64 copy of the model, eps {checks.FD_EPS:g}; "
        f"relative error <= {checks.FD_RTOL:g}):")
    out(head)
    rows = checks.against_finite_differences(model64, x64, y64, ours64)
    failures += _rows(rows, width)
    total += len(rows)

    if failures:
        out(f"{failures} of {total} comparisons outside tolerance")
        return EXIT_FAILED
    out(f"all {total} comparisons within tolerance" + ("" if tf_ok else " (finite differences only)"))
    return EXIT_OK
