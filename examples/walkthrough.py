"""The walkthrough's experiments E1-E8, written with fastgrad's public API.

    python examples/walkthrough.py

Each block is what the walkthrough did with TensorFlow by hand; ``fastgrad demo`` tells the same
story at length, with figures and TensorFlow replays.
"""

import warnings

import numpy as np

import fastgrad as fg
from fastgrad.data import e1_data, e4_data, e6_data, e8_data


def one_weight(w0=2.0):
    layer = fg.Dense(1, use_bias=False)
    layer.set_weights([np.array([[w0]])])
    return layer


# E1 (and E3, the model-object form): one weight, full batch, stop when |w_t - w_(t-1)| <= 0.1
x, y = e1_data()
r = fg.fit(one_weight(), x, y, optimizer=fg.SGD(0.1), stop=fg.stop.WeightDelta(0.1), record_weights=True)
print("E1 weights:", r.history.weights[0].ravel().tolist())
print("E1 losses: ", r.history.loss.tolist(), "final:", r.final_loss)
print("E3 model([[3]]):", one_weight()([[3.0]]).tolist())

# E2: the same run, replayed in TensorFlow (the oracle), when TensorFlow is installed
if fg.oracle.available():
    h = fg.oracle.replay(r, x, y)
    print("E2 TensorFlow weights:", h.weights[0].ravel().tolist())
else:
    print("E2 needs TensorFlow: pip install 'fastgrad[tf]'")

# E4: SGD on raw 1..1999 explodes; fastgrad stops the run and warns
x, y = e4_data()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r = fg.fit(one_weight(), x, y, optimizer=fg.SGD(0.001), batch_size=1, stop=fg.stop.MaxSteps(30), seed=42)
print("E4", r.stopped_by, "at step", r.steps, "| losses:", np.array2string(r.history.loss, precision=3))
print("   ", caught[0].message if caught else "no warning")

# E5: the same after min-max scaling converges to w = 1
layer = one_weight()
r = fg.fit(layer, fg.minmax(x), fg.minmax(y), optimizer=fg.SGD(0.1), batch_size=1, stop=fg.stop.MaxSteps(500), seed=42)
print("E5 w =", layer.kernel[0, 0], "final loss", r.final_loss)

# E6 / E7: a Dense layer learns y = 3x1 + 2x2 - 7x3 + 5, with batches of 1 and of 3
x, y = e6_data()
for batch in (1, 3):
    layer = fg.Dense(1, seed=42)
    fg.fit(layer, x, y, optimizer=fg.SGD(0.1), batch_size=batch, stop=fg.stop.MaxSteps(1000), seed=42)
    print("E6" if batch == 1 else "E7", "kernel", layer.kernel.ravel().round(4), "bias", layer.bias.round(4))

# E7's lesson: LossDelta on a noisy minibatch loss can stop far from the answer; Plateau does not
for rule in (fg.stop.LossDelta(0.1), fg.stop.Plateau(1e-6, patience=100)):
    r = fg.fit(fg.Dense(1, seed=42), x, y, optimizer=fg.SGD(0.1), batch_size=3, stop=rule, seed=30)
    print(f"E7 {rule!r}: stopped at step {r.steps}, loss on all data {r.final_loss:.3g}")

# E8: two layers on make_regression's 10 x 10 (shipped with fastgrad)
x, y = e8_data()
model = fg.Sequential([fg.Dense(10, "relu"), fg.Dense(1)], seed=0)
r = fg.fit(model, x, y, optimizer=fg.SGD(1e-4), batch_size=1, stop=fg.stop.MaxSteps(1000), seed=42)
print("E8 loss", f"{r.history.loss[:10].mean():.4g} -> {r.final_loss:.4g}")
for p, t in zip(model(x)[:3, 0], y[:3]):
    print(f"   prediction {p:9.3f}   target {t:9.3f}")
