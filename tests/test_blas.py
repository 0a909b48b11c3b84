"""Which BLAS the products call: NumPy's OpenBLAS when present, scipy-openblas32 opened only when
it is not, and the plain loops (with a warning) when neither can be had."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _blas, _core

needs_blas = pytest.mark.skipif(not _core.has_blas, reason="built without OpenBLAS")
shares_numpys = pytest.mark.skipif(
    "openblas64" not in _core.blas_in_use(),
    reason="NumPy here has no OpenBLAS64 for fastgrad to share",
)


@pytest.fixture
def restore_blas():
    yield
    _blas.select()


@needs_blas
@shares_numpys
def test_import_does_not_load_the_fallback_when_numpy_has_openblas():
    code = textwrap.dedent(
        """
        import sys
        import fastgrad
        maps = open("/proc/self/maps").read()
        loaded = "scipy_openblas32" in sys.modules, "libscipy_openblas.so" in maps
        print(*loaded, fastgrad._core.blas_in_use())
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = run.stdout.split()
    assert out[:2] == ["False", "False"]
    assert "openblas64" in " ".join(out[2:])


@needs_blas
def test_fallback_is_opened_and_called(restore_blas):
    path = _blas.use_fallback()
    assert _core.blas_in_use() == path + " (scipy-openblas32, the fallback)"
    x = np.random.default_rng(0).normal(size=(64, 40)).astype(np.float32)
    m = fg.Sequential([fg.Dense(48, "relu", dtype="float32"), fg.Dense(3, dtype="float32")], seed=0)
    y = np.zeros((64, 3), np.float32)
    old = _core.get_blas_min_work()
    try:
        _core.set_blas_min_work(1)
        loss_fallback, _ = fg.value_and_grad(m, x, y)
        _core.use_no_blas()
        loss_loops, _ = fg.value_and_grad(m, x, y)
    finally:
        _core.set_blas_min_work(old)
    # the library computed something: close to the loops (float32 sums in another order)
    assert loss_fallback == pytest.approx(loss_loops, rel=1e-5)


@needs_blas
@pytest.mark.parametrize("path", ["/nonexistent/libnothing.so", "numpy's ILP64 library"])
def test_a_library_that_cannot_serve_is_refused_and_nothing_changes(path, restore_blas):
    before = _core.blas_in_use()
    if path == "numpy's ILP64 library":
        if "openblas64" not in before:
            pytest.skip("NumPy here has no OpenBLAS64")
        path = before  # it exports scipy_cblas_sgemm64_, not the LP64 scipy_cblas_sgemm
    with pytest.raises(ValueError, match="cannot use .* as fastgrad's BLAS"):
        _core.use_fallback_blas(path)
    assert _core.blas_in_use() == before


@needs_blas
def test_no_blas_at_all_warns_and_runs_on_the_plain_loops(monkeypatch, restore_blas):
    def missing():
        raise ImportError("No module named 'scipy_openblas32'")

    _core.use_no_blas()
    monkeypatch.setattr(_core, "use_shared_blas", lambda: "")
    monkeypatch.setattr(_blas, "fallback_library", missing)
    with pytest.warns(RuntimeWarning, match="no OpenBLAS .*plain loops"):
        assert _blas.select() == "none (plain loops)"
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 300)), rng.normal(size=(200, 2))
    m = fg.Sequential([fg.Dense(100, "relu"), fg.Dense(2)], seed=0)
    loss_none, grads_none = fg.value_and_grad(m, x, y)
    old = _core.get_blas_min_work()
    try:
        monkeypatch.undo()
        _blas.select()
        _core.set_blas_min_work(2**62)  # the plain loops with a BLAS loaded: the same bits
        loss_loops, grads_loops = fg.value_and_grad(m, x, y)
    finally:
        _core.set_blas_min_work(old)
    assert loss_none == loss_loops
    for a, b in zip(grads_none, grads_loops):
        np.testing.assert_array_equal(a, b)
