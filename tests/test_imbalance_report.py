"""The imbalance report answers its question in one figure: a row per setting (strategy x
noise), a column per test set (full / hard / easy), a line per train ratio over the
remaining ratio; one figure per cell only when asked."""

import itertools

import numpy as np
import pandas as pd

from raydiff.plots.imbalance import accuracy_grid
from raydiff.report import FolderContext, build_report
from raydiff.report import imbalance as report

STRATEGIES, NOISES, TRAIN, REMAINING = ("stragglers", "energy"), (0.0, 0.2), (0.9, 0.5), (0.0, 1.0)


def _planted(strategy, noise, train, remaining, model):
    """A known accuracy per cell: each key moves it by a distinct amount."""
    base = 50 + 10 * (strategy == "energy") - 20 * noise + 5 * train + 30 * remaining
    return {"full": base + model, "hard": base - 40 + model, "easy": base + 20 + model}


def _runs(root):
    rows = []
    for i, (s, n, t, r) in enumerate(itertools.product(STRATEGIES, NOISES, TRAIN, REMAINING)):
        run_id = f"r{i}"
        (root / run_id).mkdir(parents=True)
        models = pd.DataFrame([{"model": m, **{f"acc_{k}": v for k, v in
                                               _planted(s, n, t, r, m).items()}}
                               for m in (0, 1)])
        models.to_parquet(root / run_id / "models.parquet")
        rows.append({"run_id": run_id, "experiment": "imbalance", "stage": "imbalance",
                     "identify.strategy": s, "noise_ratio": n, "noise_kind": "uniform",
                     "reduce_hard": False, "train_ratio": t, "remaining_train_ratio": r,
                     "seed": 0})
    return pd.DataFrame(rows)


def test_one_grid_figure_by_default_and_the_cells_on_request(tmp_path):
    runs = _runs(tmp_path / "runs")
    written = build_report(FolderContext(runs, tmp_path / "out", tmp_path / "runs"))
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert pngs == ["imbalance_accuracy.png"]
    summary = pd.read_csv(tmp_path / "out" / "imbalance_summary.csv")
    assert len(summary) == 16
    cells = build_report(FolderContext(runs, tmp_path / "cells", tmp_path / "runs",
                                       per_cell=True))
    per_cell = [p.name for p in cells if p.suffix == ".png" and p.name != "imbalance_accuracy.png"]
    assert len(per_cell) == 4 * 3                      # 2 strategies x 2 noises x 3 test sets
    assert "imbalance_strategy-energy_noise_kind-uniform_noise_ratio-0.2_reduce_hard-False_hard.png" in per_cell


def test_the_grid_puts_each_cells_mean_in_its_panel(tmp_path):
    runs = _runs(tmp_path / "runs")
    ctx = FolderContext(runs, tmp_path / "out", tmp_path / "runs")
    summary = report.summarise(report.model_table(ctx, runs))
    fig = accuracy_grid(summary, row_keys=report.GROUP)
    axes = np.array(fig.axes).reshape(4, 3)
    # rows: strategy x noise (sorted), the fixed keys in the title, not in the row labels
    labels = [ax.get_ylabel() for ax in axes[:, 0]]
    assert labels[0].startswith("strategy=energy\nnoise_ratio=0.0")
    assert labels[3].startswith("strategy=stragglers\nnoise_ratio=0.2")
    assert "noise_kind=uniform" in fig._suptitle.get_text() and "noise_kind" not in labels[0]
    assert [ax.get_title() for ax in axes[0]] == ["Full test set", "Hard test set", "Easy test set"]
    # row stragglers / 0.2, hard panel: a line per train ratio, x = remaining, y = the mean
    lines = {bars.get_label(): bars.lines[0] for bars in axes[3, 1].containers}
    assert set(lines) == {"train ratio 0.9", "train ratio 0.5"}
    for t in TRAIN:
        x, y = lines[f"train ratio {t:g}"].get_data()
        want = [_planted("stragglers", 0.2, t, r, 0)["hard"] + 0.5 for r in REMAINING]
        np.testing.assert_allclose(np.asarray(x, dtype=float), REMAINING)
        np.testing.assert_allclose(np.asarray(y, dtype=float), want)
