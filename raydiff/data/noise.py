"""The label kinds of hardness: which labels change, and to what.

Every function here is pure numpy: the samples are chosen by :func:`choose` from one
generator (the NOISE stream of the seed), the per-class structure (pair permutation,
asymmetric transition rows) comes from a second generator that nothing else draws from, so
it is the same for every proportion p. :func:`inject_label_noise` puts them together; the
image kinds live in :mod:`raydiff.data.images`, the dispatch over all ten kinds in
:mod:`raydiff.data.hardness`.
"""

import numpy as np

LABEL_KINDS = ("uniform", "pair", "asymmetric", "adjacent", "class_map", "instance")
NOISE_KINDS = LABEL_KINDS          # the old name

# Confusions annotators make, one map per label space: {true class: classes it may become}.
# MNIST digits (the map of the hardness benchmark of Seedat et al. 2024); CIFAR-10 as in
# Patrini et al. 2017: truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
# A class without an entry is never chosen, so every chosen label really changes.
CLASS_MAPS = {
    "digits": {1: (7,), 2: (7,), 3: (8,), 5: (6,), 6: (5,), 7: (1, 2), 8: (3,), 9: (7,)},
    "cifar10": {9: (1,), 2: (0,), 4: (7,), 3: (5,), 5: (3,)},
}
DATASET_CLASS_MAP = {"mnist5k": "digits", "MNIST": "digits", "digits": "digits",
                     "CIFAR10": "cifar10"}


def class_map_for(dataset):
    """The confusion map ``{class: tuple of classes}`` of dataset ``dataset`` (its name);
    ValueError naming the datasets that have one."""
    if dataset not in DATASET_CLASS_MAP:
        raise ValueError(
            f"hardness 'class_map' has no confusion map for dataset {dataset!r}; datasets with "
            f"one: {sorted(DATASET_CLASS_MAP)} (or pick hardness pair / asymmetric, which draw "
            f"a map per seed)")
    return CLASS_MAPS[DATASET_CLASS_MAP[dataset]]


def choose(n, count, rng, *, eligible=None, weights=None):
    """``count`` distinct positions of ``range(n)``, in draw order.

    Parameters
    ----------
    n : int
    count : int, 0 <= count <= n
    rng : numpy.random.Generator
    eligible : int array or None, keyword-only
        Draw from these positions only (uniformly).
    weights : float array (n,) > 0 or None, keyword-only
        Successive sampling without replacement with probability proportional to the
        weight (Efraimidis and Spirakis 2006: the ``count`` largest ``log(u) / w``).

    Returns
    -------
    chosen : int64 array of shape (count,)
    """
    if weights is not None:
        keys = np.log(rng.random(n)) / np.asarray(weights, dtype=np.float64)
        return np.argsort(-keys, kind="stable")[:count].astype(np.int64)
    if eligible is not None:
        return rng.choice(np.asarray(eligible, dtype=np.int64), size=count, replace=False)
    return rng.choice(n, size=count, replace=False).astype(np.int64)


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


def transition_matrix(num_classes, rng):
    """Per-class transition rows for asymmetric noise: zero diagonal, each row's
    off-diagonal weights drawn from Dirichlet(1, ..., 1) (uniform on the simplex).

    Returns
    -------
    T : float64 array (num_classes, num_classes); rows sum to 1, ``T[c, c] == 0``;
        ``T[c, j]`` is the probability that a chosen sample of class c is labelled j.
    """
    T = np.zeros((num_classes, num_classes))
    for c in range(num_classes):
        T[c, np.arange(num_classes) != c] = rng.dirichlet(np.ones(num_classes - 1))
    return T


def _draw_rows(rows, rng):
    """One class per row of ``rows`` (k, C), drawn with the row's probabilities; a class of
    weight 0 is never drawn (the inverse CDF at u in [0, 1) skips zero-width steps)."""
    cdf = np.cumsum(rows, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(len(rows))
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)


def uncertainty_weights(probs, labels):
    """The weight of each sample for instance noise: the clean model's uncertainty about
    the true class, ``1 - p(label)``, rounded to 1e-6 (so a last-bit difference of a CPU's
    floating point does not move the draw) and floored at 1e-6 (every sample stays possible
    once the uncertain ones are drawn).

    probs : (N, C) softmax of a model trained on the clean labels; labels : (N,)
    Returns (N,) float64 weights in [1e-6, 1], higher = more likely to be chosen.
    """
    p_true = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return np.maximum(np.round(1.0 - p_true, 6), 1e-6)


def runner_up(probs, labels):
    """The clean model's most likely class other than the true one, (N,) int64."""
    other = np.array(probs, dtype=np.float64)
    other[np.arange(len(labels)), labels] = -np.inf
    return other.argmax(axis=1).astype(np.int64)


def inject_label_noise(labels, *, ratio, num_classes, rng, kind="uniform", class_rng=None,
                       class_map=None, probs=None):
    """Change the labels of ``int(N * ratio)`` chosen samples to a different class.

    ``uniform``: the chosen samples uniformly; each gets a label drawn uniformly from the
    other ``num_classes - 1`` classes (bit-identical to the rule before the other kinds).
    ``pair``: each chosen sample of class c gets ``perm[c]`` (:func:`pair_permutation`,
    drawn from ``class_rng``: one permutation per seed, whatever the ratio).
    ``asymmetric``: each gets a class drawn from its class's row of
    :func:`transition_matrix` (drawn from ``class_rng``).
    ``adjacent``: y -> (y - 1) mod C for half of the chosen samples, (y + 1) mod C for the
    other half (exactly, in a seeded order).
    ``class_map``: chosen among the samples whose class has a partner in ``class_map``
    (:func:`class_map_for`); each gets its partner (one of them, uniformly, when a class
    has several).
    ``instance``: chosen with probability proportional to ``1 - probs[i, label]``, the
    clean model's uncertainty (:func:`uncertainty_weights`); each gets the model's most
    likely other class (:func:`runner_up`).
    uniform, pair, asymmetric and adjacent choose the same samples for the same ``rng``
    state; every chosen label really changes; ``labels`` is left untouched.

    Parameters
    ----------
    labels : int array of shape (N,)
    ratio : float in [0, 1], keyword-only
    num_classes : int >= 2, keyword-only
    rng : numpy.random.Generator, keyword-only
        Which samples, and the per-sample draws.
    kind : one of :data:`LABEL_KINDS`, keyword-only
    class_rng : numpy.random.Generator, keyword-only
        The class structure of ``pair`` and ``asymmetric`` (required for them).
    class_map : dict {class: tuple of classes}, keyword-only (required for ``class_map``)
    probs : float array (N, num_classes), keyword-only (required for ``instance``)

    Returns
    -------
    noisy : int64 array of shape (N,)
    mask : bool array of shape (N,), True where the label was changed
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"noise ratio must be in [0, 1], got {ratio}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown hardness (label kind) {kind!r}; valid: {list(LABEL_KINDS)}")
    if kind in ("pair", "asymmetric") and class_rng is None:
        raise ValueError(f"hardness {kind!r} needs class_rng, the generator of its class "
                         f"structure (independent of the ratio)")
    count = int(n * ratio)
    noisy = labels.copy()
    if kind == "class_map":
        if class_map is None:
            raise ValueError("hardness 'class_map' needs class_map (see class_map_for)")
        eligible = np.flatnonzero(np.isin(labels, list(class_map)))
        if count > len(eligible):
            raise ValueError(
                f"hardness 'class_map' at ratio {ratio} needs {count} samples of the classes "
                f"with a partner ({sorted(class_map)}); the data has {len(eligible)}: lower "
                f"noise_ratio to at most {len(eligible) / n:.3f}")
        chosen = choose(n, count, rng, eligible=eligible)
        pick = rng.random(count)
        noisy[chosen] = [class_map[y][int(u * len(class_map[y]))]
                         for y, u in zip(labels[chosen].tolist(), pick)]
    elif kind == "instance":
        if probs is None and count == 0:        # nothing to choose: no model needed
            return noisy, np.zeros(n, dtype=bool)
        if probs is None:
            raise ValueError("hardness 'instance' needs probs, a clean model's softmax (N, C)")
        chosen = choose(n, count, rng, weights=uncertainty_weights(probs, labels))
        noisy[chosen] = runner_up(probs, labels)[chosen]
    else:
        chosen = choose(n, count, rng)
        y = labels[chosen]
        if kind == "uniform":
            # an offset in 1..C-1 modulo C is uniform over the other classes
            noisy[chosen] = (y + rng.integers(1, num_classes, size=count)) % num_classes
        elif kind == "pair":
            noisy[chosen] = pair_permutation(num_classes, class_rng)[y]
        elif kind == "asymmetric":
            noisy[chosen] = _draw_rows(transition_matrix(num_classes, class_rng)[y], rng)
        else:                                   # adjacent: exactly half each way
            step = rng.permutation(np.r_[-np.ones(count // 2), np.ones(count - count // 2)])
            noisy[chosen] = (y + step.astype(np.int64)) % num_classes
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return noisy, mask
