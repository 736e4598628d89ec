"""Figure functions: data in, matplotlib figure out; no Ray, no MLflow, no experiment.

Used alike by experiments (the figures a researcher opens on a trial's MLflow run, saved by
``Report.figure``) and by reports (``ReportContext.figure``), both through :func:`save`.
Modules: :mod:`~raydiff.plots.trial` (the first figure of a trial per method: radii,
sigma histogram, data map, C-score by ratio), :mod:`~raydiff.plots.images` (thumbnails and image grids),
:mod:`~raydiff.plots.data_params` (enrichment strips, t-SNE thumbnails, trajectories),
:mod:`~raydiff.plots.vog` (decile error, lowest / highest VoG grids, the toy's boundary),
:mod:`~raydiff.plots.gasten` (2-D embedding, prototype saliency). Only
:mod:`~raydiff.plots.common` sets matplotlib up; every module imports it lazily enough that
importing ``raydiff.plots`` does not import matplotlib.
"""

from raydiff.plots.common import save
from raydiff.plots.trial import cscore_by_ratio, data_map, radii, sigma_histogram

__all__ = ["cscore_by_ratio", "data_map", "radii", "save", "sigma_histogram"]
