"""The noisy-label benchmark: training-dynamics and confident-learning scores on planted
truth, the same noisy labels in every method's trial, and the report on hand-made tables."""

import dataclasses
import functools
import itertools

import numpy as np
import pandas as pd
import pytest

from conftest import toy_dataset
from raydiff.data import prepare
from raydiff.experiments import (confident_learning, crossval, data_params, dynamics, identify,
                                 inversion, train_classifier)
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.report import FolderContext, build_report
from raydiff.report import benchmark
from raydiff.scores.dynamics import aum, el2n
from raydiff.tune import sweep as sweeps


pytestmark = pytest.mark.usefixtures("one_thread")


def test_dynamics_aum_stops_at_the_first_milestone_and_el2n_is_an_eval_pass(tmp_path,
                                                                            monkeypatch):
    trained = []

    def keep_model(*args, **kwargs):
        out = real_fit(*args, **kwargs)
        trained.append(out.model)
        return out

    real_fit = dynamics.fit
    monkeypatch.setattr(dynamics, "fit", keep_model)
    data = toy_dataset(n=80)
    cfg = build_config(dynamics.Config, {**TRAIN, "epochs": 6, "lr_milestones": [4, 5],
                                         "el2n_epoch": 6, "el2n_runs": 1})
    metrics = dynamics.run(cfg, Report(tmp_path), data)
    table = pd.read_parquet(tmp_path / "per_sample.parquet")    # in training order
    logits = np.load(tmp_path / "dynamics_logits.npy").astype(np.float64)
    observed = table["observed_label"].to_numpy()
    assert metrics["aum_epochs"] == 4
    np.testing.assert_allclose(table["score_aum"], aum(logits[:4], labels=observed), atol=1e-9)
    # EL2N from the model after epoch 6 in eval mode, not from epoch 6's training pass
    tensors = prepare(data, noise_ratio=TRAIN["noise_ratio"], noise_seed=TRAIN["seed"])
    assert np.array_equal(tensors.sample_id, table["sample_id"])
    eval_logits = dynamics.predict(trained[0], tensors.x).double().numpy()
    np.testing.assert_allclose(table["score_el2n"], el2n(eval_logits, labels=observed),
                               atol=1e-5)
    assert not np.allclose(table["score_el2n"], el2n(logits[-1], labels=observed), atol=1e-3)


# -- experiments: same noisy labels everywhere, detection on planted noise ---------------------

TRAIN = dict(dataset="blobs", subset_size=None, noise_ratio=0.25, seed=3, model="simple_nn",
             hidden=[32], epochs=8, batch_size=32, lr=0.1, weight_decay=0.0, lr_milestones=[],
             checkpoint_every=8)


def run_crossval_and_cl(data, tmp_path, folds=3, **overrides):
    ups = []
    for fold in range(folds):
        cfg = build_config(crossval.Config, {**TRAIN, **overrides, "folds": folds, "fold": fold})
        crossval.run(cfg, Report(tmp_path / f"fold{fold}"), data)
        ups.append(Upstream(tmp_path / f"fold{fold}"))
    common = {k: TRAIN[k] for k in ("dataset", "subset_size", "noise_ratio", "seed")}
    cfg = build_config(confident_learning.Config, {**common, **{
        k: v for k, v in overrides.items() if k in common}})
    report = Report(tmp_path / "cl", upstream={"crossval": ups})
    return confident_learning.run(cfg, report), ups


def test_every_method_sees_the_same_noisy_labels_and_finds_them(tmp_path):
    data = toy_dataset()
    tables = {}
    cfg = build_config(dynamics.Config, {**TRAIN, "el2n_epoch": 2, "el2n_runs": 2})
    metrics = dynamics.run(cfg, Report(tmp_path / "dyn"), data)
    tables["dynamics"] = pd.read_parquet(tmp_path / "dyn" / "per_sample.parquet")
    assert metrics["aum_auroc"] > 0.85 and metrics["cartography_confidence_auroc"] > 0.85

    known = {f.name for f in dataclasses.fields(identify.Config)}
    cfg = build_config(identify.Config, {**{k: v for k, v in TRAIN.items() if k in known},
                                         "hidden": [20, 20], "epochs": 30,
                                         "inversion_start": 2, "check_every": 2})
    identify.run(cfg, Report(tmp_path / "identify"), data)
    tables["identify"] = pd.read_parquet(tmp_path / "identify" / "per_sample.parquet")
    cfg = build_config(inversion.Config, {**{k: v for k, v in TRAIN.items() if k in known},
                                          "hidden": [20, 20], "epochs": 30,
                                          "inversion_start": 2, "check_every": 2})
    inversion.run(cfg, Report(tmp_path / "inversion"), data)
    tables["inversion"] = pd.read_parquet(tmp_path / "inversion" / "per_sample.parquet")

    cfg = build_config(data_params.Config, {**TRAIN, "variant": "instance", "test_fraction": 0.0,
                                            "figures": {"enrich_classes": 0}})
    data_params.run(cfg, Report(tmp_path / "dp"), data)
    tables["data_params"] = pd.read_parquet(tmp_path / "dp" / "per_sample.parquet")

    known = {f.name for f in dataclasses.fields(train_classifier.Config)}
    cfg = build_config(train_classifier.Config, {k: v for k, v in TRAIN.items() if k in known})
    train_classifier.run(cfg, Report(tmp_path / "small_loss"), data)
    tables["small_loss"] = pd.read_parquet(tmp_path / "small_loss" / "per_sample.parquet")

    metrics, _ = run_crossval_and_cl(data, tmp_path)
    assert metrics["detect_auroc"] > 0.85 and metrics["folds"] == 3
    tables["confident_learning"] = pd.read_parquet(tmp_path / "cl" / "per_sample.parquet")

    reference = tables["dynamics"].sort_values("sample_id").reset_index(drop=True)
    assert reference["is_noisy"].sum() == int(0.25 * len(data))
    flipped = reference[reference["is_noisy"]]
    assert (flipped["observed_label"] != flipped["label"]).all()
    for name, table in tables.items():
        table = table.sort_values("sample_id").reset_index(drop=True)
        for column in ("sample_id", "label", "observed_label", "is_noisy"):
            assert np.array_equal(table[column], reference[column]), (name, column)

    # another seed draws other noise
    cfg = build_config(dynamics.Config, {**TRAIN, "seed": 4, "epochs": 1, "el2n_runs": 1})
    dynamics.run(cfg, Report(tmp_path / "dyn4"), data)
    other = pd.read_parquet(tmp_path / "dyn4" / "per_sample.parquet")
    assert not np.array_equal(other["is_noisy"], reference["is_noisy"])


def test_dynamics_table_has_every_score_and_the_cartography_columns(tmp_path):
    cfg = build_config(dynamics.Config, {**TRAIN, "epochs": 3, "el2n_epoch": 9, "el2n_runs": 1,
                                         "method": "el2n"})
    metrics = dynamics.run(cfg, Report(tmp_path), toy_dataset(n=80))
    table = pd.read_parquet(tmp_path / "per_sample.parquet")
    for method in dynamics.METHODS:
        assert f"score_{method}" in table.columns
    assert np.array_equal(table["score"], table["score_el2n"])
    assert {"carto_confidence", "carto_variability", "carto_correctness"} <= set(table.columns)
    assert metrics["el2n_epoch"] == 3           # clipped to the epochs trained
    assert np.load(tmp_path / "dynamics_logits.npy").shape == (3, 80, 4)


def test_crossval_predicts_from_the_best_clean_validation_epoch(tmp_path):
    # overlapping classes, a wide MLP and many epochs of a high rate: each fold model
    # memorises its flipped labels, so its accuracy on clean held-out samples peaks early
    data = toy_dataset(n=300, dim=20, spread=1.0)
    recipe = dict(hidden=[128], epochs=40, batch_size=16, checkpoint_every=40)
    final, _ = run_crossval_and_cl(data, tmp_path / "final", oof_epoch="final", **recipe)
    best, ups = run_crossval_and_cl(data, tmp_path / "best", **recipe)     # best_clean
    chosen = [up.json("crossval.json")["oof_epoch"] for up in ups]
    assert min(chosen) < 40                     # some fold peaked before the end
    # confident learning ranks the planted noisy labels better from the chosen epochs
    assert best["detect_auroc"] > final["detect_auroc"] + 0.02
    assert best["detect_auroc"] > 0.95


def test_both_epoch_choices_find_structured_pair_noise(tmp_path):
    # 40% of each class flipped to one other class: a structured flip the fold models learn.
    # Choosing the epoch on a clean validation part or on the noisy held-out labels, cleanlab
    # still ranks the flips high; which choice scores higher depends on the pair map (seeds
    # 0-7: mean AUROC 0.880 clean, 0.899 noisy; docs/hardness_benchmark.md), so neither is
    # asserted to win.
    data = toy_dataset(n=1200, dim=20, spread=1.0)
    recipe = dict(hidden=[128], epochs=20, batch_size=32, checkpoint_every=20,
                  noise_ratio=0.4, noise_kind="pair", seed=5)
    noisy, _ = run_crossval_and_cl(data, tmp_path / "noisy", oof_epoch="best", **recipe)
    clean, _ = run_crossval_and_cl(data, tmp_path / "clean", oof_epoch="best_clean", **recipe)
    assert clean["detect_auroc"] > 0.8 and noisy["detect_auroc"] > 0.8   # 0.856, 0.946


def test_crossval_best_epoch_is_the_first_clean_validation_maximum_and_its_probabilities(
        tmp_path):
    data = toy_dataset(n=300, dim=20, spread=1.0)
    values = {**TRAIN, "hidden": [128], "epochs": 40, "batch_size": 16, "checkpoint_every": 40,
              "folds": 3, "fold": 1}
    config = build_config(crossval.Config, values)
    assert config.oof_epoch == "best_clean"                   # the default
    report = Report(tmp_path / "long")
    metrics = crossval.run(config, report, data)
    # the clean part: 10% of each observed class of the training part, outside training and
    # the held-out part, the same for the same seed and fold
    prepared = prepare(data, noise_ratio=TRAIN["noise_ratio"], noise_seed=TRAIN["seed"])
    fold = crossval.fold_assignment(prepared.observed_label, folds=3, seed=TRAIN["seed"])
    train, val, held = crossval.fold_parts(config, prepared.observed_label, fold)
    assert len(np.intersect1d(train, val)) == 0 and (fold[val] != 1).all()
    assert len(train) + len(val) + len(held) == 300 and len(val) == metrics["n_clean_val"]
    assert len(val) == sum(int((prepared.observed_label[fold != 1] == c).sum() * 0.1)
                           for c in range(4))
    again = crossval.fold_parts(config, prepared.observed_label, fold)[1]
    assert np.array_equal(val, again)
    accuracy = [m["clean_val_accuracy"] for step, m in report.history if step is not None]
    epoch = int(np.argmax(accuracy)) + 1                     # the first epoch at the maximum
    assert metrics["oof_epoch"] == epoch < 40
    assert report.folder.joinpath("crossval.json").read_text().count(f'"oof_epoch": {epoch}')
    # a run stopped at that epoch (its own first maximum) predicts exactly the saved
    # out-of-fold probabilities
    crossval.run(build_config(crossval.Config, {**values, "epochs": epoch,
                                                "checkpoint_every": epoch}),
                 Report(tmp_path / "short"), data)
    long = pd.read_parquet(tmp_path / "long" / "oof.parquet")
    short = pd.read_parquet(tmp_path / "short" / "oof.parquet")
    p = [c for c in long.columns if c.startswith("p_")]
    np.testing.assert_allclose(long[p].to_numpy(), short[p].to_numpy(), atol=1e-6)
    # oof_epoch: best judges by the observed labels of the held-out part instead
    report = Report(tmp_path / "noisy")
    metrics = crossval.run(build_config(crossval.Config, {**values, "oof_epoch": "best"}),
                           report, data)
    accuracy = [m["heldout_accuracy"] for step, m in report.history if step is not None]
    assert metrics["oof_epoch"] == int(np.argmax(accuracy)) + 1
    assert metrics["n_clean_val"] == 0
    with pytest.raises(ConfigError, match="clean_val_fraction"):
        build_config(crossval.Config, {**values, "clean_val_fraction": 0.0})


def test_confident_learning_refuses_missing_folds(tmp_path):
    data = toy_dataset(n=90)
    overrides = {"epochs": 1}
    _, ups = run_crossval_and_cl(data, tmp_path, folds=3, **overrides)
    cfg = build_config(confident_learning.Config, {"dataset": "blobs", "noise_ratio": 0.25,
                                                   "seed": 3})
    with pytest.raises(ValueError, match=r"folds 0\.\.2 exactly once, got folds \[0, 2\]"):
        confident_learning.run(cfg, Report(tmp_path / "bad", upstream={"crossval": [ups[0], ups[2]]}))
    with pytest.raises(ConfigError, match="fold=3 must be < folds=3"):
        build_config(crossval.Config, {"folds": 3, "fold": 3})


def test_benchmark_sweeps_validate_and_gather_every_fold():
    # demo: uniform noise 0, 0.1, 0.2, 0.4 and pair noise 0.2, 0.4, x 3 seeds; cifar10: uniform
    for path, folds, cells in (("sweeps/benchmark_demo.yaml", 5, 6),
                               ("sweeps/benchmark_cifar10.yaml", 5, 4)):
        sweep = sweeps.load(path)
        planned = sweeps.plan(sweep)
        settings = len(planned["dynamics"])
        assert settings == cells * 3
        assert len(planned["crossval"]) == folds * settings
        assert len(planned["confident_learning"]) == settings
        by_id = {f"planned-{i}": s for i, s in enumerate(planned["crossval"])}
        for spec in planned["confident_learning"]:
            assert len(spec.upstream["crossval"]) == folds
            for run_id in spec.upstream["crossval"]:   # the folds of its own noise
                fold, own = by_id[run_id].config, spec.config
                assert (fold.get("noise_kind", "uniform"), fold["noise_ratio"], fold["seed"]) == (
                    own.get("noise_kind", "uniform"), own["noise_ratio"], own["seed"])
    # the C-score stage: one trial per setting, >= 500 models each, its own recipe
    cscore = sweeps.plan(sweeps.load("sweeps/benchmark_demo.yaml"))["cscore"]
    assert len(cscore) == 6 * 3
    for spec in cscore:
        config = spec.config
        assert len(config["ratios"]) * config["models_per_ratio"] >= 500
        assert (config["hidden"], config["batch_size"]) == ([20, 20], 128)
    demo = sweeps.plan(sweeps.load("sweeps/benchmark_demo.yaml"))["vog"]
    assert {(s.config["noise_kind"], s.config["noise_ratio"]) for s in demo} == {
        ("uniform", 0.0), ("uniform", 0.1), ("uniform", 0.2), ("uniform", 0.4),
        ("pair", 0.2), ("pair", 0.4)}


# -- the report on hand-made per-sample tables ---------------------------------------------------

def make_runs(root, n=200, kinds=None):
    """Runs of three stages at noise 0 and 0.2, seeds 0 and 1: a dynamics-like table with
    two score_ columns and the data-map columns, an oracle, a reversed oracle, a stage whose
    runs vary in ``variant``, a duplicate and a run without a table. ``kinds``: also log
    ``noise_kind`` and repeat everything per kind (pair: other noisy samples, each class
    flipped to class + 2); None: runs from before the key existed."""
    rows = []

    def add_run(stage, noise, seed, columns, seconds=10.0, kind=None, **extra):
        run_id = f"{stage}-{kind}-{noise}-{seed}-{len(rows)}"
        rng = np.random.default_rng([seed, int(noise * 10), int(kind == "pair")])
        noisy = np.zeros(n, dtype=bool)
        noisy[rng.choice(n, int(n * noise), replace=False)] = True
        label = rng.integers(0, 4, n)
        observed = np.where(noisy, (label + (2 if kind == "pair" else 1)) % 4, label)
        if kind is not None:
            extra["noise_kind"] = kind
        if columns is not None:
            folder = root / run_id
            folder.mkdir(parents=True)
            table = pd.DataFrame({"sample_id": np.arange(n), "label": label,
                                  "observed_label": observed, "is_noisy": noisy,
                                  "split": "train", "hard": None})
            for name, fn in columns.items():
                table[name] = fn(noisy, rng)
            table.to_parquet(folder / "per_sample.parquet")
        rows.append({"run_id": run_id, "stage": stage, "experiment": stage, "status": "FINISHED",
                     "dataset": "toy", "noise_ratio": noise, "seed": seed,
                     "trial_seconds": seconds, **extra})

    def good(noisy, rng):
        return noisy + rng.normal(0, 0.1, len(noisy))

    for kind, noise, seed in itertools.product(kinds or [None], (0.0, 0.2), (0, 1)):
        if kind == "pair" and noise == 0.0:
            continue
        add = functools.partial(add_run, kind=kind)
        add("dyn", noise, seed, {
            "score": good, "score_good": good,
            "score_random": lambda noisy, rng: rng.random(len(noisy)),
            "carto_confidence": lambda noisy, rng: 1 - noisy * 0.8,
            "carto_variability": lambda noisy, rng: rng.random(len(noisy)) * 0.3}, 20.0)
        add("dyn", noise, seed, {"score": good, "score_good": good,
                                 "score_random": lambda noisy, rng: rng.random(len(noisy))})
        add("oracle", noise, seed, {"score": good}, 5.0, **{"m.upstream_seconds": 7.0})
        add("reversed", noise, seed, {"score": lambda noisy, rng: -good(noisy, rng)}, 1.0)
        for variant in ("a", "b"):
            add("dp", noise, seed, {"score": good}, 3.0, variant=variant)
        add("unscored", noise, seed, None)
    return pd.DataFrame(rows)


def test_benchmark_report_on_hand_made_tables(tmp_path):
    runs = make_runs(tmp_path / "runs")
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    written = {p.name for p in build_report(ctx)}
    assert {"benchmark_per_run.csv", "benchmark_detection.csv", "benchmark_results.md",
            "benchmark_agreement.csv", "benchmark_spearman.png", "benchmark_jaccard.png",
            "benchmark_auroc.png", "benchmark_cost.png", "benchmark_datamap.png"} <= written

    summary = pd.read_csv(tmp_path / "out" / "benchmark_detection.csv").set_index("method")
    assert set(summary.index) == {"good", "random", "oracle", "reversed", "dp[variant=a]",
                                  "dp[variant=b]"}
    assert (summary["noise_ratio"] == 0.2).all()             # no detection without noise
    assert summary.loc["oracle", "auroc_mean"] == 1.0
    assert summary.loc["reversed", "auroc_mean"] == 0.0
    assert summary.loc["oracle", "precision_at_k_mean"] == 1.0
    assert summary.loc["good", "seeds"] == 2                 # the duplicate run counts once
    assert summary.loc["oracle", "seconds_mean"] == 12.0     # trial + upstream seconds
    assert 0.3 < summary.loc["random", "auroc_mean"] < 0.7

    agree = pd.read_csv(tmp_path / "out" / "benchmark_agreement.csv")
    at = agree[agree["noise_ratio"] == 0.2].set_index(["method_a", "method_b"])
    assert at.loc[("oracle", "oracle"), "spearman"] == pytest.approx(1.0)
    assert at.loc[("oracle", "reversed"), "spearman"] == pytest.approx(-1.0)
    assert at.loc[("oracle", "reversed"), "jaccard"] == 0.0
    assert at.loc[("oracle", "good"), "jaccard"] == 1.0
    assert set(agree["noise_ratio"]) == {0.0, 0.2}

    markdown = (tmp_path / "out" / "benchmark_results.md").read_text()
    assert "| method | AUROC @ 0.2 | AP @ 0.2 | s / config |" in markdown
    assert "**1.000 ± 0.000**" in markdown
    best = markdown.split("Best AUROC at uniform noise 0.2: **")[1].split("**")[0]
    assert best in {"good", "oracle", "dp[variant=a]", "dp[variant=b]"}
    assert "†" not in markdown


def test_benchmark_report_flags_a_method_with_other_noisy_labels(tmp_path):
    runs = make_runs(tmp_path / "runs", n=100)
    target = runs[runs["stage"] == "reversed"]["run_id"].iloc[-1]
    path = tmp_path / "runs" / target / "per_sample.parquet"
    table = pd.read_parquet(path)
    table["observed_label"] = (table["observed_label"] + 1) % 4
    table.to_parquet(path)
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    benchmark.build(ctx, runs)
    per_run = pd.read_csv(tmp_path / "out" / "benchmark_per_run.csv")
    flagged = per_run[~per_run["same_labels"]]
    assert flagged["run_id"].tolist() == [target]
    assert "reversed †" in (tmp_path / "out" / "benchmark_results.md").read_text()


def test_benchmark_report_groups_by_noise_kind_and_ratio(tmp_path):
    runs = make_runs(tmp_path / "runs", n=120, kinds=["uniform", "pair"])
    # planted: a score that finds uniform noise perfectly and is inverted under pair noise
    for run_id in runs.loc[runs["stage"] == "oracle", "run_id"]:
        path = tmp_path / "runs" / run_id / "per_sample.parquet"
        table = pd.read_parquet(path)
        if "-pair-" in run_id:
            table["score"] = -table["score"]
        table.to_parquet(path)
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    written = {p.name for p in build_report(ctx)}
    assert {"benchmark_auroc.png", "benchmark_cost.png", "benchmark_spearman.png",
            "benchmark_datamap.png"} <= written
    summary = pd.read_csv(tmp_path / "out" / "benchmark_detection.csv")
    cells = summary.set_index(["method", "noise_kind", "noise_ratio"])
    assert cells.loc[("oracle", "uniform", 0.2), "auroc_mean"] == 1.0
    assert cells.loc[("oracle", "pair", 0.2), "auroc_mean"] == 0.0
    assert (summary.groupby(["method", "noise_kind"]).size() == 1).all()
    assert (cells["seeds"] == 2).all()                     # kinds are not pooled
    # the kinds draw different labels; compared within a kind, nothing is flagged
    per_run = pd.read_csv(tmp_path / "out" / "benchmark_per_run.csv")
    assert per_run["same_labels"].all()
    assert set(per_run["noise_kind"]) == {"uniform", "pair"}
    agree = pd.read_csv(tmp_path / "out" / "benchmark_agreement.csv")
    assert set(map(tuple, agree[["noise_kind", "noise_ratio"]].drop_duplicates().to_numpy())) == {
        ("uniform", 0.0), ("uniform", 0.2), ("pair", 0.2)}
    markdown = (tmp_path / "out" / "benchmark_results.md").read_text()
    assert "on toy, uniform noise" in markdown and "on toy, pair noise" in markdown
    assert "Best AUROC at pair noise 0.2: **" in markdown
    pair_table = markdown.split("on toy, pair noise")[1]
    assert "| oracle | 0.000 ± 0.000 |" in pair_table and "†" not in markdown
    # runs logged before noise_kind existed count as uniform
    old = make_runs(tmp_path / "old", n=60)
    frame, _ = benchmark.collect(FolderContext(old, tmp_path / "o", tmp_path / "old"), old)
    assert set(frame["noise_kind"]) == {"uniform"}


def test_benchmark_report_writes_nothing_without_injected_noise(tmp_path):
    runs = make_runs(tmp_path / "runs", n=50)
    runs = runs[runs["noise_ratio"] == 0.0].reset_index(drop=True)
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    benchmark.build(ctx, runs)
    assert ctx.written == []


def test_reports_keep_noise_kinds_apart_and_count_older_runs_as_uniform(tmp_path):
    """Pair and uniform noise at one ratio are different settings in every report (here
    identify's summary); a run logged before noise_kind existed drew uniform noise."""
    rows = []
    for i, (kind, n_hard) in enumerate([("pair", 10), ("pair", 12), ("uniform", 30),
                                        (None, 34)]):
        run_id = f"r{i}"
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        hard = np.zeros(100, dtype=bool)
        hard[:n_hard] = True
        pd.DataFrame({"sample_id": np.arange(100), "observed_label": np.arange(100) % 10,
                      "hard": hard}).to_parquet(tmp_path / "runs" / run_id / "per_sample.parquet")
        rows.append({"run_id": run_id, "experiment": "identify", "stage": "identify",
                     "strategy": "stragglers", "level": "class", "noise_ratio": 0.2,
                     "noise_kind": kind, "seed": i, "m.n_hard": n_hard, "trial_seconds": 1.0})
    build_report(FolderContext(pd.DataFrame(rows), tmp_path / "out", tmp_path / "runs"))
    summary = pd.read_csv(tmp_path / "out" / "identify_summary.csv").set_index("noise_kind")
    assert summary.loc["pair", "n_hard_mean"] == 11 and summary.loc["pair", "n_hard_count"] == 2
    assert summary.loc["uniform", "n_hard_mean"] == 32
    assert summary.loc["uniform", "n_hard_count"] == 2
