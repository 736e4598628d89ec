"""Confident learning (Northcutt, Jiang, Chuang 2021) through cleanlab.

cleanlab is imported here and nowhere else. Both functions take *out-of-sample*
predicted probabilities: every row must come from a model that did not train on that
sample (k-fold cross-validation), else every label looks trustworthy.
"""

import numpy as np

RANK_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
           "predicted_neq_given")


def _check(pred_probs, labels):
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    labels = np.asarray(labels)
    if pred_probs.ndim != 2 or pred_probs.shape[1] < 2:
        raise ValueError(f"pred_probs must have shape (N, C >= 2), got {pred_probs.shape}")
    if labels.shape != (len(pred_probs),):
        raise ValueError(f"labels must have shape ({len(pred_probs)},), got {labels.shape}")
    if not np.allclose(pred_probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("every row of pred_probs must sum to 1 (softmax outputs)")
    return pred_probs, labels.astype(np.int64)


def label_issue_score(pred_probs, *, labels, method="self_confidence"):
    """One minus cleanlab's label quality score.

    Parameters
    ----------
    pred_probs : array of shape (N, C)
        Out-of-sample predicted class probabilities; rows sum to 1.
    labels : int array of shape (N,), keyword-only
        The given (possibly noisy) labels.
    method : str, keyword-only
        cleanlab's ranking: ``self_confidence`` (p of the given label),
        ``normalized_margin`` or ``confidence_weighted_entropy``.

    Returns
    -------
    score : array of shape (N,) in [0, 1]; higher = more likely a label issue.
    """
    if method not in RANK_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {list(RANK_METHODS)}")
    from cleanlab.rank import get_label_quality_scores

    pred_probs, labels = _check(pred_probs, labels)
    return 1.0 - get_label_quality_scores(labels, pred_probs, method=method)


def label_issues(pred_probs, *, labels, filter_by="prune_by_noise_rate"):
    """cleanlab's decision: a bool mask (N,) of the samples it calls label issues.

    Parameters
    ----------
    pred_probs : array of shape (N, C), out-of-sample, rows sum to 1
    labels : int array of shape (N,), keyword-only
    filter_by : str, keyword-only
        How the confident joint is turned into a set: ``prune_by_noise_rate`` (cleanlab's
        default), ``prune_by_class``, ``both``, ``confident_learning`` or
        ``predicted_neq_given`` (argmax differs from the label: the simple baseline).
    """
    if filter_by not in FILTERS:
        raise ValueError(f"unknown filter_by {filter_by!r}; valid values: {list(FILTERS)}")
    from cleanlab.filter import find_label_issues

    pred_probs, labels = _check(pred_probs, labels)
    # one process: trials already run in parallel, and a pool per trial only fights them
    return np.asarray(find_label_issues(labels, pred_probs, filter_by=filter_by, n_jobs=1),
                      dtype=bool)
