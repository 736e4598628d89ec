"""Scores from the training dynamics: the logits every sample got at each recorded epoch.

Every function here takes the trajectory the training engine records
(:class:`raydiff.engine.train.Dynamics`): ``logits`` of shape (T, N, C), the raw logits
sample i got in the forward pass of the t-th recorded epoch, and the labels the model was
trained on (the *observed* labels, noise included), and returns one score per sample,
oriented so that higher = harder (more likely mislabelled or ambiguous). No extra training
and no second pass over the data. The exceptions read early models instead: :func:`el2n`
(their eval-mode logits) and :func:`grand` (their per-sample gradient norms).
"""

import numpy as np
from scipy.special import logsumexp, softmax


def _check(logits, labels):
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[0] < 1 or logits.shape[2] < 2:
        raise ValueError(f"logits must have shape (T >= 1 epochs, N samples, C >= 2 classes), "
                         f"got {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[1],):
        raise ValueError(f"labels must have shape ({logits.shape[1]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[2]):
        raise ValueError(f"labels must lie in [0, {logits.shape[2]}), got "
                         f"[{labels.min()}, {labels.max()}]")
    return logits, labels.astype(np.int64)


def _true_probability(logits, labels):
    """(T, N) softmax probability of the given label at every recorded epoch."""
    return np.take_along_axis(softmax(logits, axis=2), labels[None, :, None], axis=2)[..., 0]


def _correct(logits, labels):
    """(T, N) bool: the argmax equals the given label at every recorded epoch."""
    return logits.argmax(axis=2) == labels[None, :]


def cartography(logits, *, labels):
    """The three Dataset Cartography statistics (Swayamdipta et al. 2020), as they are.

    Parameters
    ----------
    logits : array of shape (T, N, C)
        Raw logits of N samples at T recorded epochs.
    labels : int array of shape (N,), keyword-only
        The labels trained on.

    Returns
    -------
    dict of three arrays of shape (N,), in the paper's orientation (not higher = harder):
    ``confidence`` (mean over epochs of p(label)), ``variability`` (its population std
    over epochs) and ``correctness`` (fraction of epochs whose argmax is the label).
    Use :func:`cartography_confidence` and friends for scores.
    """
    logits, labels = _check(logits, labels)
    p = _true_probability(logits, labels)
    return {"confidence": p.mean(axis=0), "variability": p.std(axis=0),
            "correctness": _correct(logits, labels).mean(axis=0)}


def cartography_confidence(logits, *, labels):
    """``1 - confidence``: the mean probability of the label over epochs, turned around.

    Shapes as :func:`cartography`; returns (N,) in [0, 1], higher = harder. Mislabelled
    samples sit in the paper's *hard-to-learn* region (low confidence).
    """
    return 1.0 - cartography(logits, labels=labels)["confidence"]


def cartography_variability(logits, *, labels):
    """Variability, the std over epochs of p(label): high = *ambiguous* (the model keeps
    changing its mind). Shapes as :func:`cartography`; returns (N,) in [0, 0.5]."""
    return cartography(logits, labels=labels)["variability"]


def cartography_correctness(logits, *, labels):
    """``1 - correctness``: the fraction of epochs in which the sample was misclassified.
    Shapes as :func:`cartography`; returns (N,) in [0, 1], higher = harder."""
    return 1.0 - cartography(logits, labels=labels)["correctness"]


def aum(logits, *, labels, until=None):
    """Negative Area Under the Margin (Pleiss et al. 2020).

    The margin at an epoch is ``logit_label - max_{j != label} logit_j``; AUM is its mean
    over the recorded epochs, and a low (negative) AUM marks a likely mislabelled sample,
    whose own label keeps losing to another class. The paper also calibrates a threshold
    with deliberately mislabelled "threshold samples"; here only the ranking is kept.

    The authors average the margins while the learning rate is still high (they train
    without drops for the AUM computation): after a drop the network memorises the
    mislabelled samples, their margins turn positive and the ranking washes out. ``until``
    keeps that recipe on a schedule with drops: only the first ``until`` recorded epochs
    are averaged (the dynamics experiment passes the first learning-rate milestone).

    Parameters
    ----------
    logits : array of shape (T, N, C)
    labels : int array of shape (N,), keyword-only
    until : int >= 1 or None, keyword-only
        Average the first ``min(until, T)`` recorded epochs only; None: all T.

    Returns
    -------
    score : array of shape (N,), ``-AUM``; higher = harder.
    """
    logits, labels = _check(logits, labels)
    if until is not None:
        if until < 1:
            raise ValueError(f"until must be >= 1 (epochs to average), got {until}")
        logits = logits[:until]
    index = labels[None, :, None]
    assigned = np.take_along_axis(logits, index, axis=2)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, index, -np.inf, axis=2)
    return -(assigned - others.max(axis=2)).mean(axis=0)


def forgetting_events(logits, *, labels):
    """Number of forgetting events (Toneva et al. 2019): transitions from correctly to
    incorrectly classified between consecutive recorded epochs.

    A sample that is never classified correctly at any recorded epoch ("never learnt")
    counts as maximally forgotten: it gets ``T``, more than the ``T // 2`` events any
    learnt sample can have.

    Parameters
    ----------
    logits : array of shape (T, N, C)
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : float array of shape (N,) of counts in [0, T // 2], or T; higher = harder.
    """
    logits, labels = _check(logits, labels)
    correct = _correct(logits, labels)
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    events[~correct.any(axis=0)] = logits.shape[0]
    return events


def el2n(logits, *, labels):
    """Error L2-Norm (Paul et al. 2021): ``|| softmax(logits) - onehot(label) ||_2``.

    Meant for the logits of a model early in training (the paper: after epoch 20 of 200),
    evaluated in eval mode over all samples (not the logits of the training pass), and
    averaged over several independently initialised runs, which damps the noise of a
    single early model.

    Parameters
    ----------
    logits : array of shape (N, C) for one run, or (R, N, C) for R runs to average over
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : array of shape (N,) in [0, sqrt(2)]; higher = harder.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2:
        logits = logits[None]
    logits, labels = _check(logits, labels)
    error = softmax(logits, axis=2)
    error[:, np.arange(len(labels)), labels] -= 1.0
    return np.linalg.norm(error, axis=2).mean(axis=0)


def data_iq(logits, *, labels):
    """The two Data-IQ statistics (Seedat et al. 2022), as they are.

    With ``p_e`` the probability of the label at recorded epoch e:

    - ``confidence`` = mean_e p_e (the same statistic as Cartography's confidence);
    - ``aleatoric`` = mean_e p_e (1 - p_e), the expected variance of a Bernoulli with
      that probability: high when the model sits near 0.5 on the label, epoch after epoch.

    Data-IQ calls a sample *easy* (high confidence, low aleatoric), *hard* (low confidence,
    low aleatoric) or *ambiguous* (high aleatoric). Parameters as :func:`cartography`.

    Returns
    -------
    dict of two arrays of shape (N,) in the paper's orientation: ``confidence`` in [0, 1]
    (high = easy), ``aleatoric`` in [0, 0.25].
    """
    logits, labels = _check(logits, labels)
    p = _true_probability(logits, labels)
    return {"confidence": p.mean(axis=0), "aleatoric": (p * (1.0 - p)).mean(axis=0)}


def dataiq_hard(logits, *, labels):
    """Data-IQ's *hard* region as one score: ``(1 - confidence) - aleatoric``.

    The difference equals ``mean_e (1 - p_e)^2`` (expand ``1 - mean p - mean p(1 - p)``):
    the squared error of the label's probability, averaged over epochs. It is high when
    the label stays improbable epoch after epoch (low confidence *and* low aleatoric
    uncertainty: Data-IQ's hard samples, where mislabelled ones sit) and lower for an
    ambiguous sample whose probability wavers around 0.5 at the same mean. Data-IQ's
    confidence alone is :func:`cartography_confidence` (the same number; H-CAT reports the
    two methods with identical scores) and is not registered twice.

    Parameters
    ----------
    logits : array of shape (T, N, C)
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : array of shape (N,) in [0, 1]; higher = harder.
    """
    logits, labels = _check(logits, labels)
    p = _true_probability(logits, labels)
    return ((1.0 - p) ** 2).mean(axis=0)


def dataiq_aleatoric(logits, *, labels):
    """Data-IQ's aleatoric uncertainty ``mean_e p_e (1 - p_e)``: high = *ambiguous* (the
    model keeps the label's probability near 0.5). Shapes as :func:`data_iq`; returns (N,)
    in [0, 0.25], higher = harder in the ambiguity sense (a confidently mislabelled sample,
    whose probability stays near 0, scores low here and high on :func:`dataiq_hard`)."""
    return data_iq(logits, labels=labels)["aleatoric"]


def large_loss(logits, *, labels):
    """Mean cross-entropy of the label over the recorded epochs: the *large-loss* criterion.

    Where :func:`raydiff.scores.logits.small_loss` reads the final model only, this
    averages the per-sample loss over training, as the loss-based hardness measures do:
    a mislabelled sample's loss stays high while the clean ones fall early.

    Parameters
    ----------
    logits : array of shape (T, N, C)
    labels : int array of shape (N,), keyword-only

    Returns
    -------
    score : array of shape (N,), >= 0; higher = harder.
    """
    logits, labels = _check(logits, labels)
    assigned = np.take_along_axis(logits, labels[None, :, None], axis=2)[..., 0]
    return (logsumexp(logits, axis=2) - assigned).mean(axis=0)


def grand(norms, *, labels=None):
    """GraNd (Paul et al. 2021): the norm of a sample's loss gradient with respect to all
    the network's parameters, early in training, averaged over initialisations.

    The gradient norms themselves come from the training engine
    (:func:`raydiff.engine.grad_norm.per_sample_grad_norms`: one per-sample gradient of
    the cross-entropy on the observed label, every parameter, eval mode); this averages
    them over the runs, which damps one early model's noise as for :func:`el2n`.

    Parameters
    ----------
    norms : array of shape (R, N) for R runs, or (N,) for one
    labels : ignored (the gradients were taken on the observed labels already)

    Returns
    -------
    score : array of shape (N,), >= 0; higher = harder.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim == 1:
        norms = norms[None]
    if norms.ndim != 2 or norms.shape[0] < 1:
        raise ValueError(f"gradient norms must have shape (R runs, N samples), got {norms.shape}")
    if (norms < 0).any() or not np.isfinite(norms).all():
        raise ValueError("gradient norms must be finite and >= 0")
    return norms.mean(axis=0)
