"""The figure layer stays a layer: ``raydiff.plots`` never imports Ray, MLflow, an
experiment, a report or the Tune glue; experiments never import matplotlib themselves (they
draw through ``raydiff.plots``); no report takes a figure from an experiment; experiments,
scores, engine, models and data never import Ray or MLflow (they run without either).

Two checks, since each misses what the other sees: an AST scan of every import statement of
the source (function-level, lazy imports included), and a fresh interpreter that imports
every module and looks at ``sys.modules`` (imports pulled in through another module)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "raydiff"
PLOTS_MAY_NOT = ("ray", "mlflow", "raydiff.experiments", "raydiff.report", "raydiff.tune",
                 "raydiff.tracking", "raydiff.cli")


def _modules(package):
    return sorted(ROOT.joinpath(package).glob("*.py"))


def _imports(path):
    """Every module name an import statement of ``path`` names (``from a import b`` gives
    ``a`` and ``a.b``: b may be a submodule)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:         # relative: resolve against the file's package
                base = ".".join(["raydiff", path.parent.name][:3 - node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def _hits(name, banned):
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("path", _modules("plots"), ids=lambda p: p.name)
def test_plots_import_no_ray_mlflow_experiment_or_report(path):
    bad = [n for n in _imports(path) if _hits(n, PLOTS_MAY_NOT)]
    assert not bad, f"{path.name} imports {bad}"


# the layers below the Tune glue run in a plain Python process (and on a GPU machine
# where neither Ray nor MLflow is installed): none of them may import either
NO_RAY_OR_MLFLOW = ("experiments", "scores", "engine", "models", "data")


@pytest.mark.parametrize("path", [p for layer in NO_RAY_OR_MLFLOW for p in _modules(layer)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_layers_below_tune_never_import_ray_or_mlflow(path):
    bad = [n for n in _imports(path) if _hits(n, ("ray", "mlflow", "raydiff.tracking",
                                                  "raydiff.tune", "raydiff.cli"))]
    assert not bad, (f"{path.parent.name}/{path.name} imports {bad}; only raydiff.tune talks "
                     f"to Ray and only raydiff.tracking to MLflow")


@pytest.mark.parametrize("path", _modules("experiments"), ids=lambda p: p.name)
def test_experiments_never_import_matplotlib(path):
    bad = [n for n in _imports(path) if _hits(n, ("matplotlib", "pylab"))]
    assert not bad, f"{path.name} imports {bad}; draw with a function of raydiff.plots"


@pytest.mark.parametrize("path", _modules("report"), ids=lambda p: p.name)
def test_reports_take_no_figure_from_an_experiment(path):
    bad = [n for n in _imports(path) if _hits(n, ("raydiff.experiments",))]
    assert not bad, f"{path.name} imports {bad}; figure functions live in raydiff.plots"


def test_importing_every_plots_and_experiment_module_loads_no_banned_module():
    code = """
import importlib, json, pkgutil, sys
import raydiff.plots
for m in pkgutil.iter_modules(raydiff.plots.__path__):
    importlib.import_module(f"raydiff.plots.{m.name}")
after_plots = sorted(sys.modules)
import raydiff.experiments
for layer in ("experiments", "scores", "engine", "models", "data"):
    package = importlib.import_module(f"raydiff.{layer}")
    for m in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"raydiff.{layer}.{m.name}")
print(json.dumps({"plots": after_plots, "all": sorted(sys.modules)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "raydiff.plots.vog" in loaded["plots"]          # the import really happened
    assert [m for m in loaded["plots"] if _hits(m, PLOTS_MAY_NOT)] == []
    assert "raydiff.experiments.vog" in loaded["all"] and "raydiff.engine.packed" in loaded["all"]
    # no layer talks to the tracker or the scheduler when imported
    assert [m for m in loaded["all"] if _hits(m, ("ray", "mlflow", "raydiff.tune",
                                                  "raydiff.tracking"))] == []
