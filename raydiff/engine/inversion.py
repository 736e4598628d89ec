"""Class-manifold radii and the inversion point, watched during training.

For each class c, on the first hidden layer after tanh projected onto the unit sphere,
``R_c = sqrt(mean_{i in c} ||z_i - mu_c||^2)``. Radii fall, reach a minimum (the
inversion point) and rise again. Two rules find it (``rule``):

- ``minimum`` (default): the epoch of the minimum of the radius curve over the whole run,
  after a centred moving average over ``smoothing`` epochs (default 5, i.e. +-2 epochs).
  The radius is recorded after every epoch, and full-batch training leaves a small
  epoch-to-epoch jitter on it; five epochs (the original's check step) average that
  jitter away while a symmetric window leaves the position of a smooth minimum where it
  is. The smoothed curve is defined where the whole window fits (epochs start + h to
  last - h, h = smoothing // 2). A class counts as inverted only when its smoothed radius
  rises after the minimum and at least ``check_every`` epochs of the run follow it (the
  same evidence the first-rise rule asks for: a radius that rose over one check step);
  a minimum closer to the end, or a curve that never rises, means the radius is still
  falling (or flat): the class never inverted.
- ``first_rise``: the original code's behaviour: every ``check_every`` epochs after
  ``start``, class c inverts the first time ``R_c(t) > R_c(t - check_every)``. On real runs
  it fires on early wiggles (a small hump after a local minimum long before the true one).

Either way the stragglers of class c are its samples misclassified by the model as it
was at class c's inversion epoch: under ``minimum`` the monitor keeps a copy of the
model's state for each epoch that could still become a class's minimum (the last h + 1
epochs and each class's best so far, at most C + h + 1 copies), so the judgement is exact
whatever the model's size.

:class:`PackedInversionMonitor` watches every model of a pack at once, by the same rules
and the same :func:`class_radii` (which takes a leading model axis).
"""

import copy
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from raydiff.engine.pack import Pack, subset_rows
from raydiff.engine.train import TrainResult, predict, train
from raydiff.models import SimpleNN
from raydiff.scores import margin

RULES = ("minimum", "first_rise")


def class_radii(z, y, num_classes, weight=None):
    """Radius of every class manifold, computed for all samples at once on z's device,
    for one model or for K models of a pack at once.

    Parameters
    ----------
    z : float tensor (N, d), or (K, N, d) for K models: hidden activations (projected
        onto the unit sphere here)
    y : long tensor (N,) (shared by the K models) or (K, N), the class of each row
    num_classes : int
    weight : float tensor like ``y`` of 0 / 1, optional: the rows that count (e.g. model
        k's training subset); all rows when None

    Returns
    -------
    radii : float tensor (num_classes,), or (K, num_classes); NaN for a class without
        samples
    centroids : float tensor (num_classes, d), or (K, num_classes, d): the class means of
        the projected z
    """
    if z.dim() == 2:
        radii, centroids = class_radii(z[None], y[None], num_classes,
                                       None if weight is None else weight[None])
        return radii[0], centroids[0]
    k, n, d = z.shape
    if y.dim() == 1:
        y = y[None].expand(k, n)
    z = z / z.norm(dim=2, keepdim=True).clamp_min(1e-12)
    # one cell per (model, class): the K models' sums are one index_add each
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


def check_rule(rule, smoothing):
    """Refuse an unknown rule or an even / non-positive smoothing window."""
    if rule not in RULES:
        raise ValueError(f"inversion rule {rule!r}: expected one of {', '.join(RULES)}")
    if int(smoothing) != smoothing or smoothing < 1 or smoothing % 2 == 0:
        raise ValueError(f"inversion smoothing {smoothing!r}: expected an odd number of "
                         f"epochs >= 1 (a centred window; 1 = no smoothing)")


def smooth(radii, window):
    """Centred moving average of radius records over ``window`` (odd) consecutive epochs.

    Parameters
    ----------
    radii : float array (T,) or (T, C), one row per consecutive epoch
    window : int, odd

    Returns
    -------
    float64 array (T - window + 1, ...): row i is the mean of rows i .. i + window - 1,
    the smoothed radius of epoch ``i + window // 2`` (empty when T < window). The rows are
    summed in order, so the monitor's running value over the last ``window`` rows is
    bit-for-bit the offline one.
    """
    radii = np.asarray(radii, dtype=np.float64)
    n = len(radii) - window + 1
    if n <= 0:
        return radii[:0].copy()
    out = radii[:n].copy()
    for i in range(1, window):
        out += radii[i:i + n]
    return out / window


def minimum_inversion(epochs, radii, *, start=20, check_every=5, smoothing=5):
    """Epoch of the minimum of the smoothed radius curve of one class (the default rule).

    Parameters
    ----------
    epochs : sequence of int, consecutive epochs at which ``radii`` were recorded
    radii : sequence of float, one radius per epoch of one class
    start : records before this epoch are ignored
    check_every : the minimum counts only when at least this many epochs of the run
        follow it
    smoothing : odd window of the centred moving average (1 = raw curve)

    Returns
    -------
    int epoch of the (first) minimum of the smoothed curve, or None when the class never
    inverted: the smoothed curve never rises after its minimum (falling or flat to the
    end), or the minimum lies within ``check_every`` epochs of the last record.
    """
    epochs = np.asarray(epochs, dtype=np.int64)
    radii = np.asarray(radii, dtype=np.float64)
    keep = epochs >= start
    epochs, radii = epochs[keep], radii[keep]
    s = smooth(radii, smoothing)
    if not len(s):
        return None
    centre = epochs[smoothing // 2: smoothing // 2 + len(s)]
    m = int(np.argmin(s))
    if centre[m] > epochs[-1] - check_every or not (s[m + 1:] > s[m]).any():
        return None
    return int(centre[m])


def first_inversion(epochs, radii, *, start=20, check_every=5):
    """First epoch t > start (on the check grid) with ``radii[t] > radii[t - check_every]``:
    the original code's first-rise rule (``rule="first_rise"``).

    Parameters
    ----------
    epochs : sequence of int, the epochs at which ``radii`` were recorded (every epoch)
    radii : sequence of float, one radius per epoch of one class

    Returns
    -------
    int epoch of inversion, or None if the radius never rises on the check grid.
    """
    at = dict(zip(epochs, radii))
    t = start + check_every
    while t in at:
        if t - check_every in at and at[t] > at[t - check_every]:
            return t
        t += check_every
    return None


def _copy_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class InversionMonitor:
    """An ``on_epoch`` callback for :func:`raydiff.engine.train` that watches the radii.

    From epoch ``start`` on, after every epoch, it records the radius of every class and
    the distances between class centroids (on the device, all samples at once) and finds
    each class's inversion by ``rule`` (see the module docstring), keeping a copy of the
    model's state at each class's inversion epoch to judge its stragglers. Under
    ``minimum`` the answer (:attr:`inversion`, :attr:`snapshots`) is the one for the run
    as watched so far, final once training ends. With ``track_learning`` it also follows,
    from epoch 1, the last epoch at which each sample was misclassified (see
    :meth:`learned_epoch`). With ``stop_when_all`` (``first_rise`` only: a minimum over
    the whole run needs the whole run) training stops once every class has inverted.
    """

    def __init__(self, model, x, y, num_classes, *, start=20, check_every=5,
                 stop_when_all=False, track_learning=False, rule="minimum", smoothing=5):
        check_rule(rule, smoothing)
        if stop_when_all and rule != "first_rise":
            raise ValueError("stop_when_all needs rule='first_rise': the minimum rule "
                             "looks at the whole run")
        self.model, self.x, self.y, self.num_classes = model, x, y, num_classes
        self.start, self.check_every, self.stop_when_all = start, check_every, stop_when_all
        self.rule, self.smoothing = rule, int(smoothing)
        self.epochs = []           # epochs with a radius record
        self._radii = []           # (C,) device tensors, one per recorded epoch
        self._centroid_dist = []   # (C, C) device tensors
        self.last_epoch = 0
        self._last_wrong = (torch.zeros(len(y), dtype=torch.long, device=y.device)
                            if track_learning else None)
        # first_rise: class -> epoch / state at the first rise
        self._fired, self._fired_state = {}, {}
        # minimum: radii on the host (float64) for the running smoothed value, the states
        # of the epochs whose smoothed value is not known yet, and per class the best
        # (epoch, smoothed radius, state) so far and whether the curve rose after it
        self._host = deque(maxlen=self.smoothing)
        self._recent = deque(maxlen=self.smoothing // 2 + 1)
        self._best = {}
        self._rose = {}
        self._logits = {}          # epoch -> logits (N, C) of every sample under its state
        self._scratch = None

    @torch.no_grad()
    def __call__(self, epoch, loss=None):
        self.last_epoch = epoch
        watch = epoch >= self.start
        if self._last_wrong is None and not watch:
            return False
        z, logits = self._forward(features=watch, logits=self._last_wrong is not None)
        if logits is not None:
            self._last_wrong.masked_fill_(logits.argmax(1) != self.y, epoch)
        if not watch:
            return False
        radii, centroids = class_radii(z, self.y, self.num_classes)
        self.epochs.append(epoch)
        self._radii.append(radii)
        self._centroid_dist.append(torch.cdist(centroids, centroids))
        if self.rule == "minimum":
            self._track_minimum(epoch, radii)
            return False
        before = len(self.epochs) - 1 - self.check_every
        if (epoch > self.start and (epoch - self.start) % self.check_every == 0
                and before >= 0 and self.epochs[before] == epoch - self.check_every):
            rising = (radii > self._radii[before]).tolist()
            classes = [c for c, up in enumerate(rising) if up and c not in self._fired]
            if classes:
                state = _copy_state(self.model)
                for c in classes:
                    self._fired[c], self._fired_state[c] = epoch, state
        return self.stop_when_all and len(self._fired) == self.num_classes

    def _track_minimum(self, epoch, radii):
        self._host.append(radii.double().cpu().numpy())
        self._recent.append((epoch, _copy_state(self.model)))
        if len(self._host) < self.smoothing:
            return
        value = smooth(np.stack(self._host), self.smoothing)[0]
        centre, state = self._recent[0]          # the epoch the window is centred on
        for c in range(self.num_classes):
            best = self._best.get(c)
            if best is None or value[c] < best[1]:
                self._best[c] = (centre, value[c], state)
                self._rose[c] = False
            elif value[c] > best[1]:
                self._rose[c] = True

    def _forward(self, *, features, logits):
        """Features and / or logits of every sample, in eval mode (batch-norm statistics
        stay untouched), from one pass where the model offers ``features_and_logits``."""
        was_training = self.model.training
        self.model.eval()
        try:
            both = getattr(self.model, "features_and_logits", None)
            if features and logits and both is not None:
                return both(self.x)
            return (self.model.features(self.x) if features else None,
                    predict(self.model, self.x) if logits else None)
        finally:
            self.model.train(was_training)

    @property
    def inversion(self):
        """{class: inversion epoch} of the classes that inverted (as watched so far)."""
        if self.rule == "first_rise":
            return dict(self._fired)
        return {c: e for c, (e, _, _) in self._best.items()
                if self._rose[c] and e <= self.last_epoch - self.check_every}

    @property
    def snapshots(self):
        """{class: state_dict copy} of the model at each inverted class's inversion."""
        if self.rule == "first_rise":
            return dict(self._fired_state)
        return {c: self._best[c][2] for c in self.inversion}

    @property
    def snapshot_logits(self):
        """{class: logits (n_c, C) of the class's samples under its inversion snapshot}."""
        out = {}
        for c, state in self.snapshots.items():
            epoch = self.inversion[c]
            if epoch not in self._logits:
                if self._scratch is None:
                    self._scratch = copy.deepcopy(self.model)
                self._scratch.load_state_dict(state)
                with torch.no_grad():
                    self._logits[epoch] = predict(self._scratch, self.x)
            out[c] = self._logits[epoch][self.y == c]
        return out

    def radius_history(self):
        """(epochs (T,) int array, radii (T, C) float array) of every recorded epoch."""
        if not self._radii:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_classes))
        return np.asarray(self.epochs), torch.stack(self._radii).cpu().numpy()

    def centroid_distances(self):
        """(T, C, C) float array: Euclidean distances between the class centroids (means
        of the projected features) at every recorded epoch."""
        if not self._centroid_dist:
            return np.zeros((0, self.num_classes, self.num_classes))
        return torch.stack(self._centroid_dist).cpu().numpy()

    def snapshot_model(self, c):
        """A copy of the model with the state it had at class ``c``'s inversion."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.snapshots[c])
        return model

    def never_inverted(self):
        inverted = self.inversion
        return [c for c in range(self.num_classes) if c not in inverted]

    def learned_epoch(self):
        """Per sample (numpy (N,) int): the first epoch from which it stays correctly
        classified up to the last epoch watched, ``last_epoch + 1`` for a sample still
        misclassified then; 1 for a sample correct after every epoch. Higher = harder.
        Needs ``track_learning=True``."""
        if self._last_wrong is None:
            raise ValueError("learned_epoch needs InversionMonitor(..., track_learning=True)")
        return (self._last_wrong + 1).cpu().numpy()

    def straggler_margin(self, *, final_model=False):
        """Per-sample margin (numpy, higher = harder; > 0 = straggler) and the mask of
        samples judged by a snapshot (False where the class never inverted: their margin
        is the final model's, and the caller should leave them undecided).

        ``final_model=True`` judges every class by the model at the end of training,
        the behaviour of the original code, which kept a reference instead of a copy.
        """
        return judged_margins(self.model, self.x, self.y, self.snapshot_logits,
                              final_model=final_model)


def judged_margins(model, x, y, snapshot_logits, *, final_model=False):
    """The straggler margins of :meth:`InversionMonitor.straggler_margin`: ``model``'s
    (the final one) for every sample of ``x`` (N, ...) with labels ``y`` (N,), replaced
    for the members of each class c in ``snapshot_logits`` ({c: (N_c, C) logits of the
    snapshot at c's inversion}) unless ``final_model``. Returns (margin (N,), judged (N,)).
    """
    y = y.cpu().numpy()
    score = margin(predict(model, x).cpu().numpy(), labels=y)
    judged = np.zeros(len(y), dtype=bool)
    if not final_model:
        for c, logits in snapshot_logits.items():
            members = y == c
            score[members] = margin(logits.cpu().numpy(), labels=y[members])
            judged[members] = True
    return score, judged


@dataclass
class InversionRun:
    """What :func:`train_with_inversion` returns: the kept attempt and how many ran."""

    model: torch.nn.Module
    monitor: InversionMonitor
    result: TrainResult
    attempt: int       # 0-based index of the kept attempt
    attempts: int      # attempts run in all


def train_with_inversion(make_model, x, y, num_classes, *, epochs, lr=0.1, start=20,
                         check_every=5, max_retries=2, track_learning=False, on_epoch=None,
                         record_every=0, rule="minimum", smoothing=5):
    """Train full-batch while an :class:`InversionMonitor` watches (``rule``, ``smoothing``:
    see the module docstring); if a class never inverts, start again with a new
    initialisation, at most ``max_retries`` times.

    make_model : callable(attempt) -> model on x's device (a new initialisation per attempt)
    on_epoch : callable(epoch, loss, attempt), optional, for logging

    Returns the :class:`InversionRun` of the attempt where the fewest classes never
    inverted (the first such), so a class that never inverts is reported, not retried
    forever.
    """
    best = None
    for attempt in range(max_retries + 1):
        model = make_model(attempt)
        monitor = InversionMonitor(model, x, y, num_classes, start=start,
                                   check_every=check_every, track_learning=track_learning,
                                   rule=rule, smoothing=smoothing)

        def hook(epoch, loss, monitor=monitor, attempt=attempt):
            monitor(epoch, loss)
            if on_epoch is not None:
                on_epoch(epoch, loss, attempt)
            return False

        result = train(model, x, y, epochs=epochs, lr=lr, on_epoch=hook,
                       record_every=record_every)
        run = InversionRun(model, monitor, result, attempt, attempt + 1)
        if best is None or len(monitor.never_inverted()) < len(best.monitor.never_inverted()):
            best = run
        if not monitor.never_inverted():
            break
    best.attempts = attempt + 1
    return best


class PackedInversionMonitor:
    """:class:`InversionMonitor` for every model of a pack: an ``on_epoch`` callback for
    :func:`~raydiff.engine.pack_train.train_packed` (returns None: it never stops
    training).

    Each epoch from ``start`` on it computes the radii of every (model, class) from one
    no-grad forward of the pack, and follows each (model, class) by ``rule`` exactly as
    the single monitor does for that model. Snapshots: one (K, C, P) device tensor holding,
    per (model, class), the flat parameters of the model at that class's chosen epoch
    (plus, under ``minimum``, the pack's states of the last h + 1 epochs, whose smoothed
    radius is not known yet). :meth:`view` gives model k's answers with the single
    monitor's interface.

    y : (N,) or (K, N) labels; subsets : as :func:`~raydiff.engine.pack_train.train_packed`
    (the radii of model k are over its own training samples, as the single monitor sees
    only its training x).
    """

    def __init__(self, pack, x, y, num_classes, *, subsets=None, start=20, check_every=5,
                 track_learning=False, rule="minimum", smoothing=5):
        check_rule(rule, smoothing)
        k, n = pack.k, len(x)
        self.pack, self.x, self.num_classes = pack, x.flatten(1), num_classes
        self.y = y[None].expand(k, n) if y.dim() == 1 else y
        self.rows = subset_rows(subsets, k, n)
        self.weight = torch.zeros(k, n, device=x.device)
        for i, m in enumerate(self.rows):
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
        radii, centroids = class_radii(z, self.y, self.num_classes, self.weight)
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
        m = self.rows[k]
        return out if m is None else out[m.numpy()]

    def view(self, k):
        """Model k's answers behind the single monitor's interface (``inversion``,
        ``snapshots``, ``snapshot_logits``, ``straggler_margin``, ...), over its own
        training samples (``x[subsets[k]]``, in that order)."""
        return _ModelView(self, k)


class _ModelView:
    def __init__(self, monitor, k):
        self._m, self.k = monitor, k
        m = monitor.rows[k]
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
