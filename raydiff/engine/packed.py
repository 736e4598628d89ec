"""Packs: K SimpleNNs of one architecture trained as one computation.

A seed grid trains thousands of the same small MLP on the same data; one at a time, each
step is a handful of tiny matrix products dominated by fixed per-operation costs (and, in
a sweep, by a trial's process and bookkeeping). A pack stacks the parameters of K models
along a leading axis and trains them together. What may differ between the K models:
initialisation (seed), labels (a noise draw per model), the samples each trains on, per-
sample loss weights, learning rate, weight decay and momentum. Each model's result equals
the same config trained alone by :func:`raydiff.engine.train` up to float rounding
(tests/test_packed.py). The ideas live in their own modules; this one gathers their
public names:

- :mod:`raydiff.engine.pack`: the container (:class:`Pack`, :func:`predict_packed`);
- :mod:`raydiff.engine.pack_step`: one step, the SimpleNN backward written out, then the
  one SGD update of :mod:`raydiff.engine.sgd`;
- :mod:`raydiff.engine.pack_train`: the epochs (:func:`train_packed`, its strategies,
  results and resumable optimizer state);
- :mod:`raydiff.engine.inversion`: :class:`PackedInversionMonitor`, beside the single
  monitor, sharing :func:`class_radii`.
"""

from raydiff.engine.inversion import RULES, PackedInversionMonitor, class_radii
from raydiff.engine.pack import Pack, predict_packed
from raydiff.engine.pack_train import (PackDynamics, PackOptimizerState, PackResult,
                                       one_by_one_pays, train_packed)

# the batched radii are the single ones with a model axis
class_radii_packed = class_radii

__all__ = ["Pack", "PackDynamics", "PackOptimizerState", "PackResult",
           "PackedInversionMonitor", "class_radii", "class_radii_packed", "one_by_one_pays",
           "predict_packed", "train_packed", "RULES"]
