"""Seeded label noise."""

import numpy as np


def inject_label_noise(labels, *, ratio, num_classes, rng):
    """Replace the labels of ``int(N * ratio)`` uniformly chosen samples by a different class.

    Each chosen sample gets a label drawn uniformly from the ``num_classes - 1`` classes
    other than its own, so every corrupted label really changes. The noise is applied
    once, to a copy: ``labels`` is left untouched.

    Parameters
    ----------
    labels : int array of shape (N,)
    ratio : float in [0, 1], keyword-only
    num_classes : int >= 2, keyword-only
    rng : numpy.random.Generator, keyword-only
        The only source of randomness: the same generator state gives the same noise.

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
    n_noisy = int(len(labels) * ratio)
    chosen = rng.choice(len(labels), size=n_noisy, replace=False)
    noisy = labels.copy()
    # an offset in 1..C-1 modulo C is uniform over the other classes
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=n_noisy)) % num_classes
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return noisy, mask
