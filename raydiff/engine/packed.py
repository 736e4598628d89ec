"""Packs: K SimpleNNs of one architecture trained as one computation.

A seed grid trains thousands of the same small MLP on the same data; one at a time, each
step is a handful of tiny matrix products dominated by fixed per-operation costs (and, in
a sweep, by a trial's process and bookkeeping). A :class:`Pack` stacks the parameters of
K models along a leading axis and trains them together:

- full-batch: layer 1 of all K models is ONE ``(N x D) @ (D x H1*K)`` product (the input
  is shared), its weight gradient one ``(H1*K x N) @ (N x D)`` product; later layers are
  ``bmm`` over the K axis;
- mini-batch: each model draws its own shuffle from its own ``torch.Generator`` exactly as
  :func:`raydiff.engine.train` would for it (``randperm`` of its training set each epoch,
  split into batches), the K batches are gathered in one ``index_select`` and every layer
  is a ``bmm``.

What may differ between the K models: initialisation (seed), labels (``y`` of shape
(K, N): a noise draw per model), the samples each trains on (``subsets``: an index array
per model, in the order the single engine would see ``x[subset]``) and optional per-sample
loss weights, learning rate, weight decay and momentum (scalars or K-vectors). The loss of
model k is the (weighted) mean cross-entropy over its own samples of the batch, exactly as
if it trained alone on its subset; the step is the one of :func:`raydiff.engine.train`
(plain SGD: the hand-derived step of :mod:`raydiff.engine.fused`; momentum: the arithmetic
of ``torch.optim.SGD`` with dampening 0). Each model's result equals the same config
trained alone up to float rounding (tests/test_packed.py).

Isolation: a model whose batch loss is NaN or infinite is masked out from that step on
(its parameters and momentum stop changing, selected away by ``torch.where`` so that its
NaNs never reach another model's numbers) and reported in :attr:`PackResult.diverged`
with the epoch; the other models carry on unaffected. The host waits for the device once
per epoch, never per batch.

:class:`PackedInversionMonitor` watches the class-manifold radii of all K models at once
(:func:`class_radii_packed`), with the rules of :mod:`raydiff.engine.inversion`.
"""

import functools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from raydiff.engine.inversion import RULES, check_rule, judged_margins, smooth
from raydiff.engine.train import Dynamics, predict, train
from raydiff.models import SimpleNN, get_model


class Pack:
    """K :class:`~raydiff.models.SimpleNN` s with stacked parameters.

    ``weights[l]`` is (K, out_l, in_l), ``biases[l]`` (K, out_l), for the tanh layers
    ``l = 0 .. L-1`` and the output layer last (``len(weights) == len(hidden) + 1``): model
    k's ``hidden[l].weight`` is ``weights[l][k]``, its ``out.weight`` is ``weights[-1][k]``.
    Every tensor is contiguous and on one device. A pack is plain tensors, not a Module:
    nothing here goes through autograd.
    """

    def __init__(self, weights, biases):
        if len(weights) != len(biases) or len(weights) < 2:
            raise ValueError("a pack needs weights and biases of >= 2 layers (hidden + out)")
        k = weights[0].shape[0]
        for w, b in zip(weights, biases):
            if w.dim() != 3 or b.shape != (k, w.shape[1]) or w.shape[0] != k:
                raise ValueError(f"pack layer shapes disagree: weight {tuple(w.shape)}, "
                                 f"bias {tuple(b.shape)}, K = {k}")
        self.weights = [w.detach().contiguous() for w in weights]
        self.biases = [b.detach().contiguous() for b in biases]

    # -- building and unstacking ------------------------------------------------------

    @classmethod
    def from_models(cls, models):
        """Stack K SimpleNNs of one architecture (copies; the models are left alone)."""
        models = list(models)
        if not models:
            raise ValueError("a pack needs at least one model")
        shape = _architecture(models[0])
        for m in models:
            if type(m) is not SimpleNN or _architecture(m) != shape:
                raise ValueError(f"every model of a pack must be a SimpleNN of one "
                                 f"architecture {shape}; got {type(m).__name__} "
                                 f"{_architecture(m) if isinstance(m, SimpleNN) else ''}")
        layers = [lambda m, i=i: m.hidden[i] for i in range(len(models[0].hidden))]
        layers.append(lambda m: m.out)
        with torch.no_grad():
            weights = [torch.stack([get(m).weight for m in models]) for get in layers]
            biases = [torch.stack([get(m).bias for m in models]) for get in layers]
        return cls(weights, biases)

    @classmethod
    def init(cls, seeds, *, input_shape, num_classes, hidden=(20, 20), device="cpu"):
        """The pack of ``get_model("simple_nn", ..., seed=s)`` for every seed of ``seeds``:
        model k starts from exactly the weights the single-model engine's model would."""
        models = [get_model("simple_nn", input_shape=input_shape, num_classes=num_classes,
                            hidden=tuple(hidden), seed=int(s)) for s in seeds]
        return cls.from_models(models).to(device)

    def model(self, k):
        """Model ``k`` as an ordinary SimpleNN (a copy, on the pack's device)."""
        m = SimpleNN(self.in_features, self.num_classes, hidden=self.hidden)
        m.load_state_dict(self.state_of(k))
        return m.to(self.device)

    def state_of(self, k):
        """The ``state_dict`` (copied tensors) model ``k`` has as a SimpleNN."""
        state = {}
        for i in range(len(self.hidden)):
            state[f"hidden.{i}.weight"] = self.weights[i][k].clone()
            state[f"hidden.{i}.bias"] = self.biases[i][k].clone()
        state["out.weight"] = self.weights[-1][k].clone()
        state["out.bias"] = self.biases[-1][k].clone()
        return state

    def to(self, device):
        self.weights = [w.to(device) for w in self.weights]
        self.biases = [b.to(device) for b in self.biases]
        return self

    def clone(self):
        return Pack([w.clone() for w in self.weights], [b.clone() for b in self.biases])

    def select(self, models):
        """A new pack of the models at positions ``models`` (copies)."""
        idx = torch.as_tensor(list(models), dtype=torch.long, device=self.device)
        return Pack([w.index_select(0, idx) for w in self.weights],
                    [b.index_select(0, idx) for b in self.biases])

    @property
    def params(self):
        """Every parameter tensor, weight and bias per layer, in layer order."""
        return [p for wb in zip(self.weights, self.biases) for p in wb]

    def flat(self):
        """(K, P) copy of all parameters, model k's row in :meth:`params` order."""
        return torch.cat([p.reshape(self.k, -1) for p in self.params], 1)

    def load_flat(self, flat):
        """Set all parameters from a (K, P) tensor of :meth:`flat`'s layout."""
        at = 0
        for p in self.params:
            size = p[0].numel()
            p.copy_(flat[:, at:at + size].reshape(p.shape))
            at += size

    def state_dict(self):
        return {"weights": [w.clone() for w in self.weights],
                "biases": [b.clone() for b in self.biases]}

    def load_state_dict(self, state):
        for p, q in zip(self.params, [t for wb in zip(state["weights"], state["biases"])
                                      for t in wb]):
            p.copy_(q)

    @property
    def k(self):
        return self.weights[0].shape[0]

    def __len__(self):
        return self.k

    @property
    def device(self):
        return self.weights[0].device

    @property
    def in_features(self):
        return self.weights[0].shape[2]

    @property
    def hidden(self):
        return tuple(w.shape[1] for w in self.weights[:-1])

    @property
    def num_classes(self):
        return self.weights[-1].shape[1]

    # -- forward ------------------------------------------------------------------------

    def activations(self, x, *, per_model=False):
        """The tanh activations of every hidden layer and the logits.

        x : (N, ...) shared by all models, or with ``per_model`` (K, B, D): one batch per
            model. Returns ``(acts, logits)``: acts[l] is (K, N, H_l), logits (K, N, C).
        """
        k = self.k
        w1, b1 = self.weights[0], self.biases[0]
        if per_model:
            h = torch.tanh(torch.baddbmm(b1[:, None], x, w1.transpose(1, 2)))
        else:
            x = x.flatten(1)
            n, h1 = len(x), w1.shape[1]
            # one GEMM for all K: (N x D) @ (D x H1*K), then the per-model slices
            a = torch.addmm(b1.reshape(-1), x, w1.reshape(k * h1, -1).t())
            # per-model rows made contiguous once: the layers above and the backward pass
            # read them several times, and strided reads cost more than this copy
            h = torch.tanh(a).view(n, k, h1).transpose(0, 1).contiguous()
        acts = [h]
        for w, b in zip(self.weights[1:-1], self.biases[1:-1]):
            acts.append(torch.tanh(torch.baddbmm(b[:, None], acts[-1], w.transpose(1, 2))))
        logits = torch.baddbmm(self.biases[-1][:, None], acts[-1],
                               self.weights[-1].transpose(1, 2))
        return acts, logits

    def features_and_logits(self, x):
        """(first hidden layer after tanh (K, N, H1), logits (K, N, C)) of shared x (N, ...)."""
        acts, logits = self.activations(x.flatten(1))
        return acts[0], logits

    def __call__(self, x):
        return self.activations(x)[1]


def _architecture(model):
    return (model.hidden[0].in_features, tuple(l.out_features for l in model.hidden),
            model.out.out_features)


@torch.no_grad()
def predict_packed(pack, x, *, batch_size=8192):
    """Logits (K, N, C) of every model of ``pack`` for every row of ``x`` (N, ...), in
    no-grad batches of ``batch_size`` rows (each batch one layer-1 GEMM for all K)."""
    x = x.flatten(1)
    parts = [pack.activations(x[i:i + batch_size])[1] for i in range(0, len(x), batch_size)]
    return torch.cat(parts, 1) if parts else pack.activations(x)[1]


# -- training -------------------------------------------------------------------------

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


def _per_model(value, k, name, device=None):
    """A scalar or K-sequence as a float64 host array of K values (ValueError naming
    ``name`` otherwise)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"{name}: expected a scalar or {k} values (one per model), "
                         f"got shape {arr.shape}")
    return arr


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
    k, n = pack.k, len(x)
    device = x.device
    if pack.device != device:
        raise ValueError(f"pack on {pack.device}, x on {device}: move them to one device")
    x = x.flatten(1)
    if x.shape[1] != pack.in_features:
        raise ValueError(f"x has {x.shape[1]} features, the pack's models take {pack.in_features}")
    if y.dim() == 1:
        y = y[None].expand(k, n)
    if tuple(y.shape) != (k, n):
        raise ValueError(f"y: expected shape ({n},) or ({k}, {n}), got {tuple(y.shape)}")
    lrs = _per_model(lr, k, "lr", device)
    moms = _per_model(momentum, k, "momentum", device)
    wds = _per_model(weight_decay, k, "weight_decay", device)
    use_momentum = bool((moms != 0).any())

    members = _members(subsets, k, n)
    sizes = np.array([n if m is None else len(m) for m in members])
    weights = None
    if sample_weight is not None:
        weights = torch.as_tensor(sample_weight, dtype=torch.float32, device=device)
        if tuple(weights.shape) != (k, n) or bool((weights < 0).any()):
            raise ValueError(f"sample_weight: expected non-negative floats of shape ({k}, {n})")
    full_batch = batch_size is None or batch_size >= int(sizes.max())
    state = state if state is not None else PackOptimizerState(pack, generators)
    if generators is not None:
        state.generators = generators
    if not full_batch and (state.generators is None or len(state.generators) != k):
        raise ValueError("mini-batch packs need generators: one torch.Generator per model")
    if use_momentum and state.buffers is None:
        state.buffers = [torch.zeros_like(p) for p in pack.params]

    if (device.type == "cpu" and full_batch and weights is None and not record_every
            and on_epoch is None and not use_momentum
            and any(m is not None for m in members) and one_by_one_pays(sizes.mean(), n)):
        return _train_one_by_one(pack, x, y, members, epochs=epochs, start_epoch=start_epoch,
                                 lrs=lrs, wds=wds, lr_schedule=lr_schedule, state=state)

    # full batch: the per-sample weight of every (model, sample); 0 outside the subset
    mask = torch.zeros(k, n, device=device)
    for i, m in enumerate(members):
        if m is None:
            mask[i] = 1
        else:
            mask[i, torch.as_tensor(m, dtype=torch.long, device=device)] = 1
    if weights is not None:
        mask = mask * weights
    totals = mask.sum(1)                                   # (K,) the epoch-loss denominators
    everyone = weights is None and all(m is None for m in members)
    # every model on every sample: no weights to multiply by (the single engine's step)
    full_w, full_den = (None, n) if everyone else (mask, totals)
    gathered = None
    if full_batch and not everyone and weights is None and not record_every:
        # small subsets: each model's own rows, gathered and padded to the largest subset,
        # cost K x n_max rows a step instead of K x N masked ones (the rows outside a
        # model's subset would only be multiplied by 0)
        gathered = _gathered_batch(members, sizes, y, device, n)
        # the gathered rows are the same every epoch: copy them once, within a budget
        if gathered is not None and gathered[0].numel() * x.shape[1] * x.element_size() <= GATHER_BYTES:
            gathered_x = x.index_select(0, gathered[0].reshape(-1)).view(*gathered[0].shape, -1)
        else:
            gathered = None

    record_epochs = [e for e in range(start_epoch + 1, epochs + 1)
                     if record_every and e % record_every == 0]
    record = None
    if record_epochs:
        # one spare row per slot: the padded rows of uneven mini-batches write there
        record = torch.full((len(record_epochs), k * n + 1, pack.num_classes), float("nan"),
                            dtype=record_dtype, device=device)
    slot = {e: t for t, e in enumerate(record_epochs)}
    model_offset = torch.arange(k, device=device)[:, None] * n

    losses = []
    batch_rows = None
    result = PackResult(epochs_run=start_epoch, losses=np.zeros((0, k)), state=state,
                        start_epoch=start_epoch)
    # models already out when resuming stay out, reported as when they left
    result.diverged, result.stopped = state.diverged, state.stopped
    for epoch in range(start_epoch + 1, epochs + 1):
        rates = lrs if lr_schedule is None else _per_model(lr_schedule(epoch), k,
                                                           "lr_schedule", device)
        hyper = _Hyper(rates, wds, moms, device)
        total = torch.zeros(k, device=device)
        if gathered is not None:
            steps = [gathered]
        elif full_batch:
            steps = [(None, None, y, full_w, full_den)]
        else:
            steps = _minibatches(members, sizes, state.generators, batch_size, y, weights,
                                 device)
        for idx, valid, yb, wb, den in steps:
            if gathered is not None:
                xb = gathered_x
            elif idx is None:
                xb = x
            else:
                # the batch's rows into one reused buffer: a fresh (K x B x D) tensor per
                # step costs as much again in allocation as the gather itself (CPU)
                rows = idx.numel()
                if batch_rows is None or batch_rows.numel() < rows * x.shape[1]:
                    batch_rows = torch.empty(rows * x.shape[1], dtype=x.dtype, device=device)
                xb = torch.index_select(x, 0, idx.reshape(-1),
                                        out=batch_rows[:rows * x.shape[1]].view(rows, -1))
                xb = xb.view(*idx.shape, -1)
            logits, loss_sum = _step(pack, xb, yb, wb, den, hyper, state, use_momentum,
                                     per_model=idx is not None)
            total += loss_sum
            if epoch in slot:
                flat_logits = logits.reshape(-1, logits.shape[-1]).to(record_dtype)
                if idx is None:
                    record[slot[epoch], :k * n] = flat_logits
                else:
                    rows = model_offset + idx
                    if valid is not None:           # padding rows go to the spare row
                        rows = torch.where(valid > 0, rows, torch.full_like(rows, k * n))
                    record[slot[epoch]].index_copy_(0, rows.reshape(-1), flat_logits)
        live = state.live.cpu().numpy()
        epoch_losses = (total / totals).cpu().numpy().astype(np.float64)
        # a model whose loss went non-finite during this epoch was masked at that step
        for i in np.flatnonzero(~live):
            if int(i) not in result.diverged and int(i) not in result.stopped:
                result.diverged[int(i)] = epoch
        epoch_losses[[i for i in range(k) if i in result.diverged or i in result.stopped]] = np.nan
        losses.append(epoch_losses)
        result.epochs_run = epoch
        if on_epoch is not None:
            verdict = on_epoch(epoch, epoch_losses)
            if verdict is True:
                break
            if verdict is not None and verdict is not False:
                stop = np.asarray(verdict, dtype=bool)
                for i in np.flatnonzero(stop):
                    if int(i) not in result.diverged:
                        result.stopped.setdefault(int(i), epoch)
                state.live &= ~torch.as_tensor(stop, device=device)
        if not bool(state.live.any()):
            break
    result.losses = np.stack(losses) if losses else np.zeros((0, k))
    if record is not None:
        kept = [e for e in record_epochs if e <= result.epochs_run]
        result.dynamics = PackDynamics(
            np.array(kept),
            record[:len(kept), :k * n].view(len(kept), k, n, -1).float().cpu().numpy())
    return result


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


def _train_one_by_one(pack, x, y, members, *, epochs, start_epoch, lrs, wds, lr_schedule,
                      state):
    """:func:`train_packed` on the CPU for models on small subsets: each model trained by
    :func:`raydiff.engine.train` on ``x[subset]`` (exactly what it would train alone) and
    written back into the pack. A diverged model is reported as the stacked step reports
    it, but its weights are the single engine's (no longer finite), not frozen."""
    k = pack.k
    state = state if state is not None else PackOptimizerState(pack)
    losses = np.full((epochs - start_epoch, k), np.nan)
    for i, rows in enumerate(members):
        if (rows is not None and len(rows) == 0) or not bool(state.live[i]):
            continue                          # no sample, or out already: left as it is
        model = pack.model(i)
        xi = x if rows is None else x.index_select(0, rows)
        yi = y[i] if rows is None else y[i].index_select(0, rows)
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
        with torch.no_grad():
            layers = [*model.hidden, model.out]
            for layer, (w, b) in enumerate(zip(pack.weights, pack.biases)):
                w[i].copy_(layers[layer].weight)
                b[i].copy_(layers[layer].bias)
    result = PackResult(epochs_run=epochs, losses=losses, state=state, start_epoch=start_epoch)
    result.diverged, result.stopped = state.diverged, state.stopped
    return result


def _rate_of(lr_schedule, k, i, epoch):
    return float(_per_model(lr_schedule(epoch), k, "lr_schedule")[i])


def _members(subsets, k, n):
    if subsets is None:
        return [None] * k
    if len(subsets) != k:
        raise ValueError(f"subsets: expected {k} entries (one per model), got {len(subsets)}")
    out = []
    for s in subsets:
        if s is None:
            out.append(None)
            continue
        s = torch.as_tensor(np.asarray(s), dtype=torch.long).cpu()
        if s.dim() != 1 or (len(s) and (int(s.min()) < 0 or int(s.max()) >= n)):
            raise ValueError(f"subsets: every entry must be None or 1-d indices in [0, {n})")
        out.append(s)
    return out


# gather the subsets when the largest is under this share of N: per-model products (bmm)
# run slower than the one shared (N x D) @ (D x H*K) product, so gathering pays only for
# small subsets (CPU, one thread, 18 SimpleNNs: 1.3x at 10 % of N, 0.65x at 50 %)
GATHER_BELOW = 0.3
GATHER_BYTES = 1 << 30  # ... and the gathered copy of the inputs fits in this


def _gathered_batch(members, sizes, y, device, n):
    """The full-batch step of models on subsets as one per-model batch (idx (K, n_max),
    valid (K, n_max), labels, weights = valid, denominators = subset sizes), in each
    subset's own order (the order :func:`raydiff.engine.train` sees ``x[subset]`` in);
    None when the largest subset is too close to N for gathering to pay."""
    width = int(sizes.max())
    if width > GATHER_BELOW * n or width == 0:
        return None
    k = len(members)
    order = torch.zeros(k, width, dtype=torch.long)
    valid = torch.zeros(k, width)
    for i, m in enumerate(members):
        rows = torch.arange(n) if m is None else torch.as_tensor(m, dtype=torch.long)
        order[i, :len(rows)] = rows
        valid[i, :len(rows)] = 1
    order, valid = order.to(device), valid.to(device)
    return order, valid, y.gather(1, order), valid, valid.sum(1)


def _minibatches(members, sizes, generators, batch_size, y, weights, device):
    """The epoch's steps: per step (idx (K, b) global rows, valid (K, b) 0 / 1 or None when
    no row is padding, labels (K, b), weights (K, b) or None, denominators (K,) or an
    int). Model k's positions are ``randperm(n_k, generator=generators[k])`` split into
    batches, as :func:`raydiff.engine.train` draws them; models with fewer batches are
    padded (weight 0) and skip the extra steps. The permutations are drawn on the CPU
    (each model's generator), K small draws per epoch."""
    k = len(members)
    orders = []
    for m, size, g in zip(members, sizes, generators):
        perm = torch.randperm(int(size), generator=g)
        orders.append(perm if m is None else m[perm])
    even = bool((sizes == sizes[0]).all())
    if even:
        order = torch.stack(orders).to(device)
        valid = None
    else:
        steps = int(math.ceil(sizes.max() / batch_size))
        width = steps * batch_size
        order = torch.zeros(k, width, dtype=torch.long)
        valid = torch.zeros(k, width)
        for i, o in enumerate(orders):
            order[i, :len(o)] = o
            valid[i, :len(o)] = 1
        order, valid = order.to(device), valid.to(device)
    out = []
    for start in range(0, order.shape[1], batch_size):
        idx = order[:, start:start + batch_size]
        wb = None if valid is None else valid[:, start:start + batch_size]
        if weights is not None:
            w = weights.gather(1, idx)
            wb = w if wb is None else wb * w
        den = idx.shape[1] if wb is None else wb.sum(1)
        out.append((idx, None if valid is None else valid[:, start:start + batch_size],
                    y.gather(1, idx), wb, den))
    return out


class _Hyper:
    """Per-model step settings of one epoch as device tensors."""

    def __init__(self, lrs, wds, moms, device):
        self.lr = torch.as_tensor(lrs, dtype=torch.float32, device=device)
        self.wd = torch.as_tensor(wds, dtype=torch.float32, device=device)
        self.momentum = torch.as_tensor(moms, dtype=torch.float32, device=device)
        self.decay = 1.0 - self.lr * self.wd       # plain SGD's multiplicative decay
        self.any_decay = bool((wds != 0).any())


def _bshape(v, p):
    return v.view(-1, *([1] * (p.dim() - 1)))


@torch.no_grad()
def _step(pack, x, y, w, den, hyper, state, use_momentum, *, per_model):
    """One SGD step of every live model on its batch; returns (logits (K, B, C) before the
    step, summed (weighted) loss per model (K,)).

    x : (N, D) shared (full batch) or (K, B, D); y : (K, B) long; w : (K, B) or None
    (all rows weigh 1); den : (K,) tensor or int, the loss denominators."""
    shared = not per_model
    acts, logits = pack.activations(x, per_model=per_model)
    # the loss in class-major layout (K, C, B): CPU log_softmax over a last dimension of
    # 10 classes runs ~20x slower than over a middle one
    logp = torch.log_softmax(logits.transpose(1, 2).contiguous(), 1)
    target = y[:, None, :]
    nll = logp.gather(1, target).squeeze(1).neg_()
    loss_sum = (nll * w).sum(1) if w is not None else nll.sum(1)
    # a model whose loss is not finite is out from this step on; one with no sample in
    # this batch (uneven subsets) skips the step
    finite = torch.isfinite(loss_sum)
    state.live &= finite
    step = state.live if w is None else state.live & (den > 0)
    grad_t = logp.exp_().scatter_add_(1, target, torch.full_like(target, -1, dtype=logp.dtype))
    if w is not None:
        grad_t = grad_t * w[:, None, :]
    grads = [grad_t.bmm(acts[-1]), grad_t.sum(2)]                     # out weight, bias
    inputs = [None, *acts[:-1]]                                      # input of hidden layer l
    grad = grad_t.transpose(1, 2)                                    # (K, B, C)
    for layer in range(len(acts) - 1, -1, -1):
        w_above = pack.weights[layer + 1]
        grad = torch.ops.aten.tanh_backward(grad.bmm(w_above), acts[layer])
        if layer == 0 and shared:
            kk, n, h1 = grad.shape
            # (H1*K x N) @ (N x D): the second big product, all K models at once
            flat = grad.transpose(0, 1).reshape(n, kk * h1)
            dw = flat.t().mm(x).view(kk, h1, -1)
        else:
            dw = grad.transpose(1, 2).bmm(x if layer == 0 else inputs[layer])
        grads += [dw, grad.sum(1)]
    # grads came out as (weight, bias) from the top layer down
    pairs = list(zip(grads[0::2], grads[1::2]))[::-1]
    grads = [g for pair in pairs for g in pair]
    den_t = den if torch.is_tensor(den) else torch.full_like(hyper.lr, float(den))
    scale = hyper.lr / den_t.clamp_min(1e-30)
    params = pack.params
    # on the CPU, reading the mask costs nothing and skips a copy of every gradient while
    # all models step (the usual case); a GPU selects without waiting
    everyone_steps = logits.device.type == "cpu" and bool(step.all())
    if use_momentum:
        for p, g, buf in zip(params, grads, state.buffers):
            on = _bshape(step, p)
            d = g * _bshape(1.0 / den_t.clamp_min(1e-30), p)
            if hyper.any_decay:
                d = d.add(p * _bshape(hyper.wd, p))
            if everyone_steps:
                buf.mul_(_bshape(hyper.momentum, p)).add_(d)
                p.addcmul_(buf, _bshape(hyper.lr, p), value=-1.0)
                continue
            new_buf = buf * _bshape(hyper.momentum, p) + d
            buf.copy_(torch.where(on, new_buf, buf))
            p.copy_(torch.where(on, p - _bshape(hyper.lr, p) * buf, p))
    else:
        zero = torch.zeros((), device=logits.device)
        for p, g in zip(params, grads):
            on = _bshape(step, p)
            if not everyone_steps:
                # selection, not arithmetic: a masked model's NaN gradient becomes exactly 0
                g = torch.where(on, g, zero)
            if hyper.any_decay:
                p.mul_(torch.where(on, _bshape(hyper.decay, p), 1.0))
            p.addcmul_(g, _bshape(scale, p), value=-1.0)
    return logits, loss_sum


# -- the inversion monitor for all K ----------------------------------------------------

def class_radii_packed(z, y, num_classes, weight=None):
    """:func:`raydiff.engine.inversion.class_radii` of K models at once.

    Parameters
    ----------
    z : float tensor (K, N, d), hidden activations of every model (projected onto the
        unit sphere here)
    y : long tensor (N,) or (K, N), the class of each row (per model)
    num_classes : int
    weight : float tensor (K, N) of 0 / 1, optional: the rows model k counts (its
        training subset); all rows when None

    Returns
    -------
    radii : float tensor (K, num_classes); NaN for a class without samples
    centroids : float tensor (K, num_classes, d)
    """
    k, n, d = z.shape
    if y.dim() == 1:
        y = y[None].expand(k, n)
    z = z / z.norm(dim=2, keepdim=True).clamp_min(1e-12)
    cell = (torch.arange(k, device=z.device)[:, None] * num_classes + y).reshape(-1)
    w = (torch.ones(k, n, dtype=z.dtype, device=z.device) if weight is None
         else weight.to(z.dtype))
    counts = torch.zeros(k * num_classes, dtype=z.dtype, device=z.device)
    counts.index_add_(0, cell, w.reshape(-1))
    sums = torch.zeros(k * num_classes, d, dtype=z.dtype, device=z.device)
    sums.index_add_(0, cell, (z * w[..., None]).reshape(-1, d))
    centroids = sums / counts[:, None]
    sq = ((z.reshape(-1, d) - centroids[cell]) ** 2).sum(1) * w.reshape(-1)
    per_class = torch.zeros(k * num_classes, dtype=z.dtype, device=z.device).index_add_(0, cell, sq)
    radii = (per_class / counts).sqrt()
    return radii.view(k, num_classes), centroids.view(k, num_classes, d)


class PackedInversionMonitor:
    """:class:`~raydiff.engine.inversion.InversionMonitor` for every model of a pack: an
    ``on_epoch`` callback for :func:`train_packed` (returns None: it never stops training).

    Each epoch from ``start`` on it computes the radii of every (model, class) from one
    no-grad forward of the pack, and follows each (model, class) by ``rule`` exactly as
    the single monitor does for that model. Snapshots: one (K, C, P) device tensor holding,
    per (model, class), the flat parameters of the model at that class's chosen epoch
    (plus, under ``minimum``, the pack's states of the last h + 1 epochs, whose smoothed
    radius is not known yet). :meth:`view` gives model k's answers with the single
    monitor's interface.

    y : (N,) or (K, N) labels; subsets : as :func:`train_packed` (the radii of model k are
    over its own training samples, as the single monitor sees only its training x).
    """

    def __init__(self, pack, x, y, num_classes, *, subsets=None, start=20, check_every=5,
                 track_learning=False, rule="minimum", smoothing=5):
        check_rule(rule, smoothing)
        k, n = pack.k, len(x)
        self.pack, self.x, self.num_classes = pack, x.flatten(1), num_classes
        self.y = y[None].expand(k, n) if y.dim() == 1 else y
        self.members = _members(subsets, k, n)
        self.weight = torch.zeros(k, n, device=x.device)
        for i, m in enumerate(self.members):
            if m is None:
                self.weight[i] = 1
            else:
                self.weight[i, m.to(x.device)] = 1
        self.start, self.check_every = start, check_every
        self.rule, self.smoothing = rule, int(smoothing)
        self.epochs, self._radii, self._centroid_dist = [], [], []
        self.last_epoch = 0
        self._last_wrong = (torch.zeros(k, n, dtype=torch.long, device=x.device)
                            if track_learning else None)
        c = num_classes
        self._host = deque(maxlen=self.smoothing)
        self._recent = deque(maxlen=self.smoothing // 2 + 1)
        self._best_value = np.full((k, c), np.inf)
        self._best_epoch = np.full((k, c), -1, dtype=np.int64)
        self._rose = np.zeros((k, c), dtype=bool)
        self._states = None                  # (K, C, P) flat parameters at the chosen epoch

    @torch.no_grad()
    def __call__(self, epoch, losses=None):
        self.last_epoch = epoch
        watch = epoch >= self.start
        if self._last_wrong is None and not watch:
            return None
        z, logits = self.pack.features_and_logits(self.x)
        if self._last_wrong is not None:
            self._last_wrong.masked_fill_(logits.argmax(2) != self.y, epoch)
        if not watch:
            return None
        radii, centroids = class_radii_packed(z, self.y, self.num_classes, self.weight)
        self.epochs.append(epoch)
        self._radii.append(radii)
        self._centroid_dist.append(torch.cdist(centroids, centroids))
        if self.rule == "minimum":
            self._host.append(radii.double().cpu().numpy())
            self._recent.append((epoch, self.pack.flat()))
            if len(self._host) < self.smoothing:
                return None
            value = smooth(np.stack(self._host), self.smoothing)[0]      # (K, C)
            centre, state = self._recent[0]
            better = value < self._best_value
            rose = value > self._best_value
            self._best_value = np.where(better, value, self._best_value)
            self._best_epoch = np.where(better, centre, self._best_epoch)
            self._rose = np.where(better, False, self._rose | rose)
            self._keep(better, state)
            return None
        before = len(self.epochs) - 1 - self.check_every
        if (epoch > self.start and (epoch - self.start) % self.check_every == 0
                and before >= 0 and self.epochs[before] == epoch - self.check_every):
            rising = (radii > self._radii[before]).cpu().numpy() & (self._best_epoch < 0)
            self._best_epoch = np.where(rising, epoch, self._best_epoch)
            self._keep(rising, self.pack.flat())
        return None

    def _keep(self, cells, state):
        """Store ``state`` (K, P) as the snapshot of every (model, class) in ``cells``."""
        if not cells.any():
            return
        if self._states is None:
            self._states = torch.zeros(self.pack.k, self.num_classes, state.shape[1],
                                       dtype=state.dtype, device=state.device)
        ks, cs = np.nonzero(cells)
        ks_t = torch.as_tensor(ks, device=state.device)
        self._states[ks_t, torch.as_tensor(cs, device=state.device)] = state[ks_t]

    def inversion(self, k):
        """{class: inversion epoch} of model k's classes that inverted (as watched so far)."""
        epochs = self._best_epoch[k]
        if self.rule == "first_rise":
            return {c: int(e) for c, e in enumerate(epochs) if e >= 0}
        return {c: int(e) for c, e in enumerate(epochs)
                if e >= 0 and self._rose[k, c] and e <= self.last_epoch - self.check_every}

    def never_inverted(self, k):
        inverted = self.inversion(k)
        return [c for c in range(self.num_classes) if c not in inverted]

    def snapshot_state(self, k, c):
        """Model k's SimpleNN ``state_dict`` at class c's inversion epoch."""
        one = Pack([w[:1].clone() for w in self.pack.weights],
                   [b[:1].clone() for b in self.pack.biases])
        one.load_flat(self._states[k, c][None])
        return one.state_of(0)

    def snapshot_model(self, k, c):
        model = SimpleNN(self.pack.in_features, self.num_classes, hidden=self.pack.hidden)
        model.load_state_dict(self.snapshot_state(k, c))
        return model.to(self.pack.device)

    def radius_history(self, k):
        """(epochs (T,), radii (T, C)) of model k."""
        if not self._radii:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_classes))
        return np.asarray(self.epochs), torch.stack([r[k] for r in self._radii]).cpu().numpy()

    def centroid_distances(self, k):
        if not self._centroid_dist:
            return np.zeros((0, self.num_classes, self.num_classes))
        return torch.stack([d[k] for d in self._centroid_dist]).cpu().numpy()

    def learned_epoch(self, k):
        """:meth:`InversionMonitor.learned_epoch` of model k over its training samples
        (in its subset's order)."""
        if self._last_wrong is None:
            raise ValueError("learned_epoch needs PackedInversionMonitor(..., track_learning=True)")
        out = (self._last_wrong[k] + 1).cpu().numpy()
        m = self.members[k]
        return out if m is None else out[m.numpy()]

    def view(self, k):
        """Model k's answers behind the single monitor's interface (``inversion``,
        ``snapshots``, ``snapshot_logits``, ``straggler_margin``, ...), over its own
        training samples (``x[subsets[k]]``, in that order)."""
        return _ModelView(self, k)


class _ModelView:
    def __init__(self, monitor, k):
        self._m, self.k = monitor, k
        m = monitor.members[k]
        idx = None if m is None else m.to(monitor.x.device)
        self.x = monitor.x if idx is None else monitor.x.index_select(0, idx)
        self.y = monitor.y[k] if idx is None else monitor.y[k].index_select(0, idx)
        self.num_classes, self.rule = monitor.num_classes, monitor.rule
        self.last_epoch, self.epochs = monitor.last_epoch, monitor.epochs
        self.model = monitor.pack.model(k)

    @property
    def inversion(self):
        return self._m.inversion(self.k)

    @property
    def snapshots(self):
        return {c: self._m.snapshot_state(self.k, c) for c in self.inversion}

    @property
    def snapshot_logits(self):
        out = {}
        for c in self.inversion:
            model = self.snapshot_model(c)
            logits = predict(model, self.x)
            out[c] = logits[self.y == c]
        return out

    def snapshot_model(self, c):
        return self._m.snapshot_model(self.k, c)

    def never_inverted(self):
        return self._m.never_inverted(self.k)

    def radius_history(self):
        return self._m.radius_history(self.k)

    def centroid_distances(self):
        return self._m.centroid_distances(self.k)

    def learned_epoch(self):
        return self._m.learned_epoch(self.k)

    def straggler_margin(self, *, final_model=False):
        return judged_margins(self.model, self.x, self.y, self.snapshot_logits,
                              final_model=final_model)


__all__ = ["Pack", "PackDynamics", "PackOptimizerState", "PackResult",
           "PackedInversionMonitor", "class_radii_packed", "predict_packed", "train_packed",
           "RULES"]
