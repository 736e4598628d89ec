"""The context a report builder works in: the runs, their artifacts, and where output goes."""

from pathlib import Path

import numpy as np
import pandas as pd


def figures_key(row, key, default=None):
    """Display key ``key`` of a run (a row of ``runs``): from its ``figures`` mapping, or
    from a flat column, as runs logged before display keys moved under ``figures:`` have."""
    figures = row.get("figures")
    if isinstance(figures, dict) and key in figures:
        return figures[key]
    value = row.get(key, default)
    return default if value is None or (isinstance(value, float) and np.isnan(value)) else value


DEFAULT_NOISE_KIND = "uniform"


class ReportContext:
    """Base of report contexts.

    runs : DataFrame, one row per finished trial run, columns ``run_id``, ``stage``,
        ``experiment``, ``trial_seconds``, every key of the trial's config (typed values;
        keys inherited from an earlier stage as ``<stage>.<key>``) and the final value of
        every metric (prefixed ``m.``)
    out : folder the CSV and PNG files go to
    per_cell : also draw the figures of every single cell of a grid (off: one figure
        per question; ``raydiff report --per-cell``)
    """

    def __init__(self, runs, out, *, per_cell=False):
        if "noise_ratio" in runs.columns:
            # reports group by noise kind and ratio; runs logged before noise_kind existed
            # drew uniform noise
            runs = runs.assign(noise_kind=runs["noise_kind"].fillna(DEFAULT_NOISE_KIND)
                               if "noise_kind" in runs.columns else DEFAULT_NOISE_KIND)
        self.runs = runs
        self.per_cell = per_cell
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.written = []

    def artifact(self, run_id, name):
        """Local path of artifact ``name`` of run ``run_id``."""
        raise NotImplementedError

    def history(self, run_id, key):
        """DataFrame (step, value) of metric ``key`` of run ``run_id`` over steps."""
        raise NotImplementedError

    def has_artifact(self, run_id, name):
        """Whether run ``run_id`` logged an artifact ``name`` (a builder that takes any run
        with a per-sample table asks before reading)."""
        return self.artifact(run_id, name).exists()

    def table(self, name, df):
        path = self.out / name
        df.to_csv(path, index=False)
        self.written.append(path)
        return path

    def figure(self, name, fig):
        from raydiff.plots import save
        path = self.out / name
        save(fig, path, dpi=120)
        self.written.append(path)
        return path

    def read_table(self, run_id, name):
        return pd.read_parquet(self.artifact(run_id, name))

    def gather(self, runs, name, keys):
        """Table artifact ``name`` of every run in ``runs``, concatenated, each row with its
        run's values of ``keys`` (those that are columns of ``runs``)."""
        keys = [k for k in keys if k in runs.columns]
        parts = []
        for _, run in runs.iterrows():
            part = self.read_table(run["run_id"], name)
            for key in keys:
                part[key] = run[key]
            parts.append(part)
        return pd.concat(parts, ignore_index=True)


class FolderContext(ReportContext):
    """Runs whose artifacts lie in ``root/<run_id>/`` and metric histories in
    ``root/<run_id>/history.csv`` (step, key, value): for tests and offline use."""

    def __init__(self, runs, out, root, **options):
        super().__init__(runs, out, **options)
        self.root = Path(root)

    def artifact(self, run_id, name):
        return self.root / str(run_id) / name

    def history(self, run_id, key):
        hist = pd.read_csv(self.root / str(run_id) / "history.csv")
        return hist[hist["key"] == key][["step", "value"]].reset_index(drop=True)
