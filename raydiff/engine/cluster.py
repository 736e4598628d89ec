"""Patterns in ambiguous samples: reduce their embeddings, cluster them, pick prototypes.

The pipeline of "Finding Patterns in Ambiguity": UMAP (cosine metric) to a few dozen
dimensions, then a Gaussian mixture (full covariance) or HDBSCAN (leaf selection,
``min_samples`` 3); its hyperparameters are chosen by the mean silhouette over K folds,
scored one of two ways (``scorer``). ``refit``, the original's: reducer and clusterer are
refitted on the held-out fold alone and the silhouette of that fit is measured (a
scikit-learn search whose scorer calls ``fit_predict`` on the fold it is given).
``predict``: reducer and clusterer are fitted on the other K-1 folds, the held-out fold is
embedded with the fitted reducer, assigned to clusters (a GMM's ``predict``, HDBSCAN's
``approximate_predict``), and its silhouette is measured: whether the clusters carry
over to unseen points, a stricter test. Each cluster's prototype is its
medoid in the reduced space. HDBSCAN comes from the ``hdbscan`` package: scikit-learn's
own fails on leaf selection with ``cluster_selection_epsilon > 0`` (1.9).

``reducer="pca"`` swaps UMAP for PCA (no cosine metric, no ``n_neighbors``/``min_dist``):
a fast stand-in for quick checks. UMAP (umap-learn) is imported only here.
"""

import numpy as np
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.model_selection import KFold

REDUCERS = ("umap", "pca")
CV_SCORERS = ("refit", "predict")
CLUSTERERS = ("gmm", "hdbscan")


def make_reducer(kind, *, n_components, n_neighbors=15, min_dist=0.1, n_epochs=None,
                 n_samples, seed=0):
    """An unfitted reducer; ``n_components`` and ``n_neighbors`` are capped by what
    ``n_samples`` points allow (UMAP's spectral start needs n_components < n_samples - 1).
    ``n_epochs``: UMAP's layout epochs (None: UMAP's default, 500 below 10,000 points)."""
    n_components = int(max(1, min(n_components, n_samples - 2)))
    if kind == "umap":
        import umap   # heavy (numba); only this pipeline needs it

        return umap.UMAP(n_neighbors=int(max(2, min(n_neighbors, n_samples - 1))),
                         min_dist=float(min_dist), n_components=n_components, metric="cosine",
                         random_state=int(seed), n_jobs=1,
                         n_epochs=None if n_epochs is None else int(n_epochs),
                         # below 4096 points UMAP would compute exact cosine distances by
                         # calling a compiled metric once per pair from Python: minutes for
                         # a few thousand points; nearest-neighbour descent takes seconds
                         force_approximation_algorithm=True)
    if kind == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=int(seed))
    raise ValueError(f"unknown reducer {kind!r}; valid: {list(REDUCERS)}")


class Clusters:
    """A fitted clusterer over reduced points ``z``: ``labels`` (-1 = noise, HDBSCAN only)."""

    def __init__(self, kind, z, *, gmm_n_components=3, hdbscan_epsilon=0.0,
                 hdbscan_min_cluster_size=5, hdbscan_min_samples=3, seed=0):
        self.kind, self.z = kind, np.asarray(z)
        if kind == "gmm":
            from sklearn.mixture import GaussianMixture

            k = int(max(1, min(gmm_n_components, len(z))))
            self.model = GaussianMixture(k, covariance_type="full", reg_covar=1e-5,
                                         random_state=int(seed)).fit(z)
            self.labels = self.model.predict(z)
        elif kind == "hdbscan":
            import hdbscan

            self.model = hdbscan.HDBSCAN(min_cluster_size=int(max(2, hdbscan_min_cluster_size)),
                                         min_samples=int(hdbscan_min_samples),
                                         cluster_selection_epsilon=float(hdbscan_epsilon),
                                         cluster_selection_method="leaf",
                                         prediction_data=True).fit(z)
            self.labels = self.model.labels_
        else:
            raise ValueError(f"unknown clusterer {kind!r}; valid: {list(CLUSTERERS)}")

    def predict(self, z_new):
        z_new = np.asarray(z_new)
        if self.kind == "gmm":
            return self.model.predict(z_new)
        if not (self.labels >= 0).any():
            return np.full(len(z_new), -1)
        import hdbscan

        return hdbscan.approximate_predict(self.model, z_new)[0]


def quality(z, labels):
    """Silhouette, Davies-Bouldin and Calinski-Harabasz of ``labels`` on points ``z``,
    noise (-1) left out; NaN where fewer than 2 clusters (or too few points) remain."""
    z, labels = np.asarray(z), np.asarray(labels)
    kept = labels >= 0
    k = len(np.unique(labels[kept]))
    if k < 2 or kept.sum() <= k:
        return {"silhouette": float("nan"), "davies_bouldin": float("nan"),
                "calinski_harabasz": float("nan")}
    z, labels = z[kept], labels[kept]
    return {"silhouette": float(silhouette_score(z, labels)),
            "davies_bouldin": float(davies_bouldin_score(z, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(z, labels))}


def cv_silhouette(features, *, reducer, clusterer, folds=5, seed=0, scorer="refit", **params):
    """Mean silhouette over ``folds`` folds of ``features`` (N, D), higher = better
    separated clusters; a fold whose points fall in fewer than 2 clusters counts as -1 (the
    worst silhouette).

    scorer : "refit" (the original's: reducer and clusterer fitted on the held-out fold
        itself) or "predict" (fitted on the other folds, the held-out fold embedded and
        assigned by them).
    params : n_components, n_neighbors, min_dist, n_epochs (reducer) and gmm_* / hdbscan_*
        (clusterer).
    Returns (mean, list of the per-fold values).
    """
    if scorer not in CV_SCORERS:
        raise ValueError(f"unknown cv scorer {scorer!r}; valid: {list(CV_SCORERS)}")
    features = np.asarray(features)
    red_keys = {"n_components", "n_neighbors", "min_dist", "n_epochs"}
    red = {k: v for k, v in params.items() if k in red_keys}
    clu = {k: v for k, v in params.items() if k not in red_keys}
    values = []
    splits = KFold(n_splits=int(folds), shuffle=True, random_state=int(seed)).split(features)
    for train, test in splits:
        fit_on = test if scorer == "refit" else train
        r = make_reducer(reducer, n_samples=len(fit_on), seed=seed, **red)
        z_fit = r.fit_transform(features[fit_on])
        fitted = Clusters(clusterer, z_fit, seed=seed, **clu)
        if scorer == "refit":
            s = quality(z_fit, fitted.labels)["silhouette"]
        else:
            z_test = r.transform(features[test])
            s = quality(z_test, fitted.predict(z_test))["silhouette"]
        values.append(-1.0 if np.isnan(s) else s)
    return float(np.mean(values)), values


def medoids(z, labels):
    """``{cluster: index}`` of each cluster's medoid: the member whose summed Euclidean
    distance to the other members of its cluster is smallest (noise, -1, has none)."""
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    out = {}
    for c in np.unique(labels):
        if c < 0:
            continue
        members = np.flatnonzero(labels == c)
        pts = z[members]
        dist = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).sum(1)
        out[int(c)] = int(members[dist.argmin()])
    return out
