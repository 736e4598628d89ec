"""Per-sample gradient norms of the loss with respect to every parameter (GraNd's input).

``torch.func`` differentiates the loss of one sample and ``vmap`` maps that over a chunk of
samples, so a chunk's per-sample gradients come from one batched computation instead of
one backward pass per sample. Each per-sample gradient is as large as the model, so the
chunk is sized to hold about ``budget`` gradient values at once.
"""

import torch
import torch.nn.functional as F
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
