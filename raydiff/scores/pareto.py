"""Model selection over several objectives, all minimised (GASTeN: FID and ACD)."""

import numpy as np


def pareto_front(points):
    """Which rows of ``points`` are not dominated.

    points : (N, K) array of objectives, every one minimised (lower = better). Row i is
        dominated when some row j is <= it in every objective and < in at least one.
        Rows with a NaN are never on the front.
    Returns a boolean array (N,); exact duplicates of a front point are on it too.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"pareto_front needs an (N, K) array, got shape {p.shape}")
    finite = np.isfinite(p).all(1)
    front = finite.copy()
    for i in np.flatnonzero(finite):
        others = p[finite]
        dominated = (others <= p[i]).all(1) & (others < p[i]).any(1)
        front[i] = not dominated.any()
    return front


def pareto_best(points):
    """The single row chosen from the front: after scaling each objective to [0, 1] over
    the finite rows, the front point nearest the ideal (0, ..., 0); ties -> the first.

    points : (N, K) array, minimised. Returns the row index; ValueError if no row is finite.
    """
    p = np.asarray(points, dtype=np.float64)
    front = pareto_front(p)
    if not front.any():
        raise ValueError("pareto_best: no row has finite values in every objective")
    finite = p[np.isfinite(p).all(1)]
    lo, span = finite.min(0), np.ptp(finite, axis=0)
    scaled = (p - lo) / np.where(span > 0, span, 1.0)
    distance = np.where(front, np.sqrt((scaled ** 2).sum(1)), np.inf)
    return int(np.argmin(distance))
