"""Seeded label noise: uniform (symmetric) or pair flipping."""

import numpy as np

NOISE_KINDS = ("uniform", "pair")


def pair_permutation(num_classes, rng):
    """A seeded permutation of the classes with no fixed point (a derangement).

    Pair flipping (Han et al. 2018, "Co-teaching") sends every corrupted label of class
    ``c`` to the one class ``perm[c]``; a fixed point would be a class whose "flip" keeps
    the label, so permutations with one are redrawn (about e = 2.7 draws on average, each
    derangement equally likely).

    Parameters
    ----------
    num_classes : int >= 2
    rng : numpy.random.Generator

    Returns
    -------
    perm : int64 array of shape (num_classes,), ``perm[c] != c`` for every c
    """
    if num_classes < 2:
        raise ValueError(f"a derangement needs at least 2 classes, got {num_classes}")
    classes = np.arange(num_classes)
    while True:
        perm = rng.permutation(num_classes).astype(np.int64)
        if not (perm == classes).any():
            return perm


def inject_label_noise(labels, *, ratio, num_classes, rng, kind="uniform"):
    """Replace the labels of ``int(N * ratio)`` uniformly chosen samples by a different class.

    ``kind="uniform"``: each chosen sample gets a label drawn uniformly from the
    ``num_classes - 1`` classes other than its own. ``kind="pair"``: each chosen sample of
    class ``c`` gets ``perm[c]``, one fixed other class per class (:func:`pair_permutation`,
    drawn from ``rng`` after the samples), as annotators confuse particular classes. Both
    kinds choose the same samples for the same generator state, and every corrupted label
    really changes. The noise is applied once, to a copy: ``labels`` is left untouched.

    Parameters
    ----------
    labels : int array of shape (N,)
    ratio : float in [0, 1], keyword-only
    num_classes : int >= 2, keyword-only
    rng : numpy.random.Generator, keyword-only
        The only source of randomness: the same generator state gives the same noise.
    kind : "uniform" or "pair", keyword-only

    Returns
    -------
    noisy : int64 array of shape (N,)
    mask : bool array of shape (N,), True where the label was changed
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"noise ratio must be in [0, 1], got {ratio}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {list(NOISE_KINDS)}")
    n_noisy = int(len(labels) * ratio)
    chosen = rng.choice(len(labels), size=n_noisy, replace=False)
    noisy = labels.copy()
    if kind == "uniform":
        # an offset in 1..C-1 modulo C is uniform over the other classes
        noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=n_noisy)) % num_classes
    else:
        noisy[chosen] = pair_permutation(num_classes, rng)[labels[chosen]]
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return noisy, mask
