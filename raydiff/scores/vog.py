"""Variance of Gradients (VoG; Agarwal, D'souza and Hooker, CVPR 2022).

At K checkpoints t a sample gets a gradient map S_t: the gradient of one logit (of its
true label on the training set, of the predicted label on the test set) with respect to
its input, channels averaged first. Its VoG is the per-pixel *population* standard
deviation of S_t over the checkpoints, averaged over pixels:

    VoG = mean_p sqrt( (1/K) sum_t (S_t[p] - mean_t S_t[p])^2 )

Higher = the gradient kept changing = harder. Stages: ``early``, ``middle`` and ``late``
are consecutive thirds of the checkpoints (``np.array_split``: the first thirds take the
remainder), ``complete`` is all of them. The original toy script divided a 15-checkpoint
sum by 5 to get a stage's mean gradient; here every stage uses its own mean.

Two ways in: :func:`vog` for a stack of maps already in memory (a reference), and
:class:`VoGAccumulator`, which takes one checkpoint at a time (in minibatches) and keeps
only running moments, so memory is O(N x pixels) whatever K is.
"""

import numpy as np

STAGES = ("early", "middle", "late", "complete")
NORMALIZATIONS = ("raw", "norm", "abs")


def pixel_maps(gradients):
    """Per-sample gradient maps flattened to pixels, channels averaged first.

    gradients : array (N, C, H, W) (images: the C channels are averaged), (N, H, W) or
        (N, D) (features: each feature is a "pixel").

    Returns (N, P) float array.
    """
    g = np.asarray(gradients)
    if g.ndim == 4:
        g = g.mean(axis=1)
    if g.ndim < 2:
        raise ValueError(f"gradients must have shape (N, ...) with a map per sample, got {g.shape}")
    return g.reshape(len(g), -1)


def stage_checkpoints(n_checkpoints):
    """``{stage: index array}`` of the checkpoints (0-based) each stage covers.

    early / middle / late are consecutive thirds (``np.array_split``), complete is all.
    Every stage needs at least two checkpoints to have a variance, so K >= 6.
    """
    if n_checkpoints < 6:
        raise ValueError(f"VoG stages need at least 6 checkpoints (2 per third), got "
                         f"{n_checkpoints}")
    thirds = np.array_split(np.arange(n_checkpoints), 3)
    return {"early": thirds[0], "middle": thirds[1], "late": thirds[2],
            "complete": np.arange(n_checkpoints)}


def vog(gradients):
    """VoG of every sample from all its gradient maps at once.

    Parameters
    ----------
    gradients : array of shape (K, N, ...)
        The input gradient of sample i at checkpoint t is ``gradients[t, i]``: (C, H, W)
        images have their channels averaged first; (H, W) or (D,) maps are used as they are.

    Returns
    -------
    score : array of shape (N,)
        Mean over pixels of the population std over the K checkpoints; higher = harder.
        0 when the gradients do not change between checkpoints.
    """
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim < 3:
        raise ValueError(f"gradients must have shape (K, N, ...), got {g.shape}")
    maps = np.stack([pixel_maps(gt) for gt in g])          # (K, N, P)
    return maps.std(axis=0, ddof=0).mean(axis=1)


def complete_vog(gradients):
    """Raw VoG over all checkpoints from either form of the ``gradients`` input: an array
    (K, N, ...) of every gradient map (:func:`vog`) or a :class:`VoGAccumulator` that has
    seen every checkpoint (the experiments' memory-bounded form). Returns (N,) floats."""
    if isinstance(gradients, VoGAccumulator):
        return gradients.scores()["complete"]
    return vog(gradients)


def class_normalize(score, labels, *, absolute=False):
    """Normalise ``score`` within each class: ``(s - mu_c) / sigma_c`` (population std).

    Parameters
    ----------
    score : array (N,) raw VoG.
    labels : int array (N,) the class each sample is normalised within.
    absolute : bool, keyword-only
        Return ``|s - mu_c| / sigma_c``: distance from the class's typical VoG, either way.

    Returns
    -------
    array (N,); per class mean 0 and std 1 (without ``absolute``). A class whose samples
    all have the same VoG (sigma_c = 0) gets 0.
    """
    score = np.asarray(score, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.shape != score.shape or score.ndim != 1:
        raise ValueError(f"score and labels must both have shape (N,), got {score.shape} "
                         f"and {labels.shape}")
    out = np.zeros_like(score)
    for c in np.unique(labels):
        members = labels == c
        mu, sigma = score[members].mean(), score[members].std(ddof=0)
        if sigma > 0:
            out[members] = (score[members] - mu) / sigma
    return np.abs(out) if absolute else out


def normalized_variants(score, labels):
    """``{"raw": s, "norm": class-normalised, "abs": absolute class-normalised}``."""
    return {"raw": np.asarray(score, dtype=np.float64),
            "norm": class_normalize(score, labels),
            "abs": class_normalize(score, labels, absolute=True)}


class VoGAccumulator:
    """Running per-pixel moments of N samples' gradient maps over K checkpoints.

    Feed checkpoints t = 0, 1, ..., K-1 in order, each for every sample (in any
    minibatches) with :meth:`add`; :meth:`scores` then gives the raw VoG of every stage.
    Two Welford accumulators (running mean and sum of squared deviations per pixel: no
    cancellation, exact zeros for constant gradients) run side by side: one over all
    checkpoints (``complete``) and one over the current third, whose VoG is stored (N
    values) when its last checkpoint arrives, after which it restarts for the next third.
    Memory: 4 x N x P values of ``dtype`` plus O(N), whatever K is; float32 is accurate
    to about 1e-6 relative, float64 to 1e-15.

    n_samples, n_pixels : int; n_checkpoints : int K (>= 6).
    """

    def __init__(self, n_samples, n_pixels, n_checkpoints, *, dtype=np.float64):
        self.n_checkpoints = int(n_checkpoints)
        stages = stage_checkpoints(self.n_checkpoints)
        self._thirds = [stages[name] for name in STAGES[:3]]
        self._third_of = np.empty(self.n_checkpoints, dtype=np.int64)
        for s, idx in enumerate(self._thirds):
            self._third_of[idx] = s
        shape = (n_samples, n_pixels)
        self.mean, self.m2 = np.zeros(shape, dtype), np.zeros(shape, dtype)     # complete
        self.stage_mean, self.stage_m2 = np.zeros(shape, dtype), np.zeros(shape, dtype)
        self.done = {name: np.full(n_samples, np.nan) for name in STAGES[:3]}
        self.next = np.zeros(n_samples, dtype=np.int64)    # each sample's next checkpoint

    @property
    def nbytes(self):
        return sum(a.nbytes for a in (self.mean, self.m2, self.stage_mean, self.stage_m2,
                                      self.next, *self.done.values()))

    def add(self, checkpoint, maps, rows=None):
        """Add the gradient maps of checkpoint ``checkpoint`` (0-based) for samples ``rows``.

        maps : array (b, ...) per-sample gradients (see :func:`pixel_maps`).
        rows : slice, int array, or None (all N samples, then b = N).
        """
        rows = slice(None) if rows is None else rows
        if not np.all(self.next[rows] == checkpoint):
            raise ValueError(f"checkpoint {checkpoint} added out of order: these samples "
                             f"expect checkpoint(s) {sorted(set(self.next[rows].tolist()))}")
        third = self._thirds[self._third_of[checkpoint]]
        position = checkpoint - third[0]
        x = pixel_maps(maps).astype(self.mean.dtype, copy=False)
        _welford(self.mean, self.m2, rows, x, checkpoint + 1)
        _welford(self.stage_mean, self.stage_m2, rows, x, position + 1)
        if position == len(third) - 1:
            name = STAGES[self._third_of[checkpoint]]
            self.done[name][rows] = _population_std_mean(self.stage_m2[rows], len(third))
        self.next[rows] += 1

    def scores(self, *, chunk=4096):
        """``{stage: (N,) raw VoG}`` for early, middle, late and complete.

        Every sample must have had every checkpoint added.
        """
        if not np.all(self.next == self.n_checkpoints):
            raise ValueError("VoG asked for before every checkpoint of every sample was added")
        complete = np.concatenate([
            _population_std_mean(self.m2[lo:lo + chunk], self.n_checkpoints)
            for lo in range(0, len(self.m2), chunk)]) if len(self.m2) else np.zeros(0)
        return {**{k: v.copy() for k, v in self.done.items()}, "complete": complete}


def _welford(mean, m2, rows, x, n):
    """Welford's update of rows ``rows`` with their n-th value ``x`` (n = 1 restarts)."""
    if n == 1:
        mean[rows] = x
        m2[rows] = 0
        return
    old = mean[rows]
    new = old + (x - old) / n
    m2[rows] += (x - old) * (x - new)
    mean[rows] = new


def _population_std_mean(m2, n):
    """Mean over pixels of sqrt(m2 / n), in float64: (b, P) -> (b,)."""
    return np.sqrt(np.maximum(m2 / n, 0)).mean(axis=1, dtype=np.float64)


def decile_error(score, wrong):
    """Error rate of each score decile, lowest score first.

    score : (N,) float; wrong : (N,) bool (misclassified). Samples are ranked by score
    (stable) and cut into 10 groups of (near) equal size.

    Returns (percentile (10,) = 5, 15, ..., 95; error (10,) in percent; count (10,)).
    """
    score, wrong = np.asarray(score), np.asarray(wrong, dtype=bool)
    if len(score) < 10:
        raise ValueError(f"decile error needs at least 10 samples, got {len(score)}")
    groups = np.array_split(np.argsort(score, kind="stable"), 10)
    error = np.array([100.0 * wrong[g].mean() for g in groups])
    return np.arange(5, 100, 10), error, np.array([len(g) for g in groups])


def spearman(score, target):
    """Spearman rank correlation of ``score`` and ``target`` (both (N,)); NaN when either
    is constant (e.g. a class-normalised VoG that is 0 everywhere)."""
    score, target = np.asarray(score, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if np.ptp(score) == 0 or np.ptp(target) == 0:
        return float("nan")
    from scipy.stats import spearmanr
    return float(spearmanr(score, target).statistic)


def column(stage, variant):
    """The per-sample column of ``stage``'s VoG, ``variant`` raw, norm or abs."""
    return f"vog_{stage}" + ("" if variant == "raw" else f"_{variant}")


def vog_table(scores, labels):
    """Flat ``{column: (N,)}``: ``vog_<stage>`` raw, ``_norm`` and ``_abs`` for every stage."""
    return {column(stage, variant): values for stage in STAGES
            for variant, values in normalized_variants(scores[stage], labels).items()}
