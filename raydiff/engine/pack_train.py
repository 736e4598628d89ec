"""Training a pack: the epochs of K SimpleNNs trained as one computation.

:func:`train_packed` cuts every epoch into steps of :func:`raydiff.engine.pack_step.pack_step`
by one of three strategies:

- full batch over shared rows: every model's step over all N rows (one layer-1 GEMM for
  all K), each model's loss masked to its own subset;
- full batch, gathered: models on small subsets train on their own rows only, gathered
  once and padded to the largest subset (:data:`GATHER_BELOW`);
- mini-batches: each model draws its own shuffle from its own ``torch.Generator`` exactly
  as :func:`raydiff.engine.train` would for it (``randperm`` of its training set each
  epoch, split into batches), the K batches gathered in one ``index_select``.

On the CPU, models on small subsets may instead train one after another with the single
engine (:func:`one_by_one_pays`), which gives each exactly (bit for bit) what it would
train alone. Each model's result equals the same config trained alone up to float
rounding (tests/test_packed.py).

Isolation: a model whose batch loss is NaN or infinite is masked out from that step on
(its parameters and momentum stop changing, selected away by ``torch.where`` so that its
NaNs never reach another model's numbers) and reported in :attr:`PackResult.diverged`
with the epoch; the other models carry on unaffected. The host waits for the device once
per epoch, never per batch.
"""

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from raydiff.engine.pack import subset_rows
from raydiff.engine.pack_step import pack_step
from raydiff.engine.sgd import Hyper, per_model
from raydiff.engine.train import Dynamics, train


@dataclass
class PackDynamics:
    """Per-sample logits seen during training, for all K models.

    epochs : (T,) recorded epochs (1-based)
    logits : (T, K, N, C); ``logits[t, k, i]`` is what sample i got from model k in the
        training forward pass of epoch ``epochs[t]`` (before that pass's update). In
        full-batch mode every sample gets logits, also those model k does not train on
        (its held-out predictions); in mini-batch mode those rows are NaN.
    """

    epochs: np.ndarray
    logits: np.ndarray

    def of(self, k, subset=None):
        """The single engine's :class:`~raydiff.engine.train.Dynamics` of model k (the
        rows of ``subset``, in its order, when the model trained on a subset)."""
        logits = self.logits[:, k]
        return Dynamics(self.epochs, logits if subset is None else logits[:, np.asarray(subset)])


@dataclass
class PackResult:
    """What :func:`train_packed` returns.

    losses : (E, K) float array, the mean training loss of every model per epoch run (NaN
        from a model's divergence on)
    diverged : {k: epoch} of models masked out because their loss became NaN / infinite
    stopped : {k: epoch} of models ``on_epoch`` stopped
    state : the :class:`PackOptimizerState` to resume from (with ``start_epoch``)
    start_epoch : the epoch training (re)started from (0 for a fresh run)
    """

    epochs_run: int
    losses: np.ndarray
    dynamics: PackDynamics | None = None
    diverged: dict = field(default_factory=dict)
    stopped: dict = field(default_factory=dict)
    state: "PackOptimizerState | None" = None
    start_epoch: int = 0


class PackOptimizerState:
    """What a pack's training carries between epochs besides its parameters: momentum
    buffers, which models are still live, and each model's shuffle generator. Pass the
    same object to :func:`train_packed` with ``start_epoch`` to resume."""

    def __init__(self, pack, generators=None):
        self.buffers = None
        self.live = torch.ones(pack.k, dtype=torch.bool, device=pack.device)
        self.generators = generators
        self.diverged, self.stopped = {}, {}          # {k: epoch} of the models out

    def state_dict(self):
        return {"buffers": None if self.buffers is None else [b.clone() for b in self.buffers],
                "live": self.live.clone(), "diverged": dict(self.diverged),
                "stopped": dict(self.stopped),
                "generators": None if self.generators is None
                else [g.get_state() for g in self.generators]}

    def load_state_dict(self, state):
        # a checkpoint is read onto the CPU: its tensors go back to the pack's device
        device = self.live.device
        self.buffers = (None if state["buffers"] is None
                        else [b.to(device).clone() for b in state["buffers"]])
        self.live = state["live"].to(device).clone()
        self.diverged, self.stopped = dict(state["diverged"]), dict(state["stopped"])
        if state["generators"] is not None:
            for g, s in zip(self.generators, state["generators"]):
                g.set_state(s)


def train_packed(pack, x, y, *, epochs, lr=0.1, batch_size=None, momentum=0.0,
                 weight_decay=0.0, subsets=None, sample_weight=None, generators=None,
                 record_every=0, record_dtype=torch.float32, on_epoch=None, start_epoch=0,
                 lr_schedule=None, state=None):
    """Train the K models of ``pack`` in place on tensors ``x`` (N, ...) and ``y``.

    Parameters
    ----------
    y : long tensor (N,) shared, or (K, N): model k's labels (e.g. its own noise draw)
    epochs, start_epoch, record_every, record_dtype : as :func:`raydiff.engine.train`
    lr, momentum, weight_decay : scalar or K-sequence, one per model
    batch_size : None (full batch) or int; a model whose training set is not larger than
        ``batch_size`` trains full-batch on it, as the single engine would
    subsets : None, or K entries each None (all N samples) or an index array into x:
        model k trains on ``x[subsets[k]]``, in that order (the order matters for the
        mini-batch shuffle, which permutes positions within the subset)
    sample_weight : None or float (K, N) >= 0: per-sample loss weights; the loss of a
        batch is then ``sum(w * loss) / sum(w)`` over the model's samples in it
    generators : K torch.Generators (CPU), one per model, required in mini-batch mode:
        model k's shuffles are the ones ``train(..., generator=generators[k])`` draws
    on_epoch : callable(epoch, losses) -> None / bool / (K,) bool, optional
        ``losses`` is the (K,) numpy array of the epoch's mean losses; True stops every
        model, a mask stops the models it marks (they stop changing, as diverged ones)
    lr_schedule : callable(epoch) -> scalar or K rates, optional: the rate(s) of ``epoch``
    state : :class:`PackOptimizerState`, optional; created when None (pass it back with
        ``start_epoch`` to resume: momentum buffers, live models, generator states)

    Returns
    -------
    :class:`PackResult`
    """
    k = pack.k
    x, y = _check_data(pack, x, y)
    lrs, moms, wds = (per_model(v, k, name) for v, name in
                      ((lr, "lr"), (momentum, "momentum"), (weight_decay, "weight_decay")))
    rows = subset_rows(subsets, k, len(x))
    sizes = np.array([len(x) if r is None else len(r) for r in rows])
    weights = _sample_weights(sample_weight, k, len(x), x.device)
    full = batch_size is None or batch_size >= int(sizes.max())
    with_momentum = bool((moms != 0).any())
    state = _ready_state(state, pack, generators, mini_batch=not full, momentum=with_momentum)
    if (x.device.type == "cpu" and full and weights is None and not record_every
            and on_epoch is None and not with_momentum
            and any(r is not None for r in rows) and one_by_one_pays(sizes.mean(), len(x))):
        return _train_one_by_one(pack, x, y, rows, epochs=epochs, start_epoch=start_epoch,
                                 lrs=lrs, wds=wds, lr_schedule=lr_schedule, state=state)
    plan = _Plan(x, y, rows, sizes, weights, None if full else batch_size,
                 record=bool(record_every))
    recorder = _PackRecorder(k, len(x), pack.num_classes,
                             range(start_epoch + 1, epochs + 1), record_every, record_dtype,
                             x.device)
    result = PackResult(epochs_run=start_epoch, losses=np.zeros((0, k)), state=state,
                        start_epoch=start_epoch)
    # models already out when resuming stay out, reported as when they left
    result.diverged, result.stopped = state.diverged, state.stopped
    losses = []
    for epoch in range(start_epoch + 1, epochs + 1):
        rates = lrs if lr_schedule is None else per_model(lr_schedule(epoch), k, "lr_schedule")
        hyper = Hyper.of(rates, wds, moms, device=x.device, k=k)
        total = torch.zeros(k, device=x.device)
        for batch in plan.epoch(state.generators):
            logits, loss_sum = pack_step(pack, batch.x, batch.y, hyper, den=batch.den,
                                         weights=batch.weights, buffers=state.buffers,
                                         live=state.live, per_model=batch.idx is not None)
            total += loss_sum
            recorder.add(epoch, batch, logits)
        losses.append(_epoch_losses(result, state, epoch, total / plan.totals))
        result.epochs_run = epoch
        if _ask_on_epoch(on_epoch, result, state, epoch, losses[-1]) or not bool(state.live.any()):
            break
    result.losses = np.stack(losses) if losses else np.zeros((0, k))
    result.dynamics = recorder.dynamics(result.epochs_run)
    return result


def _check_data(pack, x, y):
    """x flattened to (N, D) and y as (K, N), checked against the pack."""
    k, n = pack.k, len(x)
    if pack.device != x.device:
        raise ValueError(f"pack on {pack.device}, x on {x.device}: move them to one device")
    x = x.flatten(1)
    if x.shape[1] != pack.in_features:
        raise ValueError(f"x has {x.shape[1]} features, the pack's models take {pack.in_features}")
    if y.dim() == 1:
        y = y[None].expand(k, n)
    if tuple(y.shape) != (k, n):
        raise ValueError(f"y: expected shape ({n},) or ({k}, {n}), got {tuple(y.shape)}")
    return x, y


def _sample_weights(sample_weight, k, n, device):
    if sample_weight is None:
        return None
    weights = torch.as_tensor(sample_weight, dtype=torch.float32, device=device)
    if tuple(weights.shape) != (k, n) or bool((weights < 0).any()):
        raise ValueError(f"sample_weight: expected non-negative floats of shape ({k}, {n})")
    return weights


def _ready_state(state, pack, generators, *, mini_batch, momentum):
    """The optimizer state to train with: the one given (to resume) or a fresh one, with
    the generators and momentum buffers the run needs."""
    state = state if state is not None else PackOptimizerState(pack, generators)
    if generators is not None:
        state.generators = generators
    if mini_batch and (state.generators is None or len(state.generators) != pack.k):
        raise ValueError("mini-batch packs need generators: one torch.Generator per model")
    if momentum and state.buffers is None:
        state.buffers = [torch.zeros_like(p) for p in pack.params]
    return state


def _epoch_losses(result, state, epoch, mean_losses):
    """The epoch's (K,) host losses, NaN for the models out; a model whose loss went
    non-finite during the epoch (masked at that step) is reported as diverged now."""
    live = state.live.cpu().numpy()
    epoch_losses = mean_losses.cpu().numpy().astype(np.float64)
    for i in np.flatnonzero(~live):
        if int(i) not in result.diverged and int(i) not in result.stopped:
            result.diverged[int(i)] = epoch
    out = [i for i in range(len(live)) if i in result.diverged or i in result.stopped]
    epoch_losses[out] = np.nan
    return epoch_losses


def _ask_on_epoch(on_epoch, result, state, epoch, losses):
    """Run ``on_epoch``; True when it stops every model. A mask stops the models it marks."""
    if on_epoch is None:
        return False
    verdict = on_epoch(epoch, losses)
    if verdict is True:
        return True
    if verdict is not None and verdict is not False:
        stop = np.asarray(verdict, dtype=bool)
        for i in np.flatnonzero(stop):
            if int(i) not in result.diverged:
                result.stopped.setdefault(int(i), epoch)
        state.live &= ~torch.as_tensor(stop, device=state.live.device)
    return False


@dataclass
class _Batch:
    """One step's input for every model.

    x : (N, D) rows shared by every model, or (K, B, D) one batch each
    y : (K, B) labels; weights : (K, B) or None (every row weighs 1)
    den : int or (K,) tensor, the loss denominators
    idx : (K, B) global rows of a per-model batch, None for shared rows
    valid : (K, B) 1 / 0 where rows are padding, or None (no padding)
    """

    x: torch.Tensor
    y: torch.Tensor
    weights: torch.Tensor | None
    den: object
    idx: torch.Tensor | None = None
    valid: torch.Tensor | None = None


class _Plan:
    """How a pack's epochs are cut into steps (the strategies of the module docstring).

    ``totals`` (K,) are the epoch-loss denominators: each model's (weighted) rows."""

    def __init__(self, x, y, rows, sizes, weights, batch_size, *, record):
        k, n = len(rows), len(x)
        self.x, self.y, self.rows, self.sizes, self.weights = x, y, rows, sizes, weights
        self.batch_size = batch_size                  # None: full batch
        mask = torch.zeros(k, n, device=x.device)     # the weight of every (model, sample)
        for i, r in enumerate(rows):
            if r is None:
                mask[i] = 1
            else:
                mask[i, r.to(x.device)] = 1
        if weights is not None:
            mask = mask * weights
        self.totals = mask.sum(1)
        everyone = weights is None and all(r is None for r in rows)
        self.fixed = None
        if batch_size is None and not everyone and weights is None and not record:
            self.fixed = self._gathered()
        if batch_size is None and self.fixed is None:
            # every model on every sample: no weights to multiply by (the single engine's step)
            self.fixed = (_Batch(x, y, None, n) if everyone
                          else _Batch(x, y, mask, self.totals))
        self._buffer = None

    def _gathered(self):
        """Small subsets: each model's own rows, gathered and padded to the largest
        subset, cost K x n_max rows a step instead of K x N masked ones (the rows
        outside a model's subset would only be multiplied by 0). Copied once (they are
        the same every epoch) when that fits :data:`GATHER_BYTES`; else None."""
        found = _gathered_batch(self.rows, self.sizes, self.y, self.x.device, len(self.x))
        if found is None:
            return None
        order, valid, yb, wb, den = found
        if order.numel() * self.x.shape[1] * self.x.element_size() > GATHER_BYTES:
            return None
        xb = self.x.index_select(0, order.reshape(-1)).view(*order.shape, -1)
        return _Batch(xb, yb, wb, den, idx=order, valid=valid)

    def epoch(self, generators):
        """The epoch's steps, in order (mini-batches drawn now from ``generators``)."""
        if self.fixed is not None:
            yield self.fixed
            return
        for idx, valid, yb, wb, den in _minibatches(self.rows, self.sizes, generators,
                                                    self.batch_size, self.y, self.weights,
                                                    self.x.device):
            yield _Batch(self._rows(idx), yb, wb, den, idx=idx, valid=valid)

    def _rows(self, idx):
        """x's rows ``idx`` (K, B) as (K, B, D), in one reused buffer: a fresh tensor per
        step costs as much again in allocation as the gather itself (CPU)."""
        size = idx.numel() * self.x.shape[1]
        if self._buffer is None or self._buffer.numel() < size:
            self._buffer = torch.empty(size, dtype=self.x.dtype, device=self.x.device)
        out = self._buffer[:size].view(idx.numel(), -1)
        return torch.index_select(self.x, 0, idx.reshape(-1), out=out).view(*idx.shape, -1)


class _PackRecorder:
    """The logits of every (model, sample) in the training passes of every
    ``record_every``-th epoch, NaN where a model did not see a sample."""

    def __init__(self, k, n, num_classes, epochs, record_every, dtype, device):
        self.k, self.n = k, n
        self.epochs = [e for e in epochs if record_every and e % record_every == 0]
        self.slot = {e: t for t, e in enumerate(self.epochs)}
        self.record = None
        if self.epochs:
            # one spare row per slot: the padded rows of uneven mini-batches write there
            self.record = torch.full((len(self.epochs), k * n + 1, num_classes), float("nan"),
                                     dtype=dtype, device=device)
            self.offset = torch.arange(k, device=device)[:, None] * n

    def add(self, epoch, batch, logits):
        if epoch not in self.slot:
            return
        flat = logits.reshape(-1, logits.shape[-1]).to(self.record.dtype)
        if batch.idx is None:
            self.record[self.slot[epoch], :self.k * self.n] = flat
            return
        rows = self.offset + batch.idx
        if batch.valid is not None:                 # padding rows go to the spare row
            rows = torch.where(batch.valid > 0, rows, torch.full_like(rows, self.k * self.n))
        self.record[self.slot[epoch]].index_copy_(0, rows.reshape(-1), flat)

    def dynamics(self, last_epoch):
        if self.record is None:
            return None
        kept = [e for e in self.epochs if e <= last_epoch]
        logits = self.record[:len(kept), :self.k * self.n].view(len(kept), self.k, self.n, -1)
        return PackDynamics(np.array(kept), logits.float().cpu().numpy())


# On the CPU, full-batch models on subsets can train faster one after another with the
# single engine (each product over its own rows only) than stacked (every model's products
# over all N rows, masked, or narrow per-model products over gathered rows). A cost model
# of one model-epoch on one thread (SimpleNN 784-20-20-10, benchmarks/pack_throughput.py
# "subsets", 18 models): alone ALONE_FIXED_MS + ALONE_PER_ROW_US x its rows, stacked
# STACKED_PER_ROW_US x N. Measured on mnist5k (N = 5000): alone 0.92 / 2.02 / 3.49 ms,
# stacked 3.05 / 3.32 / 3.18 ms at 20 / 50 / 90 % of N; at N = 500 stacked wins at every
# share (fixed costs dominate alone). The pack still saves what a trial per config costs;
# on a GPU the stacked step always wins.
ALONE_FIXED_MS, ALONE_PER_ROW_US, STACKED_PER_ROW_US = 0.3, 0.74, 0.64


def one_by_one_pays(mean_rows, n):
    """Whether models averaging ``mean_rows`` rows of ``n`` train faster one by one (CPU)."""
    return ALONE_FIXED_MS * 1e3 + ALONE_PER_ROW_US * mean_rows < STACKED_PER_ROW_US * n


def _train_one_by_one(pack, x, y, rows, *, epochs, start_epoch, lrs, wds, lr_schedule,
                      state):
    """:func:`train_packed` on the CPU for models on small subsets: each model trained by
    :func:`raydiff.engine.train` on ``x[subset]`` (exactly what it would train alone) and
    written back into the pack. A diverged model is reported as the stacked step reports
    it, but its weights are the single engine's (no longer finite), not frozen."""
    k = pack.k
    losses = np.full((epochs - start_epoch, k), np.nan)
    for i, r in enumerate(rows):
        if (r is not None and len(r) == 0) or not bool(state.live[i]):
            continue                          # no sample, or out already: left as it is
        model = pack.model(i)
        xi = x if r is None else x.index_select(0, r)
        yi = y[i] if r is None else y[i].index_select(0, r)
        schedule = None if lr_schedule is None else functools.partial(
            _rate_of, lr_schedule, k, i)
        run = train(model, xi, yi, epochs=epochs, start_epoch=start_epoch, lr=float(lrs[i]),
                    weight_decay=float(wds[i]), lr_schedule=schedule)
        model_losses = np.asarray(run.losses, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(model_losses))
        if len(bad):                          # out from the epoch its loss went non-finite
            state.diverged[i] = start_epoch + int(bad[0]) + 1
            state.live[i] = False
            model_losses[bad[0]:] = np.nan
        losses[:len(model_losses), i] = model_losses
        _write_back(pack, i, model)
    result = PackResult(epochs_run=epochs, losses=losses, state=state, start_epoch=start_epoch)
    result.diverged, result.stopped = state.diverged, state.stopped
    return result


@torch.no_grad()
def _write_back(pack, i, model):
    """Copy a SimpleNN's parameters into model ``i`` of ``pack``."""
    for (w, b), layer in zip(zip(pack.weights, pack.biases), [*model.hidden, model.out]):
        w[i].copy_(layer.weight)
        b[i].copy_(layer.bias)


def _rate_of(lr_schedule, k, i, epoch):
    return float(per_model(lr_schedule(epoch), k, "lr_schedule")[i])


# gather the subsets when the largest is under this share of N: per-model products (bmm)
# run slower than the one shared (N x D) @ (D x H*K) product, so gathering pays only for
# small subsets (CPU, one thread, 18 SimpleNNs: 1.3x at 10 % of N, 0.65x at 50 %)
GATHER_BELOW = 0.3
GATHER_BYTES = 1 << 30  # ... and the gathered copy of the inputs fits in this


def _gathered_batch(rows, sizes, y, device, n):
    """The full-batch step of models on subsets as one per-model batch (idx (K, n_max),
    valid (K, n_max), labels, weights = valid, denominators = subset sizes), in each
    subset's own order (the order :func:`raydiff.engine.train` sees ``x[subset]`` in);
    None when the largest subset is too close to N for gathering to pay."""
    width = int(sizes.max())
    if width > GATHER_BELOW * n or width == 0:
        return None
    k = len(rows)
    order = torch.zeros(k, width, dtype=torch.long)
    valid = torch.zeros(k, width)
    for i, r in enumerate(rows):
        r = torch.arange(n) if r is None else torch.as_tensor(r, dtype=torch.long)
        order[i, :len(r)] = r
        valid[i, :len(r)] = 1
    order, valid = order.to(device), valid.to(device)
    return order, valid, y.gather(1, order), valid, valid.sum(1)


def _minibatches(rows, sizes, generators, batch_size, y, weights, device):
    """The epoch's steps: per step (idx (K, b) global rows, valid (K, b) 0 / 1 or None when
    no row is padding, labels (K, b), weights (K, b) or None, denominators (K,) or an
    int). Model k's positions are ``randperm(n_k, generator=generators[k])`` split into
    batches, as :func:`raydiff.engine.train` draws them; models with fewer batches are
    padded (weight 0) and skip the extra steps. The permutations are drawn on the CPU
    (each model's generator), K small draws per epoch."""
    k = len(rows)
    orders = []
    for r, size, g in zip(rows, sizes, generators):
        perm = torch.randperm(int(size), generator=g)
        orders.append(perm if r is None else r[perm])
    if bool((sizes == sizes[0]).all()):
        order = torch.stack(orders).to(device)
        valid = None
    else:
        width = int(math.ceil(sizes.max() / batch_size)) * batch_size
        order = torch.zeros(k, width, dtype=torch.long)
        valid = torch.zeros(k, width)
        for i, o in enumerate(orders):
            order[i, :len(o)] = o
            valid[i, :len(o)] = 1
        order, valid = order.to(device), valid.to(device)
    out = []
    for start in range(0, order.shape[1], batch_size):
        idx = order[:, start:start + batch_size]
        part = None if valid is None else valid[:, start:start + batch_size]
        wb = part
        if weights is not None:
            w = weights.gather(1, idx)
            wb = w if wb is None else wb * w
        den = idx.shape[1] if wb is None else wb.sum(1)
        out.append((idx, part, y.gather(1, idx), wb, den))
    return out
