"""GASTeN classifiers: test accuracy and loss of each binary classifier."""

NAME = "gasten_classifier"
KEYS = ["dataset", "pos", "neg", "classifier", "nf", "seed"]
METRICS = ["m.test_accuracy", "m.test_loss", "m.epochs_run", "m.n_train", "m.n_test"]


def build(ctx, runs):
    keys = [k for k in KEYS if k in runs.columns]
    metrics = [m for m in METRICS if m in runs.columns]
    table = runs[["run_id"] + keys + metrics].rename(columns=lambda c: c.removeprefix("m."))
    ctx.table("gasten_classifiers.csv", table.sort_values(keys).reset_index(drop=True))
