"""Which BLAS fastgrad's large matrix products call, chosen once at import.

NumPy's own OpenBLAS when the process has it (NumPy's wheels bundle one): one thread pool in the
process, and nothing more to load.  Otherwise the OpenBLAS of the scipy-openblas32 wheel, a
dependency of fastgrad, opened only then: importing it costs tens of milliseconds, and its
thread pool spins on the other cores for a while after it starts.  With neither, every product
runs on fastgrad's plain loops (correct, and slow for large layers), with a warning.
"""

from __future__ import annotations

import os
import warnings

from . import _core


def fallback_library() -> str:
    """The path of scipy-openblas32's library (imports scipy_openblas32, which loads it)."""
    import scipy_openblas32

    return os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))


def use_fallback() -> str:
    """Call scipy-openblas32 from now on; returns its path.

    Raises ImportError when scipy-openblas32 is not installed, ValueError when its library cannot
    be opened.  Not while a fit runs in another thread."""
    path = fallback_library()
    _core.use_fallback_blas(path)
    return path


def select() -> str:
    """NumPy's OpenBLAS if loaded, else scipy-openblas32's; returns ``_core.blas_in_use()``."""
    if _core.has_blas and not _core.use_shared_blas():
        try:
            use_fallback()
        except (ImportError, ValueError) as e:
            warnings.warn(
                f"fastgrad found no OpenBLAS ({e}); large matrix products run on its plain loops, "
                "which are slow for large layers (pip install scipy-openblas32)",
                RuntimeWarning,
                stacklevel=3,
            )
    return _core.blas_in_use()
