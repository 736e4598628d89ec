"""Patterns in ambiguity: the clustering search and the best trial's figures.

``gasten_ambiguity_trials.csv``: every search trial, its hyperparameters and metrics;
``gasten_ambiguity_best.csv``: per search (clusterer, checkpoint, ...) the trial with the
best cross-validated silhouette. The figures of each best trial (prototypes, clusters,
2-D embedding, saliency, baseline) are copied as ``gasten_ambiguity_<clusterer>_<name>``.
"""

import json
import shutil

NAME = "gasten_ambiguity"
SEARCH = ["reducer", "clusterer", "checkpoint", "checkpoint_epoch", "n_samples", "low", "high"]
HYPER = ["n_neighbors", "min_dist", "n_components", "gmm_n_components", "hdbscan_epsilon",
         "hdbscan_min_cluster_size"]
METRICS = ["silhouette_cv", "silhouette", "davies_bouldin", "calinski_harabasz", "n_clusters",
           "n_noise", "n_ambiguous", "ambiguous_fraction", "n_ambiguous_test", "selected_epoch",
           "selected_fid", "selected_acd"]
FIGURES = ["prototypes.png", "embedding_2d.png", "saliency.png", "baseline_test_ambiguous.png"]


def build(ctx, runs):
    search = [k for k in SEARCH if k in runs.columns]
    cols = (["run_id"] + search + [k for k in HYPER if k in runs.columns]
            + [f"m.{m}" for m in METRICS if f"m.{m}" in runs.columns])
    trials = runs[cols].rename(columns=lambda c: c.removeprefix("m."))
    ctx.table("gasten_ambiguity_trials.csv", trials)
    if "silhouette_cv" not in trials.columns:
        return
    ranked = trials.sort_values("silhouette_cv", ascending=False)
    best = ranked.groupby(search, dropna=False, sort=True).head(1).reset_index(drop=True)
    found = []
    for _, row in best.iterrows():
        path = _artifact(ctx, row["run_id"], "clusters.json")
        found.append(json.loads(path.read_text()) if path else {})
    # which step-2 checkpoint each search clustered, and its cluster sizes
    best["selected_run"] = [f.get("checkpoint") for f in found]
    for key in sorted({k for f in found for k in f.get("selected", {})}):
        best[f"selected.{key}"] = [f.get("selected", {}).get(key) for f in found]
    best["cluster_sizes"] = [json.dumps(f.get("sizes", {})) for f in found]
    ctx.table("gasten_ambiguity_best.csv", best)
    for (_, row), info in zip(best.iterrows(), found):
        clusters = sorted(info.get("sizes", {}))
        for name in FIGURES + [f"cluster_{int(c):02d}.png" for c in clusters]:
            source = _artifact(ctx, row["run_id"], name)
            if source is None:
                continue
            target = ctx.out / f"gasten_ambiguity_{row['clusterer']}_{name}"
            shutil.copyfile(source, target)
            ctx.written.append(target)


def _artifact(ctx, run_id, name):
    """Local path of the artifact, or None where the run has none (too few ambiguous
    samples, figures off)."""
    try:
        path = ctx.artifact(run_id, name)
    except Exception:      # noqa: BLE001 - a tracker's own "no such artifact"
        return None
    return path if path.exists() else None
