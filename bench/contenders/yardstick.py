"""The C++ yardstick: bench/yardstick.cpp, a plain hand-written loop compiled with g++ and called
once per run through ctypes (W1-W5, and W3m with momentum: SGD only).  A yardstick that does not
compile is an error, not a skip."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import numpy as np

from contenders.base import Contender, Runner
from workloads import SMALL, Workload

HERE = Path(__file__).resolve().parents[1]  # bench/
CACHE = HERE / ".cache"


def build_yardstick() -> Path:
    """Compile bench/yardstick.cpp into bench/.cache (once per version of the source)."""
    src = HERE / "yardstick.cpp"
    cxx = os.environ.get("CXX") or shutil.which("g++") or "g++"
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC"]
    digest = hashlib.sha256(src.read_bytes() + " ".join([cxx, *flags]).encode()).hexdigest()[:16]
    lib = CACHE / f"yardstick-{digest}.so"
    if not lib.exists():
        CACHE.mkdir(exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([cxx, *flags, str(src), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {src}:\n{proc.stderr}")
        tmp.replace(lib)
    return lib


class YardstickRunner(Runner):
    """Calls ``yardstick_train_f32`` once for the whole run; the ctypes pointers are made in
    ``reset`` (untimed), so the timed call is the C++ loop plus one ctypes call."""

    def __init__(self, fn, w: Workload) -> None:
        self.fn, self.w = fn, w
        self.params: List[np.ndarray] = []
        self.losses = np.empty(0, dtype=np.float32)
        self.args: tuple = ()

    def reset(self):
        w = self.w
        self.params = [a.copy() for a in w.init]
        if len(self.losses) < w.steps:
            self.losses = np.empty(w.steps, dtype=np.float32)
        fp = ctypes.POINTER(ctypes.c_float)
        null = ctypes.cast(None, fp)

        def p(a):
            return a.ctypes.data_as(fp)

        if w.hidden:
            k1, b1, k2, b2 = (p(a) for a in self.params)
        else:
            k1 = p(self.params[0])
            b1 = p(self.params[1]) if len(self.params) == 2 else null
            k2 = b2 = null
        idx = (w.batches.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)) if w.batches is not None
               else ctypes.cast(None, ctypes.POINTER(ctypes.c_int64)))
        self.head = (p(w.x), p(w.y), w.x.shape[0], w.x.shape[1], w.hidden, w.y.shape[1], idx, w.rows)
        self.tail = (ctypes.c_float(w.lr), ctypes.c_float(w.opt.momentum), k1, b1, k2, b2, p(self.losses))

    def run(self, steps, segments=1):
        if steps > len(self.losses):
            raise ValueError(f"reset() sized the loss buffer for {len(self.losses)} steps, asked for {steps}")
        rc = self.fn(*self.head, steps, *self.tail)
        if rc != 0:
            raise RuntimeError(f"yardstick_train_f32 returned {rc}")
        return self.losses[:steps].copy(), []

    def weights(self):
        return [a.copy() for a in self.params]


class Yardstick(Contender):
    name, key = "C++ yardstick", "yardstick"

    def __init__(self) -> None:
        self.fn = None

    def available(self):
        try:
            lib = ctypes.CDLL(str(build_yardstick()))
        except (OSError, RuntimeError, FileNotFoundError) as e:
            raise RuntimeError(f"the C++ yardstick could not be built: {e}") from e
        fn = lib.yardstick_train_f32
        fp = ctypes.POINTER(ctypes.c_float)
        i64 = ctypes.c_int64
        f32 = ctypes.c_float
        fn.argtypes = [fp, fp, i64, i64, i64, i64, ctypes.POINTER(i64), i64, i64, f32, f32, fp, fp, fp, fp, fp]
        fn.restype = ctypes.c_int
        self.fn = fn
        return True, "g++ -O2 -std=c++17"

    def supports(self, w):
        return w.base in SMALL and w.opt.kind == "sgd"

    def prepare(self, w):
        r = YardstickRunner(self.fn, w)
        if w.opt.momentum:
            r.label = f"{self.name} (momentum)"
        return r

