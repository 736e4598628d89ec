"""Experiments by name: one module per experiment, found by scanning this package.

An experiment module defines ``NAME``, a ``Config`` dataclass (a subclass of
:class:`raydiff.experiments.config.Common`) and ``run(config, report, data)``, which
returns the final metrics. Optional: ``CONSUMES`` (the experiments whose results a stage
of it can take with ``after:``), ``GATHERS`` (the same, taking every matching run at
once), ``MATCH_ONLY`` (the only keys an upstream run must share to match, e.g. the data
keys for an experiment that reads runs of other seeds) and ``NEEDS_DATA = False`` for
experiments that load no dataset.
"""

import importlib
import pkgutil

_INTERNAL = {"base", "config", "common"}
_registry = None


def experiments():
    """``{name: module}`` of every experiment in the package."""
    global _registry
    if _registry is None:
        found = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name in _INTERNAL or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            if hasattr(module, "NAME") and hasattr(module, "run"):
                found[module.NAME] = module
        _registry = found
    return _registry


def get_experiment(name):
    """The experiment module called ``name``; a ValueError lists the valid names."""
    found = experiments()
    if name not in found:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {sorted(found)}")
    return found[name]
