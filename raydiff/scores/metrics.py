"""How well a score finds a known set of positives (e.g. injected noisy labels)."""

import numpy as np
from scipy.stats import rankdata


def _check(score, positive):
    score = np.asarray(score, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if score.ndim != 1 or score.shape != positive.shape:
        raise ValueError(f"score and positive must be 1-d of equal length, got "
                         f"{score.shape} and {positive.shape}")
    if np.isnan(score).any():
        raise ValueError("score contains NaN")
    return score, positive


def auroc(score, positive):
    """Area under the ROC curve of ``score`` for separating ``positive`` samples.

    Parameters
    ----------
    score : array of shape (N,)
        Higher = more likely positive (harder).
    positive : bool array of shape (N,)

    Returns
    -------
    float in [0, 1]: 1 for a perfect ranking, 0 for a reversed one, 0.5 for chance;
    NaN when one of the two groups is empty. Ties count one half (Mann-Whitney U).
    """
    score, positive = _check(score, positive)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(score, positive):
    """Average precision (area under the precision-recall curve, step-wise), as
    :func:`sklearn.metrics.average_precision_score` computes it.

    Parameters
    ----------
    score : array of shape (N,), higher = more likely positive
    positive : bool array of shape (N,), the positive class (e.g. the hard samples)

    Returns
    -------
    float in [0, 1]: ``sum_t (R_t - R_{t-1}) P_t`` over the distinct score values ``t`` in
    decreasing order, ``P_t`` and ``R_t`` the precision and recall of ``score >= t``; about
    the positive rate for a random score; NaN without positives.

    Tied samples enter at one threshold together, so their order (e.g. by index) cannot move
    the value: a score with many ties (counts of forgetting events, a learned epoch,
    correctness, the C-score's accuracies) is judged on its ties as a whole.
    """
    score, positive = _check(score, positive)
    if positive.sum() == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    ranked, hits = score[order], positive[order]
    # the last position of every run of equal scores closes one threshold
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    # the recall steps are the positives each threshold adds over all positives; dividing
    # once at the end keeps a perfect ranking at exactly 1
    return float(np.sum(np.diff(np.r_[0, tp]) * precision) / tp[-1])


def precision_at_k(score, positive, *, k):
    """Fraction of positives among the ``k`` highest-scoring samples.

    ``k`` is a count (int >= 1) or, if a float in (0, 1), a fraction of N rounded down
    (at least 1). Returns NaN for k = 0. When the k-th place falls inside a run of tied
    scores, the tied samples fill the remaining places in proportion to their positives
    (the expected precision over every order of the ties), so the value does not depend
    on the samples' index order.
    """
    score, positive = _check(score, positive)
    if isinstance(k, float) and 0 < k < 1:
        k = max(1, int(k * len(score)))
    k = min(int(k), len(score))
    if k <= 0:
        return float("nan")
    cut = np.sort(score)[::-1][k - 1]                      # the k-th highest score
    above, tied = score > cut, score == cut
    expected = positive[above].sum() + (k - above.sum()) * positive[tied].mean()
    return float(expected / k)


def _as_sets(a, b):
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-d boolean masks of equal length, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def jaccard(a, b):
    """Jaccard index |A & B| / |A | B| of two sets given as boolean masks of shape (N,)
    over the same N samples; 1 for two empty sets (they agree)."""
    a, b = _as_sets(a, b)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def overlap_zscore(a, b):
    """How far the overlap of two sets lies above chance, in standard deviations.

    Parameters
    ----------
    a, b : bool arrays of shape (N,), the two sets over the same N samples

    Returns
    -------
    float: ``(|A & B| - E) / sd`` under the hypergeometric null in which B is |B| samples
    drawn without replacement from N, of which |A| are in A (Ciceri et al.'s test of
    straggler stability): ``E = |A||B|/N`` and
    ``sd^2 = |A||B|(N - |A|)(N - |B|) / (N^2 (N - 1))``. NaN when the null has no
    variance (a set empty or complete, or N < 2).
    """
    a, b = _as_sets(a, b)
    n, ka, kb = len(a), int(a.sum()), int(b.sum())
    if n < 2:
        return float("nan")
    var = ka * kb * (n - ka) * (n - kb) / (n * n * (n - 1))
    if var == 0:
        return float("nan")
    return float(((a & b).sum() - ka * kb / n) / np.sqrt(var))


def top_k(n, ratio):
    """How many of ``n`` samples a method calls hard at ``ratio``: ``int(n * ratio)``.

    The one "top-k hard" rule of every experiment. It rounds down exactly as
    :func:`raydiff.data.inject_label_noise` counts the labels it flips, so at the noise
    ratio a method flags as many samples as were corrupted; 0 means no decision.
    """
    return int(n * ratio)


def top_k_mask(score, ratio):
    """Boolean (N,) mask of the ``top_k(N, ratio)`` highest scores (ties: lower index
    first), or None when that is 0: a method asked to flag nothing makes no decision, and
    the per-sample table leaves ``hard`` null rather than all False."""
    score = np.asarray(score, dtype=np.float64)
    k = top_k(len(score), ratio)
    if k == 0:
        return None
    hard = np.zeros(len(score), dtype=bool)
    hard[np.argsort(-score, kind="stable")[:k]] = True
    return hard


DETECTION = ("auroc", "ap", "precision_at_k")


def detection(score, noisy, noise_ratio):
    """How well ``score`` (N,) finds the injected noisy samples ``noisy`` (N,) bool.

    Returns ``{"auroc", "ap", "precision_at_k"}``; k is the noise ratio as a fraction of N
    (:func:`precision_at_k`: rounded down, at least 1), or the number of noisy samples
    when the ratio is 0 or 1 (e.g. a table read without its config). All NaN unless both
    groups are present.
    """
    noisy = np.asarray(noisy, dtype=bool)
    if not noisy.any() or noisy.all():
        return dict.fromkeys(DETECTION, float("nan"))
    k = noise_ratio if 0 < noise_ratio < 1 else int(noisy.sum())
    return {"auroc": auroc(score, noisy), "ap": average_precision(score, noisy),
            "precision_at_k": precision_at_k(score, noisy, k=k)}


HARDNESS = ("auprc", "auroc", "precision_at_k")


def hardness_detection(score, hard):
    """How well ``score`` finds the hard samples: the hardness benchmark's three numbers.

    Parameters
    ----------
    score : array of shape (N,), higher = harder
    hard : bool array of shape (N,), True for exactly the perturbed samples (the positive
        class)

    Returns
    -------
    ``{"auprc", "auroc", "precision_at_k"}``: average precision with the hard samples as
    positives (:func:`average_precision`; chance is the hard fraction), AUROC (chance 0.5)
    and the precision among the k highest scores for k = the number of hard samples (equal
    to the recall there; chance is the hard fraction). All NaN unless both groups are
    present.
    """
    hard = np.asarray(hard, dtype=bool)
    if not hard.any() or hard.all():
        return dict.fromkeys(HARDNESS, float("nan"))
    return {"auprc": average_precision(score, hard), "auroc": auroc(score, hard),
            "precision_at_k": precision_at_k(score, hard, k=int(hard.sum()))}


def seed_stability(scored):
    """How much a method's scores agree between runs of different seeds.

    Parameters
    ----------
    scored : list of (ids, score) pairs, one per seed: ``ids`` (N_i,) sample ids and
        ``score`` (N_i,) the method's scores of those samples (higher = harder)

    Returns
    -------
    (mean, std, pairs): the mean and standard deviation (ddof 0) over every pair of runs of
    the Spearman correlation of their scores on the samples both scored, and the number of
    pairs it averages. 1 for a method that orders the samples the same whatever the seed,
    about 0 for one that orders them at random. A pair sharing fewer than 3 samples, or in
    which a score is constant, has no correlation and is left out; NaN when none is left.
    """
    from scipy.stats import spearmanr

    rhos = []
    for i in range(len(scored)):
        for j in range(i + 1, len(scored)):
            (ids_a, a), (ids_b, b) = scored[i], scored[j]
            _, ia, ib = np.intersect1d(np.asarray(ids_a), np.asarray(ids_b),
                                       assume_unique=True, return_indices=True)
            a, b = np.asarray(a, dtype=np.float64)[ia], np.asarray(b, dtype=np.float64)[ib]
            if len(ia) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            rhos.append(float(spearmanr(a, b).statistic))
    if not rhos:
        return float("nan"), float("nan"), 0
    return float(np.mean(rhos)), float(np.std(rhos)), len(rhos)
