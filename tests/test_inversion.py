"""Inversion point: radii on the device, inversion detection, per-class snapshots, the
learned epoch, classes that never invert, and the report's stability numbers."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import hypergeom

from raydiff.data import load_dataset, prepare
from raydiff.engine import predict, train
from raydiff.engine.inversion import (InversionMonitor, first_inversion, minimum_inversion,
                                      smooth)
from raydiff.experiments import inversion as inv
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.experiments.identify import Config as IdentifyConfig
from raydiff.models import get_model
from raydiff.report import FolderContext, build_report
from raydiff.report.inversion import stability
from raydiff.scores import jaccard, overlap_zscore


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def tiny(mnist, n=300):
    data = prepare(mnist, subset_size=n, subset_seed=0)
    model = get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10, seed=0)
    return data, model


def numpy_radii(z, y, num_classes):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    centroids = np.stack([z[y == c].mean(0) for c in range(num_classes)])
    radii = np.array([np.sqrt(((z[y == c] - centroids[c]) ** 2).sum(1).mean())
                      for c in range(num_classes)])
    return radii, centroids


def test_radii_of_a_tiny_run_are_non_negative_and_match_numpy(mnist):
    data, model = tiny(mnist)
    monitor = InversionMonitor(model, data.x, data.y, 10, start=5, check_every=5)
    train(model, data.x, data.y, epochs=30, on_epoch=monitor)
    epochs, radii = monitor.radius_history()
    assert list(epochs) == list(range(5, 31)) and radii.shape == (26, 10)
    assert (radii >= 0).all() and np.isfinite(radii).all()
    assert not np.allclose(radii[0], radii[-1])             # training moved them
    with torch.no_grad():
        z = model.features(data.x).numpy()
    expected, centroids = numpy_radii(z, data.observed_label, 10)
    np.testing.assert_allclose(radii[-1], expected, rtol=1e-4, atol=1e-6)
    dist = monitor.centroid_distances()[-1]
    expected_dist = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-4, atol=1e-5)


def test_inversion_detection_finds_a_planted_minimum():
    epochs = np.arange(20, 300)
    rng = np.random.default_rng(0)
    # steep fall to a minimum at 143, slow rise after; wiggles smaller than a 5-epoch step
    radii = np.where(epochs < 143, 1.0 - 0.004 * (epochs - 20), 0.508 + 0.001 * (epochs - 143))
    radii = radii + rng.uniform(-1e-4, 1e-4, len(epochs))
    assert first_inversion(epochs, radii, start=20, check_every=5) == 150
    # coarser checks see the rise later: R(150) < R(140) still, R(160) > R(150)
    assert first_inversion(epochs, radii, start=20, check_every=10) == 160
    # a radius that only falls, or stays flat, never inverts
    assert first_inversion(epochs, 1.0 / epochs, start=20, check_every=5) is None
    assert first_inversion(epochs, np.ones(len(epochs)), start=20, check_every=5) is None


def test_snapshot_is_a_copy_training_on_does_not_change_stragglers(mnist):
    data, model = tiny(mnist)
    monitor = InversionMonitor(model, data.x, data.y, 10, start=5, check_every=5)
    train(model, data.x, data.y, epochs=120, on_epoch=monitor)
    assert monitor.inversion, "no class inverted in 120 epochs"
    score, judged = monitor.straggler_margin()
    c = next(iter(monitor.inversion))
    frozen = {k: v.clone() for k, v in monitor.snapshots[c].items()}

    train(model, data.x, data.y, epochs=400, start_epoch=120)      # train on, unwatched
    again, judged_again = monitor.straggler_margin()
    np.testing.assert_array_equal(judged, judged_again)
    np.testing.assert_array_equal(score[judged], again[judged])
    for key, value in monitor.snapshots[c].items():
        assert torch.equal(value, frozen[key])
    assert not torch.equal(monitor.snapshots[c]["hidden.0.weight"], model.hidden[0].weight)
    # the snapshot model reproduces the logits stored at the inversion
    members = data.y == c
    np.testing.assert_allclose(predict(monitor.snapshot_model(c), data.x[members]).numpy(),
                               monitor.snapshot_logits[c].numpy(), atol=1e-5)
    # the original behaviour (final model) judges by a model 280 epochs more confident
    final, _ = monitor.straggler_margin(final_model=True)
    assert final[judged].mean() < score[judged].mean() - 0.5


def test_learned_epoch_is_the_first_epoch_from_which_a_sample_stays_correct(mnist):
    data, model = tiny(mnist, n=200)
    monitor = InversionMonitor(model, data.x, data.y, 10, start=5, track_learning=True)
    correct = []

    def on_epoch(epoch, loss):
        monitor(epoch, loss)
        correct.append((predict(model, data.x).argmax(1) == data.y).numpy())
        return False

    train(model, data.x, data.y, epochs=60, lr=0.05, on_epoch=on_epoch)
    correct = np.array(correct)                                   # (epochs, N)
    expected = np.array([next((t + 1 for t in range(60) if correct[t:, i].all()), 61)
                         for i in range(correct.shape[1])])
    np.testing.assert_array_equal(monitor.learned_epoch(), expected)
    assert 1 < expected.max() and expected.min() < 60             # not trivially constant


def run_inversion(tmp_path, mnist, name="run", **values):
    config = build_config(inv.Config, {"subset_size": 300, "epochs": 150, "inversion_start": 5,
                                       "check_every": 5, **values})
    report = Report(tmp_path / name)
    metrics = inv.run(config, report, mnist)
    return metrics, report


def test_experiment_artifacts_agree_with_each_other(tmp_path, mnist):
    metrics, report = run_inversion(tmp_path, mnist, max_retries=0)
    folder = Upstream(report.folder)
    radii = folder.table("radii.parquet")
    info = folder.json("inversion.json")
    table = folder.table("per_sample.parquet")
    assert len(radii) == (150 - 5 + 1) * 10 and (radii["radius"] >= 0).all()
    assert info["rule"] == "minimum" and info["smoothing"] == 5
    # the epochs found during training are those the offline detector finds on the curves
    for c in range(10):
        curve = radii[radii["class"] == c]
        found = minimum_inversion(curve["epoch"], curve["radius"], start=5, check_every=5,
                                  smoothing=5)
        assert info["inversion_epoch"].get(str(c)) == found
        if found is not None:      # ... the minimum of the logged smoothed curve
            at = curve.set_index("epoch")["radius_smoothed"]
            assert at.idxmin() == found
    assert metrics["classes_never_inverted"] < 10
    decided = table["hard"].notna()
    assert (table.loc[decided, "hard"] == (table.loc[decided, "straggler_margin"] > 0)).all()
    assert (table["score"] == table["learned_epoch"]).all()
    assert metrics["n_stragglers"] == sum(info["stragglers_per_class"])
    assert metrics["train_error_at_inversion"] == pytest.approx(table["hard"].mean())
    # stragglers are, on the whole, samples learned late
    assert metrics["learned_epoch_auroc_stragglers"] > 0.8


def test_a_class_that_never_inverts_is_retried_then_reported(tmp_path, mnist):
    # lr 0: the radii never move, so no class can invert
    metrics, report = run_inversion(tmp_path, mnist, lr=0.0, epochs=30, max_retries=1)
    assert metrics["classes_never_inverted"] == 10 and metrics["attempts"] == 2
    assert report.tags["raydiff.never_inverted"] == ",".join(map(str, range(10)))
    table = Upstream(report.folder).table("per_sample.parquet")
    assert table["hard"].isna().all()
    assert json.loads((report.folder / "inversion.json").read_text())["never_inverted"] == list(range(10))


def test_parity_setting_has_two_classes_and_one_hidden_layer(tmp_path, mnist):
    config = build_config(inv.Config, {"parity": True})
    assert config.hidden_layers() == [20]
    _, report = run_inversion(tmp_path, mnist, parity=True, epochs=40)
    table = Upstream(report.folder).table("per_sample.parquet")
    assert set(table["label"]) == {0, 1}
    assert (table["label"] == table["digit"] % 2).all()
    radii = Upstream(report.folder).table("radii.parquet")
    assert set(radii["class"]) == {0, 1}


def test_schedule_that_never_checks_is_refused():
    with pytest.raises(ConfigError, match="inversion_start \\+ check_every"):
        build_config(inv.Config, {"epochs": 22, "inversion_start": 20, "check_every": 5})
    with pytest.raises(ConfigError, match="raise epochs"):
        build_config(IdentifyConfig, {"epochs": 10})
    # the minimum rule also needs half a smoothing window before the check step
    with pytest.raises(ConfigError, match="inversion_smoothing"):
        build_config(inv.Config, {"epochs": 25, "inversion_start": 20, "check_every": 5})
    build_config(inv.Config, {"epochs": 27, "inversion_start": 20, "check_every": 5})
    build_config(inv.Config, {"epochs": 25, "inversion_start": 20, "check_every": 5,
                              "inversion_rule": "first_rise"})
    with pytest.raises(ConfigError, match="inversion_smoothing.*odd"):
        build_config(inv.Config, {"inversion_smoothing": 4})
    with pytest.raises(ConfigError, match="inversion_rule"):
        build_config(inv.Config, {"inversion_rule": "lowest"})


def test_jaccard_and_overlap_zscore_against_the_hypergeometric_null():
    a = np.zeros(100, dtype=bool)
    a[:20] = True
    assert jaccard(a, a) == 1.0
    b = np.zeros(100, dtype=bool)
    b[10:40] = True
    assert jaccard(a, b) == pytest.approx(10 / 40)
    null = hypergeom(100, 20, 30)
    assert overlap_zscore(a, b) == pytest.approx((10 - null.mean()) / null.std())
    assert overlap_zscore(a, ~a) < 0
    assert np.isnan(overlap_zscore(np.zeros(10, bool), np.ones(10, bool)))


def test_stability_of_identical_straggler_sets_is_perfect():
    ids = np.arange(10, 70)
    hard = pd.Series(pd.array(np.arange(60) % 4 == 0, dtype="boolean"), index=ids)
    other = hard.copy()
    other.iloc[:2] = pd.NA                           # undecided samples are left out
    classes = pd.Series(np.arange(60) % 3, index=ids)
    pairs = stability({"a": hard, "b": hard.copy(), "c": other}, classes=classes)
    assert len(pairs) == 3 * 4
    same = pairs[(pairs["run_a"] == "a") & (pairs["run_b"] == "b")]
    assert (same["jaccard"] == 1.0).all() and (same["z"] > 0).all()
    overall = same[same["class"] == "all"].iloc[0]
    assert overall["n"] == 60 and overall["overlap"] == 15
    assert pairs[(pairs["run_b"] == "c") & (pairs["class"] == "all")]["n"].tolist() == [58, 58]


def test_report_draws_the_figure_and_tables_over_seeds(tmp_path, mnist):
    rows = []
    # judged by the final model of a short run, every sample is decided and the stragglers
    # (the samples still misclassified) are many: the hard digits, whatever the seed
    for seed in range(3):
        run_inversion(tmp_path, mnist, name=f"r{seed}", seed=seed, epochs=40, subset_size=600,
                      judge_by_final_model=True, max_retries=0)
        rows.append({"run_id": f"r{seed}", "experiment": "inversion", "seed": seed,
                     "dataset": "mnist5k", "subset_size": 600, "parity": False,
                     "judge_by_final_model": True, "noise_ratio": 0.0})
    ctx = FolderContext(pd.DataFrame(rows), tmp_path / "out", tmp_path)
    written = {p.name for p in build_report(ctx)}
    assert any(n.startswith("inversion_radii_") and n.endswith(".png") for n in written)
    summary = pd.read_csv(tmp_path / "out" / "inversion_summary.csv")
    assert list(summary["class"].astype(str)) == [*map(str, range(10)), "all"]
    pairs = pd.read_csv(tmp_path / "out" / "inversion_stability.csv")
    assert len(pairs) == 3 * 11
    overall = summary.set_index(summary["class"].astype(str)).loc["all"]
    per_run = [Upstream(tmp_path / f"r{s}").json("inversion.json") for s in range(3)]
    assert overall["stragglers_mean"] == pytest.approx(
        np.mean([sum(i["stragglers_per_class"]) for i in per_run]))
    # different initialisations agree on their stragglers far beyond chance
    assert overall["z_mean"] > 3


def test_benchmark_script_runs_at_smoke_size():
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "inversion_run.py"),
                           "--smoke"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "summary: one inversion run costs" in done.stdout


# ---- the default rule (minimum of the smoothed curve) against the original first rise ----

def wiggle_curve(t):
    """A planted radius curve like mnist5k seed 1 class 4: a steep fall to a local minimum
    at epoch 32, a 1.5 % hump to epoch 40, then a long fall to the true minimum at 238 (a
    parabola there, so a centred average keeps its position exactly) and a slow rise."""
    t = np.asarray(t, dtype=np.float64)
    fall = 1.0 - 0.4 / 12 * (t - 20)                           # 1.0 at 20 -> 0.6 at 32
    hump = 0.6 + 0.009 * (t - 32) / 8                          # 0.6 at 32 -> 0.609 at 40
    bowl = 0.3 + 0.309 * ((t - 238) / 198) ** 2                 # 0.609 at 40, min 0.3 at 238
    return np.where(t <= 32, fall, np.where(t <= 40, hump, bowl))


def test_minimum_rule_skips_an_early_wiggle_that_fires_the_first_rise_rule():
    epochs = np.arange(20, 301)
    radii = wiggle_curve(epochs)
    assert first_inversion(epochs, radii, start=20, check_every=5) == 40     # the wiggle
    assert minimum_inversion(epochs, radii, start=20, check_every=5) == 238  # the true minimum
    # epoch-to-epoch jitter: the raw curve's minimum wanders, the smoothed one stays near
    jitter = np.random.default_rng(0).normal(0, 2e-5, len(epochs)) * np.where(epochs % 2, 1, -1)
    found = minimum_inversion(epochs, radii + jitter, start=20, check_every=5, smoothing=5)
    assert abs(found - 238) <= 3
    # a radius still falling at the end, or flat, never inverts; nor a minimum so close to
    # the end that no check step follows it
    assert minimum_inversion(epochs, 1.0 / epochs, start=20, check_every=5) is None
    assert minimum_inversion(epochs, np.ones(len(epochs)), start=20, check_every=5) is None
    late = np.abs(epochs - 297.0)
    assert minimum_inversion(epochs, late, start=20, check_every=5, smoothing=1) is None
    assert minimum_inversion(epochs, np.abs(epochs - 294.0), start=20, check_every=5,
                             smoothing=1) == 294
    # smooth: a centred window, row i averages epochs i .. i + w - 1
    np.testing.assert_allclose(smooth(np.arange(10.0), 5), np.arange(2.0, 8.0))
    assert len(smooth(np.arange(3.0), 5)) == 0


class PlantedCurves(torch.nn.Module):
    """A stand-in model whose epoch counter (a buffer, so a state copy freezes it) sets
    both its class radii and its mistakes. x: (N, 2) = (rank of the sample within its
    class, +-1); class c's feature is ``[1, r_c(t) * sign]``, whose radius on the unit
    sphere, ``r / sqrt(1 + r^2)``, rises and falls with r_c(t). The samples of rank below
    ``wrong(t)`` are misclassified, so the stragglers tell which epoch judged them."""

    curves = (wiggle_curve,                                    # class 0: wiggle, min 238
              lambda t: 0.5 + ((np.asarray(t, float) - 100) / 100) ** 2,   # class 1: min 100
              lambda t: 1.0 / np.asarray(t, float))             # class 2: still falling

    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.zeros(()))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    @staticmethod
    def wrong(t):
        return max(2, 60 - int(t) // 4)

    def features(self, x):
        r = torch.tensor([float(f(self.t.item())) for f in self.curves])
        c = torch.arange(len(x)) % 3
        return torch.stack([torch.ones(len(x)), r[c] * x[:, 1]], 1)

    def forward(self, x):
        c = torch.arange(len(x)) % 3
        right = torch.where(x[:, 0] >= self.wrong(self.t.item()), 1.0, -1.0)
        logits = torch.zeros(len(x), 3)
        logits[torch.arange(len(x)), c] = right
        return logits


def drive(rule, epochs=300):
    n = 3 * 64
    rank = torch.arange(n) // 3
    x = torch.stack([rank.float(), torch.where(rank % 2 == 0, 1.0, -1.0)], 1)
    y = torch.arange(n) % 3
    model = PlantedCurves()
    monitor = InversionMonitor(model, x, y, 3, start=20, check_every=5, rule=rule)
    for epoch in range(1, epochs + 1):
        model.t.fill_(epoch)
        monitor(epoch)
    return monitor, rank.numpy(), y.numpy()


@pytest.mark.parametrize("rule, expected", [("minimum", {0: 238, 1: 100}),
                                            ("first_rise", {0: 40, 1: 105})])
def test_stragglers_are_judged_by_the_snapshot_of_the_chosen_epoch(rule, expected):
    monitor, rank, y = drive(rule)
    assert monitor.inversion == expected
    assert monitor.never_inverted() == [2]
    score, judged = monitor.straggler_margin()
    for c, epoch in expected.items():
        members = y == c
        assert judged[members].all()
        assert monitor.snapshots[c]["t"].item() == epoch
        # exactly the samples the model of that epoch got wrong, not the final model's
        np.testing.assert_array_equal(score[members] > 0,
                                      rank[members] < PlantedCurves.wrong(epoch))
    assert not judged[y == 2].any()
    # the radii the monitor recorded give the same epochs offline
    epochs, radii = monitor.radius_history()
    offline = minimum_inversion if rule == "minimum" else first_inversion
    for c, epoch in expected.items():
        assert offline(epochs, radii[:, c], start=20, check_every=5) == epoch
    # under the minimum rule at most C + h + 1 states are held, not one per epoch
    if rule == "minimum":
        held = {id(s) for _, _, s in monitor._best.values()} | {id(s) for _, s in monitor._recent}
        assert len(held) <= 3 + 3


def test_minimum_rule_refuses_stop_when_all_and_bad_settings():
    model = PlantedCurves()
    x, y = torch.zeros(3, 2), torch.arange(3)
    with pytest.raises(ValueError, match="first_rise"):
        InversionMonitor(model, x, y, 3, stop_when_all=True)
    with pytest.raises(ValueError, match="odd"):
        InversionMonitor(model, x, y, 3, smoothing=4)
    with pytest.raises(ValueError, match="minimum, first_rise"):
        InversionMonitor(model, x, y, 3, rule="lowest")
