"""In-class imbalance benchmark: accuracy vs remaining ratio, per train ratio, for every
setting (identify's strategy, noise, ...) in one grid figure; per setting and test set a
figure of its own only with ``per_cell``."""

from raydiff.plots.imbalance import TEST_SETS, accuracy_cell, accuracy_grid

NAME = "imbalance"
GROUP = ["identify.strategy", "identify.level", "noise_kind", "noise_ratio", "reduce_hard"]
CELL = ["train_ratio", "remaining_train_ratio"]


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


def build(ctx, runs):
    models = model_table(ctx, runs)
    ctx.table("imbalance_models.csv", models)
    summary = summarise(models)
    ctx.table("imbalance_summary.csv", summary)
    ctx.figure("imbalance_accuracy.png", accuracy_grid(summary, row_keys=GROUP))
    if not ctx.per_cell:
        return
    keys = [c for c in GROUP if c in summary.columns]
    for values, rows in summary.groupby(keys, dropna=False):
        label = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        stem = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in label.items())
        title = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in label.items())
        for test_set in TEST_SETS:
            ctx.figure(f"imbalance_{stem}_{test_set}.png", accuracy_cell(rows, test_set, title))
