"""The C-score (Jiang, Zhang, Talwar, Mozer 2021): a sample's expected accuracy when it is
held out of training, from many models trained on random subsets (holdout consistency).

What is the authors' and what is ours:

- authors (paper and their released MNIST demo, ``pluskid/structural-regularity``):
  subset ratios 0.1, 0.2, ..., 0.9; every model trains on a uniformly drawn subset of
  ``ratio * N`` samples without replacement; the estimate at one ratio is the mean 0/1
  correctness (argmax == observed label) of the sample over the models that did NOT train
  on it; the C-score is the plain mean of the per-ratio estimates (a uniform average over
  the ratios, the discrete form of the expectation over training-set sizes). Their demo
  trains 200 models per ratio on MNIST (the paper's per-ratio counts for CIFAR / ImageNet
  were not checked here: only the demo code and the abstract were found);
- ours: a sample never held out at some ratio (possible with few models per ratio) has no
  estimate there (NaN) and the mean runs over the ratios where it has one; NaN only if it
  was never held out at all. The authors' demo divides by ``max(count, 1e-10)``, which
  silently gives such a sample accuracy 0 at that ratio, i.e. makes it look hard for lack
  of data. ``correct`` may also be a probability of the observed label (a "soft" C-score,
  not the authors' estimator); the arithmetic is the same.
"""

import numpy as np


def cscore_per_ratio(held_out, correct, ratios):
    """The holdout-consistency estimate of every sample at every subset ratio.

    Parameters
    ----------
    held_out : bool array (M, N): True where sample n was NOT in model m's training subset
    correct : float or bool array (M, N): model m's 0/1 correctness on sample n's observed
        label (the authors'), or its probability of that label; only held-out entries count
        (training entries may be anything, NaN included)
    ratios : float array (M,): the subset ratio model m trained at

    Returns
    -------
    levels : (R,) float array, the distinct ratios in increasing order
    per_ratio : (R, N) float array in [0, 1] (for correctness in [0, 1]): mean of
        ``correct`` over the models of that ratio that held sample n out; NaN where none did.
        Higher = more consistently right when unseen = easier.
    """
    held_out = np.asarray(held_out, dtype=bool)
    correct = np.asarray(correct, dtype=np.float64)
    ratios = np.asarray(ratios, dtype=np.float64)
    if held_out.ndim != 2 or correct.shape != held_out.shape:
        raise ValueError(f"held_out and correct must be (M, N) arrays of one shape, got "
                         f"{held_out.shape} and {correct.shape}")
    if ratios.shape != (held_out.shape[0],):
        raise ValueError(f"ratios: expected one ratio per model ({held_out.shape[0]},), "
                         f"got shape {ratios.shape}")
    if np.isnan(correct[held_out]).any():
        raise ValueError("correct is NaN on a held-out entry: every held-out prediction "
                         "must be known")
    levels = np.unique(ratios)
    # training entries are zeroed by the mask, so a NaN there cannot leak into a sum
    hits = np.where(held_out, correct, 0.0)
    per_ratio = np.full((len(levels), held_out.shape[1]), np.nan)
    for i, r in enumerate(levels):
        rows = ratios == r
        count = held_out[rows].sum(0)
        total = hits[rows].sum(0)
        seen = count > 0
        per_ratio[i, seen] = total[seen] / count[seen]
    return levels, per_ratio


def cscore(held_out, correct, ratios):
    """The C-score of every sample: the mean over ratios of :func:`cscore_per_ratio`.

    Same inputs as :func:`cscore_per_ratio`. Returns (N,) floats, higher = EASIER (the
    expected held-out accuracy); NaN for a sample never held out at any ratio. Ratios where
    a sample was never held out are left out of its mean (see the module docstring).
    """
    _, per_ratio = cscore_per_ratio(held_out, correct, ratios)
    seen = ~np.isnan(per_ratio)
    count = seen.sum(0)
    total = np.where(seen, per_ratio, 0.0).sum(0)
    out = np.full(per_ratio.shape[1], np.nan)
    out[count > 0] = total[count > 0] / count[count > 0]
    return out


def cscore_hardness(held_out, correct, ratios):
    """Hardness from the C-score: ``1 - cscore(...)``, (N,) floats in [0, 1] for 0/1
    correctness, higher = harder (a sample the models get wrong whenever they have not
    seen it scores 1); NaN for a sample never held out."""
    return 1.0 - cscore(held_out, correct, ratios)
