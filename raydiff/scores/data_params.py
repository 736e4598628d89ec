"""Per-class enrichment labels from instance data-parameter trajectories."""

import numpy as np

CATEGORIES = ("easy", "hard", "review")


def enrichment_labels(trajectory, labels, *, n_easy=5, hard_above=2.0, review_peak_above=1.5,
                      review_final_at_most=1.0):
    """Label each sample easy, hard (outlier) or need-review from its sigma trajectory.

    Per class (samples grouped by ``labels``):

    - hard: final sigma > ``hard_above``;
    - review ("forgotten early, learnt later"): max over epochs > ``review_peak_above``
      and final sigma <= ``review_final_at_most``;
    - easy: the ``n_easy`` lowest final sigmas of the class that are neither hard nor
      review (a sample that went through a high-temperature phase is worth a look even
      when it ends low, so review wins over easy).

    Parameters
    ----------
    trajectory : float array of shape (N, E)
        Instance sigma (not its log) of every sample after each of E epochs; the last
        column is the final value. Higher = harder.
    labels : int array of shape (N,)
        The class each sample is analysed in (the observed label).

    Returns
    -------
    category : object array of shape (N,) with "easy", "hard", "review" or "" (none).
    """
    trajectory = np.asarray(trajectory, dtype=np.float64)
    labels = np.asarray(labels)
    if trajectory.ndim != 2 or len(trajectory) != len(labels) or trajectory.shape[1] == 0:
        raise ValueError(f"need trajectory (N, E >= 1) and labels (N,), got "
                         f"{trajectory.shape} and {labels.shape}")
    final, peak = trajectory[:, -1], trajectory.max(axis=1)
    category = np.full(len(labels), "", dtype=object)
    category[final > hard_above] = "hard"
    category[(peak > review_peak_above) & (final <= review_final_at_most)] = "review"
    for c in np.unique(labels):
        free = np.flatnonzero((labels == c) & (category == ""))
        category[free[np.argsort(final[free], kind="stable")[:n_easy]]] = "easy"
    return category
