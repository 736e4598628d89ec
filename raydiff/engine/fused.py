"""A hand-derived SGD step for the benchmark MLP, without an autograd graph.

SimpleNN is so small (784 -> 20 -> 20 -> 10) that a training step on a mini-batch of 64 is
dominated by fixed per-operation costs, not arithmetic: recording the autograd graph,
running the autograd engine and the optimiser cost several times the two small matrix
products that do the work. Its backward pass is short enough to write out: with
``h_0 = x``, ``h_l = tanh(W_l h_{l-1} + b_l)`` and logits ``z = W_o h_L + b_o``, the mean
cross-entropy's gradients are

    g_o = (softmax(z) - onehot(y)) / B,   dW_o = g_o^T h_L,   db_o = sum_rows g_o,
    g_l = (g_{l+1} W_{l+1}) * (1 - h_l^2), dW_l = g_l^T h_{l-1}, db_l = sum_rows g_l,

about twenty tensor operations in all, then one fused update of every parameter. The
result equals autograd's up to float rounding (tests/test_engine.py checks it).
"""

import torch

from raydiff.models import SimpleNN


def supports_fused(model):
    """True when :func:`fused_sgd_step` computes exactly what ``model(x)`` trains: a plain
    :class:`SimpleNN` (not a subclass), every parameter trainable, no hooks anywhere."""
    if type(model) is not SimpleNN:
        return False
    if not all(p.requires_grad for p in model.parameters()):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   or getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def fused_parameters(model):
    """The parameters in the order :func:`fused_sgd_step` produces their gradients."""
    layers = [*model.hidden, model.out]
    return [p for layer in layers for p in (layer.weight, layer.bias)]


@torch.no_grad()
def fused_sgd_step(model, params, x, y, lr, weight_decay=0.0):
    """One SGD step of ``model`` (see :func:`supports_fused`) on the mean cross-entropy of
    the batch ``x`` (B, ...), ``y`` (B,) long; ``params`` from :func:`fused_parameters`.

    Returns ``(logits, loss_sum)``: the (B, C) logits before the step and the summed
    (not mean) loss of the batch, a 0-d tensor (no host synchronisation).
    """
    weights = [layer.weight for layer in model.hidden]
    biases = [layer.bias for layer in model.hidden]
    acts = [x.flatten(1)]
    for w, b in zip(weights, biases):
        acts.append(torch.tanh(torch.addmm(b, acts[-1], w.t())))
    logits = torch.addmm(model.out.bias, acts[-1], model.out.weight.t())
    grad = torch.log_softmax(logits, 1)
    target = y[:, None]
    loss_sum = grad.gather(1, target).sum().neg_()
    grad = grad.exp_().scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
    grads = [grad.sum(0), grad.t().mm(acts[-1])]          # out.bias, out.weight (reversed)
    w_above = model.out.weight
    for layer in range(len(weights) - 1, -1, -1):
        grad = torch.ops.aten.tanh_backward(grad.mm(w_above), acts[layer + 1])
        grads += [grad.sum(0), grad.t().mm(acts[layer])]
        w_above = weights[layer]
    grads.reverse()                                       # weight, bias per layer, in order
    if weight_decay:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, grads, alpha=-lr / len(x))
    return logits, loss_sum
