"""Every training trial names what it trained on: the samples and the labels it fit,
declared with ``report.trains_on`` and logged by the trainable as the MLflow run's
dataset input (the UI's Dataset column), so equal digests mean equal training sets."""

import numpy as np
import pandas as pd
import pytest

from conftest import toy_dataset
from raydiff import tracking
from raydiff.data import load_dataset
from raydiff.experiments import crossval, get_experiment, imbalance, retrain
from raydiff.experiments import data_params as dpx
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import build_config
from raydiff.tune import describe

pytestmark = pytest.mark.usefixtures("one_thread")


TRAIN = dict(dataset="blobs", subset_size=None, noise_ratio=0.25, seed=3, model="simple_nn",
             hidden=[16], epochs=2, batch_size=32, lr=0.1, weight_decay=0.0, lr_milestones=[],
             checkpoint_every=2)


def test_a_crossval_fold_trains_on_the_other_folds_with_their_noisy_labels(tmp_path):
    data = toy_dataset(n=200)
    sets, held = [], []
    for fold in range(3):
        report = Report(tmp_path / f"f{fold}")
        metrics = crossval.run(build_config(crossval.Config, {**TRAIN, "folds": 3, "fold": fold}),
                               report, data)
        oof = pd.read_parquet(report.folder / "oof.parquet")
        train = report.training_set
        # disjoint from its held-out part; with the clean validation part (held out of
        # training to choose the epoch, oof_epoch: best_clean) together the whole subset
        assert not set(train["sample_id"]) & set(oof["sample_id"])
        assert len(train) + len(oof) + metrics["n_clean_val"] == 200
        # the labels it fit are the noisy ones: some differ from the truth
        truth = data.y[train["sample_id"].to_numpy()]
        assert (train["observed_label"].to_numpy() != truth).sum() == train["is_noisy"].sum() > 0
        sets.append(describe.data_digest(train["sample_id"], train["observed_label"]))
        held.append(oof)
    assert len(set(sets)) == 3                        # each fold its own training set

    # packed, each fold declares the same set it declares alone
    configs = [build_config(crossval.Config, {**TRAIN, "folds": 3, "fold": f}) for f in range(3)]
    reports = [Report(tmp_path / f"p{f}") for f in range(3)]
    crossval.run_pack(configs, reports, data)
    assert [describe.data_digest(r.training_set["sample_id"], r.training_set["observed_label"])
            for r in reports] == sets


def _identify_table(data, hard_every=4):
    """A hand-made identify result over the whole toy set: every 4th sample hard, the
    labels of samples 0, 5, 10, ... flipped to the next class."""
    n = len(data.y)
    ids = np.arange(n)
    noisy = ids % 5 == 0
    observed = np.where(noisy, (data.y + 1) % data.num_classes, data.y)
    return pd.DataFrame({"sample_id": ids, "label": data.y, "observed_label": observed,
                         "is_noisy": noisy, "noise_kind": "uniform", "split": "train",
                         "hard": pd.array(ids % hard_every == 0, dtype="boolean"),
                         "score": (ids % hard_every == 0).astype(float)})


def test_an_imbalance_cell_trains_on_its_reduced_split_with_identifys_labels(tmp_path):
    data = toy_dataset(n=200)
    (tmp_path / "identify").mkdir()
    table = _identify_table(data)
    table.to_parquet(tmp_path / "identify" / "per_sample.parquet")
    up = {"identify": Upstream(tmp_path / "identify")}
    digests = {}
    for remaining in (0.0, 1.0):
        config = build_config(imbalance.Config, {"subset_size": None, "epochs": 2,
                                                 "models_per_cell": 1, "train_ratio": 0.8,
                                                 "remaining_train_ratio": remaining})
        report = Report(tmp_path / f"r{remaining}", upstream=up)
        metrics = imbalance.run(config, report, data)
        train = report.training_set
        assert len(train) == metrics["n_train"]
        hard = table.set_index("sample_id").loc[train["sample_id"]]
        assert int(hard["hard"].sum()) == metrics["n_train_hard"]
        # identify's observed (noisy) labels, not the dataset's
        assert (train["observed_label"].to_numpy() == hard["observed_label"].to_numpy()).all()
        assert train["is_noisy"].sum() == hard["is_noisy"].sum() > 0
        if remaining == 0.0:          # no easy sample left: the hard training samples only
            assert hard["hard"].all() and len(train) > 0
        digests[remaining] = describe.data_digest(train["sample_id"], train["observed_label"])
    assert digests[0.0] != digests[1.0]


def test_retrain_trains_on_what_it_keeps(tmp_path):
    data = toy_dataset(n=300)
    dp = build_config(dpx.Config, {**TRAIN, "epochs": 3, "noise_ratio": 0.3,
                                   "figures": {"enrich_classes": 0}, "variant": "instance",
                                   "lr_instance": 0.5, "test_fraction": 0.2})
    dpx.run(dp, Report(tmp_path / "dp"), data)
    cfg = build_config(retrain.Config, {**TRAIN, "epochs": 1, "noise_ratio": 0.3,
                                        "subset_frac": 0.5})
    report = Report(tmp_path / "rt", upstream={"data_params": Upstream(tmp_path / "dp")})
    metrics = retrain.run(cfg, report, data)
    scored = pd.read_parquet(tmp_path / "dp" / "per_sample.parquet")
    train = report.training_set
    assert len(train) == metrics["n_train"] == int(len(scored) * 0.5)
    kept = scored.set_index("sample_id").loc[train["sample_id"]]
    dropped = scored[~scored["sample_id"].isin(train["sample_id"])]
    assert kept["score"].max() <= dropped["score"].min()       # the highest sigma left out


def test_gasten_stages_train_on_the_pair_with_its_true_classes(tmp_path):
    mnist = load_dataset("mnist5k")
    values = {"subset_size": 400, "pos": 7, "neg": 1, "epochs": 1}
    found = {}
    for name, extra in (("gasten_classifier", {"nf": 1}),
                        ("gasten_step1", {"width": 4, "z_dim": 8, "batch_size": 64,
                                          "figures": False})):
        module = get_experiment(name)
        report = Report(tmp_path / name)
        module.run(build_config(module.Config, {**values, **extra}), report, mnist)
        train = report.training_set
        assert set(train["observed_label"]) == {1, 7}
        assert (train["observed_label"].to_numpy() == mnist.y[train["sample_id"]]).all()
        found[name] = set(train["sample_id"])
    # the classifier holds out a validation part of the GAN's training images
    assert found["gasten_classifier"] < found["gasten_step1"]


def test_the_trainable_logs_a_declared_training_set_as_the_runs_dataset_input(workdir):
    from raydiff.tune.trainable import TuneReport

    tracker = tracking.Tracker()
    exp = tracker.experiment_id("inputs")
    run_id, _ = tracker.trial_run(exp, stage="s", trial_id="t1", run_name="s",
                                  params={}, tags={tracking.TAG_SESSION: "x"})
    report = TuneReport(workdir / "art", tracker=tracker, run_id=run_id,
                        config={"dataset": "mnist5k", "noise_ratio": 0.2, "noise_kind": "pair"})
    ids, labels = np.array([5, 3, 9]), np.array([1, 0, 2])
    report.trains_on(ids, labels, is_noisy=[True, False, False])
    # a per-sample table written later does not replace what the trial declared
    report.table("per_sample.parquet", pd.DataFrame({"sample_id": [1], "observed_label": [0]}))
    inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [
        ("mnist5k", describe.data_digest(ids, labels))]
    assert '"noise_kind": "pair"' in inputs[0].dataset.profile
    assert '"noisy_labels": 1' in inputs[0].dataset.profile
