"""Figure functions: data in, matplotlib figure out (no Ray, no MLflow).

Used by experiments for the one or two figures a researcher opens first on a trial's
MLflow run (``Report.figure`` saves them as small PNGs beside the per-sample table).
"""

from raydiff.plots.trial import data_map, radii, sigma_histogram

__all__ = ["data_map", "radii", "sigma_histogram"]
