"""One SGD step of every SimpleNN of a pack, with the backward pass written out.

SimpleNN is so small (784 -> 20 -> 20 -> 10) that a step is dominated by fixed
per-operation costs, not arithmetic: recording an autograd graph and running the autograd
engine cost several times the products that do the work. The backward pass is short
enough to write out: with ``h_0 = x``, ``h_l = tanh(W_l h_{l-1} + b_l)`` and logits
``z = W_o h_L + b_o``, the gradients of model k's mean (weighted) cross-entropy are

    g_o = w (softmax(z) - onehot(y)) / den,  dW_o = g_o^T h_L,   db_o = sum_rows g_o,
    g_l = (g_{l+1} W_{l+1}) * (1 - h_l^2),   dW_l = g_l^T h_{l-1}, db_l = sum_rows g_l,

for all K models at once (``bmm`` over the model axis; with a shared input, layer 1's
weight gradient is one ``(H1*K x N) @ (N x D)`` product), then the one update of
:func:`raydiff.engine.sgd.sgd_update_`. The single engine runs the same step on a pack of
one (:meth:`Pack.view_of`), so there is one SimpleNN backward in the engine. Timed against
``torch.func`` (``vmap(grad(...))`` over stacked parameters) by
``benchmarks/pack_throughput.py --torch-func``: this one was 1.3x to 6x faster at K = 1,
16, 64 (CPU, one thread), so it stays.
"""

import torch

from raydiff.engine.sgd import sgd_update_


@torch.no_grad()
def pack_step(pack, x, y, hyper, *, den, weights=None, buffers=None, live=None,
              per_model=False):
    """One SGD step of every (live) model of ``pack`` on its batch, in place.

    Parameters
    ----------
    pack : :class:`~raydiff.engine.pack.Pack` of K models
    x : (N, D) rows shared by every model, or with ``per_model`` (K, B, D): one batch each
    y : (K, B) long labels
    hyper : :class:`~raydiff.engine.sgd.Hyper`, the K models' rates, decays, momenta
    den : int or (K,) tensor, each model's loss denominator (its batch size or weight sum)
    weights : (K, B) float per-sample loss weights (0 outside a model's batch), or None
    buffers : momentum buffers (like ``pack.params``), when ``hyper.any_momentum``
    live : (K,) bool tensor, or None (the single engine: every model steps, unchecked).
        Updated in place: a model whose batch loss is not finite is out from this step
        on; one with no sample in this batch (``den == 0``) skips the step.

    Returns
    -------
    logits : (K, B, C), before the step
    loss_sum : (K,), each model's summed (weighted) loss over the batch
    """
    x = x if per_model else x.flatten(1)
    acts, logits = pack.activations(x, per_model=per_model)
    loss_sum, grad_logits = cross_entropy_grad(logits, y, den, weights)
    stepping = None if live is None else _stepping(live, loss_sum, den, weights)
    grads = simple_nn_grads(pack, x, acts, grad_logits, shared=not per_model)
    sgd_update_(pack.params, grads, hyper, buffers=buffers, live=stepping)
    return logits, loss_sum


def _stepping(live, loss_sum, den, weights):
    """The (K,) mask of models that take this step, or None when all do (CPU)."""
    live &= torch.isfinite(loss_sum)
    step = live if weights is None else live & (den > 0)
    # on the CPU reading the mask costs nothing and spares a selection over every
    # parameter while all models step (the usual case); a GPU selects without waiting
    if step.device.type == "cpu" and bool(step.all()):
        return None
    return step


def cross_entropy_grad(logits, y, den, weights=None):
    """Each model's summed cross-entropy and the gradient of its mean over its logits.

    logits : (K, B, C); y : (K, B) long; den : int or (K,) tensor; weights : (K, B) or None.
    Returns ``(loss_sum (K,), grad (K, C, B))``: ``sum_i w_i nll_i`` and the gradient of
    ``loss_sum / den``, in class-major layout (CPU ``log_softmax`` over a last dimension
    of 10 classes runs ~20x slower than over a middle one).
    """
    logp = torch.log_softmax(logits.transpose(1, 2).contiguous(), 1)
    target = y[:, None, :]
    nll = logp.gather(1, target).squeeze(1).neg_()
    loss_sum = (nll * weights).sum(1) if weights is not None else nll.sum(1)
    grad = logp.exp_().scatter_add_(1, target, torch.full_like(target, -1, dtype=logp.dtype))
    if not torch.is_tensor(den):
        scale = 1.0 / den
        return loss_sum, grad.mul_(scale if weights is None else weights[:, None, :] * scale)
    per_row = (1.0 / den.clamp_min(1e-30))[:, None]          # (K, 1); no sample: weights 0
    if weights is not None:
        per_row = per_row * weights                             # (K, B)
    return loss_sum, grad.mul_(per_row[:, None, :])


def simple_nn_grads(pack, x, acts, grad_logits, *, shared):
    """The gradients of every parameter of ``pack`` (in ``pack.params`` order) from the
    gradient ``grad_logits`` (K, C, B) of the loss over the logits.

    x : the step's input, (N, D) when ``shared`` (every model on the same rows), else
    (K, B, D); acts : the tanh activations of :meth:`Pack.activations` ((K, B, H_l) each).
    """
    grads = [grad_logits.bmm(acts[-1]), grad_logits.sum(2)]       # out weight, bias
    grad = grad_logits.transpose(1, 2)                            # (K, B, C)
    for layer in range(len(acts) - 1, -1, -1):
        grad = torch.ops.aten.tanh_backward(grad.bmm(pack.weights[layer + 1]), acts[layer])
        if layer == 0 and shared:
            k, n, h1 = grad.shape
            # (H1*K x N) @ (N x D): the second big product, all K models at once
            dw = grad.transpose(0, 1).reshape(n, k * h1).t().mm(x).view(k, h1, -1)
        else:
            dw = grad.transpose(1, 2).bmm(x if layer == 0 else acts[layer - 1])
        grads += [dw, grad.sum(1)]
    # grads came out as (weight, bias) from the top layer down
    pairs = list(zip(grads[0::2], grads[1::2]))[::-1]
    return [g for pair in pairs for g in pair]
