"""A trained model's outputs beyond its plain logits: its penultimate embedding, its
softmax under Monte-Carlo dropout, and its softmax under input augmentations. Inputs are
device tensors already normalised; every pass is no-grad and batched."""

import torch
import torch.nn.functional as F
from torch import nn

from raydiff.engine.train import predict

AUGMENTATIONS = ("flip", "brightness", "noise", "pixelate")


def _last_linear(model):
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Linear layer: no penultimate "
                         f"embedding to read")
    return heads[-1]


@torch.no_grad()
def logits_and_penultimate(model, x, *, batch_size=1024):
    """(logits, embeddings) of the model on every row of ``x``, from one eval pass: the
    logits as :func:`~raydiff.engine.train.predict` gives them, and the (N, D) float
    input of the model's last ``nn.Linear`` (its classifier head, registered last in
    every network of :mod:`raydiff.models`)."""
    head = _last_linear(model)
    seen = []
    hook = head.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach()))
    try:
        logits = predict(model, x, batch_size=batch_size)
    finally:
        hook.remove()
    return logits, (torch.cat(seen).float() if seen else torch.zeros((0, head.in_features)))


def penultimate(model, x, *, batch_size=1024):
    """(N, D) float tensor: the embedding of :func:`logits_and_penultimate`."""
    return logits_and_penultimate(model, x, batch_size=batch_size)[1]


def has_dropout(model):
    """Whether ``model`` has a dropout layer (MC dropout has something to sample)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


@torch.no_grad()
def mc_dropout_probs(model, x, *, passes=10, seed=0, batch_size=1024):
    """(T, N, C) float tensor: softmax of ``passes`` forward passes with the dropout
    layers active and everything else in eval mode (batch norm from running statistics).
    The dropout masks come from a torch RNG seeded with ``seed`` (forked: the global
    state is untouched), so the passes are reproducible.

    A model whose ``forward(x)`` is ``classify(features(x))``, with every dropout layer in
    ``classify`` (:class:`~raydiff.models.LeNet`), runs ``features`` once: the passes
    differ only after it. Same batches, same masks in the same order: the same numbers
    as full passes, for a tenth of LeNet's convolutions at 10 passes."""
    if not has_dropout(model):
        raise ValueError(f"{type(model).__name__} has no dropout layer: every MC-dropout "
                         f"pass would be the same; use a model with dropout (lenet)")
    was_training = model.training
    model.eval()
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    devices = [x.device] if x.device.type == "cuda" else []
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    stochastic = model
    if hasattr(model, "classify"):
        batches = [model.features(b) for b in batches]
        stochastic = model.classify
    try:
        for m in drops:
            m.train()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            out = torch.stack([torch.cat([F.softmax(stochastic(b).float(), 1) for b in batches])
                               for _ in range(passes)])
    finally:
        model.train(was_training)
    return out


def augmentations(x, *, generator=None, names=AUGMENTATIONS, value_range=None):
    """``{name: augmented copy of x}`` for ALLSH's perturbations, on x's device.

    x : (N, C, H, W) images, or (N, D) features (then only ``noise`` applies: a feature
        vector has no left and right, brightness or pixels).
    value_range : (lo, hi) every copy is clipped to, and the scale of brightness and noise;
        None: the min and max of ``x`` (pass the whole data set's when ``x`` is a batch).
        Clipping keeps every copy inside the clean data's range, so no augmentation is
        told apart by its range alone.

    - ``flip``: horizontal mirror;
    - ``brightness``: + 20 % of the value range;
    - ``noise``: Gaussian, std 10 % of the value range (drawn from ``generator``);
    - ``pixelate``: 2 x 2 block means, shown at the full size.
    """
    lo, hi = value_range if value_range is not None else (x.min(), x.max())
    lo, hi = float(lo), float(hi)
    span = max(hi - lo, 1e-12)
    image = x.ndim == 4
    out = {}
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; valid: {list(AUGMENTATIONS)}")
        if name == "noise":
            noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            out[name] = (x + 0.1 * span * noise).clamp(lo, hi)
        elif not image:
            continue
        elif name == "flip":
            out[name] = x.flip(-1)
        elif name == "brightness":
            out[name] = (x + 0.2 * span).clamp(lo, hi)
        elif name == "pixelate":
            h, w = x.shape[-2:]
            small = F.avg_pool2d(x, 2, ceil_mode=True)
            out[name] = F.interpolate(small, scale_factor=2, mode="nearest")[..., :h, :w]
    return out


@torch.no_grad()
def augmented_probs(model, x, *, generator=None, batch_size=1024, logits=None):
    """(1 + A, N, C) float tensor: the softmax of ``model`` (eval mode) on ``x`` and on
    each of its A :func:`augmentations` (clipped to the range of the whole ``x``), clean
    first; and the augmentation names. Augmented a batch at a time, so memory stays that
    of one batch's copies. ``logits``: the model's on ``x`` when already computed (same
    ``batch_size``), for the clean view without another pass."""
    was_training = model.training
    model.eval()
    value_range = (x.min().item(), x.max().item())
    parts, names = [], []
    try:
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size]
            copies = augmentations(xb, generator=generator, value_range=value_range)
            names = list(copies)
            clean = model(xb) if logits is None else logits[lo:lo + batch_size]
            parts.append(torch.stack([F.softmax(out.float(), 1)
                                      for out in (clean, *map(model, copies.values()))]))
    finally:
        model.train(was_training)
    return torch.cat(parts, dim=1), names
