"""sweeps/hardness_demo.yaml end to end at smoke size: the real CLI, Ray and MLflow, two
kinds of hardness (a label kind and an image kind) and two seeds; every registered score
reaches the hardness report, and the planted samples are found better than chance."""

import subprocess

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import RAYDIFF, REPO
from raydiff.scores import SCORES

pytestmark = pytest.mark.slow

SMALLER = ["--smoke", "--set", "seed={grid: [0, 1]}",
           "--set", "hardness_grid={cases: [{hardness: {grid: [uniform, zoom]}, noise_ratio: 0.2}]}",
           "--set", "crossval.folds=2", "--set", "crossval.fold={grid: [0, 1]}",
           "--set", "final_model.model=lenet"]


def test_hardness_demo_smoke_reports_every_score_per_kind(workdir):
    sweep = str(REPO / "sweeps" / "hardness_demo.yaml")
    done = subprocess.run(RAYDIFF + ["run", sweep, *SMALLER, "--num-cpus", "2", "--no-dashboard"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hardness_demo")
    runs = client.search_runs([exp.experiment_id], "tags.`raydiff.kind` = 'trial'",
                              max_results=1000)
    assert len(runs) == 44 and {r.info.status for r in runs} == {"FINISHED"}

    report = subprocess.run(RAYDIFF + ["report", "hardness_demo", "--out", "rep"],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    table = pd.read_csv(workdir / "rep" / "hardness_detection.csv")
    assert set(table["hardness"]) == {"uniform", "zoom"}
    assert (table["seeds"] == 2).all() and (table["ratio"] == 0.2).all()
    # every registered score is a method of the report (named after its stage where two
    # experiments compute it), for both kinds
    methods = {m.split(".")[-1] for m in table["method"]}
    for needs, fns in SCORES.items():
        for name in fns:
            if name == "cscore" or needs == "holdout":
                assert "cscore" in methods
            else:
                assert name in methods, (needs, name)
    for kind, part in table.groupby("hardness"):
        assert {m.split(".")[-1] for m in part["method"]} == methods, kind
    # the flipped labels stand out to the training-dynamics scores even after two epochs
    uniform = table[table["hardness"] == "uniform"].set_index("method")
    assert uniform.loc["aum", "auprc_mean"] > 2 * uniform.loc["aum", "hard_fraction"]
    for name in ("hardness_ranks.csv", "hardness_stability.csv", "hardness_tables.md",
                 "hardness_auprc.png", "hardness_cd_uniform.png", "hardness_cd_zoom.png"):
        assert (workdir / "rep" / name).exists(), name
