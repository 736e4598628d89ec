"""Scores computed from one model's raw logits (pre-softmax outputs)."""

import numpy as np
from scipy.special import logsumexp


def _check_logits(logits):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (n_samples, n_classes>=2), got {logits.shape}")
    return logits


def confidence(logits, *, labels=None):
    """Negative maximum logit: a sample the model is unsure about scores high.

    Parameters
    ----------
    logits : array of shape (N, C)
        Raw logits, no softmax (as in the in-class imbalance benchmark, where the
        maximum *logit* rather than the maximum probability is the confidence).
    labels : ignored
        Accepted so that every score shares one call signature.

    Returns
    -------
    score : array of shape (N,)
        ``-max_j logits[i, j]``; higher = harder.
    """
    return -_check_logits(logits).max(axis=1)


def energy(logits, *, temperature=1.0, labels=None):
    """Free energy of the logits, ``-T * logsumexp(logits / T)``: high energy = hard.

    Parameters
    ----------
    logits : array of shape (N, C)
        Raw logits.
    temperature : float, keyword-only
        T > 0; the benchmark uses T = 1.
    labels : ignored

    Returns
    -------
    score : array of shape (N,)
        The energy itself; higher = harder (low-density, out-of-distribution-like inputs).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return -temperature * logsumexp(_check_logits(logits) / temperature, axis=1)


def margin(logits, *, labels):
    """Negative logit margin of the given label: ``max_{j != y} logit_j - logit_y``.

    Positive exactly when the sample is misclassified with respect to ``labels``.

    Parameters
    ----------
    logits : array of shape (N, C)
    labels : int array of shape (N,), keyword-only
        The labels the margin is measured for (observed labels for noisy data).

    Returns
    -------
    score : array of shape (N,)
        Higher = harder; > 0 means the model predicts another class.
    """
    logits = _check_logits(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
    rows = np.arange(len(labels))
    true = logits[rows, labels]
    other = logits.copy()
    other[rows, labels] = -np.inf
    return other.max(axis=1) - true


def small_loss(logits, *, labels):
    """Cross-entropy of the given label: the small-loss criterion's score.

    Mislabelled samples keep a high loss long after the clean ones are fitted (Han et al.
    2018, Co-teaching), so the loss of the final model on the observed label ranks them.

    Parameters
    ----------
    logits : array of shape (N, C)
        Raw logits of the final model.
    labels : int array of shape (N,), keyword-only
        The observed (possibly noisy) labels.

    Returns
    -------
    score : array of shape (N,)
        ``logsumexp(logits[i]) - logits[i, labels[i]]`` (>= 0); higher = harder.
    """
    logits = _check_logits(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
    return logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]
