"""Class-manifold radii and the inversion point, watched during training.

For each class c, on the first hidden layer after tanh projected onto the unit sphere,
``R_c = sqrt(mean_{i in c} ||z_i - mu_c||^2)``. Radii fall, reach a minimum (the
inversion point) and rise again. A class inverts the first time ``R_c(t) > R_c(t - k)``,
checked every k epochs after a start epoch; its stragglers are its samples misclassified
by the model as it was at that moment.
"""

import torch

from raydiff.engine.train import predict
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

    From epoch ``start`` on, after every epoch, it records the radius of every class (and the
    centroid distances); every ``check_every`` epochs it checks each class that has not
    inverted yet, and at a class's inversion keeps a copy of the model's state and the
    class's logits under that state. With ``stop_when_all`` training stops once every
    class has inverted.
    """

    def __init__(self, model, x, y, num_classes, *, start=20, check_every=5,
                 stop_when_all=False):
        self.model, self.x, self.y, self.num_classes = model, x, y, num_classes
        self.start, self.check_every, self.stop_when_all = start, check_every, stop_when_all
        self.radii = {}            # epoch -> (C,) radii
        self.centroid_dist = {}    # epoch -> (C, C) distances between class centroids
        self.inversion = {}        # class -> epoch
        self.snapshots = {}        # class -> state_dict copy at inversion
        self.snapshot_logits = {}  # class -> logits (n_c, C) of the class's samples then

    @torch.no_grad()
    def __call__(self, epoch, loss=None):
        if epoch < self.start:
            return False
        radii, centroids = class_radii(self.model.features(self.x), self.y, self.num_classes)
        self.radii[epoch] = radii.cpu().numpy()
        self.centroid_dist[epoch] = torch.cdist(centroids, centroids).cpu().numpy()
        if epoch > self.start and (epoch - self.start) % self.check_every == 0:
            before = self.radii.get(epoch - self.check_every)
            if before is not None:
                rising = [c for c in range(self.num_classes)
                          if c not in self.inversion and self.radii[epoch][c] > before[c]]
                if rising:
                    self._snapshot(epoch, rising)
        return self.stop_when_all and len(self.inversion) == self.num_classes

    def _snapshot(self, epoch, classes):
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for c in classes:
            members = self.y == c
            self.inversion[c] = epoch
            self.snapshots[c] = state
            self.snapshot_logits[c] = predict(self.model, self.x[members])

    def never_inverted(self):
        return [c for c in range(self.num_classes) if c not in self.inversion]

    def straggler_margin(self, *, final_model=False):
        """Per-sample margin (numpy, higher = harder; > 0 = straggler) and the mask of
        samples judged by a snapshot (False where the class never inverted).

        ``final_model=True`` judges every class by the model at the end of training,
        the behaviour of the original code, which kept a reference instead of a copy.
        """
        y = self.y.cpu().numpy()
        final = predict(self.model, self.x).cpu().numpy()
        score = margin(final, labels=y)
        judged = torch.zeros(len(y), dtype=torch.bool).numpy()
        if not final_model:
            for c, logits in self.snapshot_logits.items():
                members = y == c
                score[members] = margin(logits.cpu().numpy(), labels=y[members])
                judged[members] = True
        return score, judged
