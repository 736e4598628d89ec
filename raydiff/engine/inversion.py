"""Class-manifold radii and the inversion point, watched during training.

For each class c, on the first hidden layer after tanh projected onto the unit sphere,
``R_c = sqrt(mean_{i in c} ||z_i - mu_c||^2)``. Radii fall, reach a minimum (the
inversion point) and rise again. A class inverts the first time ``R_c(t) > R_c(t - k)``,
checked every k epochs after a start epoch; its stragglers are its samples misclassified
by the model as it was at that moment.
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch

from raydiff.engine.train import TrainResult, predict, train
from raydiff.scores import margin


def class_radii(z, y, num_classes):
    """Radius of every class manifold, computed for all samples at once on z's device.

    Parameters
    ----------
    z : float tensor (N, d), hidden activations (projected onto the unit sphere here)
    y : long tensor (N,), class of each row
    num_classes : int

    Returns
    -------
    radii : float tensor (num_classes,); NaN for a class without samples
    centroids : float tensor (num_classes, d), the class means of the projected z
    """
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    counts = torch.bincount(y, minlength=num_classes).to(z.dtype)
    centroids = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device)
    centroids.index_add_(0, y, z)
    centroids = centroids / counts[:, None]
    sq = ((z - centroids[y]) ** 2).sum(1)
    per_class = torch.zeros(num_classes, dtype=z.dtype, device=z.device).index_add_(0, y, sq)
    return (per_class / counts).sqrt(), centroids


def first_inversion(epochs, radii, *, start=20, check_every=5):
    """First epoch t > start (on the check grid) with ``radii[t] > radii[t - check_every]``.

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


class InversionMonitor:
    """An ``on_epoch`` callback for :func:`raydiff.engine.train` that watches the radii.

    From epoch ``start`` on, after every epoch, it records the radius of every class and
    the distances between class centroids (on the device, all samples at once); every
    ``check_every`` epochs it checks each class that has not inverted yet, and at a class's
    inversion keeps a copy of the model's state and the class's logits under that state.
    With ``track_learning`` it also follows, from epoch 1, the last epoch at which each
    sample was misclassified (see :meth:`learned_epoch`). With ``stop_when_all`` training
    stops once every class has inverted.
    """

    def __init__(self, model, x, y, num_classes, *, start=20, check_every=5,
                 stop_when_all=False, track_learning=False):
        self.model, self.x, self.y, self.num_classes = model, x, y, num_classes
        self.start, self.check_every, self.stop_when_all = start, check_every, stop_when_all
        self.epochs = []           # epochs with a radius record
        self._radii = []           # (C,) device tensors, one per recorded epoch
        self._centroid_dist = []   # (C, C) device tensors
        self.inversion = {}        # class -> epoch
        self.snapshots = {}        # class -> state_dict copy at inversion
        self.snapshot_logits = {}  # class -> logits (n_c, C) of the class's samples then
        self.last_epoch = 0
        self._last_wrong = (torch.zeros(len(y), dtype=torch.long, device=y.device)
                            if track_learning else None)

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
        before = len(self.epochs) - 1 - self.check_every
        if (epoch > self.start and (epoch - self.start) % self.check_every == 0
                and before >= 0 and self.epochs[before] == epoch - self.check_every):
            rising = (radii > self._radii[before]).tolist()
            classes = [c for c, up in enumerate(rising) if up and c not in self.inversion]
            if classes:
                self._snapshot(epoch, classes)
        return self.stop_when_all and len(self.inversion) == self.num_classes

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

    def _snapshot(self, epoch, classes):
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for c in classes:
            members = self.y == c
            self.inversion[c] = epoch
            self.snapshots[c] = state
            self.snapshot_logits[c] = predict(self.model, self.x[members])

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
        return [c for c in range(self.num_classes) if c not in self.inversion]

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
        samples judged by a snapshot (False where the class never inverted).

        ``final_model=True`` judges every class by the model at the end of training,
        the behaviour of the original code, which kept a reference instead of a copy.
        """
        y = self.y.cpu().numpy()
        final = predict(self.model, self.x).cpu().numpy()
        score = margin(final, labels=y)
        judged = np.zeros(len(y), dtype=bool)
        if not final_model:
            for c, logits in self.snapshot_logits.items():
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
                         record_every=0):
    """Train full-batch while an :class:`InversionMonitor` watches; if a class never
    inverts, start again with a new initialisation, at most ``max_retries`` times.

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
                                   check_every=check_every, track_learning=track_learning)

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
