"""The single engine's step for the benchmark MLP: the pack's step on a pack of one.

A plain :class:`~raydiff.models.SimpleNN` trained on cross-entropy skips autograd: its
parameters are viewed as a :class:`~raydiff.engine.pack.Pack` of one model
(:meth:`~raydiff.engine.pack.Pack.view_of`, no copy) and trained by
:func:`raydiff.engine.pack_step.pack_step`, the hand-derived backward pass every pack
uses, and the one SGD update of :mod:`raydiff.engine.sgd`. The result equals autograd's
up to float rounding (tests/test_engine.py checks it).
"""

import torch

from raydiff.engine.pack import Pack
from raydiff.engine.pack_step import pack_step
from raydiff.models import SimpleNN


def supports_fused(model):
    """True when :class:`FusedStep` computes exactly what ``model(x)`` trains: a plain
    :class:`SimpleNN` (not a subclass), every parameter trainable and contiguous (the
    pack views them in place), no hooks anywhere."""
    if type(model) is not SimpleNN:
        return False
    if not all(p.requires_grad and p.is_contiguous() for p in model.parameters()):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   or getattr(m, "_backward_pre_hooks", None) for m in model.modules())


class FusedStep:
    """SGD steps of one SimpleNN (see :func:`supports_fused`) on the mean cross-entropy of
    a batch, with momentum buffers of its own when ``momentum`` is set."""

    def __init__(self, model, *, momentum=0.0):
        self.pack = Pack.view_of(model)
        self.buffers = ([torch.zeros_like(p) for p in self.pack.params] if momentum
                        else None)

    def __call__(self, x, y, hyper):
        """One step on ``x`` (B, ...), ``y`` (B,) long with ``hyper`` (a one-model
        :class:`~raydiff.engine.sgd.Hyper`). Returns ``(logits (B, C) before the step,
        summed loss)``, the loss a 0-d tensor (no host synchronisation)."""
        logits, loss_sum = pack_step(self.pack, x, y[None], hyper, den=len(x),
                                     buffers=self.buffers)
        return logits[0], loss_sum[0]
