"""The min-norm solver of multiple-gradient descent (Sener & Koltun 2018), for two tasks.

For two gradients g1 and g2, the point of smallest norm in their convex hull is
``gamma * g1 + (1 - gamma) * g2`` with ``gamma = clip((g2 - g1) . g2 / |g1 - g2|^2, 0, 1)``;
stepping along it decreases both losses whenever that is possible. GASTeN's ``alpha =
mgda`` weighs the generator's two losses this way at every step. Gradients are used as
they are (no normalisation), the solver's plain form.
"""

import torch


def min_norm_weights(g1, g2):
    """Weights ``(w1, w2)``, summing to 1, of the min-norm point of the segment [g1, g2].

    g1, g2 : 1-d tensors (or numpy arrays) of the same length, the two gradients, flattened.
    Returns two Python floats in [0, 1]. Equal gradients give (0.5, 0.5).
    """
    g1 = torch.as_tensor(g1, dtype=torch.float64).flatten()
    g2 = torch.as_tensor(g2, dtype=torch.float64).flatten()
    diff = g1 - g2
    denom = float(diff @ diff)
    if denom <= 1e-20:
        return 0.5, 0.5
    gamma = min(max(float((g2 - g1) @ g2) / denom, 0.0), 1.0)
    return gamma, 1.0 - gamma


def flat_grad(loss, params):
    """The gradient of ``loss`` with respect to ``params`` as one flat tensor (graph kept)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params)])
