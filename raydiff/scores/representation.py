"""Scores from a trained model's view of each sample beyond its logits: its penultimate
embedding, its predictions under dropout and under input perturbations, and a learnt
detector's verdict. Every input is computed by the training engine; the arithmetic here
is NumPy only. Higher = harder throughout.
"""

import numpy as np
from scipy.special import xlogy


def _labels(labels, n, classes=None):
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if classes is not None and labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def _probs(probs, name, ndim):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != ndim or probs.shape[-1] < 2:
        raise ValueError(f"{name} must have {ndim} axes ending in C >= 2 classes, got "
                         f"shape {probs.shape}")
    if not np.allclose(probs.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError(f"every row of {name} must sum to 1 (softmax outputs, not logits)")
    return probs


def prototypicality(embeddings, *, labels):
    """Distance to the class prototype (Sorscher et al. 2022): ``1 - cos(e_i, mu_y)``.

    ``mu_c`` is the mean embedding of the samples labelled c (the observed labels: the
    labels a practitioner has), ``e_i`` sample i's penultimate embedding. A typical sample
    points the way its class does; an atypical, out-of-distribution or mislabelled one
    (whose embedding follows its true class) points elsewhere.

    Parameters
    ----------
    embeddings : array of shape (N, D)
        Penultimate-layer embeddings of a trained model (eval mode).
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : array of shape (N,) in [0, 2]; higher = harder (less prototypical). A zero
        embedding (or a class whose mean is zero) has no direction: it scores 1.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] < 1:
        raise ValueError(f"embeddings must have shape (N, D >= 1), got {e.shape}")
    labels = _labels(labels, len(e))
    classes, index = np.unique(labels, return_inverse=True)
    means = np.stack([e[index == k].mean(axis=0) for k in range(len(classes))]) \
        if len(classes) else np.zeros((0, e.shape[1]))
    proto = means[index]
    norm = np.linalg.norm(e, axis=1) * np.linalg.norm(proto, axis=1)
    cos = np.divide((e * proto).sum(axis=1), norm, out=np.zeros(len(e)), where=norm > 0)
    return 1.0 - cos


def mc_dropout(probs, *, labels):
    """Confidence agreement under Monte-Carlo dropout: ``1 - mean_t p_t(label)``.

    The model predicts every sample T times with its dropout layers active (batch norm in
    eval mode), which samples from an approximate posterior over networks (Gal and
    Ghahramani 2016); a sample whose label the networks agree on with high probability is
    easy. H-CAT takes the maximum of the mean softmax instead, which does not look at the
    label and cannot see a confidently mislabelled sample; the label's probability can.

    Parameters
    ----------
    probs : array of shape (T, N, C)
        Softmax outputs of T dropout passes; rows sum to 1.
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : array of shape (N,) in [0, 1]; higher = harder.
    """
    probs = _probs(probs, "dropout probabilities (T, N, C)", 3)
    labels = _labels(labels, probs.shape[1], probs.shape[2])
    return 1.0 - probs[:, np.arange(len(labels)), labels].mean(axis=0)


def allsh(probs, *, labels=None):
    """Local sensitivity (ALLSH, Zhang and Plank 2022): how far the prediction moves when
    the input is perturbed, ``mean_a KL(p_clean || p_a)`` over the augmentations a.

    Parameters
    ----------
    probs : array of shape (1 + A, N, C)
        Softmax outputs of one model on the clean inputs (``probs[0]``) and on A augmented
        copies (flip, brightness, noise, pixelation:
        :func:`raydiff.engine.perturb.augmentations`); rows sum to 1.
    labels : ignored (the divergence does not look at the label)

    Returns
    -------
    score : array of shape (N,), >= 0; higher = harder (a prediction that a small
        perturbation changes sits near a decision boundary or off the data).
    """
    probs = _probs(probs, "augmented probabilities (1 + A, N, C)", 3)
    if probs.shape[0] < 2:
        raise ValueError(f"need the clean prediction and at least one augmentation, got "
                         f"{probs.shape[0]} prediction(s)")
    clean, augmented = probs[0], np.clip(probs[1:], 1e-12, None)
    kl = (xlogy(clean, clean)[None] - clean[None] * np.log(augmented)).sum(axis=2)
    return np.maximum(kl, 0.0).mean(axis=0)


def detector(prob_noisy, *, labels=None):
    """A learnt detector's probability that a sample's label is wrong (Jia et al. 2023).

    The detector, an LSTM over the sample's probability-of-its-label trajectory
    (:mod:`raydiff.engine.detector`), was trained on another run of the sweep whose noise
    was planted and therefore known; here its output probability is the score itself, not
    H-CAT's 0/1 decision at 0.5, so AUROC and AP rank samples rather than two groups.

    Parameters
    ----------
    prob_noisy : array of shape (N,) or (R, N) for R detectors to average
    labels : ignored

    Returns
    -------
    score : array of shape (N,) in [0, 1]; higher = harder.
    """
    p = np.asarray(prob_noisy, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"detector outputs must be probabilities in [0, 1] of shape (N,) "
                         f"or (R, N), got shape {p.shape}")
    return p.mean(axis=0)
