"""Reports: the MLflow runs of a sweep -> tidy tables (CSV) -> figures (PNG).

One module per experiment, ``raydiff/report/<experiment>.py``, defining ``NAME`` (the
experiment it reports on) and ``build(ctx, runs)``: ``runs`` is the tidy table of that
experiment's finished trial runs (:class:`ReportContext.runs` filtered), and the builder
writes its tables and figures through ``ctx.table`` and ``ctx.figure``. A module with
``NAME = "*"`` compares across experiments: its ``build`` gets every run of the sweep
(``benchmark``: noisy-label detection; ``hardness``: detection of every kind of hardness
with ranks, critical-difference diagrams and seed stability). Each builder decides from
the runs' per-sample tables whether it has anything to write.
"""

import importlib
import pkgutil

from raydiff.report.base import FolderContext, ReportContext

_INTERNAL = {"base", "mlflow_context"}


def builders():
    """``{experiment name: [build functions]}`` of every report module in the package, in
    module-name order (one per experiment; ``"*"`` may have several)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if info.name in _INTERNAL or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "build"):
            found.setdefault(module.NAME, []).append(module.build)
    return found


def build_report(ctx):
    """Run the builders of every experiment present in ``ctx.runs``, then the builders
    across experiments; returns the files written."""
    found = builders()
    for experiment, runs in ctx.runs.groupby("experiment", sort=True):
        for build in found.get(experiment, []):
            build(ctx, runs.reset_index(drop=True))
    if len(ctx.runs):
        for build in found.get("*", []):
            build(ctx, ctx.runs)
    return ctx.written


__all__ = ["FolderContext", "ReportContext", "build_report", "builders"]
