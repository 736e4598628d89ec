"""Hard-sample identification: how many samples each strategy calls hard, and how much of
the injected noise lands among them."""

import pandas as pd

NAME = "identify"
KEYS = ["strategy", "level", "noise_kind", "noise_ratio"]
METRICS = ["m.n_hard", "m.n_stragglers", "m.hard_fraction", "m.noisy_in_hard",
           "m.hard_precision_noisy", "m.noise_auroc", "m.straggler_error_at_inversion",
           "m.classes_never_inverted", "trial_seconds"]


def build(ctx, runs):
    keys = [k for k in KEYS if k in runs.columns]
    metrics = [m for m in METRICS if m in runs.columns]
    summary = runs.groupby(keys, dropna=False)[metrics].agg(["mean", "std", "count"])
    summary.columns = [f"{a.removeprefix('m.')}_{b}" for a, b in summary.columns]
    ctx.table("identify_summary.csv", summary.reset_index())
    per_class = []
    for _, run in runs.iterrows():
        table = ctx.read_table(run["run_id"], "per_sample.parquet")
        counts = table[table["hard"].fillna(False)].groupby("observed_label").size()
        per_class.append(pd.DataFrame({**{k: run[k] for k in keys}, "seed": run.get("seed"),
                                       "class": counts.index, "n_hard": counts.values}))
    ctx.table("identify_hard_per_class.csv", pd.concat(per_class, ignore_index=True))
