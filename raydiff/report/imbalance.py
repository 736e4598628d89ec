"""In-class imbalance benchmark: accuracy vs remaining ratio, per train ratio."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

NAME = "imbalance"
GROUP = ["identify.strategy", "identify.level", "noise_kind", "noise_ratio", "reduce_hard"]
CELL = ["train_ratio", "remaining_train_ratio"]
TEST_SETS = {"full": "Full", "hard": "Hard", "easy": "Easy"}


def model_table(ctx, runs):
    """One row per trained model: its run's keys and its accuracies."""
    return ctx.gather(runs, "models.parquet", GROUP + CELL + ["seed"])


def summarise(models):
    """Mean and std over models and seeds of every accuracy, per group and cell."""
    keys = [c for c in GROUP + CELL if c in models.columns]
    acc = [c for c in models.columns if c.startswith("acc_")]
    out = models.groupby(keys, dropna=False)[acc].agg(["mean", "std", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index()


def figure(summary, test_set, title):
    fig, ax = plt.subplots(figsize=(6, 4))
    for t, rows in summary.groupby("train_ratio"):
        rows = rows.sort_values("remaining_train_ratio")
        ax.errorbar(rows["remaining_train_ratio"], rows[f"acc_{test_set}_mean"],
                    yerr=rows[f"acc_{test_set}_std"].fillna(0), marker="o", capsize=3,
                    label=f"train ratio {t}")
    reduced = "Hard" if bool(summary.get("reduce_hard", pd.Series([False])).iloc[0]) else "Easy"
    ax.set_xlabel(f"Proportion of {reduced} Samples Remaining in Training Set")
    ax.set_ylabel(f"Accuracy on {TEST_SETS[test_set]} Test Set (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def build(ctx, runs):
    models = model_table(ctx, runs)
    ctx.table("imbalance_models.csv", models)
    summary = summarise(models)
    ctx.table("imbalance_summary.csv", summary)
    keys = [c for c in GROUP if c in summary.columns]
    for values, rows in summary.groupby(keys, dropna=False):
        label = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        stem = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in label.items())
        title = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in label.items())
        for test_set in TEST_SETS:
            ctx.figure(f"imbalance_{stem}_{test_set}.png", figure(rows, test_set, title))
