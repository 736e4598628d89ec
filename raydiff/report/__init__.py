"""Reports: the MLflow runs of a sweep -> tidy tables (CSV) -> figures (PNG).

One module per experiment, ``raydiff/report/<experiment>.py``, defining ``NAME`` (the
experiment it reports on) and ``build(ctx, runs)``: ``runs`` is the tidy table of that
experiment's finished trial runs (:class:`ReportContext.runs` filtered), and the builder
writes its tables and figures through ``ctx.table`` and ``ctx.figure``. A module with
``NAME = "*"`` compares across experiments: its ``build`` gets every run of the sweep.
"""

import importlib
import pkgutil

from raydiff.report.base import FolderContext, ReportContext

_INTERNAL = {"base", "mlflow_context"}


def builders():
    """``{experiment name: build function}`` of every report module in the package."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _INTERNAL or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "build"):
            found.setdefault(module.NAME, module.build)
    return found


def build_report(ctx):
    """Run the builder of every experiment present in ``ctx.runs``; returns the files written."""
    found = builders()
    for experiment, runs in ctx.runs.groupby("experiment", sort=True):
        if experiment in found:
            found[experiment](ctx, runs.reset_index(drop=True))
    if "*" in found and len(ctx.runs):
        found["*"](ctx, ctx.runs)
    return ctx.written


__all__ = ["FolderContext", "ReportContext", "build_report", "builders"]
