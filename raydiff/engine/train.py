"""One training loop for every experiment: full-batch or mini-batch over tensors on the device.

The dataset never goes through a DataLoader: a mini-batch is an index into the tensors
already on the device, and the logits every sample gets in the training forward pass are
kept (every ``record_every`` epochs) as the per-sample training dynamics, with no second
pass over the data. SGD without an optimiser given skips the optimiser object: the step is
one ``torch.autograd.grad`` and the one update of :mod:`raydiff.engine.sgd` (for SimpleNN
with the default loss, the hand-derived step of :mod:`raydiff.engine.fused`, with no
autograd graph at all), and the host waits for the device once per epoch (the epoch's
loss), never per batch.
"""

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.engine.fused import FusedStep, supports_fused
from raydiff.engine.sgd import Hyper, sgd_update_


@dataclass
class Dynamics:
    """Per-sample logits seen during training.

    epochs : (T,) the epochs (1-based) at which logits were recorded
    logits : (T, N, C) float array; ``logits[t, i]`` is what sample i got in the forward
        pass of epoch ``epochs[t]``, before that pass's update (in full-batch mode: the
        model after ``epochs[t] - 1`` steps)
    """

    epochs: np.ndarray
    logits: np.ndarray


@dataclass
class TrainResult:
    epochs_run: int
    losses: list = field(default_factory=list)
    dynamics: Dynamics | None = None
    stopped_early: bool = False


@torch.no_grad()
def predict(model, x, *, batch_size=8192):
    """Logits of ``model`` (in eval mode) for every row of tensor ``x``, in large no-grad batches."""
    was_training = model.training
    model.eval()
    # an empty x still goes through the model once, for an empty (0, C) answer
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
                    or [model(x)])
    model.train(was_training)
    return out


def accuracy(logits, y):
    """Fraction of rows whose argmax equals ``y`` (tensors); NaN for an empty set."""
    if len(y) == 0:
        return float("nan")
    return (logits.argmax(1) == y).float().mean().item()


def train(model, x, y, *, epochs, lr=0.1, batch_size=None, momentum=0.0, weight_decay=0.0,
          optimizers=None, loss_fn=None, after_step=None, on_epoch=None, record_every=0,
          record_dtype=torch.float32, generator=None, start_epoch=0, augment=None,
          lr_schedule=None, min_batch=1):
    """Train ``model`` on tensors ``x``, ``y`` (already on the model's device).

    Parameters
    ----------
    epochs : int
        Train up to this epoch (1-based; ``start_epoch`` epochs are taken as done already).
    lr, momentum, weight_decay : SGD settings, used when ``optimizers`` is None: the
        update of :func:`raydiff.engine.sgd.sgd_update_` (``torch.optim.SGD``'s arithmetic
        and order, a fraction of its per-step cost) with no optimiser object; parameters'
        ``.grad`` then stays None and the momentum buffers live for this call only. A
        plain :class:`~raydiff.models.SimpleNN` with the default loss and no
        augmentation takes the hand-derived step of :mod:`raydiff.engine.fused`.
    batch_size : int or None
        None or >= N: full-batch (the whole set is one batch per epoch).
    optimizers : list of torch optimizers, optional
        All are zeroed and stepped together (e.g. the model's and the data parameters').
    loss_fn : callable(logits, idx) -> scalar tensor, optional
        ``idx`` is the long tensor of batch positions; default cross-entropy on ``y[idx]``.
    after_step : callable(), optional
        Runs after every optimiser step (e.g. to clamp parameters).
    on_epoch : callable(epoch, epoch_loss) -> bool, optional
        Runs after every epoch; returning True stops training (early stopping).
    record_every : int
        Record the logits of every sample every ``record_every`` epochs (0: never).
    generator : torch.Generator, optional
        Shuffles mini-batches; required for reproducible mini-batch training.
    augment : callable(xb, generator) -> xb, optional
        Transforms every training batch on the device before the forward pass (e.g.
        :func:`crop_flip`); gets ``generator`` so that augmented runs are reproducible.
    lr_schedule : callable(epoch) -> float, optional
        The learning rate of epoch ``epoch`` (1-based): without optimisers the rate itself,
        otherwise set on every parameter group of the FIRST optimiser (the model's by
        convention; data-parameter optimisers that follow keep their own rate) before the
        epoch starts. A function of the epoch
        alone, so a run resumed with ``start_epoch`` follows the same schedule.
    min_batch : int
        Mini-batches smaller than this are skipped (a BatchNorm network cannot train on a
        batch of one); they still count in the epoch loss's denominator N.
    """
    n = len(x)
    full_batch = batch_size is None or batch_size >= n
    step = _stepper(model, y, momentum=momentum, weight_decay=weight_decay,
                    optimizers=optimizers, loss_fn=loss_fn, augment=augment,
                    generator=generator)
    recorder = _Recorder(model, x, range(start_epoch + 1, epochs + 1), record_every,
                         record_dtype)
    all_idx = torch.arange(n, device=x.device)
    result = TrainResult(epochs_run=start_epoch)
    model.train()
    for epoch in range(start_epoch + 1, epochs + 1):
        step.set_lr(lr if lr_schedule is None else lr_schedule(epoch),
                    scheduled=lr_schedule is not None)
        if full_batch:
            batches = [all_idx]
        else:
            batches = torch.randperm(n, generator=generator).to(x.device).split(batch_size)
        total = 0.0
        for idx in batches:
            if len(idx) < min_batch:
                continue
            # full batch: no per-epoch copy of x; index_select is the cheap gather of rows
            xb = x if full_batch else x.index_select(0, idx)
            logits, batch_loss = step(xb, idx)
            if after_step is not None:
                after_step()
            recorder.add(epoch, idx, logits)
            total += batch_loss
        epoch_loss = (total / n).item()
        result.losses.append(epoch_loss)
        result.epochs_run = epoch
        if on_epoch is not None and on_epoch(epoch, epoch_loss):
            result.stopped_early = True
            break
    result.dynamics = recorder.dynamics(result.epochs_run)
    return result


def _stepper(model, y, *, momentum, weight_decay, optimizers, loss_fn, augment, generator):
    """The cheapest step that computes what was asked: the hand-derived SimpleNN step,
    autograd with the engine's own update, or the given optimisers."""
    if optimizers is None and loss_fn is None and augment is None and supports_fused(model):
        return _FusedStep(model, y, momentum, weight_decay)
    if loss_fn is None:
        loss_fn = functools.partial(_cross_entropy, y)
    if optimizers is not None:
        return _OptimizerStep(model, optimizers, loss_fn, augment, generator)
    return _AutogradStep(model, loss_fn, augment, generator, momentum, weight_decay)


def _cross_entropy(y, logits, idx):
    return F.cross_entropy(logits, y.index_select(0, idx))


class _FusedStep:
    """SimpleNN, default loss, no augmentation: :class:`~raydiff.engine.fused.FusedStep`."""

    def __init__(self, model, y, momentum, weight_decay):
        self.fused, self.y = FusedStep(model, momentum=momentum), y
        self.momentum, self.weight_decay = momentum, weight_decay
        self.device = y.device

    def set_lr(self, lr, *, scheduled):
        self.hyper = Hyper.of(lr, self.weight_decay, self.momentum, device=self.device)

    def __call__(self, xb, idx):
        yb = self.y if len(idx) == len(self.y) else self.y.index_select(0, idx)
        return self.fused(xb, yb, self.hyper)


class _AutogradStep:
    """Any model and loss: gradients by ``torch.autograd.grad`` (``.grad`` stays None),
    then the one update of :func:`raydiff.engine.sgd.sgd_update_`. A parameter the loss
    does not reach stays put (no decay either), as under ``torch.optim.SGD``."""

    def __init__(self, model, loss_fn, augment, generator, momentum, weight_decay):
        self.model, self.loss_fn = model, loss_fn
        self.augment, self.generator = augment, generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = ([torch.zeros_like(p)[None] for p in self.params] if momentum
                        else None)
        self.momentum, self.weight_decay = momentum, weight_decay

    def set_lr(self, lr, *, scheduled):
        device = self.params[0].device if self.params else "cpu"
        self.hyper = Hyper.of(lr, self.weight_decay, self.momentum, device=device)

    def __call__(self, xb, idx):
        if self.augment is not None:
            xb = self.augment(xb, self.generator)
        logits = self.model(xb)
        loss = self.loss_fn(logits, idx)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        reached = [i for i, g in enumerate(grads) if g is not None]
        if reached:
            sgd_update_([self.params[i][None] for i in reached],
                        [grads[i][None] for i in reached], self.hyper,
                        buffers=None if self.buffers is None
                        else [self.buffers[i] for i in reached])
        return logits, loss.detach() * len(idx)


class _OptimizerStep:
    """The caller's optimisers, zeroed and stepped together; a scheduled rate is set on
    the first one's parameter groups (the model's by convention)."""

    def __init__(self, model, optimizers, loss_fn, augment, generator):
        self.model, self.optimizers, self.loss_fn = model, optimizers, loss_fn
        self.augment, self.generator = augment, generator

    def set_lr(self, lr, *, scheduled):
        if scheduled and self.optimizers:
            for group in self.optimizers[0].param_groups:
                group["lr"] = lr

    def __call__(self, xb, idx):
        if self.augment is not None:
            xb = self.augment(xb, self.generator)
        logits = self.model(xb)
        loss = self.loss_fn(logits, idx)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        return logits, loss.detach() * len(idx)


class _Recorder:
    """The logits every sample gets in the training pass of every ``record_every``-th
    epoch, kept on the device in ``record_dtype`` until training ends."""

    def __init__(self, model, x, epochs, record_every, record_dtype):
        self.epochs = [e for e in epochs if record_every and e % record_every == 0]
        self.slot = {e: t for t, e in enumerate(self.epochs)}
        self.record = None
        if self.epochs:
            with torch.no_grad():
                n_out = model(x[:1]).shape[1]
            self.record = torch.empty((len(self.epochs), len(x), n_out), dtype=record_dtype,
                                      device=x.device)

    def add(self, epoch, idx, logits):
        if epoch in self.slot:
            self.record[self.slot[epoch]].index_copy_(0, idx,
                                                      logits.detach().to(self.record.dtype))

    def dynamics(self, last_epoch):
        """:class:`Dynamics` of the recorded epochs up to ``last_epoch``, or None."""
        if self.record is None:
            return None
        kept = [e for e in self.epochs if e <= last_epoch]
        return Dynamics(np.array(kept), self.record[:len(kept)].float().cpu().numpy())


def step_schedule(lr, *, milestones=(), gamma=0.1):
    """``lr_schedule`` for :func:`train`, the rates of ``torch.optim.lr_scheduler.MultiStepLR``
    stepped once after every epoch: ``lr * gamma ** (number of milestones < epoch)``.

    A milestone m counts *completed* epochs, as in MultiStepLR: epochs 1..m run at the rate
    before it and epoch m + 1 (1-based) is the first at the lower rate, e.g.
    ``step_schedule(0.1, milestones=(80, 100))`` gives 0.1 up to epoch 80, 0.01 from 81.
    """
    milestones = sorted(milestones)

    def schedule(epoch):
        return lr * gamma ** sum(epoch > m for m in milestones)
    return schedule


def crop_flip(x, generator=None, *, pad=4):
    """Random ``pad``-pixel-padded crop back to the input size plus a random horizontal
    flip, for a whole batch on its device in one gather (the CIFAR augmentation).

    x : (B, C, H, W) float tensor; returns a new tensor of the same shape. Padding is
    zeros (the normalised data's value for the padded border). ``generator`` (CPU) draws
    the offsets and flips, so runs are reproducible on any device.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    draws = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    flip = torch.randint(0, 2, (b,), generator=generator).bool()
    rows = (draws[0][:, None] + torch.arange(h)).to(x.device)
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = (draws[1][:, None] + cols).to(x.device)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
