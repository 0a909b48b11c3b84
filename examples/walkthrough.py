"""The walkthrough's experiments E1-E8, run through ``fastgrad.walkthrough``, one line or two each.

    python examples/walkthrough.py

Each experiment's code (its fit calls, its story, its figure) lives in one module,
``fastgrad/walkthrough/e1.py`` ... ``e8.py``; ``walkthrough.e4()`` runs E4 and returns an
Experiment: its fit results (``ex.results``), the trained models (``ex.models``), the data, and
the figures its story prints (``ex.facts``).  ``fastgrad demo`` tells the same story at length,
with figures and TensorFlow replays.
"""

import numpy as np

import fastgrad as fg
from fastgrad import walkthrough

# E1: one weight, full batch, stop when |w_t - w_(t-1)| <= 0.1: the walkthrough's numbers exactly
e1 = walkthrough.e1()
print("E1 weights:", e1.facts.weights)
print("E1 losses: ", e1.facts.losses, "final:", e1.facts.final_loss)
# E3: the same as a model object
print("E3 model([[3]]):", walkthrough.e3().facts.call_3)

# E2: E1 replayed in TensorFlow (the oracle), when TensorFlow is installed
if fg.oracle.available():
    print("E2 TensorFlow weights:", walkthrough.e2().facts.tf_weights)
else:
    print("E2 needs TensorFlow: pip install 'fastgrad[tf]'")

# E4: SGD on raw 1..1999 explodes; fastgrad stops the run and warns
e4 = walkthrough.e4()
r = e4.results["run"]
print("E4", r.stopped_by, "at step", r.steps, "| losses:", np.array2string(r.history.loss, precision=3))
print("   ", e4.facts.warning[0] if e4.facts.warning else "no warning")

# E5: the same after min-max scaling converges to w = 1
e5 = walkthrough.e5()
print("E5 w =", e5.models["run"].kernel[0, 0], "final loss", e5.facts.final_loss)

# E6 / E7: a Dense layer learns y = 3x1 + 2x2 - 7x3 + 5, with batches of 1 and of 3
e6, e7 = walkthrough.e6(), walkthrough.e7()
for ex in (e6, e7):
    layer = ex.models["run"]
    print(ex.id, "kernel", layer.kernel.ravel().round(4), "bias", layer.bias.round(4))

# E7's lesson: LossDelta on a noisy minibatch loss can stop far from the answer; Plateau does not
for name in ("loss_delta", "plateau"):
    r = e7.results[name]
    print(f"E7 {name}: stopped at step {r.steps}, loss on all data {r.final_loss:.3g}")

# E8: two layers on make_regression's 10 x 10 (shipped with fastgrad)
e8 = walkthrough.e8()
print("E8 loss", f"{e8.facts.first_losses:.4g} -> {e8.facts.final_loss:.4g}")
for p, t in zip(e8.facts.predictions[:3], e8.facts.targets[:3]):
    print(f"   prediction {p:9.3f}   target {t:9.3f}")
