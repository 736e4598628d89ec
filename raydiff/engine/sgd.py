"""The one SGD update of the engine: the single model, the hand-derived SimpleNN step and
every model of a pack go through :func:`sgd_update_`.

Parameters carry a leading model axis K (a pack's stacked tensors; a single model's
parameters as views ``p[None]``), so learning rate, weight decay and momentum can differ
per model. The arithmetic is ``torch.optim.SGD``'s with dampening 0 and no Nesterov, in
its order, every operation rounded on its own::

    d = g + wd * p              (weight decay added to the gradient of the mean loss)
    buf = momentum * buf + d;  d = buf          (with momentum; buffers start at 0)
    p = p - lr * d

``torch.optim.SGD`` (still used where a caller brings its own optimiser) computes the
same sums with fused multiply-adds, so the two agree up to float rounding, not bit for bit.
"""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Hyper:
    """Per-model step settings as (K,) float32 tensors on the parameters' device.

    ``any_decay`` / ``any_momentum`` are host flags, so a run without decay or momentum
    skips that arithmetic (and never reads a tensor back from the device)."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    momentum: torch.Tensor
    any_decay: bool
    any_momentum: bool

    @classmethod
    def of(cls, lr, weight_decay, momentum, *, device, k=1):
        """From scalars or K-sequences (host values: floats, lists, numpy arrays)."""
        lrs, wds, moms = (per_model(v, k, name) for v, name in
                          ((lr, "lr"), (weight_decay, "weight_decay"), (momentum, "momentum")))

        def tensor(values):
            return torch.as_tensor(values, dtype=torch.float32, device=device)
        return cls(tensor(lrs), tensor(wds), tensor(moms), bool((wds != 0).any()),
                   bool((moms != 0).any()))


def per_model(value, k, name):
    """A scalar or K-sequence as a float64 host array of K values.

    Raises ValueError naming ``name`` when ``value`` is neither.
    """
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"{name}: expected a scalar or {k} values (one per model), "
                         f"got shape {arr.shape}")
    return arr


@torch.no_grad()
def sgd_update_(params, grads, hyper, *, buffers=None, live=None):
    """One SGD step of every model, in place.

    Parameters
    ----------
    params : list of tensors (K, ...), the parameters of K models stacked on the first axis
    grads : list of tensors like ``params``, the gradient of each model's mean loss
    hyper : :class:`Hyper` with (K,) ``lr``, ``weight_decay``, ``momentum``
    buffers : list like ``params``, the momentum buffers (zeros before the first step);
        required when ``hyper.any_momentum``
    live : (K,) bool tensor or None (every model steps). A model marked False keeps its
        parameters and buffers bit for bit; its gradients are selected away, never
        multiplied, so a NaN there reaches no other number.
    """
    if hyper.any_momentum and buffers is None:
        raise ValueError("sgd_update_ with momentum needs buffers (zeros_like each parameter)")
    if live is None:
        _update_all_(params, grads, hyper, buffers)
        return
    on = _per_param(live, params)
    d = grads
    if hyper.any_decay:
        d = [g + p * w for g, p, w in zip(grads, params, _per_param(hyper.weight_decay, params))]
    if hyper.any_momentum:
        moms = _per_param(hyper.momentum, params)
        for buf, m, di, o in zip(buffers, moms, d, on):
            buf.copy_(torch.where(o, buf * m + di, buf))
        d = buffers
    for p, di, lr, o in zip(params, d, _per_param(hyper.lr, params), on):
        p.copy_(torch.where(o, p - di * lr, p))


def _update_all_(params, grads, hyper, buffers):
    """:func:`sgd_update_` when every model steps: the same operations in the same order
    (so the same bits), as multi-tensor ``_foreach`` calls (a few per step, not a few per
    parameter: a mini-batch step of a small model is dominated by such fixed costs)."""
    d = grads
    if hyper.any_decay:
        d = torch._foreach_add(grads, torch._foreach_mul(
            params, _per_param(hyper.weight_decay, params)))
    if hyper.any_momentum:
        torch._foreach_mul_(buffers, _per_param(hyper.momentum, params))
        torch._foreach_add_(buffers, d)
        d = buffers
    torch._foreach_sub_(params, torch._foreach_mul(d, _per_param(hyper.lr, params)))


def _per_param(v, params):
    """(K,) ``v`` viewed to broadcast over each (K, ...) parameter."""
    return [v.view(-1, *([1] * (p.dim() - 1))) for p in params]
