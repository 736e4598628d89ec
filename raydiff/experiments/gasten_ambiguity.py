"""Finding patterns in ambiguity: cluster the images a boundary GAN makes, pick prototypes.

From one step-2 checkpoint (``checkpoint: pareto-best`` picks, over every gathered
step-2 run and every saved epoch, the Pareto-front point of (FID, ACD) nearest the ideal
after scaling, :func:`raydiff.scores.pareto.pareto_best`; or give a step-2 run id and
``checkpoint_epoch``; ``nf`` keeps the runs of one classifier, whose ACDs compare), ``n_samples`` z are drawn (seeded) and the images with
``low <= C(G(z)) <= high`` are kept. They are embedded with the classifier's flatten
features, reduced (UMAP, cosine) and clustered (GMM or HDBSCAN) with the trial's
hyperparameters; ``silhouette_cv`` is the mean silhouette over ``cv_folds`` folds, the
metric a sweep's Tune search maximises, scored by ``cv_scorer`` (``refit``, the
original's: each fold clustered on its own; ``predict``: assigned by a fit on the other
folds; :mod:`raydiff.engine.cluster`), and logged again as ``silhouette_cv_<scorer>``.
Then the pipeline is fitted on all ambiguous images: silhouette, Davies-Bouldin,
Calinski-Harabasz, cluster sizes, one prototype (medoid) per cluster.

Artifacts: ``ambiguous.parquet`` (one row per ambiguous image: classifier output, cluster,
prototype flag, 2-D coordinates), ``ambiguous_images.npy``, ``clusters.json`` and the
figures: prototype grid, one grid per cluster, the 2-D embedding of the real test
images with the ambiguous clusters and prototypes, saliency maps of the prototypes, and
the baseline: ``baseline_size`` random real test images the classifier finds ambiguous.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raydiff.engine.cluster import (CLUSTERERS, CV_SCORERS, REDUCERS, Clusters, cv_silhouette,
                                   make_reducer)
from raydiff.engine.cluster import medoids, quality
from raydiff.engine.fid import embed
from raydiff.experiments._gasten import GastenData, binary_data, load_classifier
from raydiff.experiments.config import ConfigError, Figures, at_least, choice, figures, ratio
from raydiff.models.gasten import make_gan
from raydiff.plots import gasten as gasten_plots
from raydiff.plots.images import image_grid
from raydiff.scores.pareto import pareto_best

NAME = "gasten_ambiguity"
GATHERS = ("gasten_step2",)
PARETO = "pareto-best"
SELECTED_KEYS = ("alpha", "step1_epoch", "run", "classifier.nf", "classifier.classifier")


@dataclass
class AmbiguityFigures(Figures):
    """``enabled: false`` (or ``figures: false``) also skips the 2-D embedding fit, whose
    coordinates are the ``x``, ``y`` columns of ``ambiguous.parquet``."""

    baseline_size: int = at_least(5, 0)        # random real ambiguous test images drawn
    grid_size: int = at_least(36, 1)           # images per cluster grid
    embedding_test_size: int = at_least(1000, 0)   # real test images in the 2-D embedding


@dataclass
class Config(GastenData):
    checkpoint: str = PARETO
    checkpoint_epoch: int | None = at_least(None, 1)
    nf: int | None = at_least(None, 1)       # select among step-2 runs of this classifier only
    n_samples: int = at_least(15000, 1)
    low: float = ratio(0.4)
    high: float = ratio(0.6)
    sample_seed: int = 0
    reducer: str = choice("umap", list(REDUCERS))
    clusterer: str = choice("gmm", list(CLUSTERERS))
    n_neighbors: int = at_least(15, 2)
    min_dist: float = 0.1
    n_components: int = at_least(10, 1)
    umap_epochs: int | None = at_least(None, 1)
    gmm_n_components: int = at_least(3, 1)
    hdbscan_epsilon: float = 0.0
    hdbscan_min_cluster_size: int = at_least(5, 2)
    hdbscan_min_samples: int = at_least(3, 1)
    cv_folds: int = at_least(5, 2)
    # refit: the original's (each held-out fold clustered on its own); predict: fitted on
    # the other folds, the held-out fold assigned by them
    cv_scorer: str = choice("refit", list(CV_SCORERS))
    min_ambiguous: int = at_least(20, 2)
    figures: AmbiguityFigures = figures(AmbiguityFigures)

    SMOKE = {"n_samples": 2000, "cv_folds": 2, "min_ambiguous": 6,
             "figures": {"embedding_test_size": 200}}

    def check(self, where):
        super().check(where)
        if self.low >= self.high:
            raise ConfigError(f"{where}: low={self.low} must be below high={self.high}")
        if self.checkpoint != PARETO and self.checkpoint_epoch is None:
            raise ConfigError(f"{where}: checkpoint={self.checkpoint!r} names a step-2 run; "
                              f"give checkpoint_epoch too (or use checkpoint: {PARETO})")


def of_classifier(upstreams, nf):
    """The step-2 runs whose classifier has ``nf`` filters (all of them when nf is None)."""
    if nf is None:
        return list(upstreams)
    found = [up for up in upstreams if str(up.params.get("classifier.nf")) == str(nf)]
    if not found:
        have = sorted({str(up.params.get("classifier.nf")) for up in upstreams})
        raise ConfigError(f"nf={nf}: no gathered step-2 run used a classifier with {nf} "
                          f"filters; they used nf {have}")
    return found


def select_checkpoint(upstreams, checkpoint=PARETO, epoch=None):
    """(upstream, epoch, row of its metrics) of the chosen step-2 generator.

    ``pareto-best``: among the saved epochs (>= 1) of every run, the Pareto-front point of
    (FID, ACD) nearest the ideal after min-max scaling; else the run whose id (or folder
    name) is ``checkpoint`` at ``epoch``, which must be a saved epoch.
    """
    rows = []
    for i, up in enumerate(upstreams):
        table = up.table("metrics.parquet")
        for _, row in table.iterrows():
            rows.append((i, row))
    if checkpoint != PARETO:
        names = {str(up.run_id or up.folder.name): i for i, up in enumerate(upstreams)}
        if checkpoint not in names:
            raise ConfigError(f"checkpoint={checkpoint!r} is not one of the gathered step-2 runs: "
                              f"{sorted(names)}")
        mine = [(i, r) for i, r in rows if i == names[checkpoint] and r["epoch"] == epoch]
        if not mine or not bool(mine[0][1]["saved"]):
            saved = [int(r["epoch"]) for i, r in rows if i == names[checkpoint] and r["saved"]]
            raise ConfigError(f"checkpoint_epoch={epoch}: run {checkpoint} saved its generator "
                              f"at epochs {saved} only")
        i, row = mine[0]
        return upstreams[i], int(epoch), row
    candidates = [(i, r) for i, r in rows if bool(r["saved"]) and r["epoch"] >= 1]
    if not candidates:
        raise ValueError("no step-2 run saved a generator; nothing to select")
    fid_key = next(k for k in candidates[0][1].index if k.startswith("fid_"))
    points = np.array([[r[fid_key], r["acd"]] for _, r in candidates], dtype=float)
    i, row = candidates[pareto_best(points)]
    return upstreams[i], int(row["epoch"]), row


class SampleCache:
    """The ambiguous samples of one (step-2 checkpoint, sampling keys): the last drawn.

    A Ray worker process runs many search trials (thresholds, grid sizes) on the same
    selected checkpoint; drawing ``n_samples`` images through G and C again for each is the
    trial's main cost. One slot: a new key replaces the old value, so a worker never holds
    more than one checkpoint's samples. :data:`WORKER_CACHE` is the process's own; a caller
    (a test) may pass another to :func:`run`.
    """

    def __init__(self):
        self.key, self.value = None, None

    def get(self, key, compute):
        """The value for ``key``, computed with ``compute()`` unless it is the cached one."""
        if key != self.key:
            self.key, self.value = None, None          # drop the old samples first
            self.value, self.key = compute(), key
        return self.value


WORKER_CACHE = SampleCache()      # one per worker process (module state lives per process)


@torch.no_grad()
def ambiguous_samples(G, C, *, n, z_dim, seed, low, high, device, batch_size=1024):
    """(images, probabilities) of the samples among ``n`` seeded z with low <= C <= high."""
    gen = torch.Generator().manual_seed(int(seed))
    kept, probs = [], []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), z_dim, generator=gen).to(device)
        x = G(z)
        p = C(x)
        keep = (p >= low) & (p <= high)
        kept.append(x[keep].cpu())
        probs.append(p[keep].cpu())
    return torch.cat(kept), torch.cat(probs).numpy()


def saliency(C, images):
    """|d C(x) / d x| of each image (N, 1, H, W) -> numpy (N, H, W)."""
    x = images.clone().requires_grad_(True)
    C(x).sum().backward()
    return x.grad.abs().amax(1).cpu().numpy()


def run(config, report, data, *, cache=None):
    device = report.device
    up, epoch, row = select_checkpoint(of_classifier(report.upstreams("gasten_step2"), config.nf),
                                       config.checkpoint, config.checkpoint_epoch)
    C = load_classifier(up.torch("classifier.pt"), device)
    images, probs = _draw_ambiguous(config, up, epoch, C, device, cache)
    fid_key = next(k for k in row.index if k.startswith("fid_"))
    metrics = {"n_ambiguous": len(images), "ambiguous_fraction": len(images) / config.n_samples,
               "selected_epoch": epoch, "selected_fid": float(row[fid_key]),
               "selected_acd": float(row["acd"])}
    report.tag("raydiff.selected_checkpoint", f"{up.run_id or up.folder.name}:{epoch}")
    report.tag("raydiff.selected_fid_metric", fid_key)
    selected = {k: up.params[k] for k in SELECTED_KEYS if k in up.params}
    for k, v in selected.items():
        report.tag(f"raydiff.selected.{k}", v)
    binary = binary_data(config, data, device)
    with torch.no_grad():
        test_probs = C(binary.test_x).cpu().numpy()
    test_ambiguous = np.flatnonzero((test_probs >= config.low) & (test_probs <= config.high))
    metrics["n_ambiguous_test"] = len(test_ambiguous)
    if len(images) < max(config.min_ambiguous, 2 * config.cv_folds):
        report.tag("raydiff.too_few_ambiguous", len(images))
        metrics.update({"silhouette_cv": -1.0, f"silhouette_cv_{config.cv_scorer}": -1.0,
                        "n_clusters": 0})
        report(metrics)
        return metrics

    features = embed(C.features, images.to(device))
    found, folds, labels, protos = _cluster(config, features)
    metrics.update(found)
    sizes = {int(c): int((labels == c).sum()) for c in sorted(protos)}
    report.json("clusters.json", {"sizes": sizes, "prototypes": protos, "folds": folds,
                                  "checkpoint": str(up.run_id or up.folder.name), "epoch": epoch,
                                  "selected": selected})

    drawn = config.figures.enabled
    test_x = binary.test_x[:config.figures.embedding_test_size]
    xy = _two_d(config, features, embed(C.features, test_x)) if drawn else None
    table = pd.DataFrame({"index": np.arange(len(labels)), "prob": probs, "cluster": labels,
                          "prototype": np.isin(np.arange(len(labels)), list(protos.values()))})
    if xy is not None:
        table["x"], table["y"] = xy[0][:, 0], xy[0][:, 1]
    report.table("ambiguous.parquet", table)
    report.array("ambiguous_images.npy", images.numpy().astype(np.float16))
    if drawn:
        _figures(report, config, C, images, probs, labels, protos, xy, binary, test_probs,
                 test_ambiguous)
    report(metrics)
    return metrics


def _draw_ambiguous(config, up, epoch, C, device, cache):
    """(images, classifier probabilities) of the ambiguous samples the step-2 generator
    of checkpoint ``epoch`` draws, cached per worker: the trials of a search that share
    the draw (the same checkpoint, count, seed and band) draw once."""
    key = (up.run_id or str(up.folder), epoch, config.n_samples, config.sample_seed, config.low,
           config.high)

    def draw():
        state = up.torch(f"step2_epoch{epoch:03d}.pt")
        G, _ = make_gan(z_dim=state["z_dim"], width=state["width"])
        G.load_state_dict(state["G"])
        G = G.to(device).eval()
        return ambiguous_samples(G, C, n=config.n_samples, z_dim=state["z_dim"],
                                 seed=config.sample_seed, low=config.low, high=config.high,
                                 device=device)

    return (WORKER_CACHE if cache is None else cache).get(key, draw)


def _pipeline_params(config):
    """The reducer's and clusterer's keyword arguments the config's choice of them uses."""
    params = {"n_components": config.n_components, "n_neighbors": config.n_neighbors,
              "min_dist": config.min_dist, "n_epochs": config.umap_epochs,
              "gmm_n_components": config.gmm_n_components,
              "hdbscan_epsilon": config.hdbscan_epsilon,
              "hdbscan_min_cluster_size": config.hdbscan_min_cluster_size,
              "hdbscan_min_samples": config.hdbscan_min_samples}
    if config.clusterer == "gmm":
        params = {k: v for k, v in params.items() if not k.startswith("hdbscan_")}
    else:
        params.pop("gmm_n_components")
    if config.reducer == "pca":
        params = {k: v for k, v in params.items() if k not in ("n_neighbors", "min_dist", "n_epochs")}
    return params


def _cluster(config, features):
    """Cluster the ambiguous samples' ``features``: the cross-validated silhouette (what a
    search optimises), then one reduction and clustering of all of them. Returns (metrics,
    the folds' scores, cluster labels, {cluster: medoid index})."""
    params = _pipeline_params(config)
    metrics = {}
    metrics["silhouette_cv"], folds = cv_silhouette(features, reducer=config.reducer,
                                                    clusterer=config.clusterer,
                                                    folds=config.cv_folds, seed=config.sample_seed,
                                                    scorer=config.cv_scorer, **params)
    # the search optimises silhouette_cv; the named copy says which scorer produced it
    metrics[f"silhouette_cv_{config.cv_scorer}"] = metrics["silhouette_cv"]
    red = {k: params[k] for k in ("n_components", "n_neighbors", "min_dist", "n_epochs") if k in params}
    reducer = make_reducer(config.reducer, n_samples=len(features), seed=config.sample_seed, **red)
    z = reducer.fit_transform(features)
    clu = {k: v for k, v in params.items() if k not in red}
    labels = Clusters(config.clusterer, z, seed=config.sample_seed, **clu).labels
    protos = medoids(z, labels)
    sizes = [int((labels == c).sum()) for c in protos]
    metrics.update(quality(z, labels))
    metrics.update({"n_clusters": len(protos), "n_noise": int((labels < 0).sum()),
                    "largest_cluster_fraction": max(sizes) / len(labels) if sizes else 0.0})
    return metrics, folds, labels, protos


def _two_d(config, features, test_features):
    """2-D coordinates of the ambiguous and the test images, from one joint fit."""
    both = np.concatenate([features, test_features])
    reducer = make_reducer(config.reducer, n_components=2, n_neighbors=config.n_neighbors,
                           min_dist=config.min_dist, n_epochs=config.umap_epochs,
                           n_samples=len(both), seed=config.sample_seed)
    xy = reducer.fit_transform(both)
    return xy[:len(features)], xy[len(features):]


def _figures(report, config, C, images, probs, labels, protos, xy, binary, test_probs,
             test_ambiguous):
    fig = config.figures
    clusters = sorted(protos)
    proto_idx = [protos[c] for c in clusters]
    if clusters:
        report.figure("prototypes.png", image_grid(
            images[proto_idx], ncols=len(clusters), size=1.4,
            titles=[f"cluster {c}\nn={int((labels == c).sum())} C={probs[i]:.2f}"
                    for c, i in zip(clusters, proto_idx)], title="prototypes (medoids)"))
    for c in clusters:
        members = np.flatnonzero(labels == c)[:fig.grid_size]
        report.figure(f"cluster_{c:02d}.png", image_grid(
            images[members], ncols=6, title=f"cluster {c}: {int((labels == c).sum())} images"))

    amb_xy, test_xy = xy
    report.figure("embedding_2d.png", gasten_plots.embedding(
        amb_xy, test_xy, labels, clusters, proto_idx, binary.test_y[:len(test_xy)].cpu().numpy(),
        pos=config.pos, neg=config.neg, reducer=config.reducer))

    if clusters:
        maps = saliency(C, images[proto_idx].to(next(C.parameters()).device))
        report.figure("saliency.png", gasten_plots.saliency(
            images[proto_idx].numpy(), maps, clusters))

    if fig.baseline_size and len(test_ambiguous):
        rng = np.random.default_rng(config.sample_seed)
        pick = rng.choice(test_ambiguous, size=min(fig.baseline_size, len(test_ambiguous)),
                          replace=False)
        report.figure("baseline_test_ambiguous.png", image_grid(
            binary.test_x[torch.as_tensor(pick)], ncols=len(pick), size=1.4,
            titles=[f"C={test_probs[i]:.2f}" for i in pick],
            title=f"baseline: random real test images with {config.low} <= C <= {config.high}"))
