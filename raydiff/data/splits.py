"""Held-out splits of a prepared subset, and the hard training data every split sees.

The hard samples are drawn once over the whole subset (:func:`raydiff.data.prepare`),
before any split: one seed and one subset give the same changed label or image for the
same ``sample_id`` in every experiment, whatever part it later holds out (and a held-out
test split gets its true labels and clean images back).
"""

import numpy as np

from raydiff.data import clean_positions, prepare, rng_for
from raydiff.data.streams import FOLD_STREAM, SPLIT_STREAM


def config_tensors(config, device, data):
    """``data`` prepared as ``config`` asks: its subset, its hard samples (``hardness`` at
    ``noise_ratio``, seeded by ``config.seed``) and its normalisation (scalar when it has
    no ``normalize``), on ``device``. The argument order is ``run_pack``'s ``prepare_one``."""
    return prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                   noise_ratio=config.noise_ratio, hardness=config.hardness,
                   noise_seed=config.seed, normalize=getattr(config, "normalize", "scalar"),
                   device=device)


def split_positions(data, sample_id, *, test_fraction, val_fraction, seed):
    """Positions (into the prepared subset) of the train, validation and test samples.

    The test split is the samples from the dataset's test part, or, when it has none,
    a random ``test_fraction``; ``val_fraction`` of the rest is held out for validation.
    All three are sorted int arrays; they partition ``range(len(sample_id))``.
    """
    source = np.asarray(data.source_split)[sample_id]
    rng = rng_for(seed, SPLIT_STREAM)
    if (source == "test").any():
        test, pool = np.flatnonzero(source == "test"), np.flatnonzero(source != "test")
    else:
        order = rng.permutation(len(sample_id))
        n_test = int(len(order) * test_fraction)
        test, pool = np.sort(order[:n_test]), np.sort(order[n_test:])
    order = rng.permutation(pool)
    n_val = int(len(order) * val_fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val]), test


def noisy_splits(config, data, device):
    """The prepared subset, its train / val / test positions and the observed labels.

    ``config`` has the common keys (dataset subset, noise, seed) plus ``normalize``,
    ``test_fraction`` and ``val_fraction``. The noise is drawn over the whole subset by the
    one rule of :func:`raydiff.data.prepare` (so a training sample has the same observed
    label and image here as in every other experiment of the same seed), then the test
    samples get their true labels and clean images back; the validation samples stay as
    they were made, as a real validation set would.
    """
    tensors = config_tensors(config, device, data)
    train_pos, val_pos, test_pos = split_positions(
        data, tensors.sample_id, test_fraction=config.test_fraction,
        val_fraction=config.val_fraction, seed=config.seed)
    clean_positions(tensors, test_pos)
    return tensors, train_pos, val_pos, test_pos


def fold_assignment(labels, *, folds, seed):
    """Fold number (N,) of every sample: each class's samples are shuffled with ``seed``
    and dealt round-robin, so every fold holds about 1/folds of every class."""
    labels = np.asarray(labels)
    rng = rng_for(seed, FOLD_STREAM)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % folds
    return fold
