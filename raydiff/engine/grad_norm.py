"""Per-sample gradient norms of the loss with respect to every parameter (GraNd's input).

Two exact ways:

- a network whose every parameter sits in an ``nn.Linear`` layer applied once per forward
  pass (SimpleNN): sample i's weight gradient of a layer is the outer product of the
  gradient at the layer's output ``d_i`` and its input ``a_i``, whose norm is
  ``|d_i| |a_i|``, and its bias gradient is ``d_i``; one forward and one backward pass of
  a batch give every norm, no per-sample gradient is ever formed;
- any other network: ``torch.func`` differentiates the loss of one sample and ``vmap``
  maps that over a chunk of samples. Each per-sample gradient is as large as the model,
  so the chunk is sized to hold about ``budget`` gradient values at once.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def per_sample_grad_norms(model, x, y, *, budget=2 ** 25, chunk=None):
    """``|| d CE(model(x_i), y_i) / d theta ||_2`` for every sample i.

    Parameters
    ----------
    model : torch module, evaluated in eval mode (batch norm from its running statistics,
        dropout off; the mode is restored afterwards). Every parameter with
        ``requires_grad`` counts.
    x : tensor (N, ...) on the model's device.
    y : long tensor (N,): the labels the loss is taken on (the observed ones).
    budget : about how many gradient values one chunk may hold (memory bound).
    chunk : samples per vmap call; None: ``budget // parameter count`` (at least 1).

    Returns
    -------
    float32 numpy array (N,), >= 0.
    """
    if _linear_only(model):
        return _linear_norms(model, x, y, batch_size=max(1, budget // 1024))
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    size = sum(p.numel() for p in params.values())
    chunk = chunk or max(1, budget // max(size, 1))

    def loss(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi[None],))
        return F.cross_entropy(out, yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    norms = []
    try:
        for lo in range(0, len(x), chunk):
            g = per_sample(params, x[lo:lo + chunk], y[lo:lo + chunk])
            sq = sum(t.flatten(1).float().square().sum(1) for t in g.values())
            norms.append(sq.sqrt().cpu())
    finally:
        model.train(was_training)
    return (torch.cat(norms) if norms else torch.zeros(0)).numpy()


def _linear_only(model):
    """Whether every trainable parameter of ``model`` is a weight or bias of an nn.Linear."""
    owned = {id(p) for m in model.modules() if isinstance(m, nn.Linear)
             for p in m.parameters(recurse=False)}
    return all(id(p) in owned for p in model.parameters() if p.requires_grad)


def _linear_norms(model, x, y, *, batch_size):
    """The per-sample gradient norms of a network of nn.Linear layers (each applied once
    per forward pass) from the layers' inputs and output gradients, a batch at a time."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    seen = {}                                   # layer -> (its input, its output)

    def keep(module, inputs, out):
        if module in seen:      # a shared layer's gradient is a sum of outer products
            raise ValueError(f"{type(model).__name__} applies a Linear layer twice in one "
                             f"forward pass: its per-sample gradient norm is not |d| |a|")
        seen[module] = (inputs[0].detach().flatten(1), out)

    hooks = [m.register_forward_hook(keep) for m in layers]
    was_training = model.training
    model.eval()
    norms = []
    try:
        for lo in range(0, len(x), batch_size):
            seen.clear()
            with torch.enable_grad():
                out = model(x[lo:lo + batch_size])
                used = list(seen)               # the layers this forward pass ran
                # a sum, not a mean: row i of a layer's output gradient is sample i's own
                loss = F.cross_entropy(out, y[lo:lo + batch_size], reduction="sum")
                grads = torch.autograd.grad(loss, [seen[m][1] for m in used])
            sq = torch.zeros(len(out), device=out.device)
            for m, d in zip(used, grads):
                d2 = d.flatten(1).float().square().sum(1)
                if m.weight.requires_grad:
                    sq += d2 * seen[m][0].float().square().sum(1)
                if m.bias is not None and m.bias.requires_grad:
                    sq += d2
            norms.append(sq.sqrt().cpu())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return (torch.cat(norms) if norms else torch.zeros(0)).numpy()
