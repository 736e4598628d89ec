"""Variance of Gradients: the score, its running accumulator, batched input gradients,
the vog experiment on tiny images and the toy study."""

import contextlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from raydiff.data import Dataset
from raydiff.engine.input_grad import input_gradient, input_gradients
from raydiff.experiments import vog as vogx
from raydiff.experiments import vog_toy
from raydiff.experiments.base import Report
from raydiff.experiments.config import ConfigError, build_config
from raydiff.models import get_model
from raydiff.report import FolderContext, build_report
from raydiff.scores.vog import (VoGAccumulator, class_normalize, decile_error, stage_checkpoints,
                                vog)


@contextlib.contextmanager
def torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the score ----------------------------------------------------------------------------

def test_hand_computed_two_checkpoints():
    # sample 0: 2 pixels, (1, 3) then (3, 3): per-pixel population std (1, 0), mean 0.5
    # sample 1: 2 channels averaged first: (1, 2) then (3, 2): the same 0.5
    features = np.array([[[1.0, 3.0]], [[3.0, 3.0]]])                       # (K=2, N=1, 2)
    assert vog(features)[0] == pytest.approx(0.5)
    images = np.array([[[[[0.0, 2.0]], [[2.0, 2.0]]]],                    # (K, N, C, H, W)
                       [[[[4.0, 4.0]], [[2.0, 0.0]]]]])
    assert vog(images)[0] == pytest.approx(0.5)         # a sample std would give 0.707


def test_constant_gradients_give_zero_vog_in_every_stage():
    g = np.random.default_rng(0).normal(size=(1, 5, 3, 4, 4))
    np.testing.assert_allclose(vog(np.repeat(g, 9, axis=0)), 0, atol=1e-15)
    acc = VoGAccumulator(5, 16, 9)
    for t in range(9):
        acc.add(t, g[0])
    for stage, score in acc.scores().items():
        np.testing.assert_allclose(score, 0, atol=1e-15, err_msg=stage)


def test_model_with_unchanging_gradients_has_zero_vog():
    model = get_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, seed=0)
    x = torch.randn(7, 1, 8, 8)
    acc = VoGAccumulator(7, 64, 6)
    for t in range(6):          # the same weights at every checkpoint
        for rows, grad, _ in input_gradients(model, x, batch_size=3):
            acc.add(t, grad.numpy(), rows)
    assert all(np.allclose(s, 0, atol=1e-12) for s in acc.scores().values())


def test_stages_are_consecutive_thirds():
    stages = stage_checkpoints(10)
    assert [list(stages[s]) for s in ("early", "middle", "late")] == [[0, 1, 2, 3], [4, 5, 6],
                                                                         [7, 8, 9]]
    assert list(stages["complete"]) == list(range(10))
    with pytest.raises(ValueError, match="at least 6"):
        stage_checkpoints(5)


def test_accumulator_matches_the_full_stack_per_stage_in_any_minibatches():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(10, 13, 3, 2, 2)) + 5.0      # an offset, so a sum of squares would cancel
    acc = VoGAccumulator(13, 4, 10)
    for t in range(10):
        order = rng.permutation(13)
        for rows in (order[:5], order[5:]):
            acc.add(t, g[t, rows], rows)
    got = acc.scores()
    for stage, idx in stage_checkpoints(10).items():
        np.testing.assert_allclose(got[stage], vog(g[idx]), rtol=1e-10)
    with pytest.raises(ValueError, match="out of order"):
        acc.add(9, g[9])


def test_accumulator_in_float32_is_close_and_refuses_checkpoints_out_of_order():
    g = np.random.default_rng(3).normal(size=(7, 4, 6)).astype(np.float32)
    acc = VoGAccumulator(4, 6, 7, dtype=np.float32)
    for t in range(7):
        acc.add(t, g[t])
    np.testing.assert_allclose(acc.scores()["complete"], vog(g), rtol=1e-5)
    acc = VoGAccumulator(4, 6, 7)
    acc.add(0, g[0])
    with pytest.raises(ValueError, match="out of order"):
        acc.add(2, g[2])


def test_accumulator_refuses_scores_before_every_checkpoint():
    acc = VoGAccumulator(2, 3, 6)
    acc.add(0, np.ones((2, 3)))
    with pytest.raises(ValueError, match="every checkpoint"):
        acc.scores()


def test_class_normalisation_has_per_class_mean_zero_std_one():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], [20, 30, 7])
    score = rng.gamma(2.0, size=57) * (1 + 10 * labels)       # classes on different scales
    z = class_normalize(score, labels)
    for c in range(3):
        assert z[labels == c].mean() == pytest.approx(0, abs=1e-12)
        assert z[labels == c].std() == pytest.approx(1)
    np.testing.assert_allclose(class_normalize(score, labels, absolute=True), np.abs(z))
    # a class whose VoG is all the same is 0, not NaN
    assert np.all(class_normalize(np.ones(4), np.array([0, 0, 1, 1])) == 0)


def test_decile_error_finds_planted_errors_in_the_top_decile():
    score = np.arange(100.0)
    wrong = score >= 90
    percentile, error, count = decile_error(score, wrong)
    assert list(percentile) == list(range(5, 100, 10))
    assert error[-1] == 100 and np.all(error[:-1] == 0) and np.all(count == 10)


# -- batched input gradients --------------------------------------------------------------

@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("output", ["logit", "probability"])
def test_batched_gradients_equal_a_per_sample_loop(labelled, output):
    model = get_model("small_cnn", input_shape=(1, 8, 8), num_classes=3, width=4, seed=1)
    model(torch.randn(16, 1, 8, 8))         # give batch norm non-trivial running stats
    model.train()
    x = torch.randn(9, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]) if labelled else None
    batched = input_gradient(model, x, labels, batch_size=4, output=output)
    assert model.training                                    # its mode is restored
    model.eval()
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        logits = model(xi)
        target = int(labels[i]) if labelled else int(logits.argmax())
        out = logits.softmax(1) if output == "probability" else logits
        out[0, target].backward()
        torch.testing.assert_close(batched[i], xi.grad[0], rtol=1e-5, atol=1e-7)


# -- the vog experiment ------------------------------------------------------------------

def tiny_images(n=240, classes=3, seed=0):
    """8x8 grey images: a bright square whose position is the class, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(60, 25, (n, 1, 8, 8))
    for c in range(classes):
        x[y == c, 0, 2 * c:2 * c + 3, 2:6] += 120
    return Dataset("tiny", x.clip(0, 255).astype(np.uint8), y.astype(np.int64), classes,
                   np.array(["train"] * n))


def vog_config(**overrides):
    values = dict(dataset="digits", model="simple_nn", hidden=[16], epochs=6, vog_every=1,
                  batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, test_fraction=0.25,
                  figures={"grid_classes": 2, "grid_size": 2}, eval_batch_size=50)
    values.update(overrides)
    return build_config(vogx.Config, values)


@pytest.fixture(scope="module")
def vog_run(tmp_path_factory):
    """One small vog trial (its folder and metrics), shared by the experiment and report tests."""
    folder = tmp_path_factory.mktemp("vog") / "run0"
    with torch_threads(1):
        metrics = vogx.run(vog_config(), Report(folder), tiny_images())
    return folder, metrics


def test_vog_experiment_writes_every_variant_deciles_and_grids(vog_run):
    folder, metrics = vog_run
    table = pd.read_parquet(folder / "per_sample.parquet")
    assert len(table) == 240 and set(table["split"]) == {"train", "test"}
    assert (table["split"] == "test").sum() == 60
    for stage in ("early", "middle", "late", "complete"):
        for suffix in ("", "_norm", "_abs"):
            assert table[f"vog_{stage}{suffix}"].notna().all()
        assert (table[f"vog_{stage}"] > 0).all()
    np.testing.assert_array_equal(table["score"], table["vog_complete_norm"])
    for (split, label), part in table.groupby(["split", "observed_label"]):
        assert part["score"].mean() == pytest.approx(0, abs=1e-9)
    deciles = pd.read_parquet(folder / "decile_error.parquet")
    assert len(deciles) == 40 and deciles.groupby("stage")["count"].sum().eq(60).all()
    assert (folder / "decile_error.png").exists()
    assert sorted(p.name for p in folder.glob("vog_grid_class*.png")) == [
        "vog_grid_class000.png", "vog_grid_class001.png"]
    assert metrics["n_checkpoints"] == 6 and metrics["test_accuracy"] > 80


def test_vog_report_averages_deciles_over_seeds_and_copies_grids(vog_run, tmp_path):
    folder, metrics = vog_run
    root = folder.parent
    if not (root / "run1").exists():
        shutil.copytree(folder, root / "run1")
    runs = pd.DataFrame([{"run_id": f"run{s}", "stage": "main", "experiment": "vog",
                          "dataset": "tiny", "model": "simple_nn", "noise_ratio": 0.0,
                          "seed": s, "figures": {"grid_classes": 2}} for s in (0, 1)])
    written = build_report(FolderContext(runs, tmp_path, root))
    summary = pd.read_csv(tmp_path / "vog_decile_error.csv")
    trial = pd.read_parquet(folder / "decile_error.parquet")
    assert len(summary) == 40 and (summary["runs"] == 2).all()
    np.testing.assert_allclose(summary.sort_values(["stage", "decile"])["error"],
                               trial.sort_values(["stage", "decile"])["error"])
    assert (summary["error_std"] == 0).all()
    names = {p.name for p in written}
    assert "vog_decile_error.png" in names
    assert "vog_run0_vog_grid_class001.png" in names


@pytest.mark.parametrize("kind", ["uniform", "pair"])
def test_vog_train_rows_have_the_noise_every_other_experiment_has(tmp_path, kind):
    """One noise rule: VoG holds out a test split, yet its training samples carry the same
    observed labels as in a run that holds out nothing (here the small-loss baseline);
    its test samples keep their true labels."""
    from raydiff.experiments import train_classifier
    data = tiny_images()
    with torch_threads(1):
        vogx.run(vog_config(noise_ratio=0.3, noise_kind=kind, seed=4, figures={"grid_classes": 0}),
                 Report(tmp_path / "vog"), data)
        train_classifier.run(build_config(train_classifier.Config, {
            "dataset": "digits", "noise_ratio": 0.3, "noise_kind": kind, "seed": 4,
            "epochs": 1, "hidden": [4]}), Report(tmp_path / "plain"), data)
    vog_table = pd.read_parquet(tmp_path / "vog" / "per_sample.parquet")
    plain = pd.read_parquet(tmp_path / "plain" / "per_sample.parquet").set_index("sample_id")
    train = vog_table[vog_table["split"] == "train"].set_index("sample_id")
    test = vog_table[vog_table["split"] == "test"]
    assert len(train) == 180 and train["is_noisy"].sum() > 0
    np.testing.assert_array_equal(train["observed_label"], plain.loc[train.index, "observed_label"])
    np.testing.assert_array_equal(train["is_noisy"], plain.loc[train.index, "is_noisy"])
    assert (test["observed_label"] == test["label"]).all() and not test["is_noisy"].any()
    assert set(vog_table["noise_kind"]) == {kind} and set(plain["noise_kind"]) == {kind}
    assert int(plain["is_noisy"].sum()) == int(240 * 0.3)     # drawn over the whole subset


def test_vog_config_refuses_too_few_or_untrained_checkpoints():
    with pytest.raises(ConfigError, match="at least 6 checkpoints.*vog_every"):
        vog_config(epochs=10, vog_every=5)
    with pytest.raises(ConfigError, match="vog_epochs .*outside"):
        vog_config(vog_epochs=[0, 1, 2, 3, 4, 5, 7])
    assert vog_config(vog_epochs=[5, 0, 1, 2, 3, 4, 4]).checkpoint_epochs() == [0, 1, 2, 3, 4, 5]


# -- the toy study ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy") / "seed0"
    with torch_threads(1):
        metrics = vog_toy.run(build_config(vog_toy.Config, {"seed": 0}), Report(folder))
    return folder, metrics


def test_toy_vog_is_high_near_the_learned_boundary(toy_run):
    folder, metrics = toy_run
    table = pd.read_parquet(folder / "per_sample.parquet")
    boundary = json.loads((folder / "boundary.json").read_text())
    # the boundary from the weights is the model's: its side is the predicted class
    side = table[["x0", "x1"]].to_numpy() @ np.array(boundary["w"]) + boundary["c"] > 0
    np.testing.assert_array_equal(side.astype(int), table["predicted"])
    for split in ("train", "test"):
        for stage in ("early", "middle", "late", "complete"):
            assert metrics[f"spearman_{split}_{stage}_raw"] < -0.5
    assert metrics["spearman"] == metrics["spearman_train_complete_norm"]
    assert {"boundary.png", "vog_vs_distance.png"} <= {p.name for p in folder.iterdir()}


def test_toy_report_tables_spearman_per_axis(toy_run, tmp_path):
    folder, metrics = toy_run
    runs = pd.DataFrame([{"run_id": folder.name, "stage": "main", "experiment": "vog_toy",
                          "seed": 0, "output": "probability", "split": split, "vog_stage": stage,
                          "normalization": "raw",
                          "m.spearman": metrics[f"spearman_{split}_{stage}_raw"]}
                         for split in ("train", "test") for stage in ("early", "complete")])
    build_report(FolderContext(runs, tmp_path, folder.parent))
    summary = pd.read_csv(tmp_path / "vog_toy_spearman.csv")
    assert len(summary) == 4 and (summary["spearman_mean"] < -0.5).all()
    assert {"vog_toy_boundary_train.png", "vog_toy_distance_test_raw.png"} <= {
        p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("module,key,value", [(vogx, "checkpoint_every", 2),
                                              (vog_toy, "noise_ratio", 0.2),
                                              (vog_toy, "subset_size", 100),
                                              (vog_toy, "data_root", "/data")])
def test_keys_an_experiment_never_reads_are_refused_by_name(module, key, value):
    # vog restarts from scratch (nothing to checkpoint); the toy makes its own clean blobs
    with pytest.raises(ConfigError, match=f"unknown key '{key}'; valid keys"):
        build_config(module.Config, {key: value})
    assert key not in module.Config.smoke_overrides()
    build_config(module.Config, module.Config.smoke_overrides())     # smoke still valid
