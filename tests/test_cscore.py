"""The C-score: the pure estimator on planted correctness tables, and the packed experiment."""

import numpy as np
import pandas as pd
import pytest

from raydiff.data import Dataset
from raydiff.experiments import cscore as exp
from raydiff.experiments.base import Report
from raydiff.experiments.config import ConfigError, build_config
from raydiff.report import FolderContext, build_report
from raydiff.scores import (auroc, cscore, cscore_hardness, cscore_per_ratio, get_score,
                            needs_of)


def test_hand_example_exact_values():
    # 4 models, 3 samples; ratios 0.5 (models 0, 1) and 0.8 (models 2, 3)
    held = np.array([[1, 0, 1],
                     [1, 1, 0],
                     [0, 1, 1],
                     [1, 0, 0]], dtype=bool)
    correct = np.array([[1, 9, 0],        # 9: a training entry, must not count
                        [0, 1, 9],
                        [9, 1, 1],
                        [1, 9, 9]], dtype=float)
    ratios = np.array([0.5, 0.5, 0.8, 0.8])
    levels, per_ratio = cscore_per_ratio(held, correct, ratios)
    np.testing.assert_array_equal(levels, [0.5, 0.8])
    # sample 0: ratio 0.5 -> (1 + 0) / 2, ratio 0.8 -> 1 / 1; sample 1: 1/1, 1/1;
    # sample 2: 0/1, 1/1
    np.testing.assert_allclose(per_ratio, [[0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(cscore(held, correct, ratios), [0.75, 1.0, 0.5])
    np.testing.assert_allclose(cscore_hardness(held, correct, ratios), [0.25, 0.0, 0.5])
    # the registry's entry: input "holdout", the triple, labels unused
    assert needs_of("cscore") == "holdout"
    np.testing.assert_allclose(get_score("cscore")((held, correct, ratios), labels=None),
                               [0.25, 0.0, 0.5])


def test_planted_always_wrong_and_always_right_samples():
    rng = np.random.default_rng(0)
    m, n = 300, 50
    ratios = np.repeat([0.2, 0.5, 0.8], m // 3)
    held = rng.random((m, n)) > ratios[:, None]
    correct = rng.random((m, n)) < 0.7          # ordinary samples: right 70% of the time
    correct[:, 0] = ~held[:, 0]                 # wrong whenever held out, right when trained on
    correct[:, 1] = held[:, 1]                  # right whenever held out, wrong in training
    c = cscore(held, correct, ratios)
    assert c[0] == 0.0 and c[1] == 1.0
    assert cscore_hardness(held, correct, ratios)[0] == 1.0
    assert np.all(np.abs(c[2:] - 0.7) < 0.2)
    # the probability of the observed label goes through the same arithmetic
    soft = np.where(correct, 0.9, 0.1)
    np.testing.assert_allclose(cscore(held, soft, ratios), 0.1 + 0.8 * c)


def test_ratio_average_is_uniform_over_ratios_not_over_models():
    # ratio 0.1: 9 models, all right; ratio 0.9: 1 model, wrong -> 0.5, not 0.9
    held = np.ones((10, 1), dtype=bool)
    correct = np.array([1] * 9 + [0], dtype=float)[:, None]
    ratios = np.array([0.1] * 9 + [0.9])
    assert cscore(held, correct, ratios)[0] == pytest.approx(0.5)


def test_never_held_out_is_nan_and_left_out_of_the_mean():
    held = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    correct = np.array([[0, 1], [1, 1], [0, 1]], dtype=float)
    ratios = np.array([0.3, 0.6, 0.6])
    _, per_ratio = cscore_per_ratio(held, correct, ratios)
    assert per_ratio[0, 0] == 0.0 and per_ratio[1, 0] == 0.0
    assert np.isnan(per_ratio[:, 1]).all()             # sample 1 was always trained on
    c = cscore(held, correct, ratios)
    assert c[0] == 0.0 and np.isnan(c[1])
    # at a ratio where it was never held out the sample has no estimate: the mean skips it
    held2 = np.array([[1], [0]], dtype=bool)
    assert cscore(held2, np.array([[1.0], [0.0]]), np.array([0.3, 0.6]))[0] == 1.0


def test_bad_inputs_are_refused():
    held = np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="one shape"):
        cscore(held, np.ones((2, 4)), [0.5, 0.5])
    with pytest.raises(ValueError, match="one ratio per model"):
        cscore(held, np.ones((2, 3)), [0.5])
    with pytest.raises(ValueError, match="NaN on a held-out entry"):
        cscore(held, np.full((2, 3), np.nan), [0.5, 0.5])


def test_config_refuses_bad_ratios():
    for bad, match in (([], "ratios is empty"), ([0.5, 1.0], "outside"),
                       ([0.0], "outside"), ([0.3, 0.3], "repeats")):
        with pytest.raises(ConfigError, match=match):
            build_config(exp.Config, {"ratios": bad})
    with pytest.raises(ConfigError, match="models_per_ratio"):
        build_config(exp.Config, {"models_per_ratio": 0})
    with pytest.raises(ConfigError, match="model='small_cnn' is not allowed"):
        build_config(exp.Config, {"model": "small_cnn"})


def _clusters(n=240, classes=3, dim=8):
    """Well separated Gaussian clusters: a model trained on any subset predicts a held-out
    sample's true class, so a flipped label is wrong whenever its sample is unseen."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4.0, (classes, dim))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
    return Dataset("toy", x, y.astype(np.int64), classes, np.array(["train"] * n),
                   is_image=False)


def _run(tmp_path, name, **values):
    config = build_config(exp.Config, {"dataset": "blobs", "noise_ratio": 0.2, "seed": 1,
                                       "ratios": [0.3, 0.6], "models_per_ratio": 10,
                                       "hidden": [8], "epochs": 20, "batch_size": 32,
                                       "lr": 0.1, **values})
    metrics = exp.run(config, Report(tmp_path / name), _clusters())
    return metrics, pd.read_parquet(tmp_path / name / "per_sample.parquet")


def test_experiment_finds_planted_noise_and_does_not_depend_on_pack_size(tmp_path):
    metrics, table = _run(tmp_path, "a", models_per_pack=3)
    assert metrics["models_trained"] == 20
    # a sample the 10 models of a ratio all trained on has no estimate there ...
    per_ratio = table[["cscore_r0.3", "cscore_r0.6"]].to_numpy()
    assert metrics["held_out_min"] == table["held_out_min"].min()
    assert (np.isnan(per_ratio).any(1) == (table["held_out_min"] == 0)).all()
    # ... and its C-score is the mean over the ratios where it has one
    np.testing.assert_allclose(table["cscore"], np.nanmean(per_ratio, 1))
    assert np.isfinite(table["score"]).all()
    noisy = table["is_noisy"].to_numpy()
    assert 0.15 < noisy.mean() < 0.25
    # a flipped label is wrong whenever its sample is unseen; the planted noise ranks on top
    assert metrics["noise_auroc"] > 0.95 and metrics["noise_ap"] > 0.8
    assert auroc(table["score"].to_numpy(), noisy) == pytest.approx(metrics["noise_auroc"])
    np.testing.assert_allclose(table["score"], 1 - table["cscore"])
    assert table["hard"].sum() == round(0.2 * len(table))
    assert table.loc[table["hard"], "score"].min() >= table.loc[~table["hard"], "score"].max()
    assert (tmp_path / "a" / "cscore_by_ratio.png").exists()
    # the same models trained in packs of another size: the same C-scores
    _, other = _run(tmp_path, "b", models_per_pack=7)
    np.testing.assert_allclose(other["cscore_soft"], table["cscore_soft"], atol=1e-4)
    assert (other["cscore"] != table["cscore"]).mean() < 0.02


def test_experiment_without_noise_makes_no_decision(tmp_path):
    metrics, table = _run(tmp_path, "clean", noise_ratio=0.0, models_per_ratio=8)
    assert table["hard"].isna().all() and not table["is_noisy"].any()
    assert "noise_auroc" not in metrics
    assert metrics["heldout_accuracy_r0.6"] > 0.8          # the models generalise


def test_smoke_overrides_are_small():
    smoke = exp.Config.smoke_overrides()
    assert smoke["subset_size"] == 300 and smoke["models_per_ratio"] <= 10


def test_too_few_models_to_hold_every_sample_out_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"never held out at any ratio: raise models_per_ratio"):
        _run(tmp_path, "few", ratios=[0.9], models_per_ratio=2)


def test_benchmark_report_takes_the_cscore_runs(tmp_path):
    # two real cscore runs (seeds 0, 1) beside a random scorer, read back as a sweep's runs
    rows = []
    for seed in (0, 1):
        run_id = f"cscore-{seed}"
        _run(tmp_path / "runs", run_id, seed=seed, models_per_ratio=6)
        rows.append({"run_id": run_id, "stage": "cscore", "experiment": "cscore",
                     "status": "FINISHED", "dataset": "toy", "noise_ratio": 0.2, "seed": seed,
                     "trial_seconds": 3.0, "ratios": "[0.3, 0.6]", "models_per_ratio": 6})
        table = pd.read_parquet(tmp_path / "runs" / run_id / "per_sample.parquet")
        # a one-method table: its `score` only, not the registered cscore columns
        table = table.drop(columns=[c for c in table.columns if c.startswith("score_")])
        table["score"] = np.random.default_rng(seed).random(len(table))
        (tmp_path / "runs" / f"random-{seed}").mkdir()
        table.to_parquet(tmp_path / "runs" / f"random-{seed}" / "per_sample.parquet")
        rows.append({**rows[-1], "run_id": f"random-{seed}", "stage": "random",
                     "experiment": "train_classifier"})
    runs = pd.DataFrame(rows)
    build_report(FolderContext(runs, tmp_path / "out", tmp_path / "runs"))
    summary = pd.read_csv(tmp_path / "out" / "benchmark_detection.csv").set_index("method")
    assert set(summary.index) == {"cscore", "random"}
    assert summary.loc["cscore", "seeds"] == 2
    assert summary.loc["cscore", "auroc_mean"] > 0.9 > summary.loc["random", "auroc_mean"]
    agree = pd.read_csv(tmp_path / "out" / "benchmark_agreement.csv")
    assert {"cscore", "random"} <= set(agree["method_a"])


class _Killed(Exception):
    pass


class _DiesAtPack(Report):
    """A report whose process "dies" when pack ``die_at`` reports it is done."""

    def __call__(self, metrics, *, step=None, checkpoint=None):
        if metrics.get("packs_done") == 4:
            raise _Killed(step)
        super().__call__(metrics, step=step, checkpoint=checkpoint)


def test_a_killed_trial_resumes_at_its_first_unfinished_pack(tmp_path):
    """Killed after 3 of its 8 packs: the restarted trial trains only packs 4..8 and its
    table equals an uninterrupted run's."""
    import torch

    values = {"dataset": "blobs", "noise_ratio": 0.2, "seed": 1, "ratios": [0.3, 0.6],
              "models_per_ratio": 10, "hidden": [8], "epochs": 20, "batch_size": 32,
              "lr": 0.1, "models_per_pack": 3}
    config = build_config(exp.Config, values)
    data = _clusters()
    exp.run(config, Report(tmp_path / "a"), data)
    with pytest.raises(_Killed):
        exp.run(config, _DiesAtPack(tmp_path / "killed"), data)
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    resumed = Report(tmp_path / "p", resume_state=state)
    exp.run(config, resumed, data)
    assert resumed.tags["raydiff.resumed_from_pack"] == "3"
    assert [m["packs_done"] for _, m in resumed.history if "packs_done" in m] == [4, 5, 6, 7, 8]
    a, p = (pd.read_parquet(tmp_path / t / "per_sample.parquet") for t in "ap")
    pd.testing.assert_frame_equal(a, p)
