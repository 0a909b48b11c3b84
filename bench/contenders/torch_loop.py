"""PyTorch: eager ``nn.Linear`` layers with ``torch.optim.SGD`` (momentum too) or ``torch.optim.Adam``."""

from __future__ import annotations

import math
import time

import numpy as np

from contenders.base import Contender, Runner, segment_bounds
from workloads import Workload


class TorchRunner(Runner):
    """``nn.Linear`` layers (weights transposed from Keras layout), ``F.mse_loss``,
    ``torch.optim.SGD`` or ``Adam``; ``loss.item()`` recorded every step.

    PyTorch's SGD with momentum keeps ``b = mu b + g; w -= lr b``, Keras's ``v = mu v - lr g;
    w += v``: the same steps at a constant rate, rounded differently.  PyTorch's Adam adds its
    epsilon to ``sqrt(v / (1 - beta_2^t))``, Keras's to ``sqrt(v)``: Keras's epsilon e is PyTorch's
    ``e / sqrt(1 - beta_2^t)``, which changes every step, so the runner sets the param group's
    ``eps`` to it before each step (a scheduler's way of changing a hyperparameter).
    """

    segmentable = True

    def __init__(self, torch, w: Workload) -> None:
        self.torch, self.w = torch, w
        mods = []
        self.linears = []
        for units, act, use_bias in w.layers:
            lin = torch.nn.Linear(1, units, bias=use_bias)  # shapes are replaced in reset()
            self.linears.append(lin)
            mods.append(lin)
            if act == "relu":
                mods.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*mods)
        self.X, self.Y = torch.from_numpy(w.x), torch.from_numpy(w.y)
        self.B = None if w.batches is None else torch.from_numpy(w.batches)
        self.reset()

    def reset(self):
        torch = self.torch
        i = 0
        with torch.no_grad():
            for lin, (_, _, use_bias) in zip(self.linears, self.w.layers):
                lin.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(self.w.init[i].T)).clone())
                i += 1
                if use_bias:
                    lin.bias = torch.nn.Parameter(torch.from_numpy(self.w.init[i]).clone())
                    i += 1
        o = self.w.opt
        if o.kind == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.w.lr, betas=(o.beta_1, o.beta_2),
                                        eps=o.epsilon)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=self.w.lr, momentum=o.momentum)

    def run(self, steps, segments=1):
        torch = self.torch
        F = torch.nn.functional
        model, opt, X, Y, B = self.model, self.opt, self.X, self.Y, self.B
        adam = self.w.opt.kind == "adam"
        if adam:
            group, eps, beta_2 = opt.param_groups[0], self.w.opt.epsilon, self.w.opt.beta_2
        losses = []
        stamps = []
        for a, b in segment_bounds(steps, segments):
            for t in range(a, b):
                if adam:
                    group["eps"] = eps / math.sqrt(1.0 - beta_2 ** (t + 1))  # Keras's epsilon at step t + 1
                if B is None:
                    xb, yb = X, Y
                else:
                    idx = B[t]
                    xb, yb = X[idx], Y[idx]
                opt.zero_grad()
                loss = F.mse_loss(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            if segments > 1:
                stamps.append(time.perf_counter())
        return np.asarray(losses), stamps

    def weights(self):
        out = []
        for lin, (_, _, use_bias) in zip(self.linears, self.w.layers):
            out.append(lin.weight.detach().numpy().T.copy())
            if use_bias:
                out.append(lin.bias.detach().numpy().copy())
        return out


class Torch(Contender):
    name, key = "PyTorch eager + optim.SGD", "torch"

    def available(self):
        try:
            import torch
        except ImportError:
            return False, "PyTorch is not installed (pip install torch)"
        self.torch = torch
        return True, f"{torch.__version__}, {torch.get_num_threads()} threads"

    def supports(self, w):
        return True

    def prepare(self, w):
        r = TorchRunner(self.torch, w)
        if w.opt.kind == "adam":
            r.label = "PyTorch eager + optim.Adam"
        elif w.opt.momentum:
            r.label = f"PyTorch + SGD(momentum={w.opt.momentum:g})"
        return r
