"""Per-sample input gradients of one selected output, a minibatch per backward pass.

In eval mode a sample's output depends on its own input only (batch norm uses its
running statistics), so the gradient of the *sum* of the selected outputs of a minibatch
with respect to the minibatch's inputs holds, in row i, the gradient of sample i's own
output: one backward pass gives every per-sample gradient of the batch.
"""

import torch

OUTPUTS = ("logit", "probability")


def input_gradients(model, x, labels=None, *, batch_size=1024, output="logit"):
    """Yield ``(rows, grad, logits)`` for consecutive minibatches of ``x``.

    Parameters
    ----------
    model : torch module; evaluated in eval mode (its mode is restored afterwards).
    x : tensor (N, ...) on the model's device.
    labels : long tensor (N,) or None
        The output to differentiate for each sample; None takes the class the model
        predicts at this moment (argmax of the logits in the same forward pass).
    output : "logit" (the pre-softmax logit, VoG's definition) or "probability" (its
        softmax probability, which the original toy script differentiated).

    Yields
    ------
    rows : slice of the samples in the batch
    grad : float tensor (b, ...) shaped like ``x[rows]``: d output_i / d x_i
    logits : detached tensor (b, C): the model's logits for the batch
    """
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; valid outputs: {list(OUTPUTS)}")
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(x), batch_size):
            rows = slice(lo, min(lo + batch_size, len(x)))
            xb = x[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xb)
                target = logits.argmax(1) if labels is None else labels[rows]
                chosen = logits.softmax(1) if output == "probability" else logits
                selected = chosen.gather(1, target[:, None]).sum()
                grad, = torch.autograd.grad(selected, xb)
            yield rows, grad, logits.detach()
    finally:
        model.train(was_training)


def input_gradient(model, x, labels=None, **options):
    """All per-sample input gradients at once: tensor shaped like ``x`` (see
    :func:`input_gradients`, whose options it takes)."""
    return torch.cat([g for _, g, _ in input_gradients(model, x, labels, **options)])
