"""GASTeN: the confusion term, the min-norm solver, FID, the Pareto front, clustering and
prototypes on planted data, resumption, and the four stages chained in plain Python."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from raydiff.data import load_dataset
from raydiff.engine.cluster import Clusters, cv_silhouette, make_reducer, medoids, quality
from raydiff.engine.fid import acd, fid, frechet_distance
from raydiff.engine.gan import confusion_distance, parse_alpha
from raydiff.engine.mgda import min_norm_weights
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.models.gasten import make_classifier, make_gan
from raydiff.scores.pareto import pareto_best, pareto_front


class Half(torch.nn.Module):
    def forward(self, x):
        return torch.full((len(x),), 0.5) + 0 * x.sum((1, 2, 3))


def test_confusion_distance_is_zero_at_half_and_its_gradient_reaches_the_generator():
    torch.manual_seed(0)
    G, _ = make_gan(z_dim=8, width=4, seed=0)
    z = torch.randn(6, 8)
    assert confusion_distance(Half()(G(z))).item() == 0.0
    assert confusion_distance(torch.tensor([0.1, 0.9, 0.5])).item() == pytest.approx(0.8 / 3)

    C = make_classifier("cnn", 2, seed=1)
    for p in C.parameters():
        p.requires_grad_(False)
    loss = confusion_distance(C(G(z)))
    assert loss.item() > 0
    loss.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in C.parameters())


def test_min_norm_solver_on_known_gradients():
    assert min_norm_weights([1.0, 0.0], [0.0, 1.0]) == pytest.approx((0.5, 0.5))
    w1, w2 = min_norm_weights([1.0, 0.0], [0.0, 2.0])
    assert (w1, w2) == pytest.approx((0.8, 0.2))
    point = w1 * np.array([1.0, 0.0]) + w2 * np.array([0.0, 2.0])
    assert point @ (np.array([1.0, 0.0]) - np.array([0.0, 2.0])) == pytest.approx(0.0)
    # collinear: the shorter gradient is the min-norm point
    assert min_norm_weights([1.0, 0.0], [3.0, 0.0]) == pytest.approx((1.0, 0.0))
    assert min_norm_weights([3.0, 0.0], [1.0, 0.0]) == pytest.approx((0.0, 1.0))
    assert min_norm_weights([2.0, 2.0], [2.0, 2.0]) == (0.5, 0.5)


def test_alpha_parsing_and_config_check():
    assert parse_alpha("mgda") == "mgda" and parse_alpha(25) == 25.0 and parse_alpha("5") == 5.0
    for bad in ("mgd", -1, True):
        with pytest.raises(ValueError, match="alpha"):
            parse_alpha(bad)
    step2 = get_experiment("gasten_step2")
    with pytest.raises(ConfigError, match="alpha"):
        build_config(step2.Config, {"alpha": "fast"})
    with pytest.raises(ConfigError, match="pos and neg"):
        build_config(step2.Config, {"pos": 3, "neg": 3})


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 8))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shifts = [fid(a, a + s) for s in (0.1, 0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * s ** 2 for s in (0.1, 0.5, 1.0, 2.0)], rel=1e-6)
    assert np.all(np.diff(shifts) > 0)
    # known Gaussians: N(0, 1) vs N(0, 4) in 1-d -> 1 + 4 - 2 * 2 = 1
    assert frechet_distance([0.0], [[1.0]], [0.0], [[4.0]]) == pytest.approx(1.0)
    # dead features (constant columns) still give a finite distance
    b = a.copy()
    b[:, 0] = 0
    assert np.isfinite(fid(b, a)) and fid(b, b) == pytest.approx(0.0, abs=1e-4)
    assert acd([0.5, 0.5]) == 0.0 and acd([0.0, 1.0]) == 0.5


def test_pareto_front_of_a_hand_made_table():
    #            FID   ACD
    table = [[10.0, 0.30],   # 0 front (best FID)
             [12.0, 0.10],   # 1 front
             [12.0, 0.20],   # 2 dominated by 1
             [30.0, 0.01],   # 3 front (best ACD)
             [31.0, 0.01],   # 4 dominated by 3
             [10.0, 0.30],   # 5 duplicate of a front point: on it too
             [np.nan, 0.0]]  # 6 NaN: never
    assert pareto_front(table).tolist() == [True, True, False, True, False, True, False]
    assert pareto_best(table) == 1          # nearest the ideal after scaling
    with pytest.raises(ValueError):
        pareto_best([[np.nan, 1.0]])


def _blobs(seed=0, n=40):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    x = np.concatenate([c + rng.normal(scale=0.5, size=(n, 3)) for c in centres])
    return x, np.repeat(np.arange(3), n)


def test_umap_reducer_keeps_planted_blobs_apart():
    """The ambiguity stage's default reducer (cosine UMAP) on planted blobs: the held-out
    silhouette of the right number of clusters is high."""
    _, truth = _blobs()
    # cosine distance sees directions only: one blob around each axis
    x = 10 * np.eye(3)[truth] + np.random.default_rng(0).normal(scale=0.5, size=(len(truth), 3))
    mean, folds = cv_silhouette(x, reducer="umap", clusterer="gmm", folds=2, n_components=2,
                                n_neighbors=5, gmm_n_components=3)
    assert len(folds) == 2 and mean > 0.5


def test_medoid_is_the_most_central_member():
    z = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 10.0], [10.0, 12.0], [10.0, 11.0],
                  [50.0, 50.0]])
    labels = np.array([0, 0, 0, 1, 1, 1, -1])
    assert medoids(z, labels) == {0: 1, 1: 5}


def test_clustering_recovers_planted_blobs():
    x, truth = _blobs()
    for kind, params in (("gmm", {"gmm_n_components": 3}),
                         ("hdbscan", {"hdbscan_min_cluster_size": 5, "hdbscan_epsilon": 3.0})):
        labels = Clusters(kind, x, **params).labels
        kept = labels >= 0
        assert len(set(labels[kept])) == 3
        # every planted blob is one cluster
        for c in range(3):
            assert len(set(labels[(truth == c) & kept])) == 1
        assert quality(x, labels)["silhouette"] > 0.8
        mean, folds = cv_silhouette(x, reducer="pca", clusterer=kind, folds=3, n_components=2,
                                    **params)
        assert len(folds) == 3 and mean > 0.7
    # one cluster too many for the data: a worse held-out silhouette
    worse, _ = cv_silhouette(x, reducer="pca", clusterer="gmm", folds=3, n_components=2,
                             gmm_n_components=8)
    assert worse < mean
    assert make_reducer("umap", n_components=60, n_samples=30).n_components == 28


def test_cv_scorers_refit_on_the_fold_or_predict_it_from_the_others():
    x, _ = _blobs()                                    # 3 blobs of 40 points
    params = dict(reducer="pca", clusterer="gmm", folds=3, n_components=2, gmm_n_components=3)
    refit, refit_folds = cv_silhouette(x, scorer="refit", **params)
    predict, predict_folds = cv_silhouette(x, scorer="predict", **params)
    assert refit > 0.7 and predict > 0.7               # clean blobs: both see them
    assert refit_folds != predict_folds                # but they score different fits
    # refit is the original's recipe: each held-out fold reduced and clustered on its own
    _, test = next(KFold(n_splits=3, shuffle=True, random_state=0).split(x))
    z = make_reducer("pca", n_components=2, n_samples=len(test)).fit_transform(x[test])
    assert refit_folds[0] == pytest.approx(
        quality(z, Clusters("gmm", z, gmm_n_components=3).labels)["silhouette"])
    # planted difference: clusters of >= 15 points exist in two folds (about 27 per blob),
    # not in one fold alone (about 13 per blob): predict finds them, refit can only merge
    # blobs or call them noise
    hdb = dict(reducer="pca", clusterer="hdbscan", folds=3, n_components=2,
               hdbscan_min_cluster_size=15, hdbscan_epsilon=3.0)
    assert cv_silhouette(x, scorer="predict", **hdb)[0] > 0.7
    assert cv_silhouette(x, scorer="refit", **hdb)[0] < 0.3
    with pytest.raises(ValueError, match="unknown cv scorer 'oof'.*refit.*predict"):
        cv_silhouette(x, scorer="oof", **params)
    with pytest.raises(ConfigError, match=r"cv_scorer='oof'.*\['refit', 'predict'\]"):
        build_config(get_experiment("gasten_ambiguity").Config, {"cv_scorer": "oof"})
    assert build_config(get_experiment("gasten_ambiguity").Config, {}).cv_scorer == "refit"


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def _stage(tmp, data, name, values, upstream=None, resume_state=None, folder=None):
    module = get_experiment(name)
    report = Report(tmp / (folder or name), upstream=upstream, resume_state=resume_state)
    metrics = module.run(build_config(module.Config, values), report, data)
    return Upstream(report.folder, values, run_id=folder or name), report, metrics


DATA = {"subset_size": 1200, "pos": 7, "neg": 1}
GAN = {**DATA, "batch_size": 32}


@pytest.fixture(scope="module")
def chain(mnist, tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("gasten")
    clf, _, clf_metrics = _stage(tmp, mnist, "gasten_classifier", {**DATA, "nf": 2, "epochs": 8})
    feat, _, _ = _stage(tmp, mnist, "gasten_featnet", {"subset_size": 1200, "epochs": 1})
    s1, _, _ = _stage(tmp, mnist, "gasten_step1", {**GAN, "epochs": 1, "width": 8, "z_dim": 16})
    ups = {"gasten_classifier": clf, "gasten_step1": s1, "gasten_featnet": feat}
    step2 = {**GAN, "epochs": 2, "step1_epoch": 1, "checkpoint_every": 1, "test_noise_size": 256,
             "figures": {"grid_size": 16}}
    runs = {}
    for alpha in (0, "mgda", 30):
        runs[alpha] = _stage(tmp, mnist, "gasten_step2", {**step2, "alpha": alpha}, ups,
                             folder=f"step2_{alpha}")
    return tmp, ups, step2, runs, clf_metrics


def test_classifier_learns_the_pair_and_saves_its_model(chain):
    tmp, ups, *_, clf_metrics = chain
    assert clf_metrics["test_accuracy"] > 90
    state = ups["gasten_classifier"].torch("classifier.pt")
    assert state["kind"] == "cnn" and state["nf"] == 2


def test_step2_logs_fid_focd_acd_per_epoch_and_the_confusion_term_lowers_acd(chain):
    tmp, ups, step2, runs, _ = chain
    tables = {a: up.table("metrics.parquet") for a, (up, _, _) in runs.items()}
    for alpha, table in tables.items():
        assert table["epoch"].tolist() == [0, 1, 2]
        assert table["saved"].tolist() == [False, True, True]
        assert {"fid_smallcnn", "focd", "acd"} <= set(table.columns)
        up, report, _ = runs[alpha]
        assert [s for s, m in report.history if "fid_smallcnn" in m] == [0, 1, 2]
        assert up.array("test_noise.npy").shape == (256, 16)
        assert (up.folder / "grid_epoch002.png").exists()
        assert (up.folder / "step2_epoch002.pt").exists()
    # the same test noise in every run
    assert np.array_equal(runs[0][0].array("test_noise.npy"), runs["mgda"][0].array("test_noise.npy"))
    # pushing towards the boundary makes the samples more ambiguous than the plain GAN
    assert tables[30]["acd"].iloc[-1] < tables[0]["acd"].iloc[-1]
    assert tables["mgda"]["acd"].iloc[-1] < tables[0]["acd"].iloc[-1]
    assert "mgda_weight" in runs["mgda"][1].last and "loss_cd" in runs[0][1].last


def test_step2_resumes_from_its_last_checkpoint(chain, mnist):
    tmp, ups, step2, runs, _ = chain
    # killed after epoch 1: the checkpoint it left is what Tune hands back
    _, first, _ = _stage(tmp, mnist, "gasten_step2", {**step2, "alpha": 30, "epochs": 1}, ups,
                         folder="killed")
    state = torch.load(first.folder / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    up, resumed, _ = _stage(tmp, mnist, "gasten_step2", {**step2, "alpha": 30}, ups,
                            resume_state=state, folder="killed")
    assert [s for s, _ in resumed.history if s is not None] == [2]     # no epoch redone
    assert resumed.tags["raydiff.resumed_from_epoch"] == "1"
    whole = runs[30][0].table("metrics.parquet")
    again = up.table("metrics.parquet")
    assert again["epoch"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(again["acd"], whole["acd"], rtol=1e-4)
    np.testing.assert_allclose(again["fid_smallcnn"], whole["fid_smallcnn"], rtol=1e-3)


def test_ambiguity_stage_end_to_end(chain, mnist):
    tmp, ups, step2, runs, _ = chain
    gathered = [up for up, _, _ in runs.values()]
    amb = {**DATA, "n_samples": 2000, "reducer": "pca", "n_components": 4, "cv_folds": 3,
           "gmm_n_components": 3, "figures": {"embedding_test_size": 100}}
    up, report, metrics = _stage(tmp, mnist, "gasten_ambiguity", amb,
                                 {"gasten_step2": gathered})
    tables = {str(u.run_id): u.table("metrics.parquet") for u in gathered}
    points = [(run, int(r["epoch"]), r["fid_smallcnn"], r["acd"]) for run, t in tables.items()
              for _, r in t.iterrows() if r["saved"]]
    best = points[pareto_best(np.array([p[2:] for p in points]))]
    assert report.tags["raydiff.selected_checkpoint"] == f"{best[0]}:{best[1]}"
    assert metrics["selected_acd"] == pytest.approx(best[3])
    table = up.table("ambiguous.parquet")
    assert len(table) == metrics["n_ambiguous"] > 0
    assert table["prob"].between(0.4, 0.6).all()
    assert metrics["n_clusters"] == 3 and table["prototype"].sum() == 3
    assert -1 <= metrics["silhouette"] <= 1 and -1 <= metrics["silhouette_cv"] <= 1
    for name in ("prototypes.png", "cluster_00.png", "embedding_2d.png", "saliency.png"):
        assert (up.folder / name).exists(), name

    explicit = {**amb, "checkpoint": "step2_0", "checkpoint_epoch": 1, "figures": False}
    _, report, metrics = _stage(tmp, mnist, "gasten_ambiguity", explicit,
                                {"gasten_step2": gathered}, folder="explicit")
    assert report.tags["raydiff.selected_checkpoint"] == "step2_0:1"
    assert report.tags["raydiff.selected.alpha"] == "0"
    with pytest.raises(ConfigError, match="no gathered step-2 run used a classifier with 3"):
        _stage(tmp, mnist, "gasten_ambiguity", {**explicit, "nf": 3},
               {"gasten_step2": gathered}, folder="bad")
    with pytest.raises(ConfigError, match="saved its generator at epochs"):
        _stage(tmp, mnist, "gasten_ambiguity", {**explicit, "checkpoint_epoch": 7},
               {"gasten_step2": gathered}, folder="bad")


def test_reports_mark_the_pareto_front_and_copy_the_best_clustering(chain, mnist, tmp_path):
    import pandas as pd

    from raydiff.report import FolderContext, build_report

    root, ups, step2, runs, _ = chain
    amb = {**DATA, "n_samples": 1500, "reducer": "pca", "n_components": 3, "cv_folds": 2,
           "figures": {"embedding_test_size": 50}}
    for k in (2, 3):
        _stage(root, mnist, "gasten_ambiguity", {**amb, "gmm_n_components": k},
               {"gasten_step2": [up for up, _, _ in runs.values()]}, folder=f"amb{k}")
    rows = [{"run_id": f"step2_{a}", "experiment": "gasten_step2", "alpha": a, "step1_epoch": 1,
             "classifier.nf": 2, "run": 0} for a in runs]
    for k in (2, 3):
        metrics = pd.read_json(root / f"amb{k}" / "clusters.json", typ="series")
        assert len(metrics["sizes"]) == k
        rows.append({"run_id": f"amb{k}", "experiment": "gasten_ambiguity", "reducer": "pca",
                     "clusterer": "gmm", "checkpoint": "pareto-best", "gmm_n_components": k,
                     "m.silhouette_cv": 0.1 * k, "m.n_clusters": k})
    out = tmp_path / "report"
    build_report(FolderContext(pd.DataFrame(rows), out, root))
    front = pd.read_csv(out / "gasten_pareto.csv")
    assert len(front) == 3 * 2 and set(front["fid_net"]) == {"smallcnn"}
    assert front["on_front"].tolist() == pareto_front(front[["fid", "acd"]].to_numpy()).tolist()
    assert front["pareto_best"].sum() == 1
    assert (out / "gasten_pareto_smallcnn_nf2.png").exists()
    best = pd.read_csv(out / "gasten_ambiguity_best.csv")
    assert best["run_id"].tolist() == ["amb3"]              # the higher silhouette_cv
    assert (out / "gasten_ambiguity_gmm_prototypes.png").exists()
    assert (out / "gasten_ambiguity_gmm_cluster_02.png").exists()


def test_inception_features_come_from_local_weights_only(tmp_path, monkeypatch, mnist):
    from torchvision.models import inception_v3

    from raydiff.engine.fid import (INCEPTION_ENV, InceptionFeatures, find_inception_weights,
                                    inception_name)
    from raydiff.experiments._gasten import load_feature_net

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    assert find_inception_weights() is None
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        find_inception_weights(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="no InceptionV3 weights"):
        _stage(tmp_path, mnist, "gasten_featnet", {"feature_net": "inception"})

    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    monkeypatch.setenv(INCEPTION_ENV, str(path))
    up, report, _ = _stage(tmp_path, mnist, "gasten_featnet", {"feature_net": "auto"})
    # torchvision's ImageNet weights are not the papers' TF-FID Inception: named apart
    assert up.torch("featnet.pt")["name"] == "inception_tv" and report.history == []
    assert inception_name(path) == "inception_tv"
    net = InceptionFeatures(path).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 2048)
    fn, name = load_feature_net({"name": "inception", "weights_path": str(path)})   # old artifact
    assert name == "inception_tv"
    # a 1008-way classifier says TF-FID (fid_inception); the TF-FID network loads strictly,
    # so a file with nothing else in it is refused (tests/test_fid.py loads a whole one)
    tf = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, tf)
    assert inception_name(tf) == "inception"
    with pytest.raises(RuntimeError, match="Missing key"):
        InceptionFeatures(tf)
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bad)
    with pytest.raises(ValueError, match="not an InceptionV3"):
        inception_name(bad)
    # cached downloads in torch hub's folder: pytorch-fid's TF-FID file before torchvision's
    from torchvision.models import Inception_V3_Weights

    from raydiff.engine.fid import TF_FID_FILE
    monkeypatch.delenv(INCEPTION_ENV)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    tv_cached = cache / Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    tv_cached.write_bytes(path.read_bytes())
    assert find_inception_weights() == tv_cached
    (cache / TF_FID_FILE).write_bytes(tf.read_bytes())
    assert find_inception_weights() == cache / TF_FID_FILE


@pytest.mark.slow
def test_four_stages_through_the_cli_ray_and_mlflow(workdir):
    import subprocess

    import pandas as pd
    import yaml
    from mlflow.tracking import MlflowClient

    from conftest import RAYDIFF

    sweep = {
        "name": "gasten_e2e", "resources": {"cpu": 1},
        "config": {"dataset": "mnist5k", "subset_size": 800, "pos": 7, "neg": 1},
        "stages": {
            "classifier": {"experiment": "gasten_classifier", "config": {"nf": 2, "epochs": 2}},
            "featnet": {"experiment": "gasten_featnet", "config": {"epochs": 1}},
            "step1": {"experiment": "gasten_step1", "config": {"epochs": 1, "width": 8, "z_dim": 16}},
            "step2": {"experiment": "gasten_step2", "after": ["classifier", "step1", "featnet"],
                      "config": {"step1_epoch": 1, "alpha": {"grid": [0, "mgda"]}, "epochs": 2,
                                 "checkpoint_every": 1, "test_noise_size": 256,
                                 "figures": {"grid_every": 2}}},
            # PCA: UMAP's numba compilation costs each fresh worker about a minute; UMAP has
            # its own in-process test above
            "ambiguity": {"experiment": "gasten_ambiguity", "after": "step2",
                          "search": {"metric": "silhouette_cv", "mode": "max", "num_samples": 3},
                          "config": {"n_samples": 1000, "cv_folds": 2,
                                     "figures": {"embedding_test_size": 100},
                                     "reducer": "pca",
                                     "n_components": {"randint": [2, 6]},
                                     "gmm_n_components": {"randint": [2, 4]}}},
        },
    }
    (workdir / "g.yaml").write_text(yaml.safe_dump(sweep))
    done = subprocess.run(RAYDIFF + ["run", "g.yaml", "--num-cpus", "2", "--no-dashboard"],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage, n in (("classifier", 1), ("featnet", 1), ("step1", 1), ("step2", 2), ("ambiguity", 3)):
        assert f"stage {stage}: {n} trials finished, 0 failed" in done.stdout
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gasten_e2e")
    runs = client.search_runs([exp.experiment_id], "tags.`raydiff.stage` = 'step2' and "
                              "tags.`raydiff.kind` = 'trial'")        # not the stage's parent run
    assert len(runs) == 2
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "fid_smallcnn")]
        assert sorted(steps) == [0, 1, 2]
        assert run.data.params["classifier.nf"] == "2"
    report = subprocess.run(RAYDIFF + ["report", "gasten_e2e", "--out", "rep"],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    front = pd.read_csv(workdir / "rep" / "gasten_pareto.csv")
    assert len(front) == 4 and front["pareto_best"].sum() == 1
    trials = pd.read_csv(workdir / "rep" / "gasten_ambiguity_trials.csv")
    assert len(trials) == 3 and trials["silhouette_cv"].between(-1, 1).all()
    assert (workdir / "rep" / "gasten_classifiers.csv").exists()
